"""Where a suite's units of work run: in this process, in local processes, or as Ray tasks.

A *unit* is a list of cells that share a batch key (bench/batched.py), trained as one stacked
computation by `train_unit`; it writes each cell's record in the cell's run directory and returns
a `CellOutcome` per cell. The executors only decide where `train_unit` runs; what a cell computes
and records is the same under all of them:

    here     this process, one unit after another (`bench run --jobs 1`)
    process  a pool of N spawned local processes (`--jobs N`), cores // N torch threads each
    ray      one Ray task per unit (`--executor ray [--address HOST:PORT]`), asking Ray for
             --threads CPUs (default 1) and, with --device cuda, one GPU; without --address a
             local Ray instance is started for the command and stopped after it

One loop (`run_units`) drives all three: it keeps at most `slots` units in flight, shows the
suite's progress (cells done, running, failed; each cell's updates/s), and hands back the cells
that another process holds (bench/locks.py: a second `bench run` on the same runs directory).
Those are submitted again once everything else is done, one cell per unit, waiting for the
other process's lock; a cell it completed meanwhile is then reported, not trained again.

Faults under Ray. `train_unit` turns every failure of a cell's own (a bad spec, missing data, a
raised error) into a failed record and returns normally, and a diverged run is a record too: Ray
never retries those. A worker that dies (killed, out of memory, its node lost) fails the task
with a system error, which Ray retries (`max_retries`, RAY_RETRIES) on any node; the retried
task takes the run's lock again (the dead worker's lock died with it) and resumes from the last
checkpoint, so the record equals an uninterrupted run's up to wall times. A cancelled task
(`ray cancel`) is submitted again by this loop, within the same number of tries. A unit whose
tries are all spent gets failed records, like a dead local worker.

Data. Tasks carry specs and paths, never datasets: each worker process loads a dataset once
through the mirror and cache of its node (datasets.load, which lets one process of a node fetch
and verify a dataset while the others wait), and keeps it for the later tasks Ray gives it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UserError

EXECUTORS = ("local", "ray")
RAY_EXTRA = 'Ray is not installed: pip install -e ".[ray]" (the suite\'s ray extra)'
RAY_RETRIES = 3  # tries after the first, for a task whose worker died
# The environment a Ray worker on another node needs to find data as this process does.
FORWARDED_ENVIRONMENT = ("BENCH_DATA", "BENCH_DATA_MIRROR", "XDG_CACHE_HOME")

# Datasets already loaded by this process, by (name, split, data root): cells share them.
_DATA_CACHE: dict = {}


@dataclass(frozen=True)
class CellOutcome:
    """What became of one cell of a unit."""

    status: str                  # the record's status (complete, diverged, failed), or "held"
    message: str                 # the headline (test NLL...), the error, or who holds the cell
    out_dir: str
    seconds: float               # wall time of the unit that trained it
    updates_per_s: float | None = None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _load_data(spec, data_dir):
    key = (spec.dataset, spec.split, str(data_dir))
    if key not in _DATA_CACHE:
        import datasets

        try:
            _DATA_CACHE[key] = datasets.load(spec.dataset, spec.split, data_dir=data_dir)
        except Exception as error:  # noqa: BLE001 - every cell of this dataset fails alike
            _DATA_CACHE[key] = error
    if isinstance(_DATA_CACHE[key], Exception):
        raise _DATA_CACHE[key]
    return _DATA_CACHE[key]


def headline(record: dict) -> str:
    from bench.records import find_metric

    bound = record["config"].get("eval_bound", "elbo")
    metric = find_metric(record, "test", bound, record["config"]["spec"]["eval_samples"])
    if metric is None:
        return f"after {record['updates']} updates"
    text = f"test NLL {metric['nll']:.2f}" + (f" ({bound})" if bound != "elbo" else "")
    if metric.get("perplexity") is not None:
        text += f", perplexity {metric['perplexity']:.1f}"
    return text


def _outcome(record: dict, out_dir: str, seconds: float, prefix: str = "") -> CellOutcome:
    throughput = record.get("throughput") or {}
    message = record.get("error") if record["status"] == "failed" else headline(record)
    return CellOutcome(record["status"], prefix + str(message), out_dir, seconds,
                       throughput.get("updates_per_s"))


def train_unit(specs, out_dirs: list[str], data_dir, progress: bool, max_runs: int,
               wait: bool = False, threads: int | None = None) -> list[CellOutcome]:
    """Train cells that share a batch key, together; any exception becomes a failed record for
    each of them. A cell another process holds is left to it ("held"), or with `wait` waited
    for; a cell found complete once its lock is taken is reported, not trained again. One
    CellOutcome per cell, in the order given."""
    from bench import locks
    from bench.batched import train_runs_together
    from bench.records import read_record
    from bench.runs import record_is_complete, train_run, write_failed_record
    from bench.verbs.common import set_threads

    set_threads(threads)
    started = time.perf_counter()
    outcomes: dict[int, CellOutcome] = {}
    mine: list[int] = []
    try:
        for index, out_dir in enumerate(out_dirs):
            try:
                locks.acquire(Path(out_dir), wait=wait)
            except locks.RunLocked as held:
                outcomes[index] = CellOutcome("held", locks.describe(held.holder), out_dir, 0.0)
                continue
            # Another process finished it meanwhile.
            if record_is_complete(Path(out_dir), specs[index].updates):
                outcomes[index] = _outcome(read_record(Path(out_dir)), out_dir, 0.0,
                                           "trained by another process: ")
                locks.release(Path(out_dir))
            else:
                mine.append(index)
        if mine:
            chosen = [specs[i] for i in mine]
            directories = [Path(out_dirs[i]) for i in mine]
            try:
                data = _load_data(chosen[0], data_dir)
                if len(chosen) == 1:
                    records = [train_run(chosen[0], directories[0], data=data, progress=progress)]
                else:
                    records = train_runs_together(chosen, directories, data=data,
                                                  max_runs=max_runs, progress=progress)
            except Exception as error:  # noqa: BLE001 - one unit's failure must not stop the suite
                records = [write_failed_record(spec, directory, error)
                           for spec, directory in zip(chosen, directories, strict=True)]
            seconds = time.perf_counter() - started
            for index, record in zip(mine, records, strict=True):
                outcomes[index] = _outcome(record, out_dirs[index], seconds)
    finally:
        for index in mine:
            locks.release(Path(out_dirs[index]))
    return [outcomes[i] for i in range(len(out_dirs))]


# -- the executors ---------------------------------------------------------------------------------

class HereExecutor:
    """Units one after another in this process."""

    slots = 1
    threads = None  # torch threads a unit sets for itself (None: the process's are set already)

    def __init__(self, threads: int | None):
        from bench.verbs.common import set_threads

        set_threads(threads)

    def submit(self, call: Callable, *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(call(*args))
        except Exception as error:  # noqa: BLE001 - reported by the loop like a worker's
            future.set_exception(error)
        return future

    def retry(self, error: BaseException) -> bool:
        return False

    def close(self, cancel: bool = False) -> None:
        pass


class ProcessExecutor(HereExecutor):
    """Units in a pool of spawned local processes, `threads` torch threads each."""

    def __init__(self, jobs: int, threads: int):
        import multiprocessing

        from bench.verbs.common import set_threads

        self.slots = jobs
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
            initializer=set_threads, initargs=(threads,))

    def submit(self, call: Callable, *args) -> concurrent.futures.Future:
        return self.pool.submit(call, *args)

    def close(self, cancel: bool = False) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class RayExecutor(HereExecutor):
    """One Ray task per unit, on the cluster at `address` or on a local instance it starts."""

    def __init__(self, address: str | None, threads: int, device: str | None,
                 jobs: int | None, retries: int = RAY_RETRIES):
        try:
            import ray
        except ImportError:
            raise UserError(RAY_EXTRA) from None
        self.ray = ray
        self.threads = threads
        self.gpus = 1 if device and device.startswith("cuda") else 0
        self.retries = retries
        environment = {name: os.environ[name] for name in FORWARDED_ENVIRONMENT
                       if name in os.environ}
        options = {"runtime_env": {"env_vars": environment}, "log_to_driver": False,
                   "logging_level": "ERROR", "include_dashboard": False}
        self.started_here = not ray.is_initialized()
        if self.started_here:
            if address:
                _check_reachable(address)  # Ray itself would retry a wrong address for minutes
            try:
                if address:
                    ray.init(address=address, **options)
                else:  # "local": a new instance even where RAY_ADDRESS names a cluster
                    ray.init(address="local", num_cpus=available_cores(), **options)
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise UserError(f"cannot start or reach {where} ({error}); check --address "
                                f"(HOST:PORT of the head, as `ray start --head` prints it), and "
                                f"for a head started by `ray start` (token authentication): "
                                f"export RAY_AUTH_MODE=token") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = jobs or max(1, cpus // max(1, threads))
        self.remote = ray.remote(train_unit).options(
            num_cpus=threads, num_gpus=self.gpus, max_retries=retries, retry_exceptions=False)
        self.in_flight: list = []  # the tasks' ObjectRefs, to cancel them on Ctrl-C

    def submit(self, call: Callable, *args) -> concurrent.futures.Future:
        assert call is train_unit  # nothing else is shipped to the cluster
        reference = self.remote.remote(*args)
        self.in_flight.append(reference)
        return reference.future()

    def retry(self, error: BaseException) -> bool:
        """A cancelled task is submitted again (Ray retries only the ones whose worker died)."""
        return isinstance(error, self.ray.exceptions.TaskCancelledError)

    def close(self, cancel: bool = False) -> None:
        if cancel:  # the workers stop; their runs keep their last checkpoints
            for reference in self.in_flight:
                with contextlib.suppress(Exception):
                    self.ray.cancel(reference, force=True)
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()


def _check_reachable(address: str, seconds: float = 10) -> None:
    """A UserError at once if nothing listens at HOST:PORT."""
    import socket

    host, _, port = address.rpartition(":")
    if address.startswith(("ray://", "auto")) or not port.isdigit():
        return  # Ray's own forms of an address: Ray checks them
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=seconds).close()
    except OSError as error:
        raise UserError(f"no Ray head answers at {address} ({error.strerror or error}); start one "
                        f"with `ray start --head --port {port}` on that machine, or check "
                        f"--address") from None


# -- the loop --------------------------------------------------------------------------------------

class SuiteProgress:
    """One line per finished cell, and a bar over the suite's cells with what runs and failed."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.failed, self.running = total, 0, 0, 0
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="cells", unit="cell", dynamic_ncols=True, position=0)
            self._postfix()

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"running {self.running}, failed {self.failed}")

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def set_running(self, cells: int) -> None:
        self.running = cells
        self._postfix()

    def cell(self, name: str, outcome: CellOutcome) -> None:
        self.done += 1
        self.failed += outcome.status == "failed"
        rate = "" if not outcome.updates_per_s else f", {outcome.updates_per_s:,.0f} updates/s"
        self.write(f"[{self.done}/{self.total}] {name}: {outcome.status} ({outcome.message}) in "
                   f"{outcome.seconds:.0f} s{rate}")
        if self.bar is not None:
            self.bar.update(1)
        self._postfix()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _failed(unit, error: BaseException, seconds: float) -> list[CellOutcome]:
    """Failed records for a unit whose worker died every time (not for a cell another process
    has taken since: its lock says so)."""
    from bench import locks
    from bench.runs import write_failed_record

    outcomes = []
    for cell, out_dir in unit:
        message = f"{type(error).__name__}: {error}"
        try:
            with locks.locked([out_dir]):
                write_failed_record(cell.spec, Path(out_dir), error)
        except locks.RunLocked:
            message += " (its run is now held by another process; no record written)"
        outcomes.append(CellOutcome("failed", message, out_dir, seconds))
    return outcomes


