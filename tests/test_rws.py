"""Reweighted wake-sleep (algorithms/rws.py): every preset's update equals, by exact enumeration of
one update's binary noise, the exact expectation it claims; estimators with one deliberate mistake
are caught, in the group the mistake touches and only there; the claims have the limits the
paper's argument gives (∇ log P(x) as K grows; the ELBO's gradient and wake-sleep at K = 1);
stacked runs with different presets compute what each computes alone; and the step contract holds
on every model family."""

from __future__ import annotations

import pytest
import torch

from algorithms.base import StepResult
from algorithms.rws import RWS
from algorithms.wake_sleep import WakeSleep
from bench.check import run_bias_check, tiny_model, tiny_problem
from bench.errors import UserError
from models.exact import exact_elbo, exact_multisample_bound
from models.noise import draw as draw_noise

TEXT = "algorithms.rws:RWS"


pytestmark = pytest.mark.usefixtures("single_thread")


def text(preset: str) -> str:
    return f"{TEXT}:{preset}" if preset else TEXT


def make(preset="", spec="sbn:2-3", batch_size=10, seed=0, inference="factorial", overrides=None,
         num_features=5):
    model, q_net, x = tiny_problem(spec, num_features=num_features, batch_size=batch_size,
                                   seed=seed, inference=inference)
    return RWS(model, q_net, RWS.resolve_options(preset, overrides)), x


def relative(estimate: list, target: list) -> float:
    """|estimate - target| / |target| over all tensors of a group."""
    difference = sum((e - t).pow(2).sum() for e, t in zip(estimate, target, strict=True))
    return (difference.sqrt() / sum(t.pow(2).sum() for t in target).sqrt()).item()


def lines(report) -> str:
    return "\n".join(report.lines())


# --------------------------------------------------------------------------------------------
# the exact expected update equals the claim


# The minibatch each preset's exact check enumerates on check_model (sbn:1 over 5 pixels): the
# largest of 2, 1 whose K B H + B (H + D) binary draws stay within 16.
EXACT_BATCH = {"": 1, "wake+sleep": 1, "wake": 2, "sleep": 1, "k1": 2, "k2": 2, "k10": 1}


def test_every_preset_is_listed_here():
    assert set(EXACT_BATCH) == set(RWS.presets)


@pytest.mark.parametrize("preset", list(RWS.presets))
def test_every_preset_is_exactly_its_claim(preset):
    report = run_bias_check(text(preset), RWS.check_model, steps=2, batch_size=2, seed=1)
    assert report.exact_skipped is None, report.exact_skipped
    assert report.exact_batch_size == EXACT_BATCH[preset]
    assert not report.exact_biased, lines(report)
    assert {t.group for t in report.exact} == {"model", "inference"}
    assert max(t.relative_error for t in report.exact) < 1e-10, lines(report)


@pytest.mark.parametrize("preset, overrides, spec, inference, num_features", [
    ("", None, "sbn:1-1", "factorial", 2),         # two latent layers: 5*2 + 2 + 2 = 14 draws
    ("k2", None, "sbn:1-2", "autoregressive", 5),  # two layers, autoregressive Q: 2*3 + 3 + 5 = 14
    ("wake", {"num_samples": 4}, "sbn:1-2", "autoregressive", 5),  # 4 * 3 = 12
    ("", None, "fdarn:2", "factorial", 2),         # autoregressive prior: 5*2 + 2 + 2 = 14
])
def test_deeper_and_autoregressive_models_are_exactly_their_claim(preset, overrides, spec,
                                                                    inference, num_features):
    report = run_bias_check(text(preset), spec, steps=2, batch_size=2, seed=2, overrides=overrides,
                            inference=inference, num_features=num_features)
    assert report.exact_skipped is None, report.exact_skipped
    assert not report.exact_biased, lines(report)
    assert max(t.relative_error for t in report.exact) < 1e-10, lines(report)
    if inference == "autoregressive":
        assert sum("autoregressive_weight" in t.name for t in report.exact) == 2


def test_monte_carlo_check_passes_on_the_default():
    report = run_bias_check(TEXT, RWS.check_model, steps=300, batch_size=10, seed=0,
                            exact=False)
    assert not report.z_biased, lines(report)


# --------------------------------------------------------------------------------------------
# the claims against the paper's argument


