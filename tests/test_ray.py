"""`bench run --executor ray` on a real Ray instance on this machine's loopback addresses: the
smoke suites give the records the local executor gives; a worker killed mid-cell is retried and
resumes to the uninterrupted record; a diverged cell is recorded as such, not retried; a missing
Ray or a bad option is a one-line error. CI installs the `ray` extra (.ci/run), so these run
there; without Ray they skip."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench import locks

REPO = Path(__file__).resolve().parent.parent

# Ray on loopback only (what it does on macOS and Windows; on Linux it would pick the machine's
# address), and the token authentication that `ray start` turns on, as README.md says.
RAY_ENVIRONMENT = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}

# A head for the tests: a local Ray instance with 2 CPUs, stopped when its stdin closes.
HEAD = textwrap.dedent("""
    import sys, ray
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    print(ray.get_runtime_context().gcs_address, flush=True)
    sys.stdin.read()
    ray.shutdown()
""")


def environment() -> dict:
    return {**os.environ, **RAY_ENVIRONMENT}


def bench(*args, env=None):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=env or environment())


needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="the ray extra is not installed (pip install -e '.[ray]')")


@pytest.fixture(scope="module")
def ray_head():
    head = subprocess.Popen([sys.executable, "-c", HEAD], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={k: v for k, v in environment().items() if k != "RAY_AUTH_MODE"})
    address = head.stdout.readline().strip()
    assert address.startswith("127.0.0.1:"), address
    yield address
    head.stdin.close()
    try:
        head.wait(60)
    except subprocess.TimeoutExpired:
        head.kill()


def comparable(run: Path) -> dict:
    """A record without what depends on where and when it ran (times, throughput)."""
    record = json.loads((run / "record.json").read_text())
    kept = {key: record.get(key) for key in ("status", "run_name", "seed", "updates",
                                             "best_update", "stop_reason", "metrics", "config")}
    return {**kept, "curve": (run / "curve.csv").read_text() if (run / "curve.csv").exists()
            else None}


def suite_command(suite: str, root: Path, *extra: str) -> list[str]:
    return ["run", suite, "--runs-dir", str(root / "runs"), "--results-dir",
            str(root / "results"), "--no-progress", "--threads", "1", *extra]


@needs_ray
@pytest.mark.parametrize("suite", ["quick", "figure1"])
def test_the_smoke_suites_on_ray_give_the_local_records(ray_head, tmp_path, suite, data_mirror):
    local = bench(*suite_command(suite, tmp_path / "local", "--budget", "smoke"))
    assert local.returncode == 0, local.stdout + local.stderr
    on_ray = bench(*suite_command(suite, tmp_path / "ray", "--budget", "smoke",
                                  "--executor", "ray", "--address", ray_head))
    assert on_ray.returncode == 0, on_ray.stdout + on_ray.stderr
    assert "as Ray tasks" in on_ray.stdout
    runs = sorted((tmp_path / "local" / "runs" / suite / "smoke").iterdir())
    assert runs and [r.name for r in runs] == \
        sorted(r.name for r in (tmp_path / "ray" / "runs" / suite / "smoke").iterdir())
    for run in runs:
        assert comparable(run) == comparable(tmp_path / "ray" / "runs" / suite / "smoke" /
                                             run.name), run.name
    table = f"results/{suite}/smoke/table.csv"
    assert table_rows(tmp_path / "local" / table) == table_rows(tmp_path / "ray" / table)


def table_rows(path: Path) -> list[dict]:
    """A report's table.csv without the command that made it (the runs dirs differ)."""
    with open(path, newline="") as stream:
        return [{k: v for k, v in row.items() if k != "command"} for row in csv.DictReader(stream)]


FAULTS = """
[suite]
title = "Faults"
default_budget = "tiny"

[defaults]
dataset = "synthetic"
model = "sbn:4-8"

[[cells]]
algorithm = "nvil"

[[cells]]     # overflows float32 at once: the bound turns NaN, the run is recorded as diverged
algorithm = "wake-sleep"
optimizer = "sgd"
learning_rate = 1e38

[table]
metric = "nll"
rows = "model"
columns = "algorithm"

[budgets.tiny]
updates = 5000
eval_interval = 250
eval_examples = 100
test_examples = 100
"""


@needs_ray
def test_a_killed_worker_is_retried_and_resumes_to_the_uninterrupted_record(tmp_path):
    suite = tmp_path / "faults.toml"
    suite.write_text(FAULTS)
    # Without --address: the command starts (and stops) a local Ray instance of its own.
    command = suite_command(str(suite), tmp_path / "ray", "--executor", "ray")
    process = subprocess.Popen([sys.executable, "-m", "bench", *command], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment())
    run = tmp_path / "ray" / "runs" / "faults" / "tiny" / "synthetic-sbn_4-8-nvil-s0"
    deadline = time.monotonic() + 240
    while not ((run / "checkpoint.pt").exists() and locks.is_locked(run)):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    worker = locks.holder_of(run)["pid"]
    assert worker != process.pid  # a Ray worker trains it, not the command
    os.kill(worker, 9)
    assert not (run / "record.json").exists()  # killed mid-cell
    out, err = process.communicate(timeout=600)
    # 1: the diverged cell is not complete; the killed one is
    assert process.returncode == 1, out + err
    assert locks.holder_of(run)["pid"] != worker  # another worker took it up
    local = bench(*suite_command(str(suite), tmp_path / "local"))
    assert local.returncode == 1, local.stdout + local.stderr
    assert comparable(run) == comparable(
        tmp_path / "local" / "runs" / "faults" / "tiny" / "synthetic-sbn_4-8-nvil-s0")
    diverged = tmp_path / "ray" / "runs" / "faults" / "tiny"
    [name] = [p.name for p in diverged.iterdir() if "wake-sleep" in p.name]
    record = json.loads((diverged / name / "record.json").read_text())
    assert record["status"] == "diverged"
    assert f"{name}: diverged" in out and "not complete: 1 diverged" in out
    assert "submitted again" not in out  # a cell's own failure is never retried


MISSING_RAY = "import sys; sys.modules['ray'] = None; from bench.cli import main; sys.exit(main())"


def test_without_ray_the_ray_executor_is_a_one_line_error_naming_the_extra(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", MISSING_RAY, *suite_command("quick", tmp_path, "--budget", "smoke",
                                                           "--executor", "ray")],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: Ray is not installed: pip install -e \".[ray]\" (the suite's ray extra)"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("options", "message"), [
    (["--executor", "slurm"], "unknown executor 'slurm'; valid executors: local, ray"),
    (["--address", "127.0.0.1:6379"], "--address names a Ray cluster's head: it goes with "
                                      "--executor ray"),
])
def test_bad_executor_options_are_one_line_errors(tmp_path, options, message):
    result = bench(*suite_command("quick", tmp_path, "--budget", "smoke", *options))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {message}"]


@needs_ray
def test_an_address_where_no_head_listens_is_a_one_line_error_at_once(tmp_path):
    port = free_port()  # nothing listens there
    result = bench(*suite_command("quick", tmp_path, "--budget", "smoke", "--executor", "ray",
                                  "--address", f"127.0.0.1:{port}"))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: no Ray head answers at 127.0.0.1:{port} (")
    assert "ray start --head" in line


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
