"""Copies of the records into the report, so that results/ alone can remake its tables.

Only record.json and curve.csv are copied, never checkpoints or parameters.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.layout import CURVE, RECORD, copied_run_dir, run_dir
from bench.reporting.cells import CellResult
from bench.suites import Suite


def copy_records(suite: Suite, budget: str, results: list[CellResult], runs_dir: Path,
                 results_dir: Path) -> list[Path]:
    """Copy record.json and curve.csv of every cell that has them in its run directory, and point
    its result at the copies."""
    copied = []
    for result in results:
        source = run_dir(runs_dir, suite, budget, result.cell)
        if result.record_path is None or result.record_path.parent != source:
            continue
        target = copied_run_dir(results_dir, suite, budget, result.cell)
        target.mkdir(parents=True, exist_ok=True)
        for name in (RECORD, CURVE):
            if (source / name).exists():
                shutil.copyfile(source / name, target / name)
                copied.append(target / name)
        result.record_path = target / RECORD
        if result.curve_path is not None:
            result.curve_path = target / CURVE
    return copied
