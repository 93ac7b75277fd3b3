"""REBAR (algorithms/rebar.py) and RELAX (algorithms/relax.py): the expected update equals the
ELBO's gradient, shown by numerical integration over the continuous noise of one update; mistakes
that bias it are caught by the same comparison; the control update is the variance's gradient;
runs stack; the parameter-group contract holds on every model family.

Why integration and not bench.check's enumeration: these estimators use their uniforms u and v
continuously (logistic samples, their relaxations and the conditional sample z~), so setting them
to 0 or 1 cannot give the expected update, and run_bias_check rightly skips its exact part. Here,
on a tiny float64 model and one example, the expectation over u (and v) is computed with
Gauss-Legendre nodes on the boxes where the binary samples are constant: each u_j is split where
its unit flips, at sigma(a_j) (b_j = [u_j < sigma(a_j)]), the layers above split where they flip
given the binary layer below, and v needs no split (z~ is smooth in v). Nodes are mapped by
t -> t^2 / (t^2 + (1 - t)^2), which smooths the powers u^(1/lam) the relaxations take near the
ends of each piece. Every node runs as one run of a stacked estimator (runs are a tensor
dimension), and the quadrature-weighted sum of the runs' updates is compared with the gradient of
models.exact.exact_elbo.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from group_contract import assert_losses_train_only_their_groups

from algorithms.rebar import (
    REBAR,
    conditional_logistic,
    logistic_noise,
    plain_log_joint,
    tied_uniform,
)
from algorithms.relax import RELAX
from bench.check import draw_step, run_bias_check, tiny_model, tiny_problem
from bench.errors import UserError
from models import FAMILIES
from models.layers import bernoulli_log_prob
from models.noise import draw as draw_noise

EXACT = 1e-6          # relative error of an integrated update that counts as exact
#: RELAX's control variate r in the integration tests: narrow and smooth (tanh), so that a few
#: nodes integrate it to high precision; the depth stays the preset's. (The argument for
#: unbiasedness does not involve r's form; ReLU networks take the Monte Carlo check.)
SMOOTH_RELAX = {"cv_hidden": 6, "activation": "tanh"}


pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------------------------
# integration over the noise of one update


def unit_nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes on [0, 1] mapped by t^2 / (t^2 + (1 - t)^2), weights normalised to
    sum to 1 (a function constant on the piece is integrated exactly)."""
    t, w = np.polynomial.legendre.leggauss(n)
    t, w = (t + 1) / 2, w / 2
    denominator = t ** 2 + (1 - t) ** 2
    nodes = t ** 2 / denominator
    weights = w * 2 * t * (1 - t) / denominator ** 2
    return nodes, weights / weights.sum()


def quadrature(method, x, n_u: int, n_v: int, independent: bool):
    """Nodes (u, v) (M, total latents) and weights (M,) for E over one update's noise of one
    example x (1, 1, D): a product rule on every box of constant binary samples."""
    q_net = method.inference
    sizes = list(q_net.latent_sizes)
    total = sum(sizes)
    u_nodes, u_weights = unit_nodes(n_u)
    v_nodes, v_weights = unit_nodes(n_v)
    us, vs, ws = [], [], []
    with torch.no_grad():
        for bits in itertools.product([0.0, 1.0], repeat=total):
            h = torch.split(torch.tensor(bits, dtype=torch.float64), sizes)
            context, lows, highs = q_net.centre(x), [], []
            for layer, b in zip(q_net.layers, h, strict=True):
                theta = torch.sigmoid(layer.context_logits(context))[0, 0]
                lows.append(torch.where(b > 0, 0.0, theta))
                highs.append(torch.where(b > 0, theta, 1.0))
                context = b.view(1, 1, -1)
            low, width = torch.cat(lows).numpy(), (torch.cat(highs) - torch.cat(lows)).numpy()
            axes = [low[d] + width[d] * u_nodes for d in range(total)]
            axis_weights = [width[d] * u_weights for d in range(total)]
            if independent:
                axes += [v_nodes] * total
                axis_weights += [v_weights] * total
            grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
            weight = np.stack(np.meshgrid(*axis_weights, indexing="ij"), -1).reshape(
                -1, len(axes)).prod(-1)
            us.append(grid[:, :total])
            vs.append(grid[:, total:] if independent else np.full((grid.shape[0], total), 0.5))
            ws.append(weight)
    return [torch.from_numpy(np.concatenate(a)) for a in (us, vs, ws)]


