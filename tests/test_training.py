"""The training loop: resume gives the same record, divergence is recorded, records carry what
they must, `eval` adds a tighter bound, and users' mistakes end in one clear line."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.records import read_record
from bench.runs import train_run
from bench.specs import RunSpec
from bench.training import CHECKPOINT, RunGroup, build

REPO = Path(__file__).resolve().parent.parent
SMALL = dict(dataset="synthetic", model="sbn:4-8", eval_interval=40, eval_examples=200,
             test_examples=300)


def bench(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def comparable(record: dict) -> dict:
    """The parts of a record that must not depend on interruptions (not timings)."""
    return {"status": record["status"], "updates": record["updates"],
            "best_update": record["best_update"], "metrics": record["metrics"],
            "config": record["config"]}


def curve_points(path) -> list[tuple[int, float]]:
    with open(path, newline="") as stream:
        return [(int(row["update"]), float(row["valid_bound"])) for row in csv.DictReader(stream)]


class InterruptAfter:
    """Wraps a group's update to raise KeyboardInterrupt after n calls, like a user's Ctrl-C."""

    def __init__(self, group, calls: int):
        self.update, self.left = group.update, calls
        group.update = self

    def __call__(self, *args, **kwargs):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return self.update(*args, **kwargs)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("algorithm", ["nvil", "wake-sleep"])
def test_interrupted_and_resumed_run_ends_with_the_same_record(tmp_path, algorithm, optimizer):
    spec = RunSpec(algorithm=algorithm, updates=200, seed=3, optimizer=optimizer, **SMALL)
    straight = train_run(spec, tmp_path / "straight", progress=False)
    assert straight["config"]["engine"] == {"name": "stacked", "runs_in_batch": 1}

    group = RunGroup(build(spec), [tmp_path / "resumed"], progress=False)
    InterruptAfter(group, 130)  # dies between the checkpoints at 120 and 160
    with pytest.raises(KeyboardInterrupt):
        group.train()
    assert (tmp_path / "resumed" / CHECKPOINT).exists()
    before = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=False)["state"]
    resumed = train_run(spec, tmp_path / "resumed", progress=False)
    # The record's wall time counts the interrupted process too (up to its last checkpoint).
    assert before["wall_seconds"] > 0
    assert resumed["wall_time_s"] > before["wall_seconds"]

    assert comparable(resumed) == comparable(straight)
    curve_a = (tmp_path / "straight" / "curve.csv").read_text()
    assert curve_a == (tmp_path / "resumed" / "curve.csv").read_text()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_run_that_produces_nan_is_recorded_as_diverged(tmp_path, optimizer):
    spec = RunSpec(updates=200, optimizer=optimizer, **SMALL)
    built = build(spec)
    trainer = RunGroup(built, [tmp_path], progress=False)
    original_update = trainer.update
    calls = {"n": 0}

    def poisoned_update():
        calls["n"] += 1
        if calls["n"] == 50:
            with torch.no_grad():
                built.algorithm.model.visible.weight.fill_(float("nan"))
        return original_update()

    trainer.update = poisoned_update
    [state] = trainer.train()
    assert state.status == "diverged"
    assert state.update < 200


def test_diverged_run_through_the_cli_exits_nonzero_with_a_record(tmp_path):
    # A learning rate that overflows float32 turns the parameters into inf and the bound into NaN.
    result = bench("train", "--dataset", "synthetic", "--model", "sbn:4-8", "--updates", "300",
                   "--set", "optimizer=sgd", "--set", "learning_rate=1e38", "--set",
                   "eval_interval=50", "--out", str(tmp_path), "--no-progress")
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["status"] == "diverged", result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_record_carries_configuration_seed_updates_bounds_code_and_device(tmp_path):
    spec = RunSpec(algorithm="nvil:vn", updates=80, seed=7, test_iw_samples=20, **SMALL)
    record = train_run(spec, tmp_path, progress=False)
    assert record["schema_version"] == 2
    assert record["status"] == "complete"
    assert record["seed"] == 7 and record["updates"] == 80
    config = record["config"]
    assert config["algorithm"]["name"] == "nvil" and config["algorithm"]["preset"] == "vn"
    assert config["algorithm"]["options"]["input_dependent_baseline"] is False
    assert config["model"]["layers"] == [4, 8]
    assert config["dataset"]["split"] == "paper"
    assert config["optimizers"]["inference"]["learning_rate"] == pytest.approx(
        0.2 * config["optimizers"]["model"]["learning_rate"])
    assert {"name", "learning_rate"} <= set(config["optimizers"]["model"])
    bounds = {(m["split"], m["bound"], m["k"]) for m in record["metrics"]}
    assert bounds == {("valid", "elbo", 10), ("test", "elbo", 10), ("test", "iw", 20)}
    for metric in record["metrics"]:
        assert math.isfinite(metric["nll"]) and metric["nll"] == pytest.approx(-metric["mean"])
    assert set(record["code"]) == {"commit", "dirty"}
    assert {"python", "torch", "device", "threads"} <= set(record["environment"])
    assert record["throughput"]["examples_per_s"] == pytest.approx(
        20 * record["throughput"]["updates_per_s"])
    # the estimator's cost: one model evaluation per example and update for NVIL
    assert config["model_evaluations_per_example"] == 1.0
    assert config["model_evaluations_per_update"] == 20.0
    assert record["throughput"]["model_evaluations_per_s"] == pytest.approx(
        record["throughput"]["examples_per_s"])
    assert config["engine"] == {"name": "stacked", "runs_in_batch": 1}
    curve = (tmp_path / "curve.csv").read_text().splitlines()
    assert curve[0] == ("update,epoch,valid_bound,train_bound,train_signal_mean,"
                        "train_signal_scale") and len(curve) == 1 + 3  # updates 0, 40, 80
    assert curve[1].endswith(",,,")  # before any update there is no training metric


def test_best_validation_parameters_are_kept(tmp_path):
    spec = RunSpec(updates=160, **SMALL)
    record = train_run(spec, tmp_path, progress=False)
    points = curve_points(tmp_path / "curve.csv")
    best_update, _ = max(points, key=lambda point: point[1])
    assert record["best_update"] == best_update


def test_eval_adds_an_importance_sampled_bound_without_retraining(tmp_path):
    spec = RunSpec(updates=120, **SMALL)
    train_run(spec, tmp_path, progress=False)
    before = read_record(tmp_path)
    result = bench("eval", str(tmp_path), "--k", "200", "--threads", "1")
    assert result.returncode == 0, result.stderr
    after = read_record(tmp_path)
    iw = [m for m in after["metrics"] if m["bound"] == "iw"]
    assert len(iw) == 1 and iw[0]["k"] == 200
    elbo = [m for m in after["metrics"] if m["split"] == "test" and m["bound"] == "elbo"][0]
    assert iw[0]["nll"] < elbo["nll"]  # the 200-sample bound is tighter than the 10-sample ELBO
    assert after["updates"] == before["updates"]
    # The synthetic model is enumerable: the exact NLL is below both bounds.
    result = bench("eval", str(tmp_path), "--bound", "exact")
    assert result.returncode == 0, result.stderr
    exact = [m for m in read_record(tmp_path)["metrics"] if m["bound"] == "exact"][0]
    assert exact["nll"] < iw[0]["nll"]


@pytest.mark.parametrize("args, message", [
    (["--algorithm", "nosuch"], "valid algorithms: arm, bihm, disarm, nvil, rebar, reinforce, relax, rloo, rws, short-run, vae, vimco, wake-sleep"),
    (["--algorithm", "nvil:nosuch"], "valid presets of nvil"),
    (["--model", "xyz:3"], "unknown model family 'xyz'"),
    (["--model", "sbn:"], "malformed model spec"),
    (["--dataset", "nosuch"], "valid datasets"),
    (["--model", "doc-sbn:5"], "use sbn, fdarn or nsbn"),
    (["--set", "nosuch=1"], "valid options of nvil"),
    (["--set", "optimizer=rmsprop"], "valid optimizers: adam, sgd"),
    (["--set", "smoothing"], "malformed --set"),
    (["--set", "learning_rate=1e300"], "learning_rate must be a positive float32 number"),
])
def test_user_mistakes_give_one_clear_line_and_exit_2(tmp_path, args, message):
    result = bench("train", "--dataset", "synthetic", "--model", "sbn:4-8", "--updates", "5",
                   "--out", str(tmp_path / "run"), "--no-progress", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_existing_run_with_another_configuration_is_not_overwritten(tmp_path):
    spec = RunSpec(updates=40, **SMALL)
    train_run(spec, tmp_path, progress=False)
    checkpoint = (tmp_path / CHECKPOINT).read_bytes()
    result = bench("train", "--dataset", "synthetic", "--model", "sbn:4-8", "--updates", "40",
                   "--seed", "9", "--out", str(tmp_path), "--no-progress")
    assert result.returncode == 2
    assert "different configuration" in result.stderr
    assert (tmp_path / CHECKPOINT).read_bytes() == checkpoint


def test_eval_rejects_a_thread_count_below_one(tmp_path):
    result = bench("eval", str(tmp_path), "--threads", "0")
    assert result.returncode == 2
    assert "--threads must be at least 1" in result.stderr and "Traceback" not in result.stderr


def test_patience_stops_a_run_whose_validation_bound_stopped_improving(tmp_path):
    """The paper's rule (§4.1): keep the best validation parameters; with a patience, stop once
    the bound has not improved for that many updates, and record why the run stopped."""
    # A rate so small that the model does not change: only the validation draws differ, so the
    # best bound soon stops being beaten.
    spec = RunSpec(updates=4000, learning_rate=1e-12, patience=80, **SMALL)
    record = train_run(spec, tmp_path / "run", progress=False)
    points = curve_points(tmp_path / "run" / "curve.csv")
    assert record["status"] == "complete" and record["stop_reason"] == "patience"
    assert record["updates"] < spec.updates and record["updates"] == points[-1][0]
    best, best_update = -math.inf, 0
    for update, bound in points[:-1]:  # it did not stop before it had to ...
        if bound > best:
            best, best_update = bound, update
        assert update - best_update < spec.patience
    assert record["updates"] - record["best_update"] >= spec.patience  # ... and stopped when it had to

    # A larger patience resumes the finished run from its checkpoint and trains on.
    cap = record["updates"] + 120
    longer = train_run(RunSpec(updates=cap, learning_rate=1e-12, patience=100_000, **SMALL),
                       tmp_path / "run", progress=False)
    assert longer["updates"] == cap and longer["stop_reason"] == "budget"
    assert longer["curve"] and longer["best_update"] >= record["best_update"]


def test_a_run_without_patience_stops_at_its_budget(tmp_path):
    record = train_run(RunSpec(updates=80, **SMALL), tmp_path, progress=False)
    assert record["stop_reason"] == "budget" and record["updates"] == 80


def test_patience_shorter_than_the_validation_interval_is_a_user_error():
    from bench.errors import UserError

    with pytest.raises(UserError, match="patience .* must be at least eval_interval"):
        RunSpec(patience=10, eval_interval=40)


def test_the_curve_has_the_mean_training_metrics_of_each_interval(tmp_path):
    """train_bound in curve.csv is the mean of the training bound of the updates since the
    previous row, per run, also for runs stacked with others."""
    specs = [RunSpec(updates=80, seed=s, **SMALL) for s in (1, 2)]
    group = RunGroup(build(specs), [tmp_path / "a", tmp_path / "b"], progress=False)
    bounds = []
    step = group.algorithm.step

    def recording(x, noise):
        result = step(x, noise)
        bounds.append(result.metrics["bound"].detach().clone())
        return result

    group.algorithm.step = recording
    group.train()
    for r, name in enumerate("ab"):
        with open(tmp_path / name / "curve.csv", newline="") as stream:
            rows = list(csv.DictReader(stream))
        assert [int(row["update"]) for row in rows] == [0, 40, 80]
        assert rows[0]["train_bound"] == ""
        for row, interval in zip(rows[1:], (bounds[:40], bounds[40:]), strict=True):
            expected = torch.stack(interval)[:, r].double().mean().item()
            assert float(row["train_bound"]) == pytest.approx(expected, rel=1e-6)
        assert float(rows[1]["train_signal_scale"]) >= 1.0


def test_eval_adds_the_geometric_mean_model_with_one_normaliser_per_run(tmp_path):
    spec = RunSpec(algorithm="bihm", updates=40, **SMALL)
    train_run(spec, tmp_path, progress=False)
    for k in ("5", "50"):
        result = bench("eval", str(tmp_path), "--bound", "star", "--k", k, "--examples", "30",
                       "--z2-samples", "2000", "--threads", "1")
        assert result.returncode == 0, result.stderr
        assert "model p*" in result.stdout and "log Z^2 = " in result.stdout
    star = [m for m in read_record(tmp_path)["metrics"] if m["bound"] == "star"]
    assert [m["k"] for m in star] == [5, 50] and {m["num_examples"] for m in star} == {30}
    assert star[0]["log_z2"] == star[1]["log_z2"] and star[0]["z2_samples"] == 2000
    assert star[0]["log_z2"] <= 0.5          # Z^2 <= 1, up to the estimate's error
    assert all(m["quantity"] == "p*" for m in star)
    result = bench("eval", str(tmp_path), "--bound", "nosuch")
    assert result.returncode == 2 and "valid bounds: elbo, iw, exact, star-unnormalised" in (
        result.stderr)


def test_selection_by_perplexity_keeps_the_parameters_of_the_best_validation_perplexity(
        tmp_path, monkeypatch):
    """Document models may keep the parameters of the best per-document validation perplexity
    (what Table 3 reports) instead of the best summed bound; the patience counts from it. The
    validation scores are scripted so that the two criteria disagree: the bound improves at
    every validation, the perplexity is best at update 40. A bad choice is refused: an unknown
    selection, or perplexity on a dataset without documents."""
    from types import SimpleNamespace

    from bench.errors import UserError
    from bench.perf.benchmarks import random_data

    scripted = {0: (-900.0, 1500.0), 20: (-890.0, 1400.0), 40: (-880.0, 1200.0),
                60: (-870.0, 1300.0), 80: (-860.0, 1350.0), 100: (-850.0, 1250.0)}
    real = RunGroup.evaluate

    def evaluate(self, split, runs, *args, **kwargs):
        if split != "valid" or runs[0].state.status != "running":  # not a validation point
            return real(self, split, runs, *args, **kwargs)
        bound, perplexity = scripted[runs[0].state.update]
        return {run.index: SimpleNamespace(mean=bound, perplexity=perplexity) for run in runs}

    monkeypatch.setattr(RunGroup, "evaluate", evaluate)
    data = random_data("counts", rows=300)
    common = dict(model="doc-sbn:4", dataset="20news", updates=100, eval_interval=20)
    by_perplexity = train_run(RunSpec(selection="perplexity", **common), tmp_path / "ppl",
                              data=data, progress=False)
    by_bound = train_run(RunSpec(**common), tmp_path / "bound", data=data, progress=False)
    assert by_perplexity["best_update"] == 40 and by_bound["best_update"] == 100
    assert by_perplexity["config"]["spec"]["selection"] == "perplexity"
    # the patience counts from the best perplexity: 60 updates after update 40
    stopped = train_run(RunSpec(selection="perplexity", patience=40, **common),
                        tmp_path / "patience", data=data, progress=False)
    assert stopped["stop_reason"] == "patience" and stopped["updates"] == 80
    monkeypatch.undo()
    with pytest.raises(UserError, match="valid selections: bound, perplexity"):
        RunSpec(selection="likelihood")
    with pytest.raises(UserError, match="selection = perplexity needs a document dataset"):
        train_run(RunSpec(updates=20, selection="perplexity", **SMALL), tmp_path / "mnist",
                  progress=False)


def test_a_checkpoint_of_a_spec_without_selection_resumes():
    """`selection` at its default is not part of what a checkpoint must match, so runs
    checkpointed before the field existed resume."""
    assert "selection" not in RunSpec().identity()
    assert RunSpec(selection="perplexity").identity()["selection"] == "perplexity"
