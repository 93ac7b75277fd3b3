"""`python -m bench perf`: a quick run end to end, its mistakes, the update it measures, the ratio
history and the CI gate.

The quick run is a check that every benchmark runs and is reported (JSON with every registered
algorithm on every benchmark architecture, each against its own yardstick, positive finite ratios,
device and threads, and the files written, the history among them), not a measurement: its
figures are not checked. The gate is tested on synthetic ratios. The throughput benchmarks
themselves are tests/perf, run by `tox -e perf`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import algorithms
from bench.perf import benchmarks, tracking
from bench.training import RunGroup, build

# short-run's chains make hundreds of tiny kernel calls per update: one thread (conftest)
pytestmark = pytest.mark.usefixtures("single_thread")

REPOSITORY = Path(__file__).resolve().parent.parent


def run_bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    # Not under `nice`: at the lowest priority a busy machine can starve it past any timeout.
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPOSITORY,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def test_quick_run_reports_every_algorithm_and_model_against_its_yardstick(tmp_path):
    out = tmp_path / "perf"
    # One thread: on a shared 2-core machine two threads of a loaded process mostly wait.
    result = run_bench("perf", "--quick", "--repeats", "2", "--threads", "1", "--json", "--record",
                       "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --no-progress
    payload = json.loads(result.stdout)

    yardsticks = {e["yardstick"]: e for e in payload["yardsticks"]}
    assert set(yardsticks) == {a.name for a in benchmarks.ARCHITECTURES}
    assert all(e["kind"] == "yardstick" for e in yardsticks.values())
    updates = {(e["algorithm"], e["yardstick"]): e for e in payload["benchmarks"]
               if e["kind"] == "update" and "runs" not in e and "compile_seconds" not in e}
    # beside them, NVIL on sbn:200 with its step through torch.compile, and its compile time
    (compiled,) = [e for e in payload["benchmarks"] if "compile_seconds" in e]
    assert compiled["name"] == "update nvil sbn:200 (torch.compile)"
    assert compiled["engine"] == "stacked (torch.compile)" and compiled["compile_seconds"] > 0
    supported = {(name, a.name) for name in algorithms.REGISTRY for a in benchmarks.ARCHITECTURES
                 if benchmarks.supports(name, a)}
    assert set(updates) == supported
    # a factorial-only estimator is not benchmarked with an autoregressive inference network
    assert ("arm", "sbn:200 (inference=autoregressive)") not in supported
    assert updates[("nvil", "sbn:200")]["engine"] == "stacked"
    assert updates[("nvil", "fdarn:200")]["engine"] == "stacked"
    assert updates[("nvil", "sbn:200 (inference=autoregressive)")]["inference"] == "autoregressive"
    # throughput per model evaluation: wake-sleep evaluates the model twice per example
    assert updates[("nvil", "sbn:200")]["model_evaluations_per_example"] == 1.0
    assert updates[("wake-sleep", "sbn:200")]["model_evaluations_per_example"] == 2.0
    for entry in updates.values():
        assert entry["model_evaluations_per_s"] == pytest.approx(
            entry["model_evaluations_per_example"] * entry["examples_per_s"])
    batched = [e for e in payload["benchmarks"] if e["kind"] == "update" and "runs" in e]
    # every registered estimator, 16 runs, on every architecture
    assert {(e["algorithm"], e["yardstick"]) for e in batched} == supported
    assert all(e["runs"] == 16 for e in batched)
    ceilings = [e for e in payload["benchmarks"] if e["kind"] == "ceiling"]
    assert sorted((e["yardstick"], e["runs"]) for e in ceilings) == \
        sorted((name, runs) for name in yardsticks for runs in (1, 16))
    (evaluation,) = [e for e in payload["benchmarks"] if e["kind"] == "evaluation"]
    assert evaluation["k"] == 5000 and evaluation["model"] == "sbn:200"
    assert evaluation["yardstick"] == "sbn:200"
    assert evaluation["updates_per_s"] is None
    assert math.isfinite(evaluation["projected_mnist_test_seconds"])
    assert evaluation["projected_mnist_test_seconds"] > 0

    for entry in [*payload["yardsticks"], *payload["benchmarks"]]:
        assert entry["name"] and entry["yardstick"] in yardsticks
        for key in ("examples_per_s", "ratio_to_yardstick"):
            assert math.isfinite(entry[key]) and entry[key] > 0, (entry["name"], key)
        if entry["kind"] != "evaluation":
            assert math.isfinite(entry["updates_per_s"]) and entry["updates_per_s"] > 0
            runs = entry.get("runs", 1)
            assert entry["examples_per_s"] == pytest.approx(20 * runs * entry["updates_per_s"])
    assert payload["threads"] >= 1 and payload["device"].startswith("cpu")
    assert payload["code"]["commit"] is None or len(payload["code"]["commit"]) == 40
    assert "random" in payload["data"]

    written = sorted(p.name for p in out.iterdir())
    assert written == ["history.csv", "history.png", "perf.json", "perf.md"]  # no temporaries
    assert json.loads((out / "perf.json").read_text())["benchmarks"] == payload["benchmarks"]
    table = (out / "perf.md").read_text()
    assert "× yardstick" in table and "update wake-sleep doc-sbn:50 | doc-sbn:50 |" in table
    assert "](history.png)" in table
    history = tracking.read_history(out / "history.csv")
    assert [row["benchmark"] for row in history] == [e["name"] for e in payload["benchmarks"]]
    assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--threads", "many"], "--threads"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--check", "--write-baseline"], "not allowed with argument"),
    (["--check", "--quick"], "--quick and --check do not go together"),
    (["--check", "--keep-lower"], "--keep-lower goes with --write-baseline"),
    (["--check", "--baseline", "no-such-baseline.json"], "no ratio baseline at"),
])
def test_a_bad_option_is_one_line_and_exit_status_2(args, message, tmp_path):
    result = run_bench("perf", *args, "--out", str(tmp_path / "perf"))
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "perf").exists()


@pytest.mark.parametrize("algorithm", sorted(algorithms.REGISTRY))
@pytest.mark.parametrize("model", ["sbn:7-5", "doc-sbn:4"])
def test_measured_update_is_the_trainers_update(algorithm, model, tmp_path):
    """The benchmarks repeat the body of the training loop: N of their updates must leave exactly
    the parameters, statistics and data position that RunGroup.train leaves after N."""
    if not benchmarks.supports(algorithm, model):
        pytest.skip(f"{algorithm} does not handle {model}")
    updates = 13  # random data of 200 rows: 10 minibatches an epoch, so this crosses an epoch
    data = benchmarks.random_data(benchmarks.data_kind(model), rows=200)
    spec = benchmarks.training_spec(algorithm, model)
    spec = spec.__class__(**{**spec.to_dict(), "updates": updates, "eval_interval": 1000,
                             "eval_examples": 2})

    trained = RunGroup(build(spec, data=data), [tmp_path / "run"], progress=False)
    trained.train()

    update = benchmarks.make_training_update([spec], data)
    (measured,) = update.handles
    for _ in range(updates):
        update.step()

    expected, actual = trained.algorithm.state_dict(), measured.algorithm.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert (measured.runs[0].state.epoch, measured.runs[0].state.position) == \
        (trained.runs[0].state.epoch, trained.runs[0].state.position)
    assert not (Path.cwd() / "unused-by-benchmarks").exists()


def test_the_ceiling_does_the_updates_products_and_changes_no_parameter():
    """The ceiling benchmark does the forward product and the weight update of every weight matrix
    of the family's update, at a rate too small to change float32 weights: repeated calls measure
    the same work on the same numbers."""
    ceiling = benchmarks.matrix_products_benchmark(2, "doc-fdarn:50")
    products = ceiling.step
    shapes = [(c, h) for _, c, h in products.products]
    assert (2000, 50) in shapes and (50, 2000) in shapes and (50, 50) in shapes  # Q, P, prior U
    assert [tuple(w.shape) for w in products.weights] == [(2, c, h) for c, h in shapes]
    before = [w.clone() for w in products.weights]
    for _ in range(3):
        ceiling.step()
    assert all(torch.equal(b, a) for b, a in zip(before, products.weights, strict=True))
    assert ceiling.examples_per_call == 2 * benchmarks.BATCH_SIZE
    # The same products with a rate of 1 do change every weight matrix: the updates are real.
    products.RATE = 1.0
    ceiling.step()
    assert not any(torch.equal(b, a) for b, a in zip(before, products.weights, strict=True))


@pytest.mark.parametrize("arch", benchmarks.ARCHITECTURES, ids=lambda a: a.name)
def test_update_products_follow_the_architecture(arch):
    products = benchmarks.update_products(arch)
    spec = arch.spec
    layers = len(spec.layers)
    within = layers * (arch.inference == "autoregressive") + (spec.family.endswith("fdarn"))
    scales = spec.latent_kinds.count("gaussian")  # a Gaussian Q's log sigma head per layer
    # Q and P per layer (P's top layer has only a prior), two per baseline, within-layer weights.
    assert len(products) == layers + layers + 2 * layers + within + scales
    assert benchmarks.matrix_products_benchmark(1, arch).details["products"] == len(products)


@pytest.mark.parametrize("arch", benchmarks.ARCHITECTURES, ids=lambda a: a.name)
def test_every_yardstick_trains(arch):
    """Each family's yardstick is a working NVIL update: finite bounds, and its parameters move."""
    data = benchmarks.random_data(arch.data_kind, rows=60)
    yardstick = benchmarks.yardstick_benchmark(arch, data=data)
    assert yardstick.yardstick == arch.name and arch.name in yardstick.name
    bounds = [yardstick.step() for _ in range(4)]  # crosses an epoch of 3 minibatches
    assert all(math.isfinite(b) for b in bounds)