def integrated_update(cls, spec, options, method, x, n_u, n_v, chunk=4096):
    """E[-grad losses[g]] for "model" and "inference", integrated over u (and v when the noise is
    not tied): each node is one run of a stacked copy of `method`."""
    u, v, w = quadrature(method, x, n_u, n_v, not options.tied_noise)
    sizes = list(method.inference.latent_sizes)
    groups = method.parameter_groups()
    total = {g: [torch.zeros_like(p[0]) for p in groups[g]] for g in ("model", "inference")}
    state = method.state_dict()
    for start in range(0, u.shape[0], chunk):
        runs = min(chunk, u.shape[0] - start)
        model, q_net = tiny_model(spec, x.shape[-1], runs)
        copies = type(method)(model, q_net, options)
        with torch.no_grad():
            for name, value in copies.state_dict().items():
                value.copy_(state[name].expand_as(value))
        noise = {name: [t.reshape(runs, 1, -1) for t in torch.split(values[start:start + runs],
                                                                    sizes, -1)]
                 for name, values in (("u", u), ("v", v))}
        losses = copies.step(x.expand(runs, *x.shape[1:]), noise).losses
        weight = w[start:start + runs]
        copy_groups = copies.parameter_groups()
        for g in total:
            grads = torch.autograd.grad(losses[g], copy_groups[g], retain_graph=True)
            for t, grad in zip(total[g], grads, strict=True):
                t -= (weight.view(-1, *[1] * (grad.dim() - 1)) * grad).sum(0)
    return total


def integration_errors(cls, spec="sbn:2", preset="", overrides=None, n_u=20, n_v=12, seed=0):
    """Largest relative error per group, over the parameter tensors, of the integrated expected
    update against the gradient of the exact ELBO; the control parameters are moved off their
    initial values (eta = 1, lam = 1/2 would be special points)."""
    model, q_net, x = tiny_problem(spec, num_features=5, batch_size=1, seed=seed)
    options = cls.resolve_options(preset, overrides)
    method = cls(model, q_net, options)
    generator = torch.Generator().manual_seed(seed + 11)
    with torch.no_grad():
        for parameter in method.control_parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator,
                                             dtype=parameter.dtype))
    expected = integrated_update(cls, spec, options, method, x, n_u, n_v)
    groups = method.parameter_groups()
    objectives = method.exact_objectives(x)
    errors = {}
    for g, tensors in expected.items():
        exact = torch.autograd.grad(objectives[g].sum(), groups[g], retain_graph=True)
        errors[g] = max(((e - t[0]).norm() / t[0].norm()).item()
                        for e, t in zip(tensors, exact, strict=True))
    return errors


def rebar_cases():
    # independent noise adds an axis per unit: on a one-unit model it stays a 2-d integral
    return [pytest.param(preset, "sbn:1" if preset == "independent-noise" else "sbn:2",
                         id=preset or "default") for preset in REBAR.presets]


@pytest.mark.parametrize("preset, spec", rebar_cases())
def test_rebar_expected_update_is_the_elbo_gradient(preset, spec):
    errors = integration_errors(REBAR, spec, preset, n_v=24)
    assert errors["model"] < 1e-12, errors
    assert errors["inference"] < EXACT, errors


@pytest.mark.parametrize("preset", list(RELAX.presets))
def test_relax_expected_update_is_the_elbo_gradient(preset):
    spec = "sbn:1" if preset == "independent-noise" else "sbn:2"
    errors = integration_errors(RELAX, spec, preset, SMOOTH_RELAX, n_u=28, n_v=24)
    assert errors["model"] < 1e-12, errors
    assert errors["inference"] < EXACT, errors


@pytest.mark.parametrize("cls, overrides", [(REBAR, None), (RELAX, SMOOTH_RELAX)])
def test_two_layer_expected_update_is_the_elbo_gradient(cls, overrides):
    """Every layer's estimator, the relaxed value of layer 1 fed to layer 2 (sbn:1-1)."""
    errors = integration_errors(cls, "sbn:1-1", "", overrides, n_u=28)
    assert errors["model"] < 1e-12, errors
    assert errors["inference"] < EXACT, errors


