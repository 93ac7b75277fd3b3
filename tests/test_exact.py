"""models/exact.py against brute-force Python loops over configurations, and the identities the
exact quantities must satisfy: ELBO = log P(x) - KL(Q || P(h|x)) (Eq. 2), ELBO <= log P(x) with
equality at the exact posterior, the exact bound's φ-gradient of Appendix B, and the sleep objective
as a double sum over x and h.

Models hold R runs (a lone model here, R = 1): x is (1, B, D), one example is (1, D), results are
(R, B) or (R,), and weights are stored transposed ((R, C, H) = W^T)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import models.exact as exact_module
from bench.check import tiny_problem
from models import (
    MAX_EXACT_LATENTS,
    ModelSpec,
    exact_elbo,
    exact_log_likelihood,
    exact_sleep_objective,
)
from models.exact import binary_configurations, latent_configurations

SPECS = [("sbn:2-3", "factorial"), ("sbn:2-2-2", "autoregressive"), ("fdarn:4", "factorial")]


def configurations(latent_sizes):
    """Every latent configuration as a list of per-layer (1, H_i) tensors (a run dimension of 1),
    one at a time."""
    for bits in itertools.product([0.0, 1.0], repeat=sum(latent_sizes)):
        flat = torch.tensor(bits, dtype=torch.float64)
        yield [part.unsqueeze(0) for part in torch.split(flat, list(latent_sizes))]


def brute_log_likelihood(model, x_row):
    terms = [model.log_joint(x_row, h).item() for h in configurations(model.latent_sizes)]
    return torch.logsumexp(torch.tensor(terms, dtype=torch.float64), 0).item()


def brute_posterior_kl(model, inference, x_row):
    """KL(Q(h|x) || P(h|x)) by enumeration, one configuration at a time."""
    log_px = brute_log_likelihood(model, x_row)
    kl = 0.0
    for h in configurations(model.latent_sizes):
        log_q = inference.log_prob(x_row, h).item()
        log_post = model.log_joint(x_row, h).item() - log_px
        kl += math.exp(log_q) * (log_q - log_post)
    return kl


@pytest.mark.parametrize("spec, inference", SPECS)
def test_exact_log_likelihood_matches_brute_force(spec, inference):
    model, _, x = tiny_problem(spec, num_features=5, batch_size=4, seed=0, inference=inference)
    assert x.shape == (1, 4, 5)
    with torch.no_grad():
        got = exact_log_likelihood(model, x)
    assert got.shape == (1, 4)
    for i in range(4):
        assert got[0, i].item() == pytest.approx(brute_log_likelihood(model, x[:, i]), abs=1e-10)


def test_exact_log_likelihood_of_every_x_normalises():
    model, _, _ = tiny_problem("sbn:2-3", num_features=5, seed=1)
    xs = binary_configurations(5).unsqueeze(0)
    with torch.no_grad():
        log_px = exact_log_likelihood(model, xs)
    assert log_px.shape == (1, 32)
    assert torch.logsumexp(log_px[0], 0).item() == pytest.approx(0, abs=1e-10)


@pytest.mark.parametrize("spec, inference", SPECS)
def test_elbo_is_log_likelihood_minus_posterior_kl(spec, inference):
    model, q_net, x = tiny_problem(spec, num_features=5, batch_size=3, seed=2, inference=inference)
    with torch.no_grad():
        elbo = exact_elbo(model, q_net, x)
        log_px = exact_log_likelihood(model, x)
    assert elbo.shape == (1, 3)
    for i in range(3):
        kl = brute_posterior_kl(model, q_net, x[:, i])
        assert kl > 1e-3  # a generic Q is not the posterior
        assert elbo[0, i].item() == pytest.approx(log_px[0, i].item() - kl, abs=1e-9)
    assert (elbo < log_px).all()


def test_elbo_equals_log_likelihood_at_the_exact_posterior():
    """With one latent unit the posterior logit is linear in x, so a factorial Q can match it:
    logit P(h=1|x) = b_prior + sum_d [x_d W_d - softplus(W_d + c_d) + softplus(c_d)]."""
    model, q_net, x = tiny_problem("sbn:1", num_features=5, batch_size=6, seed=3)
    w = model.visible.weight.detach()[0].t()[:, 0]  # W (5, 1) is stored as W^T (1, 1, 5)
    c = model.visible.bias.detach()[0]
    constant = (model.prior.bias.detach()[0, 0]
                - (torch.nn.functional.softplus(w + c) - torch.nn.functional.softplus(c)).sum())
    with torch.no_grad():
        q_net.layers[0].weight[0] = w.unsqueeze(0).t()  # Q's W (1, 5), stored transposed
        q_net.layers[0].bias[0] = constant + (q_net.input_mean[0].double() * w).sum().unsqueeze(0)
        elbo = exact_elbo(model, q_net, x)
        log_px = exact_log_likelihood(model, x)
        assert torch.allclose(elbo, log_px, atol=1e-10)
        # and any other Q is strictly worse
        q_net.layers[0].bias.add_(0.5)
        assert (exact_elbo(model, q_net, x) < log_px - 1e-4).all()


@pytest.mark.parametrize("spec, inference", SPECS)
def test_exact_elbo_inference_gradient_is_appendix_b(spec, inference):
    """∇φ ELBO = sum_h (log P(x,h) - log Q(h|x)) ∇φ Q(h|x): the +1 of the entropy term vanishes."""
    model, q_net, x = tiny_problem(spec, num_features=4, batch_size=1, seed=4, inference=inference)
    params = list(q_net.parameters())
    got = torch.autograd.grad(exact_elbo(model, q_net, x).sum(), params)
    expected = [torch.zeros_like(p) for p in params]
    for h in configurations(model.latent_sizes):
        log_q = q_net.log_prob(x[:, 0], h)[0]
        signal = (model.log_joint(x[:, 0], h)[0] - log_q).item()
        for e, g in zip(expected, torch.autograd.grad(log_q.exp(), params), strict=True):
            e += signal * g
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("spec", ["sbn:2-2", "sbn:1-1-1", "fdarn:3"])
def test_exact_sleep_objective_matches_double_sum(spec):
    model, q_net, _ = tiny_problem(spec, num_features=3, seed=5, inference="autoregressive")
    with torch.no_grad():
        objective = exact_sleep_objective(model, q_net)
    assert objective.shape == (1,)
    got = objective.item()
    expected = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=3):
        x = torch.tensor(bits, dtype=torch.float64).unsqueeze(0)
        for h in configurations(model.latent_sizes):
            with torch.no_grad():
                expected += model.log_joint(x, h).exp().item() * q_net.log_prob(x, h).item()
    assert got == pytest.approx(expected, abs=1e-10)


def test_exact_sleep_objective_rejects_documents_and_large_models():
    model, q_net, _ = tiny_problem("doc-sbn:3", num_features=7, seed=6)
    with pytest.raises(ValueError, match="binary"):
        exact_sleep_objective(model, q_net)
    model, q_net = ModelSpec.parse("sbn:10").build(11)  # 10 latents + 11 pixels > 20
    with pytest.raises(ValueError, match=str(MAX_EXACT_LATENTS)):
        exact_sleep_objective(model, q_net)


def test_more_than_twenty_latents_raise_value_error():
    assert MAX_EXACT_LATENTS == 20
    model, q_net = ModelSpec.parse("sbn:11-10").build(3)
    x = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="at most 20"):
        exact_log_likelihood(model, x)
    with pytest.raises(ValueError, match="at most 20"):
        exact_elbo(model, q_net, x)
    with pytest.raises(ValueError):
        next(latent_configurations((21,), torch.float64))


def test_chunked_enumeration_gives_the_same_values(monkeypatch):
    model, q_net, x = tiny_problem("sbn:2-3", num_features=4, batch_size=5, seed=7,
                                   inference="autoregressive")
    with torch.no_grad():
        full = (exact_log_likelihood(model, x), exact_elbo(model, q_net, x),
                exact_sleep_objective(model, q_net))
        monkeypatch.setattr(exact_module, "_chunk_for", lambda batch_size: 3)
        chunked = (exact_log_likelihood(model, x), exact_elbo(model, q_net, x),
                   exact_sleep_objective(model, q_net))
    for a, b in zip(full, chunked, strict=True):
        assert a.shape == b.shape
        assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), atol=1e-10)


def test_latent_configurations_cover_every_configuration_once():
    sizes = (2, 3)
    chunks = list(latent_configurations(sizes, torch.float64, chunk_size=5))
    for chunk in chunks:  # (1, M_chunk, 1, H_i): shared by every run, broadcast over examples
        assert [part.dim() for part in chunk] == [4, 4]
        assert [(part.shape[0], part.shape[2], part.shape[3]) for part in chunk] == [(1, 1, 2),
                                                                                    (1, 1, 3)]
        assert chunk[0].shape[1] == chunk[1].shape[1] <= 5
    joined = torch.cat([torch.cat(chunk, -1)[0, :, 0] for chunk in chunks])
    assert joined.shape == (32, 5)
    codes = {tuple(row.tolist()) for row in joined}
    assert codes == set(itertools.product([0.0, 1.0], repeat=5))


def test_exact_quantities_are_differentiable_for_the_model():
    model, q_net, x = tiny_problem("sbn:2-2", num_features=3, batch_size=2, seed=8)
    # ∇θ log P(x) by autograd equals E_{P(h|x)}[∇θ log P(x, h)] by enumeration
    params = list(model.parameters())
    got = torch.autograd.grad(exact_log_likelihood(model, x[:, :1]).sum(), params)
    log_px = exact_log_likelihood(model, x[:, :1]).item()
    expected = [torch.zeros_like(p) for p in params]
    for h in configurations(model.latent_sizes):
        log_joint = model.log_joint(x[:, 0], h)[0]
        weight = (log_joint.detach() - log_px).exp().item()
        for e, g in zip(expected, torch.autograd.grad(log_joint, params), strict=True):
            e += weight * g
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_exact_quantities_of_stacked_runs_are_each_runs_own():
    """Two stacked runs with different parameters: each run's log P(x), ELBO and sleep objective
    equal those of a lone model holding that run's parameters, for data shared by the runs."""
    spec = ModelSpec.parse("sbn:2-2", inference="autoregressive", init_scale=1.0)
    model, q_net = spec.build(3, generators=[None, None], dtype=torch.float64)
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in list(model.parameters()) + list(q_net.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    x = binary_configurations(3).unsqueeze(0)  # (1, 8, 3), shared by both runs
    with torch.no_grad():
        stacked = (exact_log_likelihood(model, x), exact_elbo(model, q_net, x),
                   exact_sleep_objective(model, q_net))
        assert [t.shape for t in stacked] == [(2, 8), (2, 8), (2,)]
        for r in range(2):
            p_r, q_r = spec.build(3, dtype=torch.float64)
            p_r.load_state_dict({k: v[r:r + 1] for k, v in model.state_dict().items()})
            q_r.load_state_dict({k: v[r:r + 1] for k, v in q_net.state_dict().items()})
            lone = (exact_log_likelihood(p_r, x), exact_elbo(p_r, q_r, x),
                    exact_sleep_objective(p_r, q_r))
            for a, b in zip(lone, stacked, strict=True):
                assert torch.allclose(a, b[r:r + 1], atol=1e-12)
        assert not torch.allclose(stacked[0][0], stacked[0][1])
