"""Argument helpers shared by several verbs."""

from __future__ import annotations

from bench.errors import UserError


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """['a=1', 'b=x'] -> {'a': '1', 'b': 'x'}; a malformed item is a UserError."""
    assignments = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"malformed --set {item!r}: write --set key=value, e.g. --set smoothing=0.9")
        assignments[key.strip()] = value.strip()
    return assignments