@pytest.mark.skipif("nsbn" not in FAMILIES, reason="no nonlinear model family (models/mlp.py)")
@pytest.mark.parametrize("cls, overrides", [(REBAR, None), (RELAX, SMOOTH_RELAX)])
def test_nonlinear_expected_update_is_the_elbo_gradient(cls, overrides):
    """The nonlinear model of the papers' experiments (here 2 binary units, one hidden layer of 3
    tanh units in P and Q): the chain rule from the logits to Q's parameters runs through the
    MLP."""
    errors = integration_errors(cls, "nsbn:2/3", "", overrides, n_v=24)
    assert errors["model"] < 1e-12, errors
    assert errors["inference"] < EXACT, errors


# -- power: estimators with one mistake fail the same comparison ------------------------------


class ReusedSampleREBAR(REBAR):
    """Wrong: z~ is not resampled given b but is z itself (gradient included), so the score term
    subtracts c(z), which depends on b. (A fresh draw from p(z), independent of b, would be no
    bias, only no help: its score term and its reparameterised terms both vanish in
    expectation.)"""

    def conditional_noise(self, u, v, logits, b):
        return u

    def conditional_sample(self, logits, b, u):
        return logits + logistic_noise(u)


class FlippedConditionREBAR(REBAR):
    """Wrong: z~ is conditioned on 1 - b, as happens when the paper's convention b = [u > 1 -
    theta] is mixed with the suite's b = [u < theta]."""

    def conditional_sample(self, logits, b, v):
        return conditional_logistic(logits, 1 - b, v)


def undetached_coefficient(self, signal, conditional_value, score, reparam, **kw):
    """The logit-space update with the coefficient of the score left attached to the logits."""
    free, scaled = REBAR.logit_gradient(self, signal, conditional_value, score, reparam)
    batch = signal.shape[-1]
    leak, = torch.autograd.grad(kw["values"][:, batch:].sum(), kw["logits"], create_graph=True)
    return free, scaled - kw["log_q"].unsqueeze(-1) * leak


class UndetachedCoefficientREBAR(REBAR):
    """Wrong: the coefficient of the score, f(b) - eta c(z~), is not detached from the logits, as
    when autograd differentiates the surrogate [f(b) - eta c(z~)] log Q(b) + eta c(z) - eta c(z~):
    the update gains -eta log Q(b) dc(z~)/da."""

    logit_gradient = undetached_coefficient


class MissingScoreCorrectionREBAR(REBAR):
    """Wrong: the reparameterised difference eta (dc(z)/da - dc(z~)/da) is added without its
    score-function partner -eta c(z~) d log Q(b)/da."""

    def logit_gradient(self, signal, conditional_value, score, reparam, **_):
        return signal.unsqueeze(-1) * score, reparam


class UpperLayersBinaryREBAR(REBAR):
    """Wrong: the relaxed pass of layer l keeps the binary samples of the layers above instead of
    feeding them the relaxed value; those samples depend on b_l = H(z_l), so c is not a smooth
    function of z_l and its reparameterisation gradient misses the jumps."""

    def relaxed_signal(self, x, hard, hard_log_q, layer, z, logits, noise_u):
        latents = list(hard[:layer]) + [self.relax(z, logits, layer)] + list(hard[layer + 1:])
        log_q = hard_log_q + bernoulli_log_prob(logits, latents[layer])
        for k in range(layer + 1, self.num_layers):
            upper = self.inference.layers[k].context_logits(latents[k - 1])
            log_q = log_q + bernoulli_log_prob(upper, latents[k])
        return plain_log_joint(self.model, x, latents) - log_q


class OwnSampleSurrogateRELAX(RELAX):
    """Wrong: the network r of layer l also sees that layer's binary sample b_l = H(z_l), so the
    control variate jumps where b flips and its reparameterisation gradient misses the jump."""

    def control_variate(self, layer, relaxed_signal, z, centred, below):
        inputs = torch.cat([centred, z, *below], -1)
        return relaxed_signal + self.surrogates[layer](inputs) + (z > 0).to(z.dtype).sum(-1)


class UndetachedCoefficientRELAX(RELAX):
    """Wrong: as UndetachedCoefficientREBAR, with RELAX's learned control variate."""

    logit_gradient = undetached_coefficient


@pytest.mark.parametrize("cls, spec, overrides", [
    (ReusedSampleREBAR, "sbn:2", None),
    (FlippedConditionREBAR, "sbn:2", None),
    (UndetachedCoefficientREBAR, "sbn:2", None),
    (MissingScoreCorrectionREBAR, "sbn:2", None),
    (UpperLayersBinaryREBAR, "sbn:1-1", None),
    (OwnSampleSurrogateRELAX, "sbn:2", SMOOTH_RELAX),
    (UndetachedCoefficientRELAX, "sbn:2", SMOOTH_RELAX),
])
def test_integration_catches_wrong_estimators(cls, spec, overrides):
    """Each mistake misses the ELBO gradient by orders of magnitude more than the tolerance,
    and only in the inference network's update."""
    errors = integration_errors(cls, spec, "", overrides, n_u=16)
    assert errors["model"] < 1e-12, errors
    assert errors["inference"] > 1e3 * EXACT, errors


