"""Gaussian latent layers, the gauss model family, Gauss-Hermite quadrature in the bias check,
and the estimators that train Gaussian models (VAE; NVIL and REINFORCE by the score function)."""

from __future__ import annotations

import math

import pytest
import torch

import algorithms
from algorithms.vae import VAE
from bench.check import run_bias_check, tiny_problem
from bench.errors import UserError
from bench.runs import train_run
from bench.specs import RunSpec
from models import ModelSpec
from models.gaussian import GaussianLayer
from models.noise import draw
from models.quadrature import product_grid, quadrature_elbo

# short-run's chains make hundreds of tiny kernel calls per update: one thread (conftest)
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("text, name, kinds, hidden", [
    ("gauss:64-64-64", "gauss:64-64-64", ("gaussian",) * 3, ()),
    ("gauss:32/200-200", "gauss:32/200-200", ("gaussian",), (200, 200)),
    ("gauss:32/200/lrelu0.2", "gauss:32/200/lrelu0.2", ("gaussian",), (200,)),
    ("gauss:200b-64", "gauss:200b-64", ("binary", "gaussian"), ()),
    ("sbn:200-200", "sbn:200-200", ("binary", "binary"), ()),
])
def test_model_specs_name_their_latent_kinds(text, name, kinds, hidden):
    spec = ModelSpec.parse(text)
    assert (spec.name, spec.latent_kinds, spec.hidden) == (name, kinds, hidden)
    model, inference = spec.build(12, generators=[torch.Generator().manual_seed(0)])
    assert model.latent_kinds == tuple(reversed(kinds)) == inference.latent_kinds


@pytest.mark.parametrize("text", ["sbn:64b", "gauss:64x", "gauss:0"])
def test_malformed_gaussian_specs_are_one_line_errors(text):
    with pytest.raises(UserError, match="malformed model spec"):
        ModelSpec.parse(text)


def test_gaussian_layers_refuse_an_autoregressive_inference_network():
    with pytest.raises(UserError, match="factorial inference network"):
        ModelSpec.parse("gauss:4", inference="autoregressive")


def test_layer_densities_and_samples_are_the_normal_distributions():
    generator = torch.Generator().manual_seed(1)
    layer = GaussianLayer(3, 4, init_scale=0.5, generators=[generator, generator],
                          dtype=torch.float64, scale="context")
    context = torch.randn(2, 6, 4, dtype=torch.float64)
    eps = torch.randn(2, 6, 3, dtype=torch.float64)
    mean, log_scale = layer.mean_and_log_scale(context)
    value = layer.sample(context, eps)
    torch.testing.assert_close(value, mean + log_scale.exp() * eps)
    expected = torch.distributions.Normal(mean, log_scale.exp()).log_prob(value).sum(-1)
    torch.testing.assert_close(layer.log_prob(value, context), expected)
    sample, log_prob = layer.sample_with_log_prob(context, eps)
    assert not sample.requires_grad and log_prob.requires_grad
    rsample, _ = layer.rsample_with_log_prob(context, eps)
    assert rsample.requires_grad
    prior = GaussianLayer(3, 0, generators=[generator], dtype=torch.float64, scale="fixed")
    assert list(prior.parameters()) == []
    torch.testing.assert_close(prior.log_prob(eps[:1]),
                               torch.distributions.Normal(0.0, 1.0).log_prob(eps[:1]).sum(-1))


def test_the_quadrature_rule_integrates_normal_moments():
    grid, log_weight = product_grid(2, 16)
    weight = log_weight.exp()
    assert float(weight.sum()) == pytest.approx(1.0, abs=1e-14)
    assert float((weight * grid[:, 0] ** 4).sum()) == pytest.approx(3.0, abs=1e-12)
    assert float((weight * grid[:, 0] ** 2 * grid[:, 1] ** 2).sum()) == pytest.approx(1.0,
                                                                                      abs=1e-12)


