"""One process per run directory (bench/locks.py): a second `bench train` on the same --out is
told who holds it, two `bench run` commands on one runs directory train every cell once, a dead
holder's lock blocks nothing; and the files a run writes are as readable as the umask says."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench import locks
from bench.runs import train_run
from bench.specs import RunSpec

REPO = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "synthetic", "--model", "sbn:4-8", "--set", "eval_examples=100",
        "--set", "test_examples=100", "--no-progress", "--threads", "1"]


def bench(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, **kwargs)


def start_bench(*args, stdout: Path | None = None) -> subprocess.Popen:
    """`bench ARGS` in the background; its standard output piped, or written to `stdout` as it
    is printed."""
    if stdout is None:
        return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with stdout.open("w") as file:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, text=True,
                                stdout=file, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_until(condition, seconds: float = 120, what: str = "condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


HOLDER = textwrap.dedent("""
    import sys, time
    from bench import locks
    for directory in sys.argv[1:]:
        locks.acquire(directory)
    print("held", flush=True)
    time.sleep(600)
""")


def hold_in_another_process(*directories: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, *map(str, directories)], cwd=REPO,
                              text=True, stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_lock_is_reentrant_here_exclusive_elsewhere_and_dies_with_its_holder(tmp_path):
    run = tmp_path / "run"
    with locks.locked([run]), locks.locked([run]):  # re-entrant within one process
        assert not locks.is_locked(run)  # (our own lock is not "held by another process")
    holder = hold_in_another_process(run)
    try:
        assert locks.is_locked(run)
        with pytest.raises(locks.RunLocked) as refused:
            locks.acquire(run)
        assert refused.value.holder["pid"] == holder.pid
        assert f"pid {holder.pid} on host" in str(refused.value)
    finally:
        holder.kill()
        holder.wait()
    # The lock file is still there, with the dead holder's name in it: it blocks nothing.
    assert (run / locks.LOCK_FILE).exists()
    assert not locks.is_locked(run)
    with locks.locked([run]):
        assert json.loads((run / locks.LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_second_train_on_the_same_out_is_refused_and_resumes_once_the_first_is_gone(tmp_path):
    out = tmp_path / "run"
    command = ["train", *TINY, "--updates", "5000", "--set", "eval_interval=250", "--out",
               str(out)]
    first = start_bench(*command)
    try:
        wait_until(lambda: (out / "checkpoint.pt").exists() and locks.is_locked(out), 120,
                   "the first train to hold the run and write a checkpoint")
        second = bench(*command)
        assert second.returncode == 2, second.stdout + second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr
        assert f"is being trained by another process (pid {first.pid} on host" in lines[0]
        assert "another --out" in lines[0]
        assert first.poll() is None  # the first one trains on, untouched
    finally:
        first.kill()  # as if its machine died (SIGKILL): the lock goes with it
        first.wait()
    assert not (out / "record.json").exists()  # never a half-written record
    resumed = bench(*command)
    assert resumed.returncode == 0, resumed.stderr
    # ...and it resumed from the dead one's checkpoint: the record of an uninterrupted run
    straight = bench(*command[:-1], str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    assert comparable(out) == comparable(tmp_path / "straight")


def comparable(run: Path) -> dict:
    """What a record holds that does not depend on interruptions or timings."""
    record = json.loads((run / "record.json").read_text())
    return {"status": record["status"], "updates": record["updates"],
            "best_update": record["best_update"], "metrics": record["metrics"],
            "config": record["config"], "curve": (run / "curve.csv").read_text()}


def test_eval_refuses_a_run_that_another_process_holds(tmp_path):
    out = tmp_path / "run"
    assert bench("train", *TINY, "--updates", "20", "--set", "eval_interval=10",
                 "--out", str(out)).returncode == 0
    record = (out / "record.json").read_text()
    holder = hold_in_another_process(out)
    try:
        result = bench("eval", str(out), "--k", "5", "--no-progress")
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2 and f"pid {holder.pid}" in result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "record.json").read_text() == record  # untouched


SUITE = """
[suite]
title = "Two commands, one runs directory"
default_budget = "tiny"

