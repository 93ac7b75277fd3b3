"""Bidirectional Helmholtz machines (algorithms/bihm.py): the expected update equals, by exact
enumeration of one update's noise, the exact expectation it claims, and tends to the gradient of
log p̃*(x) as K grows; a mistake is caught; the bound is below log p̃*(x) <= log P(x), tightens
with K, and Z^2 <= 1; the Z^2 estimator is unbiased (by enumeration) and its log converges to the
exact log Z^2; sampling from p* by importance resampling approaches p*."""

from __future__ import annotations

import math

import pytest
import torch

from algorithms.bihm import BiHM
from bench.check import run_bias_check, tiny_problem
from models.exact import (
    binary_configurations,
    exact_bihm_log_unnormalised,
    exact_bihm_log_z2,
    exact_k_sample_expectation,
    exact_log_likelihood,
    latent_configurations,
)
from models.star import estimate_log_z2, sample_star

pytestmark = pytest.mark.usefixtures("single_thread")


def lines(report) -> str:
    return "\n".join(report.lines())


@pytest.mark.parametrize("text, spec, inference", [
    ("bihm", "sbn:1", "factorial"), ("bihm:k5", "sbn:1-2", "factorial"),
    ("bihm:k5", "sbn:2", "autoregressive"), ("bihm:k5", "sbn:1-1-1", "factorial")])
def test_expected_update_is_the_claim(text, spec, inference):
    report = run_bias_check(text, spec, steps=2, batch_size=1, seed=1, inference=inference)
    assert report.exact_skipped is None, report.exact_skipped
    assert not report.exact_biased, lines(report)
    assert {t.group for t in report.exact} == {"model", "inference"}


class UnrootedWeights(BiHM):
    """Wrong: the weights of reweighted wake-sleep, softmax(log P - log Q), not its square root."""

    def step(self, x, noise):
        import algorithms.bihm as module
        original = module.torch.softmax
        module.torch.softmax = lambda value, dim: original(2 * value, dim)
        try:
            return super().step(x, noise)
        finally:
            module.torch.softmax = original


def test_unrooted_weights_are_caught_in_both_groups():
    report = run_bias_check("bihm:k5", "sbn:1-2", steps=2, batch_size=1, seed=1,
                            algorithm_class=UnrootedWeights)
    assert report.exact_biased, lines(report)
    assert {t.group for t in report.exact if t.biased} == {"model", "inference"}


def test_the_baseline_of_q_changes_the_variance_only():
    """Q's 1/K baseline has zero mean: without it the expected update is the same (the exact
    check passes), and the update spreads more."""
    class NoBaseline(BiHM):
        def step(self, x, noise):
            result = super().step(x, noise)
            _, log_q, _ = self.sample_from_q(x, noise)
            result.losses["inference"] = result.losses["inference"] - log_q.sum() / self.num_samples
            return result

    report = run_bias_check("bihm:k5", "sbn:1-2", steps=2, batch_size=1, seed=1,
                            algorithm_class=NoBaseline)
    assert not report.exact_biased, lines(report)
    spreads = {}
    for cls in (BiHM, NoBaseline):
        model, q_net, x = tiny_problem("sbn:3", batch_size=10, seed=1)
        method = cls(model, q_net, cls.resolve_options("k5"))
        generator = torch.Generator().manual_seed(4)
        grads = []
        from bench.check import draw_step
        for _ in range(300):
            loss = draw_step(method, x, generator).losses["inference"]
            grads.append(torch.autograd.grad(loss, q_net.layers[0].weight)[0].flatten())
        spreads[cls] = torch.stack(grads).var(0).sum().item()
    assert spreads[BiHM] < spreads[NoBaseline]


def _relative(estimate, target) -> float:
    difference = sum((e - t).pow(2).sum() for e, t in zip(estimate, target, strict=True))
    return (difference.sqrt() / sum(t.pow(2).sum() for t in target).sqrt()).item()


