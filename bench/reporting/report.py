"""The whole report of a suite under a budget, written from its records only.

`write_report(suite, budget, runs_dir, results_dir)` reads every cell's record and curve
(bench/reporting/cells.py) and writes to RESULTS/SUITE/BUDGET/ (bench/layout.py) the files listed
in bench/reporting/__init__.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.io import atomic_write_text
from bench.layout import report_dir
from bench.reporting.cells import discover_seeds, read_cell, read_reference
from bench.reporting.copies import copy_records
from bench.reporting.figure import draw_figure, figure_csv, figure_data
from bench.reporting.header import (
    canonical_report_command,
    count_statuses,
    describe_bound,
    report_header,
)
from bench.reporting.paper import PAPER_DIR
from bench.reporting.published import (
    published_csv,
    published_markdown,
    published_rows,
    read_published,
)
from bench.reporting.render import table_csv, table_grid, table_latex, table_markdown
from bench.reporting.scores import score_rows, scores_csv, scores_markdown
from bench.reporting.sweep import draw_sweep, sweep_csv, sweep_markdown, sweep_rows
from bench.reporting.table import Table, build_table
from bench.reporting.throughput import (
    throughput_csv,
    throughput_grid,
    throughput_markdown,
    throughput_rows,
)
from bench.suites import Suite, expand


@dataclass
class Report:
    directory: Path
    files: list[Path]
    table: Table
    throughput: list[dict]
    statuses: dict[str, int]
    results: list = field(default_factory=list)  # one CellResult per cell and seed

    def main_table(self) -> str:
        return table_grid(self.table)

    def throughput_table(self) -> str:
        return throughput_grid(self.throughput)


def write_report(suite: Suite, budget: str | None, runs_dir: Path, results_dir: Path,
                 seeds: int | None = None, command: str | None = None,
                 paper_dir: Path = PAPER_DIR) -> Report:
    """Read every cell's record and write the table, throughput table, figure and record copies."""
    chosen = suite.budget(budget)
    budget = chosen.name
    runs_dir, results_dir = Path(runs_dir), Path(results_dir)
    if seeds is None:
        seeds = discover_seeds(suite, budget, runs_dir, results_dir)
    command = command or canonical_report_command(suite, budget, seeds)
    cells = expand(suite, budget, seeds)
    results = [read_cell(c, suite, budget, runs_dir, results_dir) for c in cells]
    references = [read_reference(r, suite, budget, runs_dir, results_dir)
                  for r in suite.references]
    out = report_dir(results_dir, suite, budget)
    files = copy_records(suite, budget, results + references, runs_dir, results_dir)

    bound = describe_bound(results, suite.table.metric, suite.table.bound)
    header = report_header(suite, chosen, seeds, results, bound, command)
    table = build_table(suite, budget, seeds, results, header, paper_dir, references)
    table_path = out / "table.md"
    atomic_write_text(table_path, table_markdown(table))
    atomic_write_text(out / "table.csv", table_csv(table, command, bound, chosen.updates))
    atomic_write_text(out / "table.tex", table_latex(table))
    files += [table_path, out / "table.csv", out / "table.tex"]

    if suite.table.published:
        numbers = read_published(suite.table.published, paper_dir)
        rows = published_rows(numbers, results, suite.table.column_label)
        atomic_write_text(out / "published.md", published_markdown(rows, header))
        atomic_write_text(out / "published.csv", published_csv(
            rows, {"suite": suite.name, "budget": budget, "seeds": seeds, "command": command}))
        files += [out / "published.md", out / "published.csv"]

    if any(c.spec.test_sweep for c in cells):
        rows = sweep_rows(results, suite.table.column_label)
        atomic_write_text(out / "sweep.md", sweep_markdown(rows, header))
        atomic_write_text(out / "sweep.csv", sweep_csv(
            rows, {"suite": suite.name, "budget": budget, "seeds": seeds, "command": command}))
        draw_sweep(rows, out / "sweep.png", f"suite {suite.name}, budget {budget}, seeds {seeds}")
        files += [out / "sweep.md", out / "sweep.csv", out / "sweep.png"]

    if any(c.spec.test_reconstruction for c in cells):
        rows = score_rows(results, suite.table.column_label)
        atomic_write_text(out / "scores.md", scores_markdown(rows, header))
        atomic_write_text(out / "scores.csv", scores_csv(
            rows, {"suite": suite.name, "budget": budget, "seeds": seeds, "command": command}))
        files += [out / "scores.md", out / "scores.csv"]

    throughput = throughput_rows(results)
    short_header = header[:3] + header[-2:-1]
    atomic_write_text(out / "throughput.md", throughput_markdown(suite, throughput, short_header))
    atomic_write_text(out / "throughput.csv", throughput_csv(suite, budget, throughput, command))
    files += [out / "throughput.md", out / "throughput.csv"]

    if suite.figure is not None:
        rows = figure_data(suite, results)
        atomic_write_text(out / "figure.csv", figure_csv(rows, command))
        draw_figure(suite, results, out / "figure.png",
                    f"suite {suite.name}, budget {budget} ({chosen.updates:,} {chosen.unit}), "
                    f"seeds {seeds}", log_updates=suite.figure.log_updates(chosen.updates))
        draw_figure(suite, results, out / "figure_seconds.png",
                    f"suite {suite.name}, budget {budget}, seeds {seeds}; one thread per run "
                    f"unless the records say otherwise", x="seconds")
        files += [out / "figure.csv", out / "figure.png", out / "figure_seconds.png"]
    return Report(out, files, table, throughput, count_statuses(results), results)
