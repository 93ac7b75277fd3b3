"""Where a run's files live: the one place that names them.

    RUNS/SUITE/BUDGET/RUN/          a run directory (`run_dir`); `train --out` picks any other
        record.json                 the run's record (bench/records.py)
        curve.csv                   the validation bound at every evaluation
        checkpoint.pt               the state to resume from
        best.pt                     the parameters with the best validation bound
        .lock                       held by the process training or evaluating it (bench/locks.py)
    RESULTS/SUITE/BUDGET/           a suite's report (`report_dir`)
        records/RUN/                copies of record.json and curve.csv (`copied_run_dir`)

Training writes these files and reporting reads them; both import this module, not each other.
It imports nothing heavy, so that `bench report` never loads the training engine.
"""

from __future__ import annotations

from pathlib import Path

RECORD = "record.json"
CURVE = "curve.csv"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
RECORD_COPIES = "records"


def run_dir(runs_dir: Path, suite, budget: str, cell) -> Path:
    """RUNS/SUITE/BUDGET/RUN for a suite's cell (anything with `.name` and `.run_name`)."""
    return Path(runs_dir) / suite.name / budget / cell.run_name


def report_dir(results_dir: Path, suite, budget: str) -> Path:
    """RESULTS/SUITE/BUDGET: where a suite's tables and figure go."""
    return Path(results_dir) / suite.name / budget


def copied_run_dir(results_dir: Path, suite, budget: str, cell) -> Path:
    """RESULTS/SUITE/BUDGET/records/RUN: the report's copy of a cell's record and curve."""
    return report_dir(results_dir, suite, budget) / RECORD_COPIES / cell.run_name
