"""The one engine: R runs stacked in one computation follow, up to rounding, the trajectories
they follow alone, in float64 through the real training loop (bench/training.py, RunGroup): nvil
and wake-sleep on every model family with SGD and with Adam, every other registered estimator
(each preset group) on an SBN with both, on fDARN and on a document model. Since the
estimators pass the exact-enumeration tests alone (tests/test_algorithms.py), so do the stacked
runs. Also: runs with different budgets, and the group's bookkeeping per run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse
import torch

import datasets
from algorithms import REGISTRY, parse_name
from bench.errors import UserError
from bench.specs import RunSpec
from bench.training import RunGroup, build, run_state, stacking_key
from models import ModelSpec

# short-run's chains make hundreds of tiny kernel calls per update: one thread (conftest)
pytestmark = pytest.mark.usefixtures("single_thread")

FEATURES = 12
UPDATES = 15


def fake_data(kind: str) -> datasets.Data:
    """A small dataset of either kind (binary pixels or word counts), no files needed."""
    rng = np.random.default_rng(0)
    if kind == "binary":
        parts = [(rng.random((n, FEATURES)) < 0.4).astype(np.uint8) for n in (80, 20, 20)]
        mean = parts[0].mean(0).astype(np.float64)
    else:
        parts = [scipy.sparse.csr_matrix(rng.poisson(0.6, (n, FEATURES)).astype(np.float32))
                 for n in (80, 20, 20)]
        mean = np.asarray(parts[0].mean(0)).ravel().astype(np.float64)
    return datasets.Data("fake", "paper", kind, FEATURES, *parts, mean)


# (model, inference, data kind): every model family and both inference networks
FAMILIES = [("sbn:6-5", "factorial", "binary"), ("sbn:4-3", "autoregressive", "binary"),
            ("fdarn:5", "factorial", "binary"), ("doc-sbn:4", "factorial", "counts"),
            ("doc-fdarn:4", "autoregressive", "counts"), ("gauss:3-2", "factorial", "binary")]
#: the families every estimator is stacked on (nvil and wake-sleep: all of them)
STACKED_FAMILIES = (FAMILIES[0][0], "fdarn:5", "doc-sbn:4", "gauss:3-2")


def estimator_runs():
    """For every estimator, runs that can share one computation: every preset that agrees on the
    structural options with the default, at different seeds and learning rates."""
    cases = []
    for name, cls in REGISTRY.items():
        default = cls.batch_key(cls.resolve_options())
        presets = [p for p in cls.presets if cls.batch_key(cls.resolve_options(p)) == default]
        texts = [f"{name}:{p}" if p else name for p in presets][:8]
        if len(texts) < 3:
            texts = (texts * 3)[:3]
        cases.append(pytest.param(name, texts, id=name))
    return cases


def specs_for(texts, model, inference, optimizer):
    return [RunSpec(algorithm=text, model=model, inference=inference, dataset="fake",
                    updates=UPDATES, seed=r, eval_interval=10, init_scale=0.5, optimizer=optimizer,
                    learning_rate=0.001 * (1 + r % 3), eval_samples=2)
            for r, text in enumerate(texts)]


def refused(spec: RunSpec) -> bool:
    """Whether the run's estimator refuses its inference network (a factorial-only estimator
    given an autoregressive Q) or the model's latents (binary-only estimators and Gaussian
    models, or the reverse), with the one-line error that names the fix."""
    cls, preset = parse_name(spec.algorithm)
    model, inference = ModelSpec.parse(spec.model, inference=spec.inference).build(FEATURES)
    try:
        cls(model, inference, cls.resolve_options(preset))
    except UserError as error:
        kinds = set(model.latent_kinds)
        assert ((spec.inference == "autoregressive" and "--inference factorial" in str(error))
                or (not kinds <= cls.latent_kinds and "latent units" in str(error))), str(error)
        return True
    return False


def train(specs, data, tmp_path, name):
    group = RunGroup(build(specs, data, dtype=torch.float64),
                     [tmp_path / name / str(r) for r in range(len(specs))], progress=False)
    group.train()
    return group


def max_difference(left: dict, right: dict) -> float:
    """Largest difference of any parameter or statistic, relative to the tensor's size."""
    assert left.keys() == right.keys()
    return max(((left[k] - right[k]).abs().max() / (1 + right[k].abs().max())).item() for k in left)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("model, inference, kind", FAMILIES)