def test_claims_tend_to_the_gradient_of_the_unnormalised_log_likelihood():
    model, q_net, x = tiny_problem("sbn:1", batch_size=4, seed=2)
    errors = {}
    for K in (1, 4, 16):
        method = BiHM(model, q_net, BiHM.resolve_options("", {"num_samples": K}))
        claims = method.claimed_update(x)
        objective = method.exact_objectives(x)
        groups = method.parameter_groups()
        errors[K] = {}
        for g in ("model", "inference"):
            target = torch.autograd.grad(objective[g].sum(), groups[g], retain_graph=True)
            errors[K][g] = _relative(claims[g], target)
    for g in ("model", "inference"):
        assert errors[16][g] < errors[4][g] < errors[1][g], errors
        assert errors[16][g] < 0.1, errors


def test_bounds_order_and_tighten_with_k():
    """E[2 log mean_k sqrt w_k] <= log p̃*(x) <= log P(x); the expectation grows with K and
    reaches log p̃*(x); and Z^2 = sum_x p̃*(x) <= 1."""
    model, q_net, x = tiny_problem("sbn:2", batch_size=6, seed=3)
    with torch.no_grad():
        star = exact_bihm_log_unnormalised(model, q_net, x)
        log_p = exact_log_likelihood(model, x)
        assert (star <= log_p + 1e-12).all()
        estimates = [exact_k_sample_expectation(
            model, q_net, x, K,
            lambda lp, lq, K=K: 2 * (torch.logsumexp((lp - lq) / 2, 1) - math.log(K)))
            for K in (1, 2, 4, 8)]
        for low, high in zip(estimates, estimates[1:], strict=False):
            assert (low <= high + 1e-12).all()
        assert (estimates[-1] <= star + 1e-12).all()
        assert (star - estimates[-1]).max() < (star - estimates[0]).max()
        assert exact_bihm_log_z2(model, q_net).item() <= 1e-12


def test_z2_estimator_is_unbiased_by_enumeration():
    """E over (x, h) ~ P and h' ~ Q(h | x) of sqrt(Q(h|x) / P(x,h)) sqrt(P(x,h') / Q(h'|x)) is
    sum_x p̃*(x), computed by enumerating x, h and h'; with h' = h (one model's samples only) it
    would be 1."""
    model, q_net, _ = tiny_problem("sbn:2", num_features=3, seed=5)
    with torch.no_grad():
        xs = binary_configurations(3, torch.float64).unsqueeze(0)                   # (1, 8, 3)
        h = next(latent_configurations(model.latent_sizes, torch.float64, chunk_size=4))
        log_joint = model.log_joint(xs, h)                                           # (1, 4, 8)
        log_q = q_net.log_prob(xs, h)                                                # (1, 4, 8)
        # term(h, h') = sqrt(Q(h|x)/P(x,h)) sqrt(P(x,h')/Q(h'|x)), weighted by P(x,h) Q(h'|x)
        first = (log_joint + 0.5 * (log_q - log_joint)).unsqueeze(2)                 # (1, 4, 1, 8)
        second = (log_q + 0.5 * (log_joint - log_q)).unsqueeze(1)                    # (1, 1, 4, 8)
        expectation = torch.logsumexp((first + second).flatten(1), 1)
        same_sample = torch.logsumexp((log_joint + 0.0).flatten(1), 1)               # E[1] = 0
    assert expectation.item() == pytest.approx(exact_bihm_log_z2(model, q_net).item(), abs=1e-12)
    assert same_sample.item() == pytest.approx(0.0, abs=1e-12)
    assert expectation.item() < -1e-3      # Z^2 < 1 strictly here: the two are told apart


def test_z2_estimate_converges_with_its_error():
    model, q_net, _ = tiny_problem("sbn:2", num_features=4, seed=6)
    exact = exact_bihm_log_z2(model, q_net).item()
    generators = [torch.Generator().manual_seed(0)]
    log_z2, error = estimate_log_z2(model, q_net, 20_000, generators, dtype=torch.float64)
    assert abs(log_z2.item() - exact) < 5 * error.item() + 1e-3
    assert error.item() < 0.05