def test_model_claim_is_the_gradient_of_the_k_sample_bound():
    """Σ_k ω̃_k ∇θ log P(x, h_k) = ∇θ log (1/K) Σ_k ω_k, the samples being free of θ: the claim
    built from the stop-gradient surrogate equals ∇θ of `exact_multisample_bound` (a second
    route)."""
    for num_samples in (2, 3, 5):
        method, x = make(overrides={"num_samples": num_samples}, spec="sbn:1-2", batch_size=3,
                         seed=4)
        theta = method.parameter_groups()["model"]
        bound = exact_multisample_bound(method.model, method.inference, x, num_samples).sum()
        target = torch.autograd.grad(bound, theta)
        assert relative(method.claimed_update(x)["model"], target) < 1e-12


def test_k1_model_claim_is_the_elbo_gradient_and_the_wake_q_claim_vanishes():
    method, x = make("k1", spec="sbn:1-2", batch_size=3, seed=4)
    theta = method.parameter_groups()["model"]
    target = torch.autograd.grad(exact_elbo(method.model, method.inference, x).sum(), theta)
    assert relative(method.claimed_update(x)["model"], target) < 1e-12
    # The wake Q update at K = 1 is E_Q[∇ log Q] = 0 (why k1 turns it off):
    surrogate = method._wake_surrogates(x)[1].sum()
    phi = method.parameter_groups()["inference"]
    assert all(g.abs().max() < 1e-12 for g in torch.autograd.grad(surrogate, phi))


def test_claims_approach_the_limit_objectives_as_k_grows():
    """Model: ∇θ log P(x); Q's wake update: ∇φ Σ_h P(h|x) log Q(h|x) (`exact_objectives`)."""
    errors = {"model": [], "inference": []}
    for num_samples in (2, 4, 8):
        method, x = make("wake", spec="sbn:2", batch_size=3, seed=1,
                         overrides={"num_samples": num_samples})
        groups = method.parameter_groups()
        claims = method.claimed_update(x)
        objectives = method.exact_objectives(x)
        for g in errors:
            limit = torch.autograd.grad(objectives[g].sum(), groups[g], retain_graph=True)
            errors[g].append(relative(claims[g], limit))
    for g, series in errors.items():
        assert series[0] > series[1] > series[2], (g, series)
        assert series[2] < 0.25 * series[0], (g, series)  # the bias shrinks (about as 1/K)


def test_k1_is_wake_sleep():
    """K = 1 with the sleep update only: the same losses as algorithms/wake_sleep.py from the
    same random numbers (the paper's remark that RWS generalises wake-sleep)."""
    for spec, inference, num_features in (("sbn:2-3", "factorial", 5),
                                          ("doc-sbn:3", "autoregressive", 7)):
        model, q_net, x = tiny_problem(spec, num_features, 6, 3, inference)
        rws = RWS(model, q_net, RWS.resolve_options("k1"))
        ws = WakeSleep(model, q_net, WakeSleep.resolve_options())
        got = rws.step(x, draw_noise(rws.noise(x), [torch.Generator().manual_seed(5)],
                                     torch.float64))
        want = ws.step(x, draw_noise(ws.noise(x), [torch.Generator().manual_seed(5)],
                                     torch.float64))
        for g, params in rws.parameter_groups().items():
            assert torch.allclose(got.losses[g], want.losses[g], rtol=1e-13, atol=0)
            for a, b in zip(torch.autograd.grad(got.losses[g], params),
                            torch.autograd.grad(want.losses[g], params), strict=True):
                assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
        assert torch.allclose(got.metrics["bound"], want.metrics["bound"], rtol=1e-13)


# --------------------------------------------------------------------------------------------
# power: estimators with one mistake are caught, in the group the mistake touches


class MistakenRWS(RWS):
    """RWS with one mistake (`mistake` rewrites one loss). The wake samples are captured from the
    step itself, so every random number is still drawn once, as the exact check requires."""

    def step(self, x, noise):
        drawn = {}
        sample = self.inference.sample

        def capture(*args, **kwargs):
            h, log_q = sample(*args, **kwargs)
            drawn["h"], drawn["log_q"] = h, sum(log_q)
            return h, log_q

        self.inference.sample = capture
        try:
            result = super().step(x, noise)
        finally:
            del self.inference.sample
        h, log_q = drawn["h"], drawn["log_q"]
        log_p = self.model.log_joint(x, h)
        self.mistake(result.losses, x, h, log_p, log_q)
        return result

    @staticmethod
    def weights(log_p, log_q):
        return torch.softmax((log_p - log_q).detach(), 1)


