"""Models: normalisation by enumeration, sampling against log_prob, the autoregressive mask,
document models, sample broadcasting, ModelSpec parsing and visible-bias initialisation.

Everything runs in float64 on tiny models with O(1) random parameters (`bench.check.tiny_problem`),
and every sum over configurations is enumerated here independently of `models.exact`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from bench.check import tiny_problem
from bench.errors import UserError
from models import FAMILIES, BeliefNet, LogisticLayer, ModelSpec, SoftmaxLayer

# --------------------------------------------------------------------------------------------
# helpers (independent of models.exact)


def all_binary(num_units: int) -> torch.Tensor:
    """Every binary vector of length num_units, shape (2^num_units, num_units), float64."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=num_units)), dtype=torch.float64)


def latent_grid(latent_sizes) -> list[torch.Tensor]:
    """Every joint latent configuration as per-layer tensors of shape (M, 1, H_i)."""
    grid = all_binary(sum(latent_sizes))
    return [part.unsqueeze(1) for part in torch.split(grid, list(latent_sizes), dim=-1)]


def config_index(bits: torch.Tensor) -> torch.Tensor:
    """Row-wise binary code of (..., n) 0/1 tensors, first column most significant, matching
    `all_binary`."""
    n = bits.shape[-1]
    weights = 2 ** torch.arange(n - 1, -1, -1)
    return (bits.long() * weights).sum(-1)


