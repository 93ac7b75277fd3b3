"""Runs trained as one batched computation (bench/batched.py) end as they would alone: same data
order, random stream, statistics, early stopping and record; they resume, and one run's divergence
does not stop the others."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import algorithms
from bench.batched import compatible_groups, train_runs_together
from bench.runs import train_run
from bench.specs import RunSpec
from bench.training import BEST
from models import ModelSpec

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
        assert record["config"]["engine"] == {"name": "fused", "runs_in_batch": len(SPECS)}
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
    specs = [SPECS[0], dataclasses.replace(SPECS[1], learning_rate=1e38), SPECS[2]]
    records = train_runs_together(specs, [tmp_path / str(i) for i in range(3)], progress=False)
    assert [r["status"] for r in records] == ["complete", "diverged", "complete"]
    assert records[0]["updates"] == 120 and records[1]["updates"] < 120


def test_runs_the_fused_engine_cannot_train_run_alone_with_autograd(tmp_path):
    specs = [SPECS[0], dataclasses.replace(SPECS[0], model="fdarn:8", seed=5)]
    records = train_runs_together(specs, [tmp_path / str(i) for i in range(2)], progress=False)
    assert [r["config"]["engine"] for r in records] == [
        {"name": "fused", "runs_in_batch": 1}, {"name": "autograd", "runs_in_batch": 1}]
    assert all(r["status"] == "complete" for r in records)


def test_groups_respect_the_engine_constraints_and_the_size_limit():
    def make(name, model="sbn:3-4"):
        net, inference = ModelSpec.parse(model).build(10)
        return algorithms.build(name, net, inference)

    runs = [make("wake-sleep"), make("nvil:none"), make("nvil"), make("nvil:global-signal"),
            make("nvil", "sbn:5"), make("nvil:idb")]
    groups = compatible_groups(runs, max_runs=16)
    assert sorted(map(sorted, groups)) == [[0, 1, 2, 5], [3], [4]]
    first = next(g for g in groups if 0 in g)
    assert first == [2, 5, 1, 0]  # IDB runs, other NVIL runs, then wake-sleep
    assert max(len(g) for g in compatible_groups(runs, max_runs=2)) == 2
