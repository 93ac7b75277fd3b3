"""Runs trained as one stacked computation (bench/batched.py) end as they would alone: same data
order, random stream, statistics, early stopping and record; they resume, one run's divergence
does not stop the others, and runs are grouped by estimator and structural options."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.batched import stacked_groups, train_runs_together
from bench.runs import train_run
from bench.specs import RunSpec
from bench.training import BEST

SMALL = dict(dataset="synthetic", model="sbn:4-8", eval_interval=40, eval_examples=200,
             test_examples=300)
SPECS = [RunSpec(algorithm="nvil", seed=0, updates=120, **SMALL),
         RunSpec(algorithm="nvil:baseline+vn", seed=1, updates=120, **SMALL),
         RunSpec(algorithm="wake-sleep", seed=2, updates=120, **SMALL),
         RunSpec(algorithm="nvil:none", seed=3, updates=120, **SMALL)]


def best_parameters(out_dir):
    return torch.load(out_dir / BEST, weights_only=False)["algorithm"]


def test_batched_runs_end_as_they_would_alone(tmp_path):
    together = train_runs_together(SPECS, [tmp_path / "b" / str(i) for i in range(len(SPECS))],
                                   progress=False)
    for i, (spec, record) in enumerate(zip(SPECS, together, strict=True)):
        alone = train_run(spec, tmp_path / "a" / str(i), progress=False)
        assert record["status"] == alone["status"] == "complete"
        # NVIL's three runs share one computation, wake-sleep's run is its own group
        stacked = 1 if spec.algorithm == "wake-sleep" else 3
        assert record["config"]["engine"] == {"name": "stacked", "runs_in_batch": stacked}
        assert (record["updates"], record["best_update"]) == (alone["updates"], alone["best_update"])
        for ours, theirs in zip(record["metrics"], alone["metrics"], strict=True):
            assert ours["mean"] == pytest.approx(theirs["mean"], abs=1e-3)
        ours, theirs = best_parameters(tmp_path / "b" / str(i)), best_parameters(tmp_path / "a" / str(i))
        for key in theirs:
            assert torch.allclose(ours[key], theirs[key], atol=1e-4), (spec.algorithm, key)


def test_a_larger_budget_resumes_the_group_where_it_stopped(tmp_path):
    def dirs(name):
        return [tmp_path / name / str(i) for i in range(len(SPECS))]

    straight = train_runs_together(SPECS, dirs("straight"), progress=False)
    shorter = [dataclasses.replace(spec, updates=80) for spec in SPECS]
    train_runs_together(shorter, dirs("resumed"), progress=False)
    resumed = train_runs_together(SPECS, dirs("resumed"), progress=False)
    for a, b, out_a, out_b in zip(straight, resumed, dirs("straight"), dirs("resumed"), strict=True):
        assert a["metrics"] == b["metrics"] and a["best_update"] == b["best_update"]
        assert (out_a / "curve.csv").read_text() == (out_b / "curve.csv").read_text()


def test_a_diverging_run_is_recorded_and_the_others_complete(tmp_path):
    specs = [SPECS[0], dataclasses.replace(SPECS[1], learning_rate=1e38), SPECS[3]]
    records = train_runs_together(specs, [tmp_path / str(i) for i in range(3)], progress=False)
    assert all(r["config"]["engine"]["runs_in_batch"] == 3 for r in records)
    assert [r["status"] for r in records] == ["complete", "diverged", "complete"]
    assert records[0]["updates"] == 120 and records[1]["updates"] < 120
    # the others are untouched by it: they end as they would alone
    for i in (0, 2):
        alone = train_run(specs[i], tmp_path / f"alone{i}", progress=False)
        for ours, theirs in zip(records[i]["metrics"], alone["metrics"], strict=True):
            assert ours["mean"] == pytest.approx(theirs["mean"], abs=1e-3)


def test_every_model_family_and_optimizer_is_stacked(tmp_path):
    specs = [dataclasses.replace(SPECS[0], model="fdarn:8", seed=5),
             dataclasses.replace(SPECS[0], model="fdarn:8", seed=6, optimizer="adam"),
             dataclasses.replace(SPECS[0], model="fdarn:8", seed=7)]
    records = train_runs_together(specs, [tmp_path / str(i) for i in range(3)], progress=False)
    assert [r["config"]["engine"]["runs_in_batch"] for r in records] == [2, 1, 2]
    assert all(r["status"] == "complete" for r in records)


def test_groups_follow_the_estimator_its_structural_options_and_the_size_limit():
    base = RunSpec(dataset="synthetic", model="sbn:3-4")
    specs = [dataclasses.replace(base, algorithm=text, seed=seed) for text, seed in [
        ("wake-sleep", 0), ("nvil:none", 1), ("nvil", 2), ("nvil:global-signal", 3),
        ("nvil", 4), ("nvil:idb", 5), ("wake-sleep", 6)]]
    specs[4] = dataclasses.replace(specs[4], model="sbn:5")
    specs.append(dataclasses.replace(base, algorithm="nvil", options={"baseline_hidden": "7"}))
    groups = stacked_groups(specs, max_runs=16)
    # every NVIL combination of Figure 1 (and any learning rate or seed) in one computation;
    # local vs global signals, another width of the baseline or another model apart
    assert groups == [[0, 6], [1, 2, 5], [3], [4], [7]]
    assert max(len(g) for g in stacked_groups(specs, max_runs=2)) == 2