class UnnormalisedModelWeights(MistakenRWS):
    """Model update weighted by ω_k / K (the unnormalised importance weights)."""

    def mistake(self, losses, x, h, log_p, log_q):
        losses["model"] = -((log_p - log_q).detach().exp() / self.num_samples * log_p).sum()


class UniformModelWeights(MistakenRWS):
    """Model update without the reweighting: (1/K) Σ_k ∇ log P(x, h_k), the ELBO's gradient."""

    def mistake(self, losses, x, h, log_p, log_q):
        losses["model"] = -log_p.mean(1).sum()


class ModelWeightsKeepTheirGradient(MistakenRWS):
    """ω̃ not held constant in the model loss: adds Σ_k log P(x, h_k) ∇θ ω̃_k."""

    def mistake(self, losses, x, h, log_p, log_q):
        losses["model"] = -(torch.softmax(log_p - log_q.detach(), 1) * log_p).sum()


class WeightsOverTheMinibatch(MistakenRWS):
    """ω normalised over the minibatch instead of over the K samples of each example."""

    def mistake(self, losses, x, h, log_p, log_q):
        losses["model"] = -(torch.softmax((log_p - log_q).detach(), -1) * log_p).sum()


class WakeWeightsKeepTheirGradient(MistakenRWS):
    """ω̃ not held constant in Q's wake loss: adds Σ_k log Q(h_k|x) ∇φ ω̃_k."""

    def mistake(self, losses, x, h, log_p, log_q):
        attached = torch.softmax(log_p.detach() - log_q, 1)
        losses["inference"] = (losses["inference"] + (self.weights(log_p, log_q) * log_q).sum()
                               - (attached * log_q).sum())


class UnnormalisedWakeWeights(MistakenRWS):
    """Q's wake update weighted by ω_k / K."""

    def mistake(self, losses, x, h, log_p, log_q):
        unnormalised = (log_p - log_q).detach().exp() / self.num_samples
        losses["inference"] = (losses["inference"] + (self.weights(log_p, log_q) * log_q).sum()
                               - (unnormalised * log_q).sum())


class SleepOnWakeSamples(MistakenRWS):
    """The sleep phase scores Q's first wake sample on the data, not a fantasy from P (the
    fantasies are still drawn, and ignored)."""

    def mistake(self, losses, x, h, log_p, log_q):
        losses["inference"] = (-(self.wake_weight * (self.weights(log_p, log_q) * log_q).sum(1))
                               .sum() - log_q[:, 0].sum())


class SleepOnTheData(MistakenRWS):
    """The sleep phase scores the fantasy latents h' against the real data x instead of x'."""

    def step(self, x, noise):
        drawn = {}
        sample = self.model.sample

        def capture(*args, **kwargs):
            drawn["xh"] = sample(*args, **kwargs)
            return drawn["xh"]

        self.model.sample = capture
        try:
            self._fantasy = drawn
            return super().step(x, noise)
        finally:
            del self.model.sample

    def mistake(self, losses, x, h, log_p, log_q):
        fantasy_x, fantasy_h = self._fantasy["xh"]
        losses["inference"] = (losses["inference"]
                               + self.inference.log_prob(fantasy_x, fantasy_h).sum()
                               - self.inference.log_prob(x, fantasy_h).sum())


@pytest.mark.parametrize("cls, preset, group", [
    (UnnormalisedModelWeights, "", "model"),
    (UniformModelWeights, "", "model"),
    (ModelWeightsKeepTheirGradient, "", "model"),
    (WeightsOverTheMinibatch, "wake", "model"),   # the wake preset's check enumerates B = 2
    (WakeWeightsKeepTheirGradient, "", "inference"),
    (UnnormalisedWakeWeights, "wake", "inference"),
    (SleepOnWakeSamples, "", "inference"),
    (SleepOnWakeSamples, "sleep", "inference"),
    (SleepOnTheData, "sleep", "inference"),
])
def test_exact_check_catches_each_mistake_in_its_group_only(cls, preset, group):
    report = run_bias_check(text(preset), RWS.check_model, steps=2, batch_size=2, seed=1,
                            algorithm_class=cls)
    assert report.exact_skipped is None, report.exact_skipped
    assert report.exact_biased, lines(report)
    assert {t.group for t in report.exact if t.biased} == {group}, lines(report)
    if cls is WeightsOverTheMinibatch:
        assert report.exact_batch_size == 2