# -- the gate, the history and its plot, on synthetic numbers --------------------------------------

def test_the_gate_fails_a_ratio_30_percent_below_the_baseline_and_passes_10_percent():
    baseline = {"update nvil sbn:200": 2.0, "update nvil fdarn:200": 0.8,
                "ceiling: matrix products only, 1 run nvil sbn:200": 6.0,
                "update nvil sbn:200 (torch.compile)": 1.2}
    run = {"update nvil sbn:200": 2.0 * 0.7,           # 30% below: fails
           "update nvil fdarn:200": 0.8 * 0.9,         # 10% below: passes
           "ceiling: matrix products only, 1 run nvil sbn:200": 6.0 * 0.5,  # not gated
           "update nvil sbn:200 (torch.compile)": 0.6,  # the compiler's experiment: not gated
           "update nvil doc-fdarn:50": 0.1}            # not in the baseline: not gated
    rows = tracking.gate(run, baseline)
    assert [row.benchmark for row in tracking.gate_failures(rows)] == ["update nvil sbn:200"]
    verdicts = {row.benchmark: row.verdict for row in rows}
    assert verdicts == {"update nvil sbn:200": "SLOWER", "update nvil fdarn:200": "ok",
                        "ceiling: matrix products only, 1 run nvil sbn:200": "not gated",
                        "update nvil sbn:200 (torch.compile)": "not gated",
                        "update nvil doc-fdarn:50": "new (not in the baseline)"}
    assert rows[0].change == pytest.approx(-0.3)
    assert not tracking.gate_failures(tracking.gate({"update nvil sbn:200": 1.8}, baseline))
    assert "SLOWER" in tracking.gate_report(rows)
    # A benchmark of the baseline that this run did not measure is reported, not failed.
    assert tracking.gate({}, baseline)[0].verdict == "not measured"


