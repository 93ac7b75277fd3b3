"""`python -m bench run SUITE`: train every cell of a suite, then write and print its report.

Cells whose record is complete (or diverged) are skipped, so an interrupted suite continues where
it stopped, and a cell interrupted mid-training resumes from its checkpoint. A cell that raises
gets a failed record and the suite goes on. Cells that share a model, dataset and minibatch size
are trained together as one batched computation (bench/batched.py), up to `--batch` runs at once;
each keeps its own random stream, statistics, early stopping and record. `--jobs N` trains N
groups at once in separate processes, each with cores // N torch threads (or `--threads`).
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from bench.verbs.common import add_run_options, check_compute_options, set_threads

DEFAULT_RESULTS_DIR = Path("results")
DEFAULT_RUNS_DIR = Path("runs")

# Datasets already loaded by this process, by (name, split): cells of a suite share them.
_DATA_CACHE: dict = {}


def add_suite_options(parser) -> None:
    parser.add_argument("suite", help="suite name (a file in bench/suites/, e.g. table1 or quick) "
                                      "or the path of a suite file (.toml)")
    parser.add_argument("--budget", default=None,
                        help="smoke, short or paper (default: the suite's default budget)")
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
    parser.add_argument("--seeds", type=int, default=1, help="repeat every cell with seeds 0..N-1")
    parser.add_argument("--jobs", type=int, default=None,
                        help="groups of cells trained at once, in separate processes (default: "
                             "one per core, at most one per group; 1: all in this process)")
    parser.add_argument("--batch", type=int, default=16,
                        help="at most this many cells (of the same model, dataset and minibatch "
                             "size) trained as one batched computation (default 16; 1: one by one)")
    parser.add_argument("--k", type=int, default=None, metavar="K",
                        help="importance samples of the test bound reported beside the table's "
                             "(default: the budget's test_iw_samples; 0: none); cells already "
                             "complete keep the K they were evaluated with")
    add_run_options(parser)
    parser.set_defaults(func=run)


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
    if args.no_progress:
        parts.append("--no-progress")
    return shlex.join(parts)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _load_data(spec, data_dir):
    key = (spec.dataset, spec.split)
    if key not in _DATA_CACHE:
        import datasets

        try:
            _DATA_CACHE[key] = datasets.load(spec.dataset, spec.split, data_dir=data_dir)
        except Exception as error:  # noqa: BLE001 - every cell of this dataset fails alike
            _DATA_CACHE[key] = error
    if isinstance(_DATA_CACHE[key], Exception):
        raise _DATA_CACHE[key]
    return _DATA_CACHE[key]


def train_unit(specs, out_dirs: list[str], data_dir, progress: bool, max_runs: int
               ) -> list[tuple[str, str, str, float]]:
    """Train cells that share a batch key, together; any exception becomes a failed record for
    each of them. [(status, message, run dir, seconds)] in the order given."""
    from bench.batched import train_runs_together
    from bench.runs import train_run, write_failed_record

    started = time.perf_counter()
    try:
        data = _load_data(specs[0], data_dir)
        if len(specs) == 1:
            records = [train_run(specs[0], Path(out_dirs[0]), data=data, progress=progress)]
        else:
            records = train_runs_together(specs, [Path(d) for d in out_dirs], data=data,
                                          max_runs=max_runs, progress=progress)
        results = [(r["status"], _headline(r)) for r in records]
    except Exception as error:  # noqa: BLE001 - any failure of one unit must not stop the suite
        for spec, out_dir in zip(specs, out_dirs, strict=True):
            write_failed_record(spec, Path(out_dir), error)
        results = [("failed", f"{type(error).__name__}: {error}")] * len(specs)
    seconds = time.perf_counter() - started
    return [(status, message, out_dir, seconds)
            for (status, message), out_dir in zip(results, out_dirs, strict=True)]


def _units(work, max_runs: int) -> list[list]:
    """Pending cells grouped by batch key (order of first appearance), at most max_runs each."""
    from bench.batched import batch_key

    groups: dict = {}
    for cell, out_dir in work:
        groups.setdefault(batch_key(cell.spec), []).append((cell, out_dir))
    return [members[i:i + max_runs] for members in groups.values()
            for i in range(0, len(members), max_runs)]


def _headline(record: dict) -> str:
    from bench.records import find_metric

    metric = find_metric(record, "test", "elbo", record["config"]["spec"]["eval_samples"])
    if metric is None:
        return f"after {record['updates']} updates"
    text = f"test NLL {metric['nll']:.2f}"
    if metric.get("perplexity") is not None:
        text += f", perplexity {metric['perplexity']:.1f}"
    return text


def run(args) -> int:

    from bench import suites
    from bench.errors import UserError
    from bench.layout import copied_run_dir, run_dir
    from bench.reporting import METRIC_WORDS, note_text, write_report
    from bench.runs import record_is_complete

    suite = suites.load(args.suite)
    budget = suite.budget(args.budget)
    args.budget = budget.name
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if args.batch < 1:
        raise UserError(f"--batch must be at least 1, got {args.batch}")
    check_compute_options(args)
    if args.k is not None and args.k < 0:
        raise UserError(f"--k must be 0 (no importance-sampled bound) or more, got {args.k}")
    overrides = {"device": args.device} if args.device else {}
    if args.k is not None:
        overrides["test_iw_samples"] = args.k
    cells = suites.expand(suite, budget.name, args.seeds, overrides)
    runs_dir = Path(args.runs_dir)
    results_dir = Path(args.results_dir)

    def done(cell) -> bool:
        # A record committed with the report counts as done: a suite too long for one sitting
        # lands cell by cell, and the same command goes on with the rest on another machine.
        return (record_is_complete(run_dir(runs_dir, suite, budget.name, cell))
                or record_is_complete(copied_run_dir(results_dir, suite, budget.name, cell)))

    pending = [c for c in cells if not done(c)]
    progress = not args.no_progress
    work = [(c, str(run_dir(runs_dir, suite, budget.name, c))) for c in pending]
    units = _units(work, args.batch) if pending else []
    # Groups of different estimators cannot share a computation: by default each core takes one.
    jobs = args.jobs or max(1, min(available_cores(), len(units)))
    print(f"suite {suite.name}, budget {budget.name} ({budget.describe()}), seeds {args.seeds}: "
          f"{len(cells)} cells, {len(cells) - len(pending)} already done, {len(pending)} to run"
          + (f" in {min(jobs, len(units))} processes" if jobs > 1 and len(units) > 1 else ""),
          flush=True)
    started = time.perf_counter()
    for reference in suite.references:  # closed-form sanity rows: seconds, not training
        directory = run_dir(runs_dir, suite, budget.name, reference)
        if not record_is_complete(directory):
            from bench.references import write_reference

            record = write_reference(reference, directory, args.data_dir)
            print(f"reference {reference.run_name}: {record['status']}", flush=True)
    if pending:
        threads = args.threads or max(1, available_cores() // jobs)
        if jobs == 1 or len(units) == 1:
            set_threads(threads)
            _run_here(units, args.data_dir, progress, args.batch)
        else:
            _run_parallel(units, args.data_dir, progress, min(jobs, len(units)), threads,
                          args.batch)
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
    problems = {s: n for s, n in report.statuses.items() if s != "complete"}
    if problems:
        print("not complete: " + ", ".join(f"{n} {s}" for s, n in sorted(problems.items())))
        return 1
    return 0


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="cells", unit="cell", dynamic_ncols=True, position=0)


def _report_cell(bar, done: int, total: int, name: str, status: str, message: str,
                 seconds: float) -> None:
    line = f"[{done}/{total}] {name}: {status} ({message}) in {seconds:.0f} s"
    if bar is not None:
        bar.write(line)
        bar.update(1)
    else:
        print(line, flush=True)


def _run_here(units, data_dir, progress: bool, max_runs: int) -> None:
    total = sum(len(unit) for unit in units)
    bar = _bar(total, progress)
    done = 0
    try:
        for unit in units:
            results = train_unit([cell.spec for cell, _ in unit], [d for _, d in unit], data_dir,
                                 progress, max_runs)
            for (cell, _), (status, message, _, seconds) in zip(unit, results, strict=True):
                done += 1
                _report_cell(bar, done, total, cell.run_name, status, message, seconds)
    finally:
        if bar is not None:
            bar.close()


def _run_parallel(units, data_dir, progress: bool, jobs: int, threads: int, max_runs: int) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from bench.runs import write_failed_record

    total = sum(len(unit) for unit in units)
    bar = _bar(total, progress)
    # Per-run bars of parallel workers would overwrite each other: only the bar over cells.
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=set_threads, initargs=(threads,))
    try:
        futures = {executor.submit(train_unit, [cell.spec for cell, _ in unit],
                                   [d for _, d in unit], data_dir, False, max_runs): unit
                   for unit in units}
        started = time.perf_counter()
        done = 0
        for future in as_completed(futures):
            unit = futures[future]
            try:
                results = future.result()
            except Exception as error:  # noqa: BLE001 - a worker that died (e.g. out of memory)
                seconds = time.perf_counter() - started
                results = []
                for cell, out_dir in unit:
                    write_failed_record(cell.spec, Path(out_dir), error)
                    results.append(("failed", f"{type(error).__name__}: {error}", out_dir, seconds))
            for (cell, _), (status, message, _, seconds) in zip(unit, results, strict=True):
                done += 1
                _report_cell(bar, done, total, cell.run_name, status, message, seconds)
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    executor.shutdown(wait=True)
