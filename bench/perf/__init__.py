"""Throughput measurement: the plain-PyTorch yardstick and the `bench perf` benchmarks."""