def test_mistakes_are_the_only_change():
    """A mistaken estimator whose `mistake` does nothing is not flagged (the capturing is sound)."""

    class Faithful(MistakenRWS):
        def mistake(self, losses, x, h, log_p, log_q):
            pass

    report = run_bias_check(TEXT, RWS.check_model, steps=2, batch_size=2, seed=1,
                            algorithm_class=Faithful)
    assert report.exact_skipped is None and not report.exact_biased, lines(report)


# --------------------------------------------------------------------------------------------
# stacked runs compute what each run computes alone


def random_runs(spec, inference, num_features, runs, seed=0):
    """A float64 model of `runs` runs with O(1) random parameters, and each run alone."""
    stacked = tiny_model(spec, num_features, runs, inference)
    lone = [tiny_model(spec, num_features, 1, inference) for _ in range(runs)]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for r, (model, q_net) in enumerate(lone):
            for part, whole in ((model, stacked[0]), (q_net, stacked[1])):
                for p, big in zip(part.parameters(), whole.parameters(), strict=True):
                    p.normal_(generator=generator)
                    big[r].copy_(p[0])
    return stacked, lone


@pytest.mark.parametrize("presets, spec, inference, num_features", [
    (["", "sleep", "wake+sleep"], "sbn:2-3", "factorial", 5),
    (["k2", ("k2", {"wake_q": False})], "sbn:2-2-2", "autoregressive", 5),
    (["wake", ("wake", {"inference_lr_scale": 0.2})], "fdarn:3", "factorial", 5),
    (["", "sleep"], "doc-sbn:3", "autoregressive", 7),
])
def test_stacked_runs_match_lone_runs(presets, spec, inference, num_features):
    options = [RWS.resolve_options(*(p if isinstance(p, tuple) else (p,))) for p in presets]
    runs = len(options)
    (model, q_net), lone = random_runs(spec, inference, num_features, runs)
    generator = torch.Generator().manual_seed(7)
    if spec.startswith("doc"):
        x = torch.poisson(torch.full((runs, 4, num_features), 0.8, dtype=torch.float64),
                          generator=generator)
        x[..., 0] += 1  # no empty document
    else:
        x = (torch.rand(runs, 4, num_features, generator=generator) < 0.5).double()
    together = RWS(model, q_net, options)
    noise = draw_noise(together.noise(x), [torch.Generator().manual_seed(10 + r)
                                           for r in range(runs)], torch.float64)
    result = together.step(x, noise)
    groups = together.parameter_groups()
    for r in range(runs):
        alone = RWS(*lone[r], options[r])
        lone_noise = draw_noise(alone.noise(x[r:r + 1]), [torch.Generator().manual_seed(10 + r)],
                                torch.float64)
        lone_result = alone.step(x[r:r + 1], lone_noise)
        for name in result.metrics:
            assert torch.allclose(result.metrics[name][r], lone_result.metrics[name][0],
                                  rtol=1e-12, atol=1e-12), name
        for g, params in alone.parameter_groups().items():
            stacked_grads = torch.autograd.grad(result.losses[g], groups[g], retain_graph=True)
            lone_grads = torch.autograd.grad(lone_result.losses[g], params)
            for big, small in zip(stacked_grads, lone_grads, strict=True):
                assert torch.allclose(big[r], small[0], rtol=1e-11, atol=1e-12), g


def test_runs_that_differ_in_structure_do_not_stack():
    model, q_net = tiny_model("sbn:2-3", 5, 2)
    with pytest.raises(ValueError, match="num_samples"):
        RWS(model, q_net, [RWS.resolve_options(), RWS.resolve_options("k2")])
    with pytest.raises(ValueError, match="sleep_q"):
        RWS(model, q_net, [RWS.resolve_options(), RWS.resolve_options("wake")])
    # Everything else is per run: the Q-update choice and the learning-rate scale.
    assert RWS.batch_key(RWS.resolve_options()) == RWS.batch_key(RWS.resolve_options("sleep"))


# --------------------------------------------------------------------------------------------
# options and the step contract


def test_options_and_presets():
    defaults = RWS.resolve_options()
    assert (defaults.num_samples, defaults.wake_q, defaults.sleep_q) == (5, True, True)
    assert defaults.inference_lr_scale == 1.0  # one rate for P and Q in the authors' code
    assert RWS.resolve_options("wake").sleep_q is False
    assert RWS.resolve_options("sleep").wake_q is False
    assert RWS.resolve_options("k10").num_samples == 10
    k1 = RWS.resolve_options("k1")
    assert (k1.num_samples, k1.wake_q, k1.sleep_q) == (1, False, True)
    assert RWS.resolve_options("", {"num_samples": "3", "wake_q": "off"}).num_samples == 3
    assert RWS.paper_learning_rate("mnist") == 1e-3
    assert RWS.paper_learning_rate("20news") == 3e-5  # the base's document rates


