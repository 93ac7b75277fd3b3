"""The fused engine (algorithms/fused.py) against the readable autograd path.

Both draw the same random numbers, so in float64 the parameters after many updates must agree to
rounding, for every NVIL preset and wake-sleep, on one and three latent layers, for one run alone
and for runs of different algorithms batched together. Since the autograd path passes the exact
enumeration tests (tests/test_algorithms.py), so does the fused one.
"""

from __future__ import annotations

import pytest
import torch

import algorithms
from algorithms.fused import FusedSGD, run_order_key, unsupported_reason
from algorithms.nvil import NVIL
from bench.errors import UserError
from bench.specs import RunSpec
from bench.training import Trainer, build
from models import ModelSpec

FEATURES = 12
RATE = 0.005
UPDATES = 25


def make(algorithm: str, model: str = "sbn:6-5", seed: int = 0, inference: str = "factorial"):
    torch.manual_seed(seed)
    spec = ModelSpec.parse(model, inference=inference, init_scale=0.5)
    net, inference_net = spec.build(FEATURES, torch.rand(FEATURES))
    return algorithms.build(algorithm, net, inference_net).double()


def rates(algorithm, base: float = RATE) -> dict[str, float]:
    scales = algorithm.learning_rate_scales()
    return {group: base * scales[group] for group in algorithm.parameter_groups()}


def train_with_autograd(algorithm, batches, seed: int, base_rate: float = RATE) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizers = [torch.optim.SGD(params, lr=rates(algorithm, base_rate)[group])
                  for group, params in algorithm.parameter_groups().items()]
    for x in batches:
        losses = algorithm.step(x, generator).losses
        for optimizer in optimizers:
            optimizer.zero_grad()
        sum(losses.values()).backward()
        for optimizer in optimizers:
            optimizer.step()


def max_difference(a, b) -> float:
    """Largest difference of any parameter or statistic, relative to the tensor's size (without
    variance normalisation the baseline's weights grow large, and rounding with them)."""
    left, right = a.state_dict(), b.state_dict()
    assert left.keys() == right.keys()
    return max(((left[k] - right[k]).abs().max() / (1 + right[k].abs().max())).item() for k in left)


def compare(runs: list[tuple[str, int]], model: str, base_rates: list[float] | None = None) -> None:
    """Train `runs` (algorithm, seed) batched in one engine and each alone with autograd, at
    RATE or at base_rates[r]."""
    base_rates = base_rates or [RATE] * len(runs)
    order = sorted(range(len(runs)), key=lambda r: run_order_key(make(runs[r][0], model)))
    runs, base_rates = [runs[r] for r in order], [base_rates[r] for r in order]
    batches = (torch.rand(UPDATES, len(runs), 7, FEATURES,
                          generator=torch.Generator().manual_seed(1)) < 0.4).double()
    fused = [make(name, model, seed) for name, seed in runs]
    reference = [make(name, model, seed) for name, seed in runs]
    for r, (algorithm, (_, seed)) in enumerate(zip(reference, runs, strict=True)):
        train_with_autograd(algorithm, batches[:, r], 100 + seed, base_rates[r])
    engine = FusedSGD(fused, [rates(a, base) for a, base in zip(fused, base_rates, strict=True)])
    generators = [torch.Generator().manual_seed(100 + seed) for _, seed in runs]
    for t in range(UPDATES):
        bounds = engine.step(batches[t], generators)
        assert torch.isfinite(bounds).all()
    for (name, _), a, b in zip(runs, fused, reference, strict=True):
        assert max_difference(a, b) < 1e-10, name
        assert max_difference(a, make(name, model)) > 1e-3  # it did train


FIGURE1_AND_WS = [name for name in (f"nvil:{p}" if p else "nvil" for p in NVIL.presets)
                  if name != "nvil:global-signal"] + ["wake-sleep"]


@pytest.mark.parametrize("name", FIGURE1_AND_WS + ["nvil:global-signal"])
@pytest.mark.parametrize("model", ["sbn:5", "sbn:6-5-3"])
def test_one_fused_run_follows_the_autograd_trajectory(name, model):
    compare([(name, 0)], model)