def test_the_quadrature_elbo_equals_a_trapezoid_integral_over_the_latent():
    """One Gaussian unit: ELBO = ∫ q(h) [log P(x, h) - log q(h)] dh by the trapezoid rule on a
    fine grid in h (an independent computation: no reparameterisation, no nodes)."""
    model, inference, x = tiny_problem("gauss:1", 5, 3, seed=4)
    h = torch.linspace(-60, 60, 120001, dtype=torch.float64).view(1, -1, 1, 1).expand(1, -1, 3, 1)
    log_q = inference.log_prob(x, [h])
    integrand = log_q.exp() * (model.log_joint(x, [h]) - log_q)        # (1, M, B)
    trapezoid = torch.trapezoid(integrand, h[0, :, 0, 0], dim=1)
    torch.testing.assert_close(quadrature_elbo(model, inference, x), trapezoid, rtol=1e-7,
                               atol=1e-7)


@pytest.mark.parametrize("algorithm, model", [
    ("vae", "gauss:1-1"), ("vae", "gauss:2"), ("nvil", "gauss:1-1"), ("nvil", "gauss:2"),
    ("reinforce", "gauss:1-1"),
])
def test_estimators_of_gaussian_models_are_exact_by_quadrature(algorithm, model):
    report = run_bias_check(algorithm, model=model, steps=300)
    assert report.exact, report.exact_skipped
    assert not report.exact_biased, "\n".join(report.lines())


class VAEWithoutEntropyGradient(VAE):
    """A deliberately wrong VAE: -log Q's gradient left out of the inference update."""

    def step(self, x, noise):
        h, log_q = self.inference.rsample(x, noise["eps"])
        log_q = [term.detach() for term in log_q]
        bound = (self.model.log_joint(x, h) - sum(log_q)).mean(1)
        loss = -bound.sum()
        return algorithms.base.StepResult(
            losses={"model": loss.new_zeros(()) + _group_surrogate(self, loss, "model"),
                    "inference": _group_surrogate(self, loss, "inference")},
            metrics={"bound": bound.detach().mean(-1)})


def _group_surrogate(method, loss, group):
    parameters = method.parameter_groups()[group]
    grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    return sum((g.detach() * p).sum() for g, p in zip(grads, parameters, strict=True)
               if g is not None)


def test_the_quadrature_check_catches_a_vae_without_the_entropy_gradient():
    report = run_bias_check("vae", model="gauss:1-1", steps=300,
                            algorithm_class=VAEWithoutEntropyGradient)
    bad = [t for t in report.exact if t.biased]
    assert bad and {t.group for t in bad} == {"inference"}


@pytest.mark.parametrize("algorithm, model, message", [
    ("arm", "gauss:2", "arm handles binary latent units, not gaussian"),
    ("vimco", "gauss:2", "vimco handles binary latent units, not gaussian"),
    ("vae", "sbn:2-3", "vae handles gaussian latent units, not binary"),
    ("vae", "gauss:2b-1", "vae handles gaussian latent units, not binary"),
])
def test_an_estimator_refuses_latents_it_does_not_handle(algorithm, model, message):
    p_model, q_net, _ = tiny_problem(model, 5, 2)
    with pytest.raises(UserError, match=message):
        algorithms.build(algorithm, p_model, q_net)


def test_a_vae_trains_a_gaussian_model_and_its_bound_improves(tmp_path):
    spec = RunSpec(algorithm="vae", dataset="synthetic", model="gauss:4", updates=600,
                   eval_interval=200, eval_examples=200, test_examples=200, optimizer="adam",
                   learning_rate=3e-3, seed=1)
    train_run(spec, tmp_path, progress=False)
    import json
    record = json.loads((tmp_path / "record.json").read_text())
    curve = [line.split(",") for line in (tmp_path / "curve.csv").read_text().splitlines()[1:]]
    assert record["status"] == "complete"
    assert float(curve[-1][2]) > float(curve[0][2]) + 0.5
    test = [m for m in record["metrics"] if m["split"] == "test" and m["bound"] == "elbo"][0]
    assert math.isfinite(test["nll"])


def test_runs_with_equal_seeds_draw_equal_gaussian_noise():
    spec = ModelSpec.parse("gauss:3")
    model, inference = spec.build(6, generators=[torch.Generator().manual_seed(0)] * 2)
    method = algorithms.build("vae", model, inference)
    x = torch.zeros(2, 4, 6)
    first = draw(method.noise(x), [torch.Generator().manual_seed(5) for _ in range(2)])["eps"][0]
    assert first.shape == (2, 1, 4, 3)
    torch.testing.assert_close(first[0], first[1])
