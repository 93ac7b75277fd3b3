"""`python -m bench report SUITE`: remake a suite's tables and figure from its records only."""

from __future__ import annotations

import shlex
from pathlib import Path

from bench.verbs.run import DEFAULT_RESULTS_DIR, DEFAULT_RUNS_DIR, add_suite_options


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="write a suite's tables and figure from its records",
        description="Read the records of a suite's cells (from the run directories, else from the "
                    "copies under the results directory) and write its table (Markdown, CSV, "
                    "LaTeX), throughput table and figure. Trains nothing.")
    add_suite_options(parser)
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds expected (default: as many as have records)")
    parser.set_defaults(func=run)


def command_line(args, seeds: int) -> str:
    parts = ["python", "-m", "bench", "report", args.suite, "--budget", args.budget,
             "--seeds", str(seeds)]
    if args.runs_dir != str(DEFAULT_RUNS_DIR):
        parts += ["--runs-dir", args.runs_dir]
    if args.results_dir != str(DEFAULT_RESULTS_DIR):
        parts += ["--results-dir", args.results_dir]
    return shlex.join(parts)


def run(args) -> int:
    from bench import suites
    from bench.errors import UserError
    from bench.reporting import discover_seeds, note_text, write_report

    suite = suites.load(args.suite)
    args.budget = suite.budget(args.budget).name
    if args.seeds is not None and args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    runs_dir, results_dir = Path(args.runs_dir), Path(args.results_dir)
    seeds = args.seeds or discover_seeds(suite, args.budget, runs_dir, results_dir)
    report = write_report(suite, args.budget, runs_dir, results_dir, seeds,
                          command=command_line(args, seeds))
    print(report.main_table())
    for index, note in enumerate(report.table.notes, 1):
        print(f"[{index}] {note_text(note, limit=300)}")
    print()
    print(report.throughput_table())
    print()
    print(f"report: {report.directory}/")
    return 0
