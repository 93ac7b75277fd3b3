"""ARM and DisARM (algorithms/arm.py, algorithms/disarm.py): the expected update of every layer of
a multi-layer SBN equals the ELBO gradient, by exact enumeration of the antithetic pairs' intervals
and the continuations' binary draws (bench/check.py); mistakes of the kind these estimators invite
are caught; the antithetic intervals' enumeration is itself exact; DisARM's variance is never
above ARM's on a unit whose expectation is known in closed form."""

from __future__ import annotations

import pytest
import torch

from algorithms.arm import ARM
from algorithms.disarm import DisARM
from bench.check import draw_step, run_bias_check, tiny_problem
from bench.errors import UserError
from models.noise import antithetic_bernoulli, enumerating, uniform

pytestmark = pytest.mark.usefixtures("single_thread")


def exact_report(cls, text, spec, steps=2):
    report = run_bias_check(text, spec, steps=steps, batch_size=10, seed=3, algorithm_class=cls)
    assert report.exact_skipped is None, report.exact_skipped
    return report


@pytest.mark.parametrize("cls, text", [(ARM, "arm"), (DisARM, "disarm")])
@pytest.mark.parametrize("spec", ["sbn:2-3", "sbn:2-2-2", "fdarn:4"])
def test_expected_update_is_the_elbo_gradient_on_every_layer(cls, text, spec):
    report = exact_report(cls, text, spec)
    assert not report.exact_biased, "\n".join(report.lines())
    assert {t.group for t in report.exact} == {"model", "inference"}
    assert max(t.relative_error for t in report.exact) < 1e-10
    assert all(t.scale == 1.0 for t in report.exact)


def test_the_monte_carlo_check_agrees():
    report = run_bias_check("disarm", "sbn:2-3", steps=300, batch_size=10, seed=0)
    assert not report.biased, "\n".join(report.lines())


def test_antithetic_intervals_are_an_exact_partition():
    """Under enumeration the three interval codes of each unit have probabilities that sum to one,
    and the pair's outcomes at each midpoint are those of every u in its interval."""
    logits = torch.tensor([[[-1.3, 0.2, 2.0]]], dtype=torch.float64)
    codes = torch.cartesian_prod(*[torch.arange(3.0, dtype=torch.float64)] * 3)      # (27, 3)
    pair = torch.stack([codes, codes], 1).unsqueeze(2)                               # (27, 2, 1, 3)
    with enumerating() as ledger:
        u, sample, flipped = antithetic_bernoulli(pair, logits.expand(27, 1, 3))
    assert ledger[0].exp().sum().item() == pytest.approx(1.0, abs=1e-14)
    p = torch.sigmoid(logits)
    low, high = torch.minimum(p, 1 - p), torch.maximum(p, 1 - p)
    for offset in (-0.49, 0.0, 0.49):  # points across each interval give the same outcomes
        shifted = torch.where(codes.unsqueeze(1) == 0, low * (0.5 + offset),
                              torch.where(codes.unsqueeze(1) == 1, low + (high - low) * (0.5 + offset),
                                          high + (1 - high) * (0.5 + offset)))
        assert torch.equal((shifted < p).double(), sample)
        assert torch.equal((1 - shifted < p).double(), flipped)
    # outside enumeration the leaf is (u, 1 - u) and the outcomes are the plain comparisons
    u = torch.rand(1, 1, 3, dtype=torch.float64)
    _, sample, flipped = antithetic_bernoulli(torch.stack([u, 1 - u], 1), logits)
    assert torch.equal(sample, (u < p).double()) and torch.equal(flipped, (1 - u < p).double())


# -- mistakes the check must catch --------------------------------------------------------------


class IndependentPartnerARM(ARM):
    """Wrong: the partner b~ is an independent sample, not the antithetic 1 - u (the pair is not
    antithetic): the expectation halves."""

    def noise(self, x):
        request = super().noise(x)
        request["partners"] = [uniform(self.num_samples, *x.shape[1:-1], size)
                               for size in self.inference.latent_sizes]
        return request

    def step(self, x, noise):
        layers = self.inference.layers
        partners = iter(noise["partners"])
        original = antithetic_bernoulli

        def independent(pair, logits):
            u, sample, _ = original(pair, logits)
            layer = next(layer for layer in layers if layer.size == logits.shape[-1])
            return u, sample, layer._sample_from(logits, next(partners))

        import algorithms.arm as module
        module.antithetic_bernoulli = independent
        try:
            return super().step(x, noise)
        finally:
            module.antithetic_bernoulli = original


class AbsentAbsoluteDisARM(DisARM):
    """Wrong: sigmoid(a) where DisARM has sigmoid(|a|)."""

    def layer_gradients(self, u, sample, flipped, logits, difference):
        return super().layer_gradients(u, sample, flipped, logits, difference) * (
            torch.sigmoid(logits) / torch.sigmoid(logits.abs()))


