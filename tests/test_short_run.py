"""Short-run MCMC inference (algorithms/short_run.py): options and refusals, the parameter-group
contract on every model family, the exact expected update of the binary kernels against the bias
check's enumeration of the noise (and wrong claims caught), the binary chain's limit, the
Gaussian chain against quadrature and against the closed form of a linear-Gaussian model, and
stacked runs following their lone trajectories.

Statistical tests use fixed seeds, so they are deterministic."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from group_contract import assert_losses_train_only_their_groups

from algorithms import REGISTRY, build, parse_name
from algorithms.short_run import ShortRun
from bench.check import draw_step, run_bias_check, tiny_model, tiny_problem
from bench.errors import UserError
from models.exact import exact_log_likelihood
from models.gaussian import GaussianLayer
from models.networks import BeliefNet, InferenceNet
from models.noise import draw as draw_noise

pytestmark = pytest.mark.usefixtures("single_thread")


def make(text, spec="sbn:2-3", batch_size=10, seed=0, overrides=None, num_features=5):
    model, q_net, x = tiny_problem(spec, num_features=num_features, batch_size=batch_size,
                                   seed=seed)
    return build(text, model, q_net, overrides).double(), x


# --------------------------------------------------------------------------------------------
# options, presets, refusals


def test_registered_with_presets():
    cls, preset = parse_name("short-run:dmala")
    assert REGISTRY["short-run"] is cls is ShortRun and preset == "dmala"
    assert set(ShortRun.presets) == {"", "fixed", "dlp", "dmala", "gibbs"}
    assert ShortRun.validation_bound == "ais"
    defaults = ShortRun.resolve_options()
    assert (defaults.num_steps, defaults.step_size, defaults.flip_step_size) == (25, 0.05, 0.2)
    assert ShortRun.resolve_options("dlp").flip_step_size == 0.1


@pytest.mark.parametrize("spec, kernel", [("sbn:2-3", "dmala"), ("gauss:2", "langevin"),
                                          ("fdarn:3", "dmala")])
def test_default_kernel_follows_the_latent_kinds(spec, kernel):
    method, _ = make("short-run", spec)
    assert method.kernel == kernel


@pytest.mark.parametrize("text, spec, words", [
    ("short-run:dmala", "gauss:2", "kernel=langevin"),
    ("short-run:gibbs", "gauss:2", "kernel=langevin"),
    ("short-run", "gauss:2b-2", "mixes binary and Gaussian"),
])
def test_a_kernel_that_does_not_fit_the_latents_is_one_line(text, spec, words):
    model, q_net, _ = tiny_problem(spec)
    with pytest.raises(UserError) as error:
        build(text, model, q_net, None)
    assert words in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError, match="needs Gaussian latents"):
        build("short-run", *tiny_problem("sbn:2-3")[:2], {"kernel": "langevin"})


@pytest.mark.parametrize("overrides", [{"kernel": "hmc"}, {"num_steps": 0}, {"gains": "x"},
                                       {"flip_step_size": -1}, {"space": "z"}])
def test_bad_options_raise_user_error(overrides):
    with pytest.raises(UserError):
        ShortRun.resolve_options("", overrides)


# --------------------------------------------------------------------------------------------
# the contract, on every model family


CONTRACT = [("short-run", "sbn:2-3"), ("short-run", "sbn:2-2-2"), ("short-run", "fdarn:4"),
            ("short-run:dlp", "doc-sbn:3"), ("short-run:gibbs", "sbn:2-2-2"),
            ("short-run:gibbs", "fdarn:3"), ("short-run:dlp", "nsbn:2/3"),
            ("short-run:fixed", "sbn:2-3"), ("short-run", "gauss:2-3"),
            ("short-run:fixed", "gauss:2-3"), ("short-run", "gauss:2/4")]


@pytest.mark.parametrize("text, spec", CONTRACT)
def test_losses_reach_their_own_group_only(text, spec):
    features = 7 if spec.startswith("doc") else 5
    overrides = {"num_steps": 3}
    if spec == "gauss:2-3":
        overrides["space"] = "latent" if text.endswith("fixed") else "noise"
    method, x = make(text, spec, overrides=overrides, num_features=features)
    groups = method.parameter_groups()
    scales = method.learning_rate_scales(method.options[0])
    assert "inference" not in scales and scales["model"] == 1.0   # Q is never trained
    assert ("step" in scales) == (method.kernel != "gibbs" and not text.endswith("fixed"))
    result = draw_step(method, x, torch.Generator().manual_seed(0))
    assert set(result.losses) == set(scales)
    assert_losses_train_only_their_groups(result.losses, groups)
    for name, value in result.metrics.items():
        assert value.shape == (1,) and not value.requires_grad and torch.isfinite(value).all(), name
    metrics = result.metrics
    assert torch.allclose(metrics["bound"], metrics["log_joint"] + metrics["entropy"])


def test_evaluations_per_example():
    options = ShortRun.resolve_options("", {"num_steps": 7})
    assert make("short-run", "gauss:2")[0].evaluations_per_example(options) == 8
    assert make("short-run", "sbn:2")[0].evaluations_per_example(options) == 9       # reuses
    assert make("short-run", "sbn:2-3")[0].evaluations_per_example(options) == 15


# --------------------------------------------------------------------------------------------
# binary kernels: the claim against exact enumeration of one update's noise


@pytest.mark.parametrize("text, spec, overrides", [
    ("short-run:dlp", "sbn:2-3", {"num_steps": 1}),
    ("short-run:dmala", "sbn:2-3", {"num_steps": 1}),
    ("short-run:gibbs", "sbn:2-3", {"num_steps": 1}),
    ("short-run:dmala", "sbn:2-3", {"num_steps": 1, "gains": "exact"}),
    ("short-run:fixed", "sbn:2-3", {"num_steps": 1, "gains": "exact", "kernel": "dlp"}),
    ("short-run:dmala", "sbn:1-2", {"num_steps": 2}),
    ("short-run:dlp", "sbn:1-2", {"num_steps": 2, "flip_step_size": 0.7}),
    ("short-run:gibbs", "fdarn:3", {"num_steps": 2}),
    ("short-run:dmala", "fdarn:3", {"num_steps": 1, "gains": "exact"}),
    ("short-run:dmala", "nsbn:2/3", {"num_steps": 1, "gains": "exact"}),
])
def test_binary_kernels_make_the_update_they_claim(text, spec, overrides):
    report = run_bias_check(text, spec, steps=300, batch_size=10, overrides=overrides, warmup=1)
    assert report.exact_configurations > 0, report.exact_skipped
    assert not report.biased, "\n".join(report.lines())
    learned = parse_name(text)[1] in ("", "dlp", "dmala") and text != "short-run:fixed"
    assert {t.group for t in report.exact} == ({"model", "step"} if learned else {"model"})


def test_default_preset_passes_the_monte_carlo_check():
    report = run_bias_check("short-run", "sbn:2-3", steps=150, batch_size=10, warmup=1,
                            overrides={"num_steps": 6})
    assert report.exact_skipped and not report.biased, "\n".join(report.lines())


class WrongFlipClaim(ShortRun):
    """Claims the chain of flip probabilities sigmoid(Delta / 2 - 1 / (2 alpha) + 0.5)."""

    def exact_objectives(self, x):
        right = self._flip_logits
        self._flip_logits = lambda gains, i, log_step: right(gains, i, log_step) + 0.5
        try:
            return super().exact_objectives(x)
        finally:
            del self._flip_logits


class PosteriorClaim(ShortRun):
    """Claims the update of the exact posterior (grad log p(x)), as if the chain had mixed."""

    def exact_objectives(self, x):
        return {"model": exact_log_likelihood(self.model, x).sum(-1)}


class EntropyFreeClaim(ShortRun):
    """Claims the step update of E[log p(x, h_T)] alone, leaving out the entropy term of J."""

    def _flip_kernel(self, *args):
        transition, entropies = super()._flip_kernel(*args)
        return transition, torch.zeros_like(entropies)


@pytest.mark.parametrize("cls, text, groups, monte_carlo", [
    (WrongFlipClaim, "short-run:dmala", {"model", "step"}, True),
    (WrongFlipClaim, "short-run:dlp", {"model", "step"}, True),
    (PosteriorClaim, "short-run:gibbs", {"model"}, False),   # 6-15 %: beyond 400 steps' power
    (EntropyFreeClaim, "short-run:dmala", {"step"}, True),
])
def test_the_check_catches_wrong_claims(cls, text, groups, monte_carlo):
    report = run_bias_check(text, "sbn:2-3", steps=400, batch_size=10, seed=1,
                            overrides={"num_steps": 1}, algorithm_class=cls, warmup=1)
    assert report.biased, "\n".join(report.lines())
    assert {t.group for t in report.exact if t.biased} == groups, "\n".join(report.lines())
    if monte_carlo:
        assert {t.group for t in report.tensors
                if t.max_abs_z > report.threshold} & groups, "\n".join(report.lines())


@pytest.mark.parametrize("kernel", ["dmala", "gibbs"])
def test_long_valid_chains_reach_the_posterior(kernel):
    """With many steps DMALA and Gibbs sample the posterior: the claim becomes grad log p(x), and
    E[J] (the bound) stays below log p(x)."""
    method, x = make(f"short-run:{kernel}", "sbn:2-3",
                     overrides={"num_steps": 2000, "learn_step": False})
    claim = method.claimed_update(x)
    exact = method.group_gradients({"model": exact_log_likelihood(method.model, x).sum(-1)})
    for got, want in zip(claim["model"], exact["model"], strict=True):
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-8)
    short, x = make(f"short-run:{kernel}", "sbn:2-3", overrides={"num_steps": 2})
    if kernel == "dmala":
        bound = short.exact_objectives(x)["step"]
        assert bound < exact_log_likelihood(short.model, x).mean() - 0.1


# --------------------------------------------------------------------------------------------
# Gaussian latents


@pytest.mark.parametrize("preset, step_size", [("", 0.6), ("fixed", 0.3)])
def test_langevin_makes_the_update_it_claims_by_quadrature(preset, step_size):
    text = f"short-run:{preset}" if preset else "short-run"
    report = run_bias_check(text, "gauss:1", steps=100, batch_size=10, warmup=1,
                            overrides={"num_steps": 1, "step_size": step_size})
    assert report.exact_configurations > 0 and not report.biased, "\n".join(report.lines())


def test_gaussian_claim_too_large_is_refused():
    method, x = make("short-run", "gauss:2")
    with pytest.raises(UserError, match="--model gauss:1 --set num_steps=1"):
        method.claimed_update(x)


def linear_gaussian(features=4, batch=6, seed=0):
    """z ~ N(0, 1), x | z ~ N(w z + b, diag sigma^2): the chain is a Gaussian AR(1) process."""
    generator = torch.Generator().manual_seed(seed)
    model = BeliefNet((1,), features, prior_layer=functools.partial(GaussianLayer, scale="fixed"),
                      visible_layer=functools.partial(GaussianLayer, scale="unit"),
                      generators=[None], dtype=torch.float64)
    q_net = InferenceNet(features, (1,), generators=[None], dtype=torch.float64,
                         conditional_layer=functools.partial(GaussianLayer, scale="context"))
    with torch.no_grad():
        model.visible.weight.copy_(torch.randn(1, 1, features, generator=generator,
                                               dtype=torch.float64))
        model.visible.bias.copy_(torch.randn(1, features, generator=generator, dtype=torch.float64))
        model.visible.log_scale.copy_(0.3 * torch.randn(1, features, generator=generator,
                                                        dtype=torch.float64))
    x = 1.5 * torch.randn(1, batch, features, generator=generator, dtype=torch.float64)
    return model, q_net, x


def closed_form_objectives(method, x):
    """E[log p(x, z_T)] of the AR(1) chain z' = rho z + s^2 c / 2 + s eps from N(0, 1)."""
    visible = method.model.visible
    w, b = visible.weight[0, 0], visible.bias[0]
    precision = torch.exp(-2 * visible.log_scale[0])
    log_s = method.log_step[0, 0]
    s2 = torch.exp(2 * log_s)

    def chain(w, b, precision, s2):
        lam = 1 + (w * w * precision).sum()
        c = ((x[0] - b) * w * precision).sum(-1)                     # (B,)
        rho = 1 - s2 * lam / 2
        mean, var = torch.zeros_like(c), torch.ones_like(c)
        for _ in range(method.num_steps):
            mean, var = rho * mean + s2 * c / 2, rho * rho * var + s2
        return mean, var

    def expected_log_joint(mean, var, w, b, precision):
        residual = x[0] - b - w * mean.unsqueeze(-1)
        visible_term = (-0.5 * precision * (residual ** 2 + w * w * var.unsqueeze(-1))
                        + 0.5 * torch.log(precision) - 0.5 * math.log(2 * math.pi)).sum(-1)
        return visible_term - 0.5 * (mean ** 2 + var) - 0.5 * math.log(2 * math.pi)

    mean, var = chain(w.detach(), b.detach(), precision.detach(), s2.detach())
    model_objective = expected_log_joint(mean, var, w, b, precision).sum()
    mean, var = chain(w.detach(), b.detach(), precision.detach(), s2)
    step_objective = (expected_log_joint(mean, var, w.detach(), b.detach(), precision.detach())
                      + log_s + 0.5 * math.log(2 * math.pi * math.e)).mean()
    return {"model": model_objective.view(1), "step": step_objective.view(1)}


