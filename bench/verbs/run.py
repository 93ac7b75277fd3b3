"""`python -m bench run SUITE`: train every cell of a suite, then write and print its report.

Cells whose record is complete (or diverged) are skipped, so an interrupted suite continues where
it stopped, and a cell interrupted mid-training resumes from its checkpoint. A cell that raises
gets a failed record and the suite goes on. Cells that share a model, dataset and minibatch size
are trained together as one batched computation (bench/batched.py), up to `--batch` runs at once;
each keeps its own random stream, statistics, early stopping and record. `--jobs N` trains N
groups at once in separate processes, each with cores // N torch threads (or `--threads`);
`--executor ray [--address HOST:PORT]` makes each group a Ray task (bench/executors.py). A cell
another process is training (a second `bench run` on the same runs directory) is left to it and
waited for at the end, never trained twice (bench/locks.py).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from bench.verbs.common import add_run_options, check_compute_options

DEFAULT_RESULTS_DIR = Path("results")
DEFAULT_RUNS_DIR = Path("runs")

def add_suite_options(parser) -> None:
    parser.add_argument("suite", help="suite name (a file in bench/suites/, e.g. table1 or quick) "
                                      "or the path of a suite file (.toml)")
    parser.add_argument("--budget", default=None,
                        help="one of the suite's budgets: smoke, short, paper, and those the "
                             "suite file adds (an unknown name lists them) (default: the "
                             "suite's default)")
    parser.add_argument("--runs-dir", default=str(DEFAULT_RUNS_DIR),
                        help="where run directories live (default runs/): RUNS/SUITE/BUDGET/RUN/")
    parser.add_argument("--results-dir", default=str(DEFAULT_RESULTS_DIR),
                        help="where reports go (default results/): RESULTS/SUITE/BUDGET/")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="train every cell of a suite (resumable), then write its report",
        description="Train every cell of a suite under a budget and write its tables and figure. "
                    "Complete cells are skipped and interrupted ones resume, so running the same "
                    "command again continues where it stopped.")
    add_suite_options(parser)
    parser.add_argument("--seeds", type=int, default=None,
                        help="repeat every cell with seeds 0..N-1 (default: as many seeds as have "
                             "records in the runs or results directory, at least 1, so that the "
                             "command remakes the report it finds)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="groups of cells trained at once, in separate processes (default: "
                             "one per core, at most one per group; 1: all in this process); "
                             "with --executor ray, Ray tasks in flight at once (default: the "
                             "cluster's CPUs // --threads)")
    parser.add_argument("--executor", default="local",
                        help="local (default: this machine's processes) or ray (a Ray task per "
                             "group of cells; pip install -e \".[ray]\")")
    parser.add_argument("--address", default=None, metavar="HOST:PORT",
                        help="with --executor ray: the Ray cluster's head (default: start a local "
                             "Ray instance for this command); --runs-dir must be a directory "
                             "every node sees")
    parser.add_argument("--batch", type=int, default=16,
                        help="at most this many cells (of the same model, dataset and minibatch "
                             "size) trained as one batched computation (default 16; 1: one by one)")
    parser.add_argument("--k", type=int, default=None, metavar="K",
                        help="importance samples of the test bound reported beside the table's "
                             "(default: the budget's test_iw_samples; 0: none); cells already "
                             "complete keep the K they were evaluated with")
    parser.add_argument("--only", action="append", default=[], metavar="FIELD=VALUE[,VALUE]",
                        help="train only the cells whose FIELD (model, algorithm, label, dataset, "
                             "inference, optimizer, learning_rate, init_scale) is one of the "
                             "values; repeatable, all must hold. The report still shows every "
                             "cell (those without records as not run)")
    add_run_options(parser)
    parser.set_defaults(func=run)


def select_cells(cells, only: list[str]):
    """The cells every `--only FIELD=VALUE[,VALUE]` matches; a field or value that names nothing
    is a UserError listing the valid ones."""
    from bench.errors import UserError, unknown_name
    from bench.suites import INDEX_FIELDS

    for condition in only:
        field, equals, text = condition.partition("=")
        if not equals or not text:
            raise UserError(f"--only {condition!r}: write FIELD=VALUE[,VALUE], e.g. "
                            f"--only model=sbn:200-200")
        if field not in INDEX_FIELDS:
            raise unknown_name("--only field", field, INDEX_FIELDS, "fields")
        present = {cell.index(field) for cell in cells}
        wanted = text.split(",")
        for value in wanted:
            if value not in present:
                raise unknown_name(f"{field} in --only", value, present, f"{field} values of the "
                                   "suite's cells")
        cells = [cell for cell in cells if cell.index(field) in wanted]
    return cells


def command_line(args) -> str:
    """The command, written out with every option that differs from its default."""
    parts = ["python", "-m", "bench", "run", args.suite, "--budget", args.budget,
             "--seeds", str(args.seeds)]
    if args.jobs is not None:
        parts += ["--jobs", str(args.jobs)]
    if args.batch != 16:
        parts += ["--batch", str(args.batch)]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    if getattr(args, "k", None) is not None:
        parts += ["--k", str(args.k)]
    for option, default in (("runs_dir", str(DEFAULT_RUNS_DIR)),
                            ("results_dir", str(DEFAULT_RESULTS_DIR)),
                            ("data_dir", None), ("device", None)):
        value = getattr(args, option)
        if value is not None and value != default:
            parts += ["--" + option.replace("_", "-"), str(value)]
    for condition in getattr(args, "only", []):
        parts += ["--only", condition]
    if args.no_progress:
        parts.append("--no-progress")
    return shlex.join(parts)


def _units(work, max_runs: int) -> list[list]:
    """Pending cells grouped by batch key (order of first appearance), at most max_runs each."""
    from bench.batched import batch_key

    groups: dict = {}
    for cell, out_dir in work:
        groups.setdefault(batch_key(cell.spec), []).append((cell, out_dir))
    return [members[i:i + max_runs] for members in groups.values()
            for i in range(0, len(members), max_runs)]


def carry_on(cells, runs_dir: Path, suite, budget) -> None:
    """Copy the finished run directory of `budget.continues` to this budget for every cell that
    has none here, so that training resumes from its checkpoint up to the larger cap. A run
    still training there (no final record) is not copied."""
    import shutil

    from bench.layout import CHECKPOINT, run_dir
    from bench.locks import LOCK_FILE
    from bench.runs import record_is_complete

    carried = 0
    for cell in cells:
        source = run_dir(runs_dir, suite, budget.continues, cell)
        target = run_dir(runs_dir, suite, budget.name, cell)
        if (target.exists() or not (source / CHECKPOINT).exists()
                or not record_is_complete(source)):
            continue
        staging = target.with_name(target.name + ".copying")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(LOCK_FILE))
        staging.rename(target)  # whole or not at all: an interrupted copy is redone
        carried += 1
    if carried:
        print(f"{carried} cells carried on from budget {budget.continues}'s runs", flush=True)


def run(args) -> int:

    from bench import suites
    from bench.errors import UserError, unknown_name
    from bench.executors import (
        EXECUTORS,
        HereExecutor,
        ProcessExecutor,
        RayExecutor,
        available_cores,
        run_units,
    )
    from bench.layout import copied_run_dir, run_dir
    from bench.reporting import METRIC_WORDS, note_text, write_report
    from bench.reporting.header import count_statuses
    from bench.runs import record_is_complete

    suite = suites.load(args.suite)
    budget = suite.budget(args.budget)
    args.budget = budget.name
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if args.batch < 1:
        raise UserError(f"--batch must be at least 1, got {args.batch}")
    check_compute_options(args)
    if args.executor not in EXECUTORS:
        raise unknown_name("executor", args.executor, EXECUTORS)
    if args.address is not None and args.executor != "ray":
        raise UserError("--address names a Ray cluster's head: it goes with --executor ray")
    if args.k is not None and args.k < 0:
        raise UserError(f"--k must be 0 (no importance-sampled bound) or more, got {args.k}")
    overrides = {"device": args.device} if args.device else {}
    if args.k is not None:
        overrides["test_iw_samples"] = args.k
    runs_dir = Path(args.runs_dir)
    results_dir = Path(args.results_dir)
    if args.seeds is None:
        from bench.reporting import discover_seeds

        # A budget that carries on another's runs takes their seeds too.
        args.seeds = max(discover_seeds(suite, name, runs_dir, results_dir)
                         for name in filter(None, (budget.name, budget.continues)))
    cells = suites.expand(suite, budget.name, args.seeds, overrides)

    def done(cell) -> bool:
        # A record committed with the report counts as done: a suite too long for one sitting
        # lands cell by cell, and the same command goes on with the rest on another machine.
        updates = cell.spec.updates
        return (record_is_complete(run_dir(runs_dir, suite, budget.name, cell), updates)
                or record_is_complete(copied_run_dir(results_dir, suite, budget.name, cell),
                                      updates))

    selected = select_cells(cells, args.only)
    if budget.continues:
        carry_on(selected, runs_dir, suite, budget)
    pending = [c for c in selected if not done(c)]
    progress = not args.no_progress
    # Absolute: a Ray worker (or a process started elsewhere) has its own working directory.
    work = [(c, str(run_dir(runs_dir, suite, budget.name, c).resolve())) for c in pending]
    units = _units(work, args.batch) if pending else []
    executor, where = None, ""
    if pending and args.executor == "ray":
        # A Ray task per unit, --threads CPUs each (default 1); Ray places them on the cluster.
        executor = RayExecutor(args.address, args.threads or 1, args.device, args.jobs)
        where = f" as Ray tasks, {executor.slots} at once"
    elif pending:
        # Groups of different estimators cannot share a computation: by default each core
        # takes one.
        jobs = min(args.jobs or available_cores(), len(units))
        threads = args.threads or max(1, available_cores() // jobs)
        executor = HereExecutor(threads) if jobs == 1 else ProcessExecutor(jobs, threads)
        where = f" in {jobs} processes" if jobs > 1 else ""
    print(f"suite {suite.name}, budget {budget.name} ({budget.describe()}), seeds {args.seeds}: "
          + (f"{len(selected)} of {len(cells)} cells chosen by --only, " if args.only else
             f"{len(cells)} cells, ")
          + f"{len(selected) - len(pending)} already done, {len(pending)} to run" + where,
          flush=True)
    started = time.perf_counter()
    # Closed-form sanity rows (seconds, not training) of the chosen cells' datasets.
    datasets_chosen = {cell.spec.dataset for cell in selected}
    for reference in [r for r in suite.references if r.dataset in datasets_chosen]:
        directory = run_dir(runs_dir, suite, budget.name, reference)
        if not record_is_complete(directory):
            from bench.references import write_reference

            record = write_reference(reference, directory, args.data_dir)
            print(f"reference {reference.run_name}: {record['status']}", flush=True)
    if executor is not None:
        run_units(units, executor, args.data_dir, progress, args.batch)
    elapsed = time.perf_counter() - started
    report = write_report(suite, budget.name, runs_dir, Path(args.results_dir), args.seeds,
                          command=command_line(args))
    print()
    print(f"{suite.title} ({suite.name}, budget {budget.name}: {budget.describe()}; "
          f"seeds {args.seeds}; {METRIC_WORDS[suite.table.metric]})")
    print(report.main_table())
    for index, note in enumerate(report.table.notes, 1):
        print(f"[{index}] {note_text(note, limit=300)}")
    print()
    print("Throughput (training updates only)")
    print(report.throughput_table())
    print()
    print(f"report: {report.directory}/ (table.md, table.csv, table.tex, throughput.md"
          + (", figure.png" if suite.figure else "") + f"); trained in {elapsed:.0f} s")
    # The exit status is about the cells asked for (all of them without --only).
    chosen = {cell.run_name for cell in selected}
    statuses = count_statuses([r for r in report.results if r.cell.run_name in chosen])
    problems = {s: n for s, n in statuses.items() if s != "complete"}
    if problems:
        print("not complete: " + ", ".join(f"{n} {s}" for s, n in sorted(problems.items())))
        return 1
    return 0