# --------------------------------------------------------------------------------------------
# the relaxed samples


def test_conditional_sample_has_the_conditional_law():
    """z~(v) given b is the quantile function of z | H(z) = b, with z logistic at a:
    P(z <= t | b = 1) = (sigma(t - a) - sigma(-a)) / (1 - sigma(-a)), and z~(v) falls from +inf to
    0 as v goes from 0 to 1, so P(z <= z~(v) | b = 1) = 1 - v (b = 0 likewise, from 0 to -inf)."""
    a = torch.tensor([-3.0, -0.5, 0.0, 1.2, 4.0], dtype=torch.float64).view(-1, 1)
    v = torch.linspace(0.01, 0.99, 99, dtype=torch.float64).view(1, -1)
    one = conditional_logistic(a.expand(-1, 99), torch.ones(5, 99, dtype=torch.float64), v)
    zero = conditional_logistic(a.expand(-1, 99), torch.zeros(5, 99, dtype=torch.float64), v)
    assert bool((one > 0).all()) and bool((zero < 0).all())
    below = torch.sigmoid(-a)  # P(z <= 0)
    cdf_one = (torch.sigmoid(one - a) - below) / (1 - below)
    cdf_zero = torch.sigmoid(zero - a) / below
    assert torch.allclose(cdf_one, 1 - v.expand(5, -1), atol=1e-12)
    assert torch.allclose(cdf_zero, 1 - v.expand(5, -1), atol=1e-12)