[defaults]
dataset = "synthetic"
model = "sbn:4-8"

[[cells]]
algorithm = ["nvil", "wake-sleep", "reinforce", "rws"]

[table]
metric = "nll"
rows = "model"
columns = "algorithm"

[budgets.tiny]
updates = 2000
eval_interval = 500
eval_examples = 100
test_examples = 100
"""


def test_two_concurrent_runs_on_one_runs_directory_train_every_cell_once(tmp_path):
    suite = tmp_path / "two.toml"
    suite.write_text(SUITE)
    command = ["run", str(suite), "--runs-dir", str(tmp_path / "runs"), "--results-dir",
               str(tmp_path / "results"), "--jobs", "1", "--batch", "1", "--threads", "1",
               "--no-progress"]
    cells = ["synthetic-sbn_4-8-nvil-s0", "synthetic-sbn_4-8-wake-sleep-s0",
             "synthetic-sbn_4-8-reinforce-s0", "synthetic-sbn_4-8-rws-s0"]
    # A third process holds every cell until both commands have found them held, so that the two
    # really run at once however their start-up times differ; then both race for each cell.
    holder = hold_in_another_process(*(tmp_path / "runs" / "two" / "tiny" / c for c in cells))
    logs = [tmp_path / "first.out", tmp_path / "second.out"]
    commands = [start_bench(*command, stdout=log) for log in logs]
    try:
        wait_until(lambda: all(log.read_text().count("held by another process") == 4
                               for log in logs), 120, "both commands to find every cell held")
    finally:
        holder.kill()
        holder.wait()
    outputs = [process.communicate(timeout=600) for process in commands]
    for process, log, (_, err) in zip(commands, logs, outputs, strict=True):
        assert process.returncode == 0, log.read_text() + err
    printed = "\n".join(log.read_text() for log in logs)
    for cell in cells:
        reported = re.findall(rf"^\[\d/4\] {re.escape(cell)}: complete \((.*)\) in", printed,
                              re.MULTILINE)
        trained = [line for line in reported if not line.startswith("trained by another")]
        # each command reports every cell; exactly one of them trained it
        assert len(reported) == 2 and len(trained) == 1, printed
        record = json.loads((tmp_path / "runs" / "two" / "tiny" / cell / "record.json").read_text())
        assert record["status"] == "complete" and record["updates"] == 2000


@pytest.mark.parametrize("umask", [0o002, 0o077])
def test_run_files_have_the_mode_the_umask_gives(tmp_path, umask):
    spec = RunSpec(dataset="synthetic", model="sbn:4-8", updates=20, eval_interval=10,
                   eval_examples=50, test_examples=50)
    previous = os.umask(umask)
    try:
        train_run(spec, tmp_path, progress=False)
    finally:
        os.umask(previous)
    for name in ("record.json", "curve.csv", "checkpoint.pt", "best.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


LOAD = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import datasets
    root = Path(sys.argv[1])
    datasets.load("20news", data_dir=root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and ".locks" not in p.parts)
    print({str(p.relative_to(root)): os.stat(p).st_ino for p in files})
""")


def test_processes_loading_one_dataset_at_once_fetch_and_cache_it_once(tmp_path, data_mirror):
    """Workers of one node (local processes, Ray tasks) share its data root: the first one fetches,
    verifies and caches the dataset while the others wait, and then find the very same files (a
    second copy would have replaced them: another inode)."""
    root = tmp_path / "data"
    loaders = [subprocess.Popen([sys.executable, "-c", LOAD, str(root)], cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(3)]
    seen = []
    for loader in loaders:
        out, err = loader.communicate(timeout=300)
        assert loader.returncode == 0, err
        seen.append(out.strip())
    assert seen[0] == seen[1] == seen[2]
    names = eval(seen[0])  # noqa: S307 - our own printed dict
    assert any(name.startswith("processed/") for name in names) and len(names) >= 4