def test_a_16_run_benchmark_fails_only_if_slower_against_its_products_ceiling_too():
    """Memory bandwidth shared with a neighbour slows 16 runs' products and the ceiling that makes
    the same products alike: that is the machine. Slower against the yardstick with the ceiling
    unchanged is the suite's update."""
    batched, ceiling = ("update 16 runs batched: nvil sbn:200",
                        "ceiling: matrix products only, 16 runs nvil sbn:200")
    baseline = {batched: 1.6, ceiling: 3.0}
    pairs = {batched: ceiling}
    starved = tracking.gate({batched: 1.6 * 0.6, ceiling: 3.0 * 0.65}, baseline, ceilings=pairs)
    assert not tracking.gate_failures(starved)
    assert starved[0].change == pytest.approx(-0.4)
    assert starved[0].change_against_ceiling == pytest.approx(0.6 / 0.65 - 1)
    assert starved[0].verdict.startswith("ok (its products ceiling slowed")
    slower = tracking.gate({batched: 1.6 * 0.6, ceiling: 3.0}, baseline, ceilings=pairs)
    assert [row.benchmark for row in tracking.gate_failures(slower)] == [batched]
    # both criteria must fail: slower against the ceiling alone (a faster machine's products) is
    # not a failure either
    faster_products = tracking.gate({batched: 1.6, ceiling: 3.0 * 1.5}, baseline, ceilings=pairs)
    assert not tracking.gate_failures(faster_products)
    # without the pairing, the yardstick alone decides, as for every other benchmark
    assert tracking.gate_failures(tracking.gate({batched: 1.6 * 0.6, ceiling: 3.0 * 0.65},
                                                baseline))
    assert "vs ceiling" in tracking.gate_report(starved)


