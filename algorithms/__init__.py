"""Training algorithms, one module each, registered by name.

`python -m bench list` shows them with their presets. To add one, see ADDING_AN_ALGORITHM.md:
write a module with an `Algorithm` subclass and add it to REGISTRY below.
"""

from __future__ import annotations

from algorithms.base import Algorithm, StepResult, options_dict
from algorithms.nvil import NVIL
from algorithms.wake_sleep import WakeSleep
from bench.errors import unknown_name

REGISTRY: dict[str, type[Algorithm]] = {cls.name: cls for cls in (NVIL, WakeSleep)}


def parse_name(text: str) -> tuple[type[Algorithm], str]:
    """'nvil' or 'nvil:no-vn' -> (class, preset); unknown names list the valid ones."""
    name, _, preset = text.partition(":")
    if name not in REGISTRY:
        raise unknown_name("algorithm", name, REGISTRY)
    cls = REGISTRY[name]
    if preset not in cls.presets:
        raise unknown_name("preset", preset, [p for p in cls.presets if p], f"presets of {name}")
    return cls, preset


def build(text: str, model, inference, overrides: dict | None = None, generators=None) -> Algorithm:
    """An estimator for every run of the model, all with the same options."""
    cls, preset = parse_name(text)
    return cls(model, inference, cls.resolve_options(preset, overrides), generators)


__all__ = ["Algorithm", "StepResult", "REGISTRY", "build", "parse_name", "options_dict"]