def run_units(units: list[list], executor, data_dir, progress: bool, max_runs: int) -> None:
    """Train every unit ([(cell, out_dir)]) on `executor`, at most `executor.slots` at once; then
    the cells another process held, one by one, waiting for it."""
    total = sum(len(unit) for unit in units)
    bar = SuiteProgress(total, progress)
    queue = [(unit, False) for unit in units]
    deferred: list = []
    in_flight: dict = {}  # future -> (unit, wait, tries)
    started = time.perf_counter()
    # A worker's own bars would overwrite the suite's: only the one here shows them.
    worker_progress = progress and type(executor) is HereExecutor

    def launch(unit, wait: bool, tries: int = 0) -> None:
        future = executor.submit(train_unit, [cell.spec for cell, _ in unit],
                                 [d for _, d in unit], data_dir, worker_progress, max_runs, wait,
                                 executor.threads)
        in_flight[future] = (unit, wait, tries)

    try:
        while queue or in_flight or deferred:
            if not queue and not in_flight:  # everything else done: wait for the held cells
                queue, deferred = [([cell], True) for cell in deferred], []
            while queue and len(in_flight) < executor.slots:
                launch(*queue.pop(0))
                bar.set_running(sum(len(u) for u, _, _ in in_flight.values()))
            finished, _ = concurrent.futures.wait(list(in_flight),
                                                  return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                unit, wait, tries = in_flight.pop(future)
                try:
                    outcomes = future.result()
                except Exception as error:  # noqa: BLE001 - a worker that died (e.g. out of memory)
                    if executor.retry(error) and tries < RAY_RETRIES:
                        bar.write(f"{', '.join(c.run_name for c, _ in unit)}: {error}; "
                                  f"submitted again")
                        launch(unit, wait, tries + 1)
                        continue
                    outcomes = _failed(unit, error, time.perf_counter() - started)
                for (cell, out_dir), outcome in zip(unit, outcomes, strict=True):
                    if outcome.status == "held":
                        bar.write(f"{cell.run_name}: held by another process ({outcome.message}); "
                                  f"waiting for it once the other cells are done")
                        deferred.append((cell, out_dir))
                    else:
                        bar.cell(cell.run_name, outcome)
            bar.set_running(sum(len(u) for u, _, _ in in_flight.values()))
    except BaseException:
        for future in in_flight:
            future.cancel()
        executor.close(cancel=True)
        raise
    finally:
        bar.close()
    executor.close()