def synthetic_result(commit: str, started: str, scale: float) -> dict:
    entries = [{"name": name, "kind": kind, "yardstick": yardstick, "ratio_to_yardstick": ratio}
               for name, kind, yardstick, ratio in (
                   ("update nvil sbn:200", "update", "sbn:200", 1.8 * scale),
                   ("update nvil doc-sbn:50", "update", "doc-sbn:50", 0.75 * scale),
                   ("iw bound K=5000 sbn:200", "evaluation", "sbn:200", 0.005 * scale))]
    return {"code": {"commit": commit, "dirty": False}, "started": started, "threads": 2,
            "device": "cpu (x86_64)", "machine": "vm: test, 2 cpus", "benchmarks": entries,
            "command": "python -m bench perf", "cpu_per_wall": 1.9,
            "settings": {"repeats": 3, "seconds": 0.25, "threads": 2}}


def test_history_rows_are_written_with_a_header_then_appended(tmp_path):
    path = tmp_path / "perf" / "history.csv"
    tracking.append_history(path, tracking.history_rows(
        synthetic_result("a" * 40, "2026-12-01T00:00:00+00:00", 1.0)))
    tracking.append_history(path, tracking.history_rows(
        synthetic_result("b" * 40, "2026-12-02T00:00:00+00:00", 1.1)))
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(tracking.HISTORY_FIELDS)
    assert len(lines) == 1 + 3 + 3  # one header, then one row per benchmark and run
    rows = tracking.read_history(path)
    assert [row["commit"][0] for row in rows] == ["a"] * 3 + ["b"] * 3
    assert rows[0]["benchmark"] == "update nvil sbn:200" and float(rows[0]["ratio"]) == 1.8
    assert float(rows[3]["ratio"]) == pytest.approx(1.98)
    assert {row["threads"] for row in rows} == {"2"} and rows[0]["machine"] == "vm: test, 2 cpus"


def test_the_history_plot_is_written(tmp_path):
    history = tmp_path / "history.csv"
    for day, scale in ((1, 1.0), (2, 0.9), (3, 1.2)):
        tracking.append_history(history, tracking.history_rows(
            synthetic_result(f"{day}" * 40, f"2026-12-0{day}T00:00:00+00:00", scale)))
    plot = tracking.plot_history(history, tmp_path / "history.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv", "history.png"]