def test_sampling_from_p_star_approaches_it():
    model, q_net, _ = tiny_problem("sbn:1", num_features=2, seed=7)
    with torch.no_grad():
        xs = binary_configurations(2, torch.float64).unsqueeze(0)                    # (1, 4, 2)
        star = (exact_bihm_log_unnormalised(model, q_net, xs)
                - exact_bihm_log_z2(model, q_net)).exp().squeeze(0)                  # p*(x)
    generators = [torch.Generator().manual_seed(1)]
    samples = sample_star(model, q_net, 4000, generators, oversample=20, inner_samples=50,
                          dtype=torch.float64)                                       # (1, N, 2)
    codes = (samples[0] * torch.tensor([1.0, 2.0], dtype=torch.float64)).sum(-1).long()
    frequencies = torch.bincount(codes, minlength=4).double() / codes.numel()
    order = (xs[0] * torch.tensor([1.0, 2.0], dtype=torch.float64)).sum(-1).long()
    assert torch.allclose(frequencies[order], star, atol=0.03), (frequencies[order], star)


def test_the_evaluation_path_scores_p_star_and_says_which_model():
    from bench.evaluation import evaluate
    model, q_net, x = tiny_problem("sbn:2", num_features=4, batch_size=20, seed=8)
    rows = x[0].numpy()
    exact = evaluate(model, q_net, rows, "star-exact", dtype=torch.float64)
    with torch.no_grad():
        expected = (exact_bihm_log_unnormalised(model, q_net, x)
                    - exact_bihm_log_z2(model, q_net)).squeeze(0).numpy()
    assert exact.per_example == pytest.approx(expected, abs=1e-10)
    assert exact.summary()["quantity"] == "p*" and exact.num_samples is None
    star = evaluate(model, q_net, rows, "star", num_samples=2000, dtype=torch.float64,
                    z2_samples=20_000)
    summary = star.summary()
    assert summary["quantity"] == "p*" and summary["z2_samples"] == 20_000
    assert abs(summary["log_z2"] - exact_bihm_log_z2(model, q_net).item()) < (
        5 * summary["log_z2_se"] + 1e-3)
    assert star.mean == pytest.approx(exact.mean, abs=0.02)
    unnormalised = evaluate(model, q_net, rows, "star-unnormalised", num_samples=2000,
                            dtype=torch.float64)
    assert unnormalised.summary()["quantity"] == "p~*" and "log_z2" not in unnormalised.summary()
    assert unnormalised.mean == pytest.approx(star.mean + summary["log_z2"], abs=0.05)
    assert evaluate(model, q_net, rows, "iw", num_samples=10,
                    dtype=torch.float64).summary()["quantity"] == "p"


def test_star_bounds_refuse_documents_in_one_line():
    from bench.errors import UserError
    from bench.evaluation import evaluate
    model, q_net, x = tiny_problem("doc-sbn:2", num_features=6, seed=0)
    with pytest.raises(UserError, match="needs binary visibles; use --bound iw"):
        evaluate(model, q_net, x[0].numpy(), "star", num_samples=5)


def test_every_k_of_a_run_shares_one_estimate_of_z2():
    """Z^2 comes from its own seeded streams, so scoring several K (the sweep) subtracts the same
    estimate from each: the estimates against K differ by the samples of p̃* only."""
    from bench.evaluation import evaluate
    model, q_net, x = tiny_problem("sbn:2", num_features=4, batch_size=10, seed=9)
    rows = x[0].numpy()
    first, second = (evaluate(model, q_net, rows, "star", num_samples=k, seed=k,
                              dtype=torch.float64, z2_samples=500, z2_seed=11)
                     for k in (3, 30))
    assert first.normaliser == second.normaliser
    other = evaluate(model, q_net, rows, "star", num_samples=3, seed=3, dtype=torch.float64,
                     z2_samples=500, z2_seed=12)
    assert other.normaliser["log_z2"] != first.normaliser["log_z2"]