def test_tied_noise_gives_the_unconditional_sample_in_value():
    """v = u's position in the interval that gave b: z~ equals z = a + log(1 - u) - log u."""
    generator = torch.Generator().manual_seed(0)
    a = 3 * torch.randn(1000, generator=generator, dtype=torch.float64)
    u = torch.rand(1000, generator=generator, dtype=torch.float64)
    b = (u < torch.sigmoid(a)).to(a.dtype)
    z = a + torch.log1p(-u) - torch.log(u)
    assert torch.equal(z > 0, b > 0)
    z_tilde = conditional_logistic(a, b, tied_uniform(u, a, b))
    assert torch.allclose(z_tilde, z, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("spec, features", [("sbn:2-3", 5), ("fdarn:4", 5), ("doc-sbn:3", 7)])
def test_plain_log_joint_is_the_models(spec, features):
    """The twice-differentiable log P(x, h) used at relaxed values agrees with the model's own at
    binary values, for every model family (fDARN's prior, documents' softmax)."""
    model, _, x = tiny_problem(spec, num_features=features, batch_size=4, seed=0)
    generator = torch.Generator().manual_seed(1)
    h = [(torch.rand(1, 4, size, generator=generator, dtype=torch.float64) < 0.5).double()
         for size in model.latent_sizes]
    assert torch.allclose(plain_log_joint(model, x, h), model.log_joint(x, h), atol=1e-12)


# --------------------------------------------------------------------------------------------
# the Monte Carlo check, the control update, stacking, the contract


def presets_of(cls):
    return [pytest.param(cls, preset, id=f"{cls.name}:{preset or 'default'}")
            for preset in cls.presets]


@pytest.mark.parametrize("cls, preset", presets_of(REBAR) + presets_of(RELAX))
def test_monte_carlo_check_finds_no_bias(cls, preset):
    """bench.check's z-test against the exact ELBO gradient on sbn:2-3 (two layers). No warm-up:
    the estimators keep no running statistics, and their control parameters do not move here."""
    text = f"{cls.name}:{preset}" if preset else cls.name
    overrides = {"cv_hidden": 16} if cls is RELAX else None
    report = run_bias_check(text, steps=60, batch_size=20, seed=1, algorithm_class=cls,
                            overrides=overrides, warmup=0, exact=False)
    assert not report.biased, "\n".join(report.lines())
    assert {t.group for t in report.tensors} == {"model", "inference"}
    assert all(t.scale > 0 for t in report.tensors)


@pytest.mark.parametrize("cls", [REBAR, RELAX])
def test_exact_enumeration_of_the_bias_check_is_skipped_saying_why(cls):
    """u and v are used continuously: forcing them to 0 or 1 is no Bernoulli enumeration, and the
    check says so (the binary draws made from u cover the configurations of u once, but every
    configuration of v repeats them) instead of reporting a wrong expectation."""
    overrides = {"cv_hidden": 16} if cls is RELAX else None
    report = run_bias_check(cls.name, steps=2, batch_size=20, seed=1, algorithm_class=cls,
                            overrides=overrides, warmup=0)
    assert report.exact_skipped and "used continuously" in report.exact_skipped
    assert not report.exact


def control_gradient_and_variance(method, x, noise):
    result = method.step(x, noise)
    control = method.control_parameters()
    grads = torch.autograd.grad(result.losses["control"], control)
    return grads, result.metrics["variance"]


@pytest.mark.parametrize("cls, overrides", [(REBAR, None), (RELAX, {"cv_hidden": 5})])
def test_control_update_is_the_gradient_of_the_variance_objective(cls, overrides):
    """losses["control"]'s gradient is dV/dpsi (plus RELAX's weight decay) for V the reported
    variance of the inference update: checked against central differences of V along a random
    direction of every control parameter, so the second derivatives through the relaxed passes
    (the temperature's, r's) are the true ones."""
    model, q_net, x = tiny_problem("sbn:2-3", num_features=5, batch_size=6, seed=2)
    method = cls(model, q_net, cls.resolve_options("", overrides))
    noise = draw_noise(method.noise(x), [torch.Generator().manual_seed(3)], torch.float64)
    grads, _ = control_gradient_and_variance(method, x, noise)
    generator = torch.Generator().manual_seed(4)
    direction = [torch.randn(p.shape, generator=generator, dtype=p.dtype)
                 for p in method.control_parameters()]
    step = 1e-5
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            for p, d in zip(method.control_parameters(), direction, strict=True):
                p.add_(sign * step * d)
        _, variance = control_gradient_and_variance(method, x, noise)
        values.append(variance.sum().item() + weight_decay_penalty(method))
        with torch.no_grad():
            for p, d in zip(method.control_parameters(), direction, strict=True):
                p.sub_(sign * step * d)
    numeric = (values[0] - values[1]) / (2 * step)
    analytic = sum((g * d).sum() for g, d in zip(grads, direction, strict=True)).item()
    assert analytic == pytest.approx(numeric, rel=1e-6)
    # every control parameter moves: eta, log lam and the network (C(x) or r)
    assert all(g.abs().sum() > 0 for g in grads)


def weight_decay_penalty(method) -> float:
    """(weight_decay / 2) |rho|^2 over RELAX's network r (0 for REBAR, which has none)."""
    if not isinstance(method, RELAX):
        return 0.0
    with torch.no_grad():
        return sum(0.5 * method.options[0].weight_decay * p.pow(2).sum().item()
                   for p in method.surrogates.parameters())


def build_like(cls, lone, options_per_run, runs):
    """An estimator of `runs` runs, each a copy of the lone estimator's state."""
    model, q_net = tiny_model("sbn:2-3", 5, runs)
    method = cls(model, q_net, options_per_run)
    with torch.no_grad():
        for name, value in method.state_dict().items():
            value.copy_(lone.state_dict()[name].expand_as(value))
    return method


@pytest.mark.parametrize("cls, presets", [
    (REBAR, ("concrete", "independent-noise")), (REBAR, ("", "no-baseline")),
    (REBAR, ("fixed-temperature", "")), (RELAX, ("", "independent-noise")),
    (RELAX, ("fixed-temperature", "control-lr-10"))])
def test_stacked_runs_give_each_runs_lone_update(cls, presets):
    model, q_net, x = tiny_problem("sbn:2-3", num_features=5, batch_size=4, seed=5)
    overrides = {"cv_hidden": 7} if cls is RELAX else None
    options = [cls.resolve_options(p, overrides) for p in presets]
    lone = cls(model, q_net, options[0])
    with torch.no_grad():
        for p in lone.control_parameters():
            p.add_(0.2 * torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator()
                                     .manual_seed(6)))
    stacked = build_like(cls, lone, options, 2)
    noise = draw_noise(stacked.noise(x), [torch.Generator().manual_seed(s) for s in (7, 8)],
                       torch.float64)
    together = stacked.step(x.expand(2, -1, -1), noise)
    groups = stacked.parameter_groups()
    for r, option in enumerate(options):
        alone_method = build_like(cls, lone, [option], 1)
        alone = alone_method.step(x, {k: [t[r:r + 1] for t in v] for k, v in noise.items()})
        alone_groups = alone_method.parameter_groups()
        for g in groups:
            stacked_grads = torch.autograd.grad(together.losses[g], groups[g], retain_graph=True)
            lone_grads = torch.autograd.grad(alone.losses[g], alone_groups[g], retain_graph=True)
            for stacked_grad, lone_grad in zip(stacked_grads, lone_grads, strict=True):
                assert torch.allclose(stacked_grad[r], lone_grad[0], rtol=1e-10, atol=1e-12), (
                    g, presets[r])
        for name, value in alone.metrics.items():
            assert together.metrics[name][r].item() == pytest.approx(value.item(), rel=1e-12)