def test_the_baseline_holds_every_ratio_and_how_to_regenerate_it():
    payload = tracking.baseline_payload(synthetic_result("c" * 40, "2026-12-01T00:00:00", 1.0))
    assert payload["ratios"] == {"update nvil sbn:200": 1.8, "update nvil doc-sbn:50": 0.75,
                                 "iw bound K=5000 sbn:200": 0.005}
    assert payload["regenerate"] == "python -m bench perf --write-baseline"
    # --keep-lower: the lower of the earlier baseline's ratio and the new one, per benchmark.
    later = tracking.baseline_payload(synthetic_result("d" * 40, "2026-12-02T00:00:00", 1.2),
                                      payload)
    lower = tracking.baseline_payload(synthetic_result("e" * 40, "2026-12-03T00:00:00", 0.9),
                                      later)
    assert later["ratios"] == payload["ratios"]
    assert lower["ratios"]["update nvil sbn:200"] == pytest.approx(1.8 * 0.9)
    assert [m["started"][:10] for m in lower["measurements"]] == \
        ["2026-12-01", "2026-12-02", "2026-12-03"]
    # A run of some benchmarks only (--only) keeps the others' ratios and adds its new ones.
    partial = synthetic_result("f" * 40, "2026-12-04T00:00:00", 0.5)
    partial["benchmarks"] = [dict(partial["benchmarks"][0], name="update nvil gauss:200",
                                  yardstick="gauss:200")]
    merged = tracking.baseline_payload(partial, lower)
    assert merged["ratios"] == {**lower["ratios"], "update nvil gauss:200": pytest.approx(0.9)}
    assert merged["yardsticks"]["update nvil gauss:200"] == "gauss:200"
    assert merged["yardsticks"]["update nvil sbn:200"] == "sbn:200"


def test_the_committed_baseline_names_benchmarks_that_exist():
    """The committed ratio baseline (what .ci/run's gate reads) is current: every benchmark it
    names is still measured (names come from the benchmarks, without building them)."""
    baseline = tracking.read_baseline()
    assert baseline["regenerate"] == tracking.BASELINE_COMMAND
    names = set(baseline["ratios"])
    # the gate covers the estimators it was measured with (nvil and wake-sleep at least); one
    # added since is gated once a new baseline is written
    gated = {"nvil", "wake-sleep"}
    expected = {f"update {name} {a.name}" for name in gated for a in benchmarks.ARCHITECTURES
                if benchmarks.supports(name, a)}
    assert names <= set(benchmarks.benchmark_factories())
    expected |= {f"ceiling: matrix products only, {label} nvil {a.name}"
                 for a in benchmarks.ARCHITECTURES for label in ("1 run", "16 runs")}
    assert expected <= names
    assert all(value > 0 for value in baseline["ratios"].values())


@pytest.mark.parametrize("baseline_ratio, status", [(1000.0, 1), (0.001, 0)])
def test_check_exits_1_below_the_baseline_and_0_above(baseline_ratio, status, tmp_path):
    """--check end to end on one benchmark against a synthetic baseline far above or below any
    real ratio: no timing is asserted, only the gate's verdict and exit status."""
    name = benchmarks.update_name("nvil", "doc-sbn:50")
    baseline = tmp_path / "ratio_baseline.json"
    baseline.write_text(json.dumps({"ratios": {name: baseline_ratio}, "settings": {"threads": 1}}))
    result = run_bench("perf", "--check", "--only", name, "--baseline", str(baseline),
                       "--seconds", "0.01", "--repeats", "1", "--no-progress", "--json")
    assert result.returncode == status, result.stderr
    gate = json.loads(result.stdout)["gate"]
    assert [row["benchmark"] for row in gate["rows"]] == [name]
    assert gate["failed"] == ([name] if status else [])
    assert (name in gate["remeasured"]) == bool(status)  # a failure is measured twice
    assert json.loads(result.stdout)["files"] == []  # --check writes nothing without --out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line(tmp_path):
    result = run_bench("perf", "--device", "cuda", "--quick", "--out", str(tmp_path / "perf"))
    assert result.returncode == 2
    assert result.stderr.strip().endswith("torch sees no CUDA device; use --device cpu")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "perf").exists()