def test_langevin_updates_match_the_closed_form_of_a_linear_gaussian_chain():
    model, q_net, x = linear_gaussian()
    method = ShortRun(model, q_net, ShortRun.resolve_options("", {"num_steps": 4,
                                                                  "step_size": 0.5}))
    groups = method.parameter_groups()
    claim = method.group_gradients(closed_form_objectives(method, x))
    generator = torch.Generator().manual_seed(1)
    steps = 1500
    sums = {g: [torch.zeros_like(p) for p in groups[g]] for g in claim}
    squares = {g: [torch.zeros_like(p) for p in groups[g]] for g in claim}
    for _ in range(steps):
        noise = draw_noise(method.noise(x), [generator], torch.float64)
        losses = method.step(x, noise).losses
        for g in claim:
            grads = torch.autograd.grad(losses[g], groups[g], allow_unused=True, retain_graph=True)
            for i, grad in enumerate(grads):
                if grad is not None:
                    sums[g][i] += -grad
                    squares[g][i] += grad * grad
    for g in claim:
        for total, square, target in zip(sums[g], squares[g], claim[g], strict=True):
            mean = total / steps
            error = ((square / steps - mean * mean).clamp_min(0) / steps).sqrt()
            z = (mean - target).abs() / error.clamp_min(1e-12)
            assert z.max() < 4.5, (g, mean, target)


