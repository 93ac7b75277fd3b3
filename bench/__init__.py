"""Harness for the NVIL benchmark suite: CLI, specs, training, evaluation, records and reports.

Arrows point one way: bench -> algorithms -> models; datasets stand alone.
"""
