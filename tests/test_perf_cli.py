"""`python -m bench perf`: a quick run end to end, its mistakes, and the update it measures.

The quick run is a check that every benchmark runs and is reported (JSON with every registered
algorithm on every benchmark model, the yardstick, positive finite ratios, device and threads, and
the files written), not a measurement: its figures are not checked. The throughput benchmarks
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
from bench.perf import benchmarks
from bench.training import Trainer, build

REPOSITORY = Path(__file__).resolve().parent.parent


def run_bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    # Not under `nice`: at the lowest priority a busy machine can starve it past any timeout.
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPOSITORY,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def test_quick_run_reports_every_algorithm_and_model_against_the_yardstick(tmp_path):
    result = run_bench("perf", "--quick", "--json", "--out", str(tmp_path / "perf"))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)

    updates = {(e["algorithm"], e["model"]): e for e in payload["benchmarks"]
               if e["kind"] == "update" and "runs" not in e and "engine=" not in e["name"]}
    assert set(updates) == {(name, model) for name in algorithms.REGISTRY
                            for model in benchmarks.MODELS}
    assert updates[("nvil", "sbn:200")]["engine"] == "fused"
    assert updates[("nvil", "fdarn:200")]["engine"] == "autograd"
    (readable,) = [e for e in payload["benchmarks"] if "engine=autograd" in e["name"]]
    assert readable["engine"] == "autograd" and readable["model"] == "sbn:200"
    batched = [e for e in payload["benchmarks"] if e["kind"] == "update" and "runs" in e]
    assert {e["algorithm"] for e in batched} == set(benchmarks.BATCHED_MIXES)
    assert all(e["runs"] == 16 for e in batched)
    ceilings = [e for e in payload["benchmarks"] if e["kind"] == "ceiling"]
    assert sorted(e["runs"] for e in ceilings) == [1, 16]
    assert all(e["model"] == "sbn:200" and e["algorithm"] == "nvil" for e in ceilings)
    (evaluation,) = [e for e in payload["benchmarks"] if e["kind"] == "evaluation"]
    assert evaluation["k"] == 5000 and evaluation["model"] == "sbn:200"
    assert evaluation["updates_per_s"] is None
    assert math.isfinite(evaluation["projected_mnist_test_seconds"])
    assert evaluation["projected_mnist_test_seconds"] > 0
    yardstick = payload["yardstick"]
    assert yardstick["kind"] == "yardstick" and yardstick["model"] == "sbn:200"

    for entry in [yardstick, *payload["benchmarks"]]:
        assert entry["name"]
        for key in ("examples_per_s", "ratio_to_yardstick"):
            assert math.isfinite(entry[key]) and entry[key] > 0, (entry["name"], key)
        if entry["kind"] != "evaluation":
            assert math.isfinite(entry["updates_per_s"]) and entry["updates_per_s"] > 0
            runs = entry.get("runs", 1)
            assert entry["examples_per_s"] == pytest.approx(20 * runs * entry["updates_per_s"])
    assert payload["threads"] >= 1 and payload["device"].startswith("cpu")
    assert payload["code"]["commit"] is None or len(payload["code"]["commit"]) == 40
    assert "random" in payload["data"]

    written = sorted(p.name for p in (tmp_path / "perf").iterdir())
    assert written == ["perf.json", "perf.md"]  # and no temporary files left behind
    assert json.loads((tmp_path / "perf" / "perf.json").read_text())["benchmarks"] == \
        payload["benchmarks"]
    table = (tmp_path / "perf" / "perf.md").read_text()
    assert "× yardstick" in table and "update wake-sleep doc-sbn:50" in table


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--threads", "many"], "--threads"),
    (["--repeats", "0"], "--repeats must be at least 1"),
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
    """The benchmarks repeat the body of Trainer.train's loop: N of their updates must leave
    exactly the parameters, statistics and data position that Trainer.train leaves after N."""
    updates = 13  # random data of 200 rows: 10 minibatches an epoch, so this crosses an epoch
    data = benchmarks.random_data(benchmarks.data_kind(model), rows=200)
    spec = benchmarks.training_spec(algorithm, model)
    spec = spec.__class__(**{**spec.to_dict(), "updates": updates, "eval_interval": 1000,
                             "eval_examples": 2})

    trained = Trainer(build(spec, data=data), tmp_path / "run", progress=False)
    trained.train()

    measured_trainer = benchmarks.trainer_for(spec, data)
    update = benchmarks.TrainerUpdate(measured_trainer)
    for _ in range(updates):
        update()

    expected, actual = trained.algorithm.state_dict(), measured_trainer.algorithm.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert (measured_trainer.state.epoch, measured_trainer.state.position) == \
        (trained.state.epoch, trained.state.position)
    assert not (Path.cwd() / "unused-by-benchmarks").exists()


def test_the_ceiling_does_the_updates_products_and_changes_no_parameter():
    """The ceiling benchmark calls the fused engine's forward products and its three weight
    updates at a rate too small to change float32 weights: repeated calls measure the same work
    on the same parameters."""
    data = benchmarks.random_data("binary", rows=200)
    ceiling = benchmarks.matrix_products_benchmark(2, data=data)
    products = ceiling.step
    before = [t.clone() for t in (products.engine.visible[0], products.engine.inference[0][0],
                                  products.engine.baselines[0][0])]
    for _ in range(3):
        ceiling.step()
    after = (products.engine.visible[0], products.engine.inference[0][0],
             products.engine.baselines[0][0])
    assert all(torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert ceiling.examples_per_call == 2 * benchmarks.BATCH_SIZE
    # The same products with a rate of 1 do change every weight matrix: the updates are real.
    products.RATE = 1.0
    ceiling.step()
    assert not any(torch.equal(b, a) for b, a in zip(before, after, strict=True))