@pytest.mark.parametrize("model", ["sbn:5", "sbn:6-5-3"])
def test_runs_of_every_kind_batched_together_follow_their_lone_trajectories(model):
    compare([(name, seed) for seed, name in enumerate(FIGURE1_AND_WS)], model)


def test_runs_with_different_learning_rates_batch_together():
    # Rates shared by a kind of run ride on the products as their alpha; differing ones are a
    # per-run column: both paths, within NVIL and across NVIL and wake-sleep.
    compare([("nvil", 0), ("nvil", 1), ("nvil:baseline", 2), ("wake-sleep", 3), ("wake-sleep", 4)],
            "sbn:6-5", base_rates=[RATE, 3 * RATE, RATE, 2 * RATE, RATE / 2])


def test_global_signal_runs_batch_with_wake_sleep():
    compare([("nvil:global-signal", 0), ("nvil:global-signal", 1), ("wake-sleep", 2)], "sbn:6-5")


def test_a_non_finite_run_is_left_unchanged_and_the_others_train():
    runs = [make("nvil", seed=0), make("nvil", seed=1)]
    engine = FusedSGD(runs, [rates(a) for a in runs])
    with torch.no_grad():
        runs[0].model.visible.weight[0, 0] = float("nan")
    before = [{k: v.clone() for k, v in run.state_dict().items()} for run in runs]
    x = (torch.rand(2, 7, FEATURES) < 0.5).double()
    bounds = engine.step(x, [torch.Generator().manual_seed(s) for s in (0, 1)])
    assert not torch.isfinite(bounds[0]) and torch.isfinite(bounds[1])
    after = [run.state_dict() for run in runs]
    for key in before[0]:
        assert torch.equal(before[0][key], after[0][key]) or torch.isnan(before[0][key]).any()
    assert any(not torch.equal(before[1][k], after[1][k]) for k in before[1])


def test_an_inactive_run_draws_no_noise_and_does_not_change():
    runs = [make("wake-sleep", seed=0), make("wake-sleep", seed=1)]
    engine = FusedSGD(runs, [rates(a) for a in runs])
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    states = [g.get_state() for g in generators]
    before = {k: v.clone() for k, v in runs[1].state_dict().items()}
    engine.step((torch.rand(2, 7, FEATURES) < 0.5).double(), generators, active=[True, False])
    assert torch.equal(generators[1].get_state(), states[1])
    assert not torch.equal(generators[0].get_state(), states[0])
    assert all(torch.equal(before[k], runs[1].state_dict()[k]) for k in before)


def test_modules_hold_views_into_the_stacks():
    runs = [make("nvil", seed=0), make("nvil", seed=1)]
    engine = FusedSGD(runs, [rates(a) for a in runs])
    runs[1].inference.layers[0].weight.data[2, 1] = 42.0  # W is (H, C); the stack holds W^T
    assert engine.inference[0][0][1, 1, 2] == 42.0


@pytest.mark.parametrize("model,inference,optimizer,words", [
    ("fdarn:5", "factorial", "sgd", "autoregressive priors"),
    ("sbn:5", "autoregressive", "sgd", "autoregressive inference"),
    ("doc-sbn:5", "factorial", "sgd", "document models"),
    ("sbn:5", "factorial", "adam", "adam"),
])
def test_what_the_fused_engine_does_not_cover_is_named(model, inference, optimizer, words):
    algorithm = make("nvil", model, inference=inference)
    assert words in unsupported_reason(algorithm, optimizer)


def test_auto_falls_back_to_autograd_and_fused_says_why():
    assert Trainer(build(RunSpec(dataset="synthetic", model="sbn:4-8")), "unused").engine == "fused"
    fdarn = RunSpec(dataset="synthetic", model="fdarn:8")
    assert Trainer(build(fdarn), "unused").engine == "autograd"
    with pytest.raises(UserError, match="autoregressive priors"):
        Trainer(build(RunSpec(dataset="synthetic", model="fdarn:8", engine="fused")), "unused")
