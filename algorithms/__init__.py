"""Training algorithms (estimators), one module each, resolved by name in `algorithms/registry.py`.

`python -m bench list` shows them with their presets. Names are `NAME[:PRESET]` (the suite's own,
or an installed package's entry point in group `nvil_bench.algorithms`) or
`package.module:Class[:PRESET]`. To add one, see ADDING_AN_ALGORITHM.md: write a module with an
`Algorithm` subclass and add it to `registry.BUILTIN`, or publish it from your own package.
"""

from __future__ import annotations

from algorithms.base import Algorithm, StepResult, options_dict
from algorithms.registry import REGISTRY, parse_name, source_info


def build(text: str, model, inference, overrides: dict | None = None, generators=None) -> Algorithm:
    """An estimator for every run of the model, all with the same options."""
    cls, preset = parse_name(text)
    return cls(model, inference, cls.resolve_options(preset, overrides), generators)


__all__ = ["Algorithm", "StepResult", "REGISTRY", "build", "parse_name", "options_dict",
           "source_info"]