@pytest.mark.parametrize("space", ["noise", "latent"])
def test_langevin_spaces_coincide_for_one_layer(space):
    one, x = make("short-run", "gauss:2", overrides={"num_steps": 3, "space": space})
    other, _ = make("short-run", "gauss:2", overrides={"num_steps": 3, "space": "noise"})
    noise = draw_noise(one.noise(x), [torch.Generator().manual_seed(4)], torch.float64)
    a, b = one.step(x, noise), other.step(x, noise)
    assert torch.allclose(a.losses["model"], b.losses["model"])
    assert torch.allclose(a.metrics["bound"], b.metrics["bound"])


# --------------------------------------------------------------------------------------------
# runs, posterior latents


@pytest.mark.parametrize("spec", ["sbn:2-3", "gauss:2-3"])
def test_stacked_runs_follow_their_lone_trajectories(spec):
    step_sizes = [0.1, 0.3, 0.05]
    key = "flip_step_size" if spec.startswith("sbn") else "step_size"
    options = [ShortRun.resolve_options("", {"num_steps": 3, key: s}) for s in step_sizes]
    model, q_net, x = tiny_problem(spec, batch_size=4, seed=2)
    stacked_model, stacked_q = tiny_model(spec, runs=3)
    with torch.no_grad():
        for name, value in stacked_model.state_dict().items():
            value.copy_(model.state_dict()[name].expand_as(value))
    stacked = ShortRun(stacked_model, stacked_q, options)
    generators = [torch.Generator().manual_seed(10 + r) for r in range(3)]
    noise = draw_noise(stacked.noise(x.expand(3, -1, -1)), generators, torch.float64)
    result = stacked.step(x.expand(3, -1, -1), noise)
    grads = torch.autograd.grad(sum(result.losses.values()),
                                [stacked.log_step] + list(stacked_model.parameters()))
    for r in range(3):
        alone = ShortRun(*tiny_problem(spec, batch_size=4, seed=2)[:2], options[r])
        lone_noise = draw_noise(alone.noise(x), [torch.Generator().manual_seed(10 + r)],
                                torch.float64)
        lone = alone.step(x, lone_noise)
        lone_grads = torch.autograd.grad(sum(lone.losses.values()),
                                         [alone.log_step] + list(alone.model.parameters()))
        for name in lone.metrics:
            assert torch.allclose(result.metrics[name][r], lone.metrics[name][0]), name
        for got, want in zip(grads, lone_grads, strict=True):
            assert torch.allclose(got[r], want[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("text, spec", [("short-run", "sbn:2-3"), ("short-run:gibbs", "sbn:2-3"),
                                        ("short-run", "gauss:2-3")])
def test_posterior_latents_are_the_chains_last_state(text, spec):
    method, x = make(text, spec, overrides={"num_steps": 2})
    noise = draw_noise(method.posterior_noise(x), [torch.Generator().manual_seed(5)],
                       torch.float64)
    with torch.no_grad():
        h = method.posterior_latents(x, noise)
    assert [part.shape for part in h] == [(1, 10, size) for size in method.model.latent_sizes]
    assert not any(part.requires_grad for part in h)
    if spec.startswith("sbn"):
        expected = method.step(x, noise).metrics["log_joint"]
        assert torch.allclose(method.model.log_joint(x, h).mean(-1), expected)