@pytest.mark.parametrize("name, texts", estimator_runs())
def test_stacked_runs_follow_their_lone_trajectories(tmp_path, name, texts, model, inference,
                                                     kind, optimizer):
    data = fake_data(kind)
    if name not in ("nvil", "wake-sleep") and (
            (optimizer == "adam" and model != FAMILIES[0][0])
            or model not in STACKED_FAMILIES):
        # Adam's step and the layers are the engine's, not the estimator's: nvil and wake-sleep
        # cover every family with both optimizers; every other estimator is stacked on an SBN
        # (both optimizers), fDARN, a document model and a Gaussian model (the time CI can spend
        # here is bounded)
        pytest.skip("covered by nvil and wake-sleep")
    if (model, optimizer) != ("sbn:6-5", "sgd"):
        # all presets (Figure 1's eight for NVIL) on the first family only; two runs elsewhere
        texts = texts[:3] if name == "nvil" else texts[:2]
    specs = specs_for(texts, model, inference, optimizer)
    if refused(specs[0]):
        pytest.skip(f"{name} does not handle this model's inference network or latents")
    assert len({stacking_key(spec) for spec in specs}) == 1
    together = train(specs, data, tmp_path, "together")
    initial = build(specs, data, dtype=torch.float64).algorithm
    for r, spec in enumerate(specs):
        alone = train([spec], data, tmp_path, f"alone{r}")
        assert together.runs[r].state.update == alone.runs[0].state.update == UPDATES
        curves = [[(p["update"], p["valid_bound"]) for p in g.runs[i].state.curve]
                  for g, i in ((together, r), (alone, 0))]
        assert [u for u, _ in curves[0]] == [u for u, _ in curves[1]] == [0, 10, 15]
        assert [b for _, b in curves[0]] == pytest.approx([b for _, b in curves[1]], abs=1e-9)
        stacked, lone = run_state(together.algorithm, r), run_state(alone.algorithm, 0)
        assert max_difference(stacked, lone) < 1e-10, spec.algorithm
        assert max_difference(stacked, run_state(initial, r)) > 1e-4  # it did train


def test_runs_with_different_budgets_stop_on_their_own(tmp_path):
    data = fake_data("binary")
    specs = specs_for(["nvil", "nvil:none", "nvil:idb"], "sbn:6-5", "factorial", "sgd")
    specs[1] = dataclasses.replace(specs[1], updates=7)
    together = train(specs, data, tmp_path, "together")
    assert [run.state.update for run in together.runs] == [UPDATES, 7, UPDATES]
    alone = train([specs[1]], data, tmp_path, "alone")
    assert max_difference(run_state(together.algorithm, 1), run_state(alone.algorithm, 0)) < 1e-10
    # its stream was not advanced by the updates it sat out
    assert torch.equal(together.runs[1].generator.get_state(), alone.runs[0].generator.get_state())


def test_runs_of_one_group_get_their_own_learning_rates(tmp_path):
    data = fake_data("binary")
    specs = specs_for(["nvil", "nvil:none"], "sbn:6-5", "factorial", "sgd")
    group = RunGroup(build(specs, data, dtype=torch.float64), [tmp_path / "a", tmp_path / "b"],
                     progress=False)
    assert group.runs[0].learning_rates == {"model": 0.001, "inference": 0.001 * 0.2,
                                            "baseline": 0.001}
    # without the IDB the run's baseline networks get rate 0 and stay as they started
    assert set(group.runs[1].learning_rates) == {"model", "inference"}
    before = run_state(group.algorithm, 1)
    group.train()
    after = run_state(group.algorithm, 1)
    for key in before:
        if key.startswith("baselines."):
            assert torch.equal(before[key], after[key]), key
        elif key.startswith(("model.", "inference.")) and key != "inference.input_mean":
            assert not torch.equal(before[key], after[key]), key


@pytest.mark.parametrize("model, inference, kind", FAMILIES)
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_sgd_steps_taken_in_the_backward_pass_are_plain_sgd(tmp_path, monkeypatch, name, model,
                                                           inference, kind):
    """With SGD the layers' closed-form backwards step their parameters in the backward pass
    (models.layers.sgd_in_backward); the trajectory is the one of gradients then a step."""
    import contextlib

    import bench.optim

    if name != "nvil" and model not in (FAMILIES[0][0], "doc-sbn:4", "gauss:3-2"):
        pytest.skip("the closed-form backwards of every family are covered by nvil; the other "
                    "estimators' surrogates on a binary and a document model")
    data = fake_data(kind)
    specs = specs_for([name] * 3, model, inference, "sgd")
    if refused(specs[0]):
        pytest.skip(f"{name} does not handle this model's inference network or latents")
    fused = train(specs, data, tmp_path, "fused")
    monkeypatch.setattr(bench.optim, "sgd_in_backward", lambda rates: contextlib.nullcontext())
    plain = train(specs, data, tmp_path, "plain")
    for r in range(len(specs)):
        assert max_difference(run_state(fused.algorithm, r), run_state(plain.algorithm, r)) < 1e-12
