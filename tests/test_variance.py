"""`bench variance`: the statistics, common random numbers, the trajectory, shadows and the verb."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.runs import train_run
from bench.specs import RunSpec
from bench.training import build, run_state
from bench.variance import (
    Shadow,
    Trajectory,
    VarianceSettings,
    compared_spec,
    gradient_statistics,
    trajectory_variance,
)

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = RunSpec(algorithm="nvil", model="sbn:2", dataset="mnist", updates=30, eval_interval=30,
               eval_examples=100, test_examples=100)


def test_gradient_statistics_against_numpy():
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(50, 7)) * np.arange(1, 8) + np.arange(7)
    exact = np.arange(7) + 0.5
    stats = gradient_statistics(torch.tensor(grads), torch.tensor(exact))
    mean, variance = grads.mean(0), grads.var(0, ddof=1)
    assert stats["variance"] == pytest.approx(variance.mean())
    positive = variance > 0
    assert stats["snr"] == pytest.approx((np.abs(mean[positive]) / np.sqrt(variance[positive])).mean())
    assert stats["bias"] == pytest.approx(np.linalg.norm(mean - exact) / np.linalg.norm(exact))
    assert stats["bias_se"] == pytest.approx(math.sqrt(variance.sum() / 50) / np.linalg.norm(exact))
    assert stats["cosine"] == pytest.approx(mean @ exact / np.linalg.norm(mean) / np.linalg.norm(exact))
    # A group the estimator may rescale: the bias of 3x the exact gradient, scale fitted, is 0.
    scaled = gradient_statistics(torch.tensor(np.tile(3 * exact, (4, 1))), torch.tensor(exact),
                                 scaled=True)
    assert scaled["scale"] == pytest.approx(3.0) and scaled["bias"] == pytest.approx(0.0, abs=1e-12)
    assert gradient_statistics(torch.tensor(np.tile(3 * exact, (4, 1))),
                               torch.tensor(exact))["bias"] == pytest.approx(2.0)


def test_schedule_is_zero_and_log_spaced():
    assert VarianceSettings(updates=1000, checkpoints=4).schedule() == [0, 1, 10, 100, 1000]
    with pytest.raises(Exception, match="replicates must be at least 2"):
        VarianceSettings(updates=10, replicates=1)


def test_trajectory_is_the_trained_run_and_a_shadow_follows_its_state(tmp_path, data_mirror):
    """The reference trajectory is `bench train`'s run, update for update; a shadow NVIL, fed the
    same minibatches and the same noise stream, ends with the run's own baseline state."""
    trained = tmp_path / "trained"
    train_run(TINY, trained, progress=False)
    final = torch.load(trained / "checkpoint.pt", weights_only=False)["algorithm"]
    built = build(TINY)
    trajectory = Trajectory(built, [tmp_path / "trajectory"], progress=False)
    shadow = Shadow(build(TINY, data=built.data))
    for _ in range(TINY.updates):
        shadow.follow(trajectory.algorithm)
        assert trajectory.update()
        shadow.update(trajectory.batch)
    shadow.follow(trajectory.algorithm)
    ours, theirs = run_state(trajectory.algorithm, 0), run_state(shadow.algorithm, 0)
    for name, value in final.items():
        assert torch.equal(ours[name], value), name
        assert torch.allclose(theirs[name], value, rtol=1e-5, atol=1e-6), name
    # The baseline moved: the shadow's agreement is not that of two untrained networks.
    start = run_state(build(TINY).algorithm, 0)
    assert any(not torch.equal(start[n], final[n]) for n in final if n.startswith("baselines."))


def test_common_random_numbers_and_the_bias_on_a_tiny_model(tmp_path, data_mirror):
    names = ["reinforce", "nvil", "arm", "rloo", "vimco", "rws"]
    rows = trajectory_variance(TINY, [compared_spec(TINY, n) for n in names],
                               VarianceSettings(updates=5, checkpoints=1, replicates=400),
                               tmp_path / "state.pt", progress=False)
    table = pd.DataFrame(rows).set_index(["estimator", "update", "group"])
    # Single-sample estimators draw the same uniforms: their model updates are the same samples
    # (up to rounding: ARM scores its samples with a sample dimension of one; independent samples
    # would differ by several per cent at 400 replicates).
    for name in ("nvil", "arm"):
        assert table.loc[(name, 5, "model"), "variance"] == pytest.approx(
            table.loc[("reinforce", 5, "model"), "variance"], rel=1e-7)
    # The leave-one-out baseline is the point of RLOO: far less variance than REINFORCE's Q update.
    assert table.loc[("rloo", 5, "inference"), "variance"] < 0.01 * table.loc[
        ("reinforce", 5, "inference"), "variance"]
    # Unbiased estimators: the mean is within Monte Carlo error of the exact gradient.
    for name in ("reinforce", "arm", "rloo", "vimco"):
        for group in ("model", "inference"):
            row = table.loc[(name, 5, group)]
            assert row["bias"] < 4 * row["bias_se"], (name, group, row["bias"], row["bias_se"])
    # RWS with the sleep phase has no enumerable objective on 784 pixels: no bias is claimed.
    assert math.isnan(table.loc[("rws", 5, "inference"), "bias"])


def test_variance_verb_writes_and_resumes(tmp_path, data_mirror, capsys):
    run_dir = tmp_path / "run"
    train_run(TINY, run_dir, progress=False)
    argv = ["variance", str(run_dir), "--estimators", "nvil,reinforce,disarm", "--updates", "4",
            "--checkpoints", "2", "--replicates", "8", "--no-progress"]
    assert main(argv) == 0
    out = run_dir / "variance"
    data = pd.read_csv(out / "variance.csv")
    assert set(data["estimator"]) == {"nvil", "reinforce", "disarm"}
    assert sorted(set(data["update"])) == [0, 1, 4]
    assert len(data) == 3 * 3 * 2
    assert (out / "variance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## sbn:2" in (out / "variance.md").read_text()
    first = (out / "variance.csv").read_text()
    assert main(argv) == 0  # everything measured: read back, the same rows
    assert (out / "variance.csv").read_text() == first
    changed = argv[:-2] + ["16", "--no-progress"]
    assert main(changed) == 2  # another configuration: refused, the state is kept
    assert "another configuration" in capsys.readouterr().err
    assert (out / "variance.csv").read_text() == first


def test_variance_verb_rejects_bad_names(tmp_path, capsys):
    assert main(["variance", "quick", "--estimators", "nvil,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["variance", "nosuchsuite"]) == 2
    assert "nosuchsuite" in capsys.readouterr().err


def test_an_interrupted_measurement_resumes_to_the_same_rows(tmp_path, data_mirror, monkeypatch):
    compared = [compared_spec(TINY, n) for n in ("nvil", "reinforce", "rebar")]
    settings = VarianceSettings(updates=9, checkpoints=2, replicates=4)  # updates 0, 1, 3, 9
    straight = trajectory_variance(TINY, compared, settings, tmp_path / "a.pt", progress=False)
    update = Trajectory.update
    calls = {"n": 0}

    def dies_after_five(self):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return update(self)

    monkeypatch.setattr(Trajectory, "update", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        trajectory_variance(TINY, compared, settings, tmp_path / "b.pt", progress=False)
    monkeypatch.setattr(Trajectory, "update", update)
    resumed = trajectory_variance(TINY, compared, settings, tmp_path / "b.pt", progress=False)
    assert pd.DataFrame(resumed).equals(pd.DataFrame(straight))