CONTRACT_MODELS = [("sbn:2-3", 5), ("sbn:2-2-2", 5), ("fdarn:4", 5), ("doc-sbn:3", 7)]
if "nsbn" in FAMILIES:  # the nonlinear family of REBAR's and RELAX's experiments (models/mlp.py)
    CONTRACT_MODELS.append(("nsbn:2-2/3", 5))


@pytest.mark.parametrize("cls", [REBAR, RELAX])
@pytest.mark.parametrize("spec, features", CONTRACT_MODELS)
def test_parameter_group_contract(cls, spec, features):
    model, q_net, x = tiny_problem(spec, num_features=features, batch_size=5, seed=0)
    overrides = {"cv_hidden": 8} if cls is RELAX else None
    method = cls(model, q_net, cls.resolve_options("", overrides))
    groups = method.parameter_groups()
    assert set(groups) == {"model", "inference", "control"}
    grouped = [id(p) for params in groups.values() for p in params]
    assert len(grouped) == len(set(grouped)) and set(grouped) == {id(p) for p in
                                                                   method.parameters()}
    scales = method.learning_rate_scales(method.options[0])
    assert scales == {"model": 1.0, "inference": 0.2,
                      "control": 10.0 if cls is REBAR else 1.0}
    assert method.evaluations_per_example(method.options[0]) == 1 + 2 * len(model.latent_sizes)
    result = draw_step(method, x, torch.Generator().manual_seed(0))
    assert set(result.losses) == set(groups)
    for value in result.metrics.values():
        assert value.shape == (1,) and not value.requires_grad and torch.isfinite(value).all()
    assert result.metrics["bound"].item() < 0
    assert_losses_train_only_their_groups(result.losses, groups)


def test_state_is_per_run():
    model, q_net = tiny_model("sbn:2-3", 5, 3)
    for cls in (REBAR, RELAX):
        method = cls(model, q_net, cls.resolve_options("", {"temperature": "0.25"}))
        assert all(value.shape[0] == 3 for value in method.state_dict().values())
        assert torch.allclose(method.temperatures(), torch.full((3, 2), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("cls", [REBAR, RELAX])
def test_autoregressive_inference_is_refused(cls):
    model, q_net, _ = tiny_problem("sbn:2-3", inference="autoregressive")
    with pytest.raises(UserError, match="--inference factorial"):
        cls(model, q_net, cls.resolve_options())


@pytest.mark.parametrize("cls, overrides", [
    (REBAR, {"relaxation": "gumbel"}), (REBAR, {"temperature": "0"}),
    (REBAR, {"baseline_hidden": "0"}), (RELAX, {"activation": "sigmoid"}),
    (RELAX, {"weight_decay": "-1"}), (RELAX, {"eta": "1"})])
def test_bad_options_raise_user_errors(cls, overrides):
    with pytest.raises(UserError):
        cls.resolve_options("", overrides)


def test_same_noise_gives_the_binary_samples_of_the_inference_network():
    """b = [u < sigma(a)], as LogisticLayer.sample draws it: the model's update is Eq. 5 at the
    very latents NVIL or wake-sleep would draw from the same noise."""
    model, q_net, x = tiny_problem("sbn:2-3", batch_size=8, seed=3)
    method = REBAR(model, q_net, REBAR.resolve_options())
    noise = draw_noise(method.noise(x), [torch.Generator().manual_seed(9)], torch.float64)
    h, _ = q_net.sample(x, noise["u"])
    loss = method.step(x, noise).losses["model"]
    assert loss.item() == pytest.approx(-model.log_joint(x, h).sum().item(), rel=1e-12)