def chi_square_p(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> float:
    """p-value of Pearson's chi-square test of counts against probabilities, pooling every cell
    whose expected count is below `min_expected` into one."""
    total = counts.sum()
    expected = total * probs
    assert abs(probs.sum() - 1) < 1e-9
    small = expected < min_expected
    obs = list(counts[~small])
    exp = list(expected[~small])
    if small.any():
        obs.append(counts[small].sum())
        exp.append(expected[small].sum())
    obs, exp = np.array(obs, dtype=float), np.array(exp)
    statistic = ((obs - exp) ** 2 / exp).sum()
    return float(stats.chi2.sf(statistic, len(obs) - 1))


def log_bernoulli(value: np.ndarray, logits: np.ndarray) -> float:
    p = 1.0 / (1.0 + np.exp(-logits))
    return float(np.sum(value * np.log(p) + (1 - value) * np.log(1 - p)))


def np_param(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


# --------------------------------------------------------------------------------------------
# normalisation


@pytest.mark.parametrize("spec, num_features", [("sbn:2-3", 5), ("sbn:2-2-2", 4), ("fdarn:4", 6)])
def test_model_joint_sums_to_one(spec, num_features):
    model, _, _ = tiny_problem(spec, num_features=num_features, seed=1)
    xs = all_binary(num_features)
    h = latent_grid(model.latent_sizes)
    with torch.no_grad():
        log_joint = model.log_joint(xs, h)
    assert log_joint.shape == (h[0].shape[0], xs.shape[0])
    assert torch.logsumexp(log_joint.flatten(), 0).item() == pytest.approx(0.0, abs=1e-10)
    # and the marginal over h alone (P(h) = sum_x P(x, h)) sums to one as well
    log_prior = torch.logsumexp(log_joint, 1)
    assert torch.logsumexp(log_prior, 0).item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("inference", ["factorial", "autoregressive"])
@pytest.mark.parametrize("spec", ["sbn:2-3", "sbn:2-2-2", "fdarn:4"])
def test_inference_sums_to_one_for_every_x(spec, inference):
    num_features = 4
    _, q_net, _ = tiny_problem(spec, num_features=num_features, seed=2, inference=inference)
    xs = all_binary(num_features)
    h = latent_grid(q_net.latent_sizes)
    with torch.no_grad():
        log_q = q_net.log_prob(xs, h)  # (M, 2^D)
    assert log_q.shape == (h[0].shape[0], xs.shape[0])
    totals = torch.logsumexp(log_q, 0)
    assert torch.allclose(totals, torch.zeros_like(totals), atol=1e-10)
    # the distribution really depends on x (the test would be trivial otherwise)
    assert (log_q[:, 0] - log_q[:, -1]).abs().max() > 1e-2


# --------------------------------------------------------------------------------------------
# log-probabilities against a manual computation of Eq. 10 and 11


def test_sbn_log_joint_matches_manual_eq10():
    model, _, _ = tiny_problem("sbn:2-2-3", num_features=4, seed=3)
    assert model.latent_sizes == (3, 2, 2)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.integers(0, 2, 4).astype(float)
        h = [rng.integers(0, 2, size).astype(float) for size in model.latent_sizes]
        manual = log_bernoulli(x, np_param(model.visible.weight) @ h[0] + np_param(model.visible.bias))
        for i, layer in enumerate(model.conditionals):  # h[i] given h[i+1]
            manual += log_bernoulli(h[i], np_param(layer.weight) @ h[i + 1] + np_param(layer.bias))
        manual += log_bernoulli(h[-1], np_param(model.prior.bias))
        got = model.log_joint(torch.tensor(x), [torch.tensor(v) for v in h]).item()
        assert got == pytest.approx(manual, abs=1e-10)


def test_fdarn_prior_matches_manual_autoregressive_product():
    model, _, _ = tiny_problem("fdarn:4", num_features=3, seed=4)
    prior = model.prior
    # tiny_problem fills the whole matrix, upper triangle included: the mask must remove it
    raw = np_param(prior.autoregressive_weight)
    assert np.abs(np.triu(raw)).sum() > 0.5
    for bits in itertools.product([0.0, 1.0], repeat=4):
        h = np.array(bits)
        manual = 0.0
        for j in range(4):
            a = np_param(prior.bias)[j] + sum(raw[j, k] * h[k] for k in range(j))
            manual += log_bernoulli(h[j:j + 1], np.array([a]))
        assert prior.log_prob(torch.tensor(h)).item() == pytest.approx(manual, abs=1e-10)


@pytest.mark.parametrize("spec", ["sbn:4-3", "fdarn:4"])
def test_autoregressive_inference_starts_as_the_factorial_one(spec):
    # U starts at zero and draws no random numbers, so the same seed gives the same W and b, and
    # Q(h | x) equal to the factorial Q's for every h (Table 2's pairs start from one Q).
    x = (torch.rand(6, 5, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    nets = {}
    for inference in ("factorial", "autoregressive"):
        torch.manual_seed(3)
        nets[inference] = ModelSpec.parse(spec, inference=inference, init_scale=0.5).build(5)[1]
    for layer in nets["autoregressive"].layers:
        assert layer.autoregressive and torch.count_nonzero(layer.autoregressive_weight) == 0
    h = [(torch.rand(6, size, generator=torch.Generator().manual_seed(1)) < 0.5).float()
         for size in nets["factorial"].latent_sizes]
    with torch.no_grad():
        assert torch.equal(nets["autoregressive"].log_prob(x, h), nets["factorial"].log_prob(x, h))


def test_inference_log_prob_matches_manual_eq11_with_centring():
    spec = ModelSpec.parse("sbn:2-3", inference="autoregressive", init_scale=1.0)
    mean = torch.tensor([0.1, 0.5, 0.9, 0.3])
    _, q_net = spec.build(4, feature_mean=mean)
    q_net = q_net.double()
    torch.manual_seed(5)
    with torch.no_grad():
        for p in q_net.parameters():
            p.normal_()
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.integers(0, 2, 4).astype(float)
        h = [rng.integers(0, 2, size).astype(float) for size in q_net.latent_sizes]
        contexts = [x - mean.double().numpy(), h[0]]
        manual = 0.0
        for layer, value, context in zip(q_net.layers, h, contexts, strict=True):
            u = np_param(layer.autoregressive_weight)
            base = np_param(layer.weight) @ context + np_param(layer.bias)
            for j in range(layer.size):
                a = base[j] + sum(u[j, k] * value[k] for k in range(j))
                manual += log_bernoulli(value[j:j + 1], np.array([a]))
        got = q_net.log_prob(torch.tensor(x), [torch.tensor(v) for v in h]).item()
        assert got == pytest.approx(manual, abs=1e-10)


# --------------------------------------------------------------------------------------------
# sampling agrees with log_prob


@pytest.mark.parametrize("spec, num_features", [("sbn:2-1", 3), ("sbn:1-1-2", 2), ("fdarn:3", 3)])
def test_model_samples_match_log_joint(spec, num_features):
    model, _, _ = tiny_problem(spec, num_features=num_features, seed=6)
    n = 50_000
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        x, h = model.sample((n,), generator)
    assert x.shape == (n, num_features)
    assert [t.shape for t in h] == [(n, size) for size in model.latent_sizes]
    codes = config_index(torch.cat([x] + h, -1))
    counts = np.bincount(codes.numpy(), minlength=2 ** (num_features + sum(model.latent_sizes)))
    # probabilities in the same order: x bits first, then h bits bottom-up
    grid = all_binary(num_features + sum(model.latent_sizes))
    xs, rest = grid[:, :num_features], grid[:, num_features:]
    hs = list(torch.split(rest, list(model.latent_sizes), dim=-1))
    with torch.no_grad():
        probs = model.log_joint(xs, hs).exp().numpy()
    assert chi_square_p(counts, probs) > 1e-4


@pytest.mark.parametrize("inference", ["factorial", "autoregressive"])
def test_inference_samples_match_log_prob(inference):
    _, q_net, _ = tiny_problem("sbn:2-3", num_features=4, seed=7, inference=inference)
    q_net.input_mean.copy_(torch.tensor([0.9, -1.5, 0.3, 2.0]))  # sampling must centre too
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    n = 50_000
    generator = torch.Generator().manual_seed(12)
    with torch.no_grad():
        h, log_q = q_net.sample(x, num_samples=n, generator=generator)
        grid = latent_grid(q_net.latent_sizes)
        probs = q_net.log_prob(x, grid).exp()  # (M, B)
    codes = config_index(torch.cat(h, -1))  # (n, B)
    for b in range(x.shape[0]):
        counts = np.bincount(codes[:, b].numpy(), minlength=probs.shape[0])
        assert chi_square_p(counts, probs[:, b].numpy()) > 1e-4
    # the returned log Q is the teacher-forced score of the returned sample
    assert torch.allclose(sum(log_q), q_net.log_prob(x, h), atol=1e-12)


def test_autoregressive_layer_samples_match_log_prob_with_context():
    torch.manual_seed(8)
    layer = LogisticLayer(4, 2, autoregressive=True, init_scale=1.5).double()
    with torch.no_grad():
        layer.bias.normal_()
    context = torch.tensor([[1.0, -0.5], [-2.0, 1.0]], dtype=torch.float64)
    n = 50_000
    generator = torch.Generator().manual_seed(13)
    with torch.no_grad():
        values = layer.sample(context.expand(n, 2, 2), generator=generator)
        grid = all_binary(4).unsqueeze(1)  # (16, 1, 4)
        probs = layer.log_prob(grid, context).exp()  # (16, 2)
    assert torch.allclose(probs.sum(0), torch.ones(2, dtype=torch.float64), atol=1e-12)
    codes = config_index(values)
    for b in range(2):
        counts = np.bincount(codes[:, b].numpy(), minlength=16)
        assert chi_square_p(counts, probs[:, b].numpy()) > 1e-4


def test_sampling_with_explicit_noise_is_deterministic_inverse_cdf():
    layer = LogisticLayer(3, 0, autoregressive=False).double()
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([0.0, 2.0, -2.0]))
    p = torch.sigmoid(layer.bias.detach())
    noise = torch.stack([p - 1e-6, p + 1e-6])
    sample = layer.sample(None, (2,), noise=noise)
    assert torch.equal(sample, torch.tensor([[1.0, 1, 1], [0, 0, 0]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_autoregressive_sample_is_each_units_inverse_cdf_given_the_units_before_it(dtype):
    # Ancestral sampling: unit j = [u_j < sigmoid(a_j)], a_j computed from the context and the
    # sampled units before j. Checked against the teacher-forced logits of the returned sample,
    # for a batch of samples and contexts (S, B, C) with shared context (B, C).
    torch.manual_seed(5)
    layer = LogisticLayer(7, 3, autoregressive=True, init_scale=1.5).to(dtype)
    context = torch.randn(4, 3, dtype=dtype)
    noise = torch.rand(6, 4, 7, dtype=dtype, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        value = layer.sample(context, (6, 4), noise=noise)
        logits = layer.logits(context.expand(6, 4, 3), value)
    assert value.dtype == dtype and value.shape == (6, 4, 7)
    assert torch.equal(value, (noise < torch.sigmoid(logits)).to(dtype))
    assert 0 < value.mean() < 1


# --------------------------------------------------------------------------------------------
# autoregressive mask


def test_autoregressive_logit_depends_only_on_earlier_units():
    torch.manual_seed(9)
    layer = LogisticLayer(5, 3, autoregressive=True, init_scale=1.0).double()
    with torch.no_grad():
        layer.autoregressive_weight.normal_()  # full matrix: only the mask keeps it triangular
    context = torch.randn(3, dtype=torch.float64)
    value = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    base = layer.logits(context, value)
    for k in range(5):
        flipped = value.clone()
        flipped[k] = 1 - flipped[k]
        changed = (layer.logits(context, flipped) - base).abs() > 1e-12
        assert not changed[: k + 1].any(), f"unit <= {k} saw unit {k}"
        assert changed[k + 1:].all(), f"units after {k} ignore it"
    jacobian = torch.autograd.functional.jacobian(lambda v: layer.logits(context, v), value)
    assert torch.all(torch.triu(jacobian) == 0)
    rows, cols = torch.tril_indices(5, 5, -1)
    assert torch.all(jacobian[rows, cols] != 0)


def test_factorial_layer_logit_ignores_the_value():
    layer = LogisticLayer(4, 2).double()
    context = torch.randn(2, dtype=torch.float64)
    a = layer.logits(context, torch.zeros(4, dtype=torch.float64))
    b = layer.logits(context, torch.ones(4, dtype=torch.float64))
    assert torch.equal(a, b)


@pytest.mark.parametrize("family", ["sbn", "fdarn", "doc-sbn", "doc-fdarn"])
@pytest.mark.parametrize("inference", ["factorial", "autoregressive"])
def test_which_layers_are_autoregressive(family, inference):
    model, q_net = ModelSpec.parse(f"{family}:3", inference=inference).build(5)
    assert model.prior.autoregressive is FAMILIES[family][1]
    assert model.prior.autoregressive is family.endswith("fdarn")
    for layer in model.conditionals:
        assert not layer.autoregressive
    if isinstance(model.visible, LogisticLayer):
        assert not model.visible.autoregressive
    assert isinstance(model.visible, SoftmaxLayer) is family.startswith("doc-")
    for layer in q_net.layers:
        assert layer.autoregressive is (inference == "autoregressive")


# --------------------------------------------------------------------------------------------
# document models


@pytest.mark.parametrize("family", ["doc-sbn", "doc-fdarn"])
def test_document_log_prob_is_count_weighted_log_softmax(family):
    model, _, _ = tiny_problem(f"{family}:3", num_features=7, seed=10)
    rng = np.random.default_rng(2)
    weight, bias = np_param(model.visible.weight), np_param(model.visible.bias)
    for _ in range(5):
        counts = rng.integers(0, 4, 7).astype(float)
        h = rng.integers(0, 2, 3).astype(float)
        logits = weight @ h + bias
        probs = np.exp(logits) / np.exp(logits).sum()
        manual = float(np.sum(counts * np.log(probs)))
        got = model.log_prob_terms(torch.tensor(counts), [torch.tensor(h)])[0].item()
        assert got == pytest.approx(manual, abs=1e-10)


@pytest.mark.parametrize("family", ["doc-sbn", "doc-fdarn"])
def test_document_model_normalised_over_word_sequences(family):
    """With the multinomial coefficient left out, log P(x|h) scores one ordered word sequence:
    summing coefficient * P(x, h) over every count vector of length L and every h gives 1."""
    model, _, _ = tiny_problem(f"{family}:3", num_features=7, seed=11)
    length = 3
    docs = [c for c in itertools.product(range(length + 1), repeat=7) if sum(c) == length]
    xs = torch.tensor(docs, dtype=torch.float64)
    log_coef = torch.tensor([math.lgamma(length + 1) - sum(math.lgamma(c + 1) for c in doc)
                             for doc in docs], dtype=torch.float64)
    with torch.no_grad():
        log_joint = model.log_joint(xs, latent_grid(model.latent_sizes))  # (8, num docs)
    total = torch.logsumexp((log_joint + log_coef).flatten(), 0).item()
    assert total == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("family", ["doc-sbn", "doc-fdarn"])
def test_document_samples_have_requested_lengths(family):
    model, _, _ = tiny_problem(f"{family}:3", num_features=7, seed=12)
    lengths = torch.tensor([0.0, 1.0, 5.0, 13.0, 2.0, 40.0], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x, h = model.sample((6,), generator, lengths=lengths)
    assert x.shape == (6, 7) and h[0].shape == (6, 3)
    assert torch.equal(x.sum(-1), lengths)
    assert torch.equal(x, x.round()) and (x >= 0).all()
    with pytest.raises(ValueError):
        model.sample((2,), generator)  # a multinomial visible needs lengths


def test_multinomial_sample_frequencies_match_softmax():
    torch.manual_seed(13)
    layer = SoftmaxLayer(7, 3, init_scale=1.0).double()
    with torch.no_grad():
        layer.bias.normal_()
    context = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    probs = torch.softmax(layer.logits(context), -1).detach()
    n = 50_000
    generator = torch.Generator().manual_seed(14)
    # length-1 documents: one word each, a categorical draw
    one = layer.sample(context.expand(n, 3), generator=generator,
                       lengths=torch.ones(n, dtype=torch.float64))
    assert torch.equal(one.sum(-1), torch.ones(n, dtype=torch.float64))
    assert chi_square_p(one.sum(0).numpy(), probs.numpy()) > 1e-4
    # longer documents: expected counts are length * softmax (mixed lengths exercise the mask)
    m = 20_000
    lengths = torch.randint(0, 9, (m,), generator=generator).double()
    many = layer.sample(context.expand(m, 3), generator=generator, lengths=lengths)
    assert torch.equal(many.sum(-1), lengths)
    per_word = many.sum(0) / lengths.sum()
    se = (probs * (1 - probs) / lengths.sum()).sqrt()
    assert ((per_word - probs).abs() / se).max() < 4.5


# --------------------------------------------------------------------------------------------
# multiple samples per example broadcast


@pytest.mark.parametrize("inference", ["factorial", "autoregressive"])
@pytest.mark.parametrize("spec", ["sbn:2-3", "sbn:2-2-2", "fdarn:4"])
def test_multiple_samples_broadcast(spec, inference):
    model, q_net, x = tiny_problem(spec, num_features=5, batch_size=4, seed=14, inference=inference)
    samples = 6
    generator = torch.Generator().manual_seed(3)
    h, log_q = q_net.sample(x, num_samples=samples, generator=generator)
    assert [t.shape for t in h] == [(samples, 4, size) for size in q_net.latent_sizes]
    assert all(t.shape == (samples, 4) for t in log_q)
    assert all(not t.requires_grad for t in h)
    assert all(t.requires_grad for t in log_q)
    log_p = model.log_prob_terms(x, h)
    assert all(t.shape == (samples, 4) for t in log_p)
    for s in range(samples):
        one = [t[s] for t in h]
        for a, b in zip(q_net.log_prob_terms(x, one), log_q, strict=True):
            assert torch.allclose(a, b[s], atol=1e-12)
        for a, b in zip(model.log_prob_terms(x, one), log_p, strict=True):
            assert torch.allclose(a, b[s], atol=1e-12)
        for i in range(x.shape[0]):  # and one example at a time
            single = [t[s, i] for t in h]
            assert torch.allclose(model.log_joint(x[i], single), sum(log_p)[s, i], atol=1e-12)


def test_document_model_scores_sample_dimension():
    model, q_net, x = tiny_problem("doc-fdarn:3", num_features=7, batch_size=3, seed=15)
    h, _ = q_net.sample(x, num_samples=5, generator=torch.Generator().manual_seed(0))
    terms = model.log_prob_terms(x, h)
    assert all(t.shape == (5, 3) for t in terms)
    for s in range(5):
        assert torch.allclose(model.log_joint(x, [h[0][s]]), sum(terms)[s], atol=1e-12)


# --------------------------------------------------------------------------------------------
# ModelSpec.parse


def test_spec_layers_deepest_first_and_bottom_up_in_beliefnet():
    spec = ModelSpec.parse("sbn:200-200-500")
    assert spec.family == "sbn" and spec.layers == (200, 200, 500)
    assert spec.name == "sbn:200-200-500" and spec.num_latents == 900
    model, q_net = spec.build(3)
    assert model.latent_sizes == (500, 200, 200)
    assert q_net.latent_sizes == (500, 200, 200)
    assert model.visible.weight.shape == (3, 500)  # x is fed by the 500-unit layer
    assert model.prior.size == 200
    assert [tuple(layer.weight.shape) for layer in model.conditionals] == [(500, 200), (200, 200)]
    assert q_net.layers[0].weight.shape == (500, 3)
    assert [tuple(layer.weight.shape) for layer in q_net.layers[1:]] == [(200, 500), (200, 200)]


def test_spec_parses_every_family():
    assert ModelSpec.parse(" fdarn:500 ").layers == (500,)
    assert ModelSpec.parse("doc-sbn:50").data_kind == "counts"
    assert ModelSpec.parse("sbn:7").data_kind == "binary"
    assert ModelSpec.parse("sbn:2", inference="autoregressive").inference == "autoregressive"


@pytest.mark.parametrize("text", ["fdarn:2-2", "doc-sbn:3-3", "doc-fdarn:1-1"])
def test_single_layer_families_reject_two_layers(text):
    with pytest.raises(UserError, match="one latent layer"):
        ModelSpec.parse(text)


@pytest.mark.parametrize("text", ["sbn", "sbn:", "sbn:a-b", "sbn:0", "sbn:3-0", "sbn:-1", "sbn:2--3"])
def test_malformed_specs_raise_helpful_user_error(text):
    with pytest.raises(UserError) as info:
        ModelSpec.parse(text)
    message = str(info.value)
    assert "malformed" in message and repr(text) in message
    assert "sbn:200" in message  # shows an example of the right form


def test_unknown_family_lists_valid_families():
    with pytest.raises(UserError) as info:
        ModelSpec.parse("xyz:3")
    message = str(info.value)
    assert "'xyz'" in message
    for family in FAMILIES:
        assert family in message


def test_unknown_inference_kind_lists_valid_kinds():
    with pytest.raises(UserError) as info:
        ModelSpec.parse("sbn:3", inference="recurrent")
    message = str(info.value)
    assert "recurrent" in message and "factorial" in message and "autoregressive" in message
    spec = ModelSpec.parse("sbn:3")
    with pytest.raises(UserError):
        spec.replace(inference="bogus")


# --------------------------------------------------------------------------------------------
# visible bias initialisation


def test_bernoulli_visible_bias_is_clamped_logit_of_mean():
    mean = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0])
    model, q_net = ModelSpec.parse("sbn:3").build(5, feature_mean=mean)
    eps = 1e-3
    clamped = mean.double().clamp(eps, 1 - eps)
    expected = torch.log(clamped / (1 - clamped)).float()
    assert torch.allclose(model.visible.bias, expected, atol=1e-5)
    assert torch.isfinite(model.visible.bias).all()
    assert torch.sigmoid(model.visible.bias[1:4]).tolist() == pytest.approx([0.25, 0.5, 0.9], abs=1e-5)
    # the same mean centres the inference network's input
    assert torch.allclose(q_net.centre(torch.ones(5)), 1 - mean)


def test_visible_bias_untouched_without_mean():
    model, q_net = ModelSpec.parse("sbn:3").build(5)
    assert torch.equal(model.visible.bias, torch.zeros(5))
    assert torch.equal(q_net.input_mean, torch.zeros(5))


def test_multinomial_visible_bias_is_log_word_share():
    mean = torch.tensor([2.0, 1.0, 1.0, 0.0])
    model, _ = ModelSpec.parse("doc-sbn:3").build(4, feature_mean=mean)
    share = torch.log_softmax(model.visible.bias, -1).exp()
    assert torch.allclose(share[:3], torch.tensor([0.5, 0.25, 0.25]), atol=1e-5)


def test_unknown_visible_kind_raises():
    with pytest.raises(ValueError, match="bernoulli"):
        BeliefNet((2,), 3, visible="gaussian")