@pytest.mark.parametrize("overrides, message", [
    ({"num_samples": "0"}, "num_samples"), ({"num_samples": "2.5"}, "num_samples"),
    ({"wake_q": "off", "sleep_q": "off"}, "wake_q"), ({"sample": "3"}, "num_samples")])
def test_bad_options_raise_user_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        RWS.resolve_options("", overrides)


def test_one_sample_with_the_wake_q_update_is_refused():
    model, q_net, _ = tiny_problem("sbn:2-3")
    with pytest.raises(UserError, match="num_samples=1.*wake_q=off"):
        RWS(model, q_net, RWS.resolve_options("", {"num_samples": 1}))


CONTRACT_MODELS = [("sbn:2-3", "factorial", 5), ("sbn:2-2-2", "autoregressive", 5),
                   ("fdarn:4", "factorial", 5), ("doc-sbn:3", "autoregressive", 7)]


@pytest.mark.parametrize("preset", list(RWS.presets))
@pytest.mark.parametrize("spec, inference, num_features", CONTRACT_MODELS)
def test_step_contract(preset, spec, inference, num_features):
    method, x = make(preset, spec, batch_size=6, inference=inference, num_features=num_features)
    options = method.options[0]
    groups = method.parameter_groups()
    grouped = [id(p) for params in groups.values() for p in params]
    assert len(grouped) == len(set(grouped)) == len(list(method.parameters()))
    assert set(grouped) == {id(p) for p in method.parameters()}
    assert {id(p) for p in groups["model"]} == {id(p) for p in method.model.parameters()}
    assert method.learning_rate_scales(options) == {"model": 1.0, "inference": 1.0}
    assert method.evaluations_per_example(options) == options.num_samples + options.sleep_q
    assert ("fantasy" in method.noise(x)) == options.sleep_q

    noise = draw_noise(method.noise(x), [torch.Generator().manual_seed(0)], torch.float64)
    assert noise["q"][0].shape == (1, options.num_samples, 6, method.model.latent_sizes[0])
    result = method.step(x, noise)
    assert isinstance(result, StepResult) and set(result.losses) == {"model", "inference"}
    assert set(result.metrics) == ({"bound", "effective_samples"}
                                   | ({"sleep_log_q"} if options.sleep_q else set()))
    for name, value in result.metrics.items():
        assert value.shape == (1,) and not value.requires_grad, name
        assert bool(torch.isfinite(value).all()), name
    assert 1.0 <= result.metrics["effective_samples"].item() <= options.num_samples + 1e-9
    for g, loss in result.losses.items():
        assert loss.dim() == 0 and loss.requires_grad and torch.isfinite(loss)
        own = torch.autograd.grad(loss, groups[g], retain_graph=True, allow_unused=True)
        assert any(grad is not None and grad.abs().sum() > 0 for grad in own), g
        other = groups["inference" if g == "model" else "model"]
        for grad in torch.autograd.grad(loss, other, retain_graph=True, allow_unused=True):
            assert grad is None or torch.all(grad == 0), f"loss {g} reaches the other group"
    if method.model.visible_kind == "bernoulli":
        assert set(method.exact_objectives(x)) == {"model", "inference"}


def test_bound_metric_is_the_k_sample_estimate():
    method, x = make(spec="sbn:2-3", batch_size=4)
    drawn = []
    sample = method.inference.sample

    def capture(*args, **kwargs):
        out = sample(*args, **kwargs)
        drawn.append(out)
        return out

    method.inference.sample = capture
    noise = draw_noise(method.noise(x), [torch.Generator().manual_seed(1)], torch.float64)
    result = method.step(x, noise)
    (h, log_q), = drawn
    log_w = method.model.log_joint(x, h) - sum(log_q)                        # (1, K, B)
    expected = (log_w.exp().mean(1)).log().mean(-1)
    assert torch.allclose(result.metrics["bound"], expected.detach(), rtol=1e-12)
    weights = torch.softmax(log_w, 1)
    assert torch.allclose(result.losses["model"], -(weights * method.model.log_joint(x, h)).sum())
