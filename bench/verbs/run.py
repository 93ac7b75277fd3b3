"""`python -m bench run SUITE`: train every cell of a suite, then write and print its report.

Cells whose record is complete (or diverged) are skipped, so an interrupted suite continues where
it stopped, and a cell interrupted mid-training resumes from its checkpoint. A cell that raises
gets a failed record and the suite goes on. `--jobs N` trains N cells at once in separate
processes, each with cores // N torch threads (or `--threads`).
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from bench.verbs.train import add_run_options

DEFAULT_RESULTS_DIR = Path("results")
DEFAULT_RUNS_DIR = Path("runs")

# Datasets already loaded by this process, by (name, split): cells of a suite share them.
_DATA_CACHE: dict = {}


def add_suite_options(parser) -> None:
    parser.add_argument("suite", help="suite name (a file in bench/suites/), e.g. table1 or quick")
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
    parser.add_argument("--jobs", type=int, default=1,
                        help="cells trained at once, in separate processes (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per cell (default: cores // jobs). At minibatches of "
                             "20 one thread is often as fast, and much faster on a busy machine")
    add_run_options(parser)
    parser.set_defaults(func=run)


def command_line(args) -> str:
    """The command, written out with every option that differs from its default."""
    parts = ["python", "-m", "bench", "run", args.suite, "--budget", args.budget,
             "--seeds", str(args.seeds)]
    if args.jobs != 1:
        parts += ["--jobs", str(args.jobs)]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
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


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def train_cell(spec, out_dir: str, data_dir, progress: bool) -> tuple[str, str, str, float]:
    """Train one cell; any exception becomes a failed record. (status, message, run dir, seconds)."""
    from bench.runs import train_run, write_failed_record

    started = time.perf_counter()
    try:
        key = (spec.dataset, spec.split)
        if key not in _DATA_CACHE:
            import datasets

            try:
                _DATA_CACHE[key] = datasets.load(spec.dataset, spec.split, data_dir=data_dir)
            except Exception as error:  # noqa: BLE001 - every cell of this dataset fails alike
                _DATA_CACHE[key] = error
        if isinstance(_DATA_CACHE[key], Exception):
            raise _DATA_CACHE[key]
        record = train_run(spec, Path(out_dir), data=_DATA_CACHE[key], progress=progress)
        status, message = record["status"], _headline(record)
    except Exception as error:  # noqa: BLE001 - any failure of one cell must not stop the suite
        write_failed_record(spec, Path(out_dir), error)
        status, message = "failed", f"{type(error).__name__}: {error}"
    return status, message, out_dir, time.perf_counter() - started


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
    from bench.reporting import METRIC_WORDS, note_text, run_dir, write_report
    from bench.runs import record_is_complete

    suite = suites.load(args.suite)
    budget = suite.budget(args.budget)
    args.budget = budget.name
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    overrides = {"device": args.device} if args.device else None
    cells = suites.expand(suite, budget.name, args.seeds, overrides)
    runs_dir = Path(args.runs_dir)
    pending = [c for c in cells if not record_is_complete(run_dir(runs_dir, suite, budget.name, c))]
    progress = not args.no_progress
    print(f"suite {suite.name}, budget {budget.name} ({budget.describe()}), seeds {args.seeds}: "
          f"{len(cells)} cells, {len(cells) - len(pending)} already done, {len(pending)} to run"
          + (f" in {args.jobs} processes" if args.jobs > 1 and len(pending) > 1 else ""),
          flush=True)
    started = time.perf_counter()
    if pending:
        work = [(c, str(run_dir(runs_dir, suite, budget.name, c))) for c in pending]
        threads = args.threads or max(1, available_cores() // args.jobs)
        if args.jobs == 1 or len(pending) == 1:
            _init_worker(threads)
            _run_here(work, args.data_dir, progress)
        else:
            _run_parallel(work, args.data_dir, progress, min(args.jobs, len(pending)), threads)
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


def _run_here(work, data_dir, progress: bool) -> None:
    bar = _bar(len(work), progress)
    try:
        for done, (cell, out_dir) in enumerate(work, 1):
            status, message, _, seconds = train_cell(cell.spec, out_dir, data_dir, progress)
            _report_cell(bar, done, len(work), cell.run_name, status, message, seconds)
    finally:
        if bar is not None:
            bar.close()


def _run_parallel(work, data_dir, progress: bool, jobs: int, threads: int) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from bench.runs import write_failed_record

    bar = _bar(len(work), progress)
    # Per-run bars of parallel workers would overwrite each other: only the bar over cells.
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(threads,))
    try:
        futures = {executor.submit(train_cell, cell.spec, out_dir, data_dir, False): (cell, out_dir)
                   for cell, out_dir in work}
        started = time.perf_counter()
        for done, future in enumerate(as_completed(futures), 1):
            cell, out_dir = futures[future]
            try:
                status, message, _, seconds = future.result()
            except Exception as error:  # noqa: BLE001 - a worker that died (e.g. out of memory)
                write_failed_record(cell.spec, Path(out_dir), error)
                status, message = "failed", f"{type(error).__name__}: {error}"
                seconds = time.perf_counter() - started
            _report_cell(bar, done, len(work), cell.run_name, status, message, seconds)
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    executor.shutdown(wait=True)
