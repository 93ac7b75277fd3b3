"""A suite's cells and what their records say: one `CellResult` per cell and seed, and the
`Summary` of a table position over seeds.

A cell's record is read from its run directory, or, where that has none, from the copy kept in the
report (bench/layout.py names both), so that results/ alone can remake its tables.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import UserError
from bench.layout import CURVE, RECORD, copied_run_dir, run_dir
from bench.records import find_metric, read_record
from bench.suites import Cell, Reference, Suite, expand

MAX_SEEDS = 1000


@dataclass
class CellResult:
    """One cell (one seed) and what its record says."""

    cell: Cell
    status: str                         # complete | diverged | failed | not run
    record: dict | None = None
    record_path: Path | None = None
    curve_path: Path | None = None
    value: float | None = None          # the table's metric
    reason: str = ""
    # The tighter bound beside the paper's: the test metric from the importance-sampled bound
    # (its K), when the run computed one (test_iw_samples).
    importance_sampled: float | None = None
    importance_samples: int | None = None

    @property
    def seed(self) -> int:
        return self.cell.spec.seed


def _locate(cell: Cell, suite: Suite, budget: str, runs_dir: Path, results_dir: Path):
    for directory in (run_dir(runs_dir, suite, budget, cell),
                      copied_run_dir(results_dir, suite, budget, cell)):
        if (directory / RECORD).exists():
            return directory
    return None


def _open(result_type, cell, suite: Suite, budget: str, runs_dir: Path, results_dir: Path):
    """(directory, record) of a cell's (or reference's) record, or a result of `result_type`
    saying that it has none or that it cannot be read."""
    directory = _locate(cell, suite, budget, runs_dir, results_dir)
    if directory is None:
        return result_type(cell, "not run"), None
    path = directory / RECORD
    try:
        return directory, read_record(path)
    except UserError as error:
        return result_type(cell, "failed", record_path=path,
                           reason=f"unreadable record: {error}"), None


def read_cell(cell: Cell, suite: Suite, budget: str, runs_dir: Path, results_dir: Path) -> CellResult:
    directory, record = _open(CellResult, cell, suite, budget, runs_dir, results_dir)
    if record is None:
        return directory
    path = directory / RECORD
    curve = directory / (record.get("curve") or CURVE)
    status = record.get("status", "failed")
    # A failed run writes no curve; one found beside it is left from an earlier attempt.
    has_curve = curve.exists() and status in ("complete", "diverged")
    result = CellResult(cell, status, record, path, curve if has_curve else None)
    if result.status == "failed":
        result.reason = record.get("error", "no reason recorded")
    elif result.status == "diverged":
        result.reason = (f"non-finite loss or validation bound after {record.get('updates', '?')} "
                         f"updates")
    elif result.status == "complete":
        spec = record.get("config", {}).get("spec", {})
        bound = suite.table.bound
        k = spec.get("test_ais_chains") if bound == "ais" else spec.get("eval_samples")
        metric = find_metric(record, "test", bound, k)
        key = suite.table.metric
        if metric is None or metric.get(key) is None:
            result.status = "failed"
            result.reason = (f"the record has no test {key} from the {k}-sample ELBO"
                             if bound == "elbo" else
                             f"the record has no test {key} from AIS with {k} chains")
        else:
            result.value = float(metric[key])
            tighter = find_metric(record, "test", "iw")
            if tighter is not None and tighter.get(key) is not None:
                result.importance_sampled = float(tighter[key])
                result.importance_samples = tighter.get("k")
    else:
        result.reason = f"unknown status {result.status!r} in the record"
        result.status = "failed"
    return result


@dataclass
class ReferenceResult:
    """A suite's reference (a sanity row fitted in closed form) and what its record says."""

    cell: Reference
    status: str                         # complete | failed | not run
    record: dict | None = None
    record_path: Path | None = None
    curve_path: Path | None = None      # references have no curve
    value: float | None = None          # the table's metric, on the test split
    reason: str = ""


def read_reference(reference: Reference, suite: Suite, budget: str, runs_dir: Path,
                   results_dir: Path) -> ReferenceResult:
    directory, record = _open(ReferenceResult, reference, suite, budget, runs_dir, results_dir)
    if record is None:
        return directory
    result = ReferenceResult(reference, record.get("status", "failed"), record,
                             directory / RECORD)
    metric = find_metric(record, "test", "exact")
    if result.status != "complete" or metric is None or metric.get(suite.table.metric) is None:
        result.status = "failed"
        result.reason = record.get("error", f"the record has no test {suite.table.metric}")
    else:
        result.value = float(metric[suite.table.metric])
    return result


def discover_seeds(suite: Suite, budget: str, runs_dir: Path, results_dir: Path) -> int:
    """How many seeds have records: 1 + the largest seed with any record (at least 1)."""
    seeds = 1
    while seeds < MAX_SEEDS:
        cells = [c for c in expand(suite, budget, seeds + 1) if c.spec.seed == seeds]
        if not any(_locate(c, suite, budget, runs_dir, results_dir) for c in cells):
            break
        seeds += 1
    return seeds


# -- summarising seeds ---------------------------------------------------------------------------

@dataclass
class Summary:
    """A table position over seeds."""

    results: list[CellResult]
    values: list[float] = field(default_factory=list)

    def __post_init__(self):
        self.values = [r.value for r in self.results if r.status == "complete" and r.value is not None]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def importance_sampled(self) -> tuple[float, int] | None:
        """The mean over seeds of the importance-sampled bound and its K, when every complete
        seed has one with the same K."""
        complete = [r for r in self.results if r.status == "complete" and r.value is not None]
        ks = {r.importance_samples for r in complete}
        if not complete or any(r.importance_sampled is None for r in complete) or len(ks) != 1:
            return None
        return statistics.fmean(r.importance_sampled for r in complete), ks.pop()

    @property
    def updates(self) -> list[int]:
        """Updates each complete seed trained for (a patience stops them at different points)."""
        return [int(r.record.get("updates", 0)) for r in self.results
                if r.status == "complete" and r.record is not None]

    @property
    def status(self) -> str:
        statuses = {r.status for r in self.results}
        if self.values:
            return "complete" if statuses == {"complete"} else "partial"
        for status in ("failed", "diverged"):
            if status in statuses:
                return status
        return "not run"

    @property
    def problems(self) -> list[CellResult]:
        return [r for r in self.results if r.status != "complete"]


def fmt(value: float | None, decimals: int, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:+.{decimals}f}" if sign else f"{value:.{decimals}f}"


def describe_summary(summary: Summary, decimals: int) -> str:
    """'113.4 ± 0.3 (n=3)', '113.4 (n=1)', 'failed', 'diverged' or 'not run'."""
    if summary.mean is None:
        return summary.status
    text = fmt(summary.mean, decimals)
    if summary.std is not None:
        text += f" ± {fmt(summary.std, decimals)}"
    text = f"{text} (n={summary.n})"
    tighter = summary.importance_sampled
    if tighter is not None:
        text += f"; IS K={tighter[1]:,}: {fmt(tighter[0], decimals)}"
    return text