@pytest.mark.parametrize("cls, text, spec", [
    (IndependentPartnerARM, "arm", "sbn:2-3"),
    (AbsentAbsoluteDisARM, "disarm", "sbn:2-3"),
])
def test_wrong_variants_are_caught_in_the_inference_update_only(cls, text, spec):
    report = exact_report(cls, text, spec)
    assert report.exact_biased, "\n".join(report.lines())
    assert {t.group for t in report.exact if t.biased} == {"inference"}


def test_a_branch_that_does_not_continue_is_caught():
    """The layer-wise form needs each antithetic branch continued from its own layer: a branch
    that keeps the trajectory's upper layers biases the lower layers' update."""
    class Stale(ARM):
        def step(self, x, noise):
            result = None
            layers = self.inference.layers
            original = [layer.sample for layer in layers]
            kept = {}

            def keep(j):
                def sample(context, layer_noise):
                    value = original[j](context, layer_noise)
                    return kept.get(j, value)
                return sample
            for j, layer in enumerate(layers):
                layer.sample = keep(j)
            try:
                # the trajectory's own samples, recorded as the estimator draws them
                import algorithms.arm as module
                draw = module.antithetic_bernoulli

                def record(pair, logits):
                    out = draw(pair, logits)
                    kept[len(kept)] = out[1]
                    return out
                module.antithetic_bernoulli = record
                try:
                    result = super().step(x, noise)
                finally:
                    module.antithetic_bernoulli = draw
            finally:
                for layer in layers:
                    del layer.sample
            return result

    report = exact_report(Stale, "arm", "sbn:2-3")
    assert report.exact_biased, "\n".join(report.lines())
    biased = {t.name for t in report.exact if t.biased}
    assert biased and all(name.startswith("inference.layers.0") for name in biased)


def test_autoregressive_inference_is_refused_in_one_line():
    model, q_net, _ = tiny_problem("sbn:2-3", inference="autoregressive")
    with pytest.raises(UserError, match="factorial inference network.*--inference factorial"):
        ARM(model, q_net, ARM.Options())


def test_disarm_variance_is_at_most_arms():
    """One layer, many updates of the same tiny problem: DisARM's inference updates spread less
    than ARM's (it is ARM's conditional expectation given the pair), with the same mean."""
    spreads = {}
    for cls in (ARM, DisARM):
        model, q_net, x = tiny_problem("sbn:3", batch_size=10, seed=1)
        method = cls(model, q_net, cls.Options())
        generator = torch.Generator().manual_seed(5)
        grads = []
        for _ in range(300):
            loss = draw_step(method, x, generator).losses["inference"]
            grads.append(torch.autograd.grad(loss, q_net.layers[0].weight)[0].flatten())
        grads = torch.stack(grads)
        spreads[cls.name] = grads.var(0).sum().item()
    assert spreads["disarm"] < spreads["arm"]


# -- multi-sample DisARM -------------------------------------------------------------------------


@pytest.mark.parametrize("text, spec", [("disarm:k2", "sbn:1-2"), ("disarm:k2", "sbn:1-1-1"),
                                        ("disarm:k5", "sbn:1"), ("disarm:k2", "sbn:2")])
def test_multisample_expected_update_is_the_k_sample_bound_gradient(text, spec):
    """With K antithetic pairs the claim is the gradient of the exact K-sample bound
    (models/exact.py), on every layer."""
    report = exact_report(DisARM, text, spec)
    assert not report.exact_biased, "\n".join(report.lines())
    assert {t.group for t in report.exact} == {"model", "inference"}
    assert max(t.relative_error for t in report.exact) < 1e-10


class WeightsHeldFixedDisARM(DisARM):
    """Wrong: the weights' own dependence on φ (sum_k (1/K - w̃_k) ∇φ log Q(b_k)) is left out of
    the inference update, as in the authors' local-DisARM code; for K >= 2 it does not vanish."""

    def trajectory_log_prob(self, trajectory, logits):
        return super().trajectory_log_prob(trajectory, logits).detach()


def test_multisample_disarm_without_the_weights_term_is_caught():
    report = exact_report(WeightsHeldFixedDisARM, "disarm:k2", "sbn:1-2")
    assert report.exact_biased, "\n".join(report.lines())
    assert {t.group for t in report.exact if t.biased} == {"inference"}


def test_k_samples_cost_k_times_one_sample():
    model, q_net, _ = tiny_problem("sbn:2-3", batch_size=4, seed=2)
    single = DisARM(model, q_net, DisARM.resolve_options(""))
    several = DisARM(model, q_net, DisARM.resolve_options("k5"))
    assert (single.num_samples, several.num_samples) == (1, 5)
    assert single.evaluations_per_example(single.options[0]) == 3      # trajectory + 2 branches
    assert several.evaluations_per_example(several.options[0]) == 15
