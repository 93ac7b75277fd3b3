"""Models: normalisation by enumeration, sampling against log_prob, the autoregressive mask,
document models, sample broadcasting, stacked runs, ModelSpec parsing, visible-bias
initialisation and the inference network's centring.

Everything runs in float64 on tiny models with O(1) random parameters (`bench.check.tiny_problem`),
and every sum over configurations is enumerated here independently of `models.exact`.

Models hold R runs (models/layers.py): every tensor leads with the run dimension (1 for a lone
model), weights are stored transposed ((R, C, H) = W^T for H units fed by C), and sampling takes
explicit noise.
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
from models.noise import draw

# --------------------------------------------------------------------------------------------
# helpers (independent of models.exact)


def all_binary(num_units: int) -> torch.Tensor:
    """Every binary vector of length num_units, shape (2^num_units, num_units), float64."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=num_units)), dtype=torch.float64)


def latent_grid(latent_sizes) -> list[torch.Tensor]:
    """Every joint latent configuration as per-layer tensors of shape (1, M, 1, H_i): a run
    dimension of 1, the configurations, and a batch dimension broadcast against the examples."""
    grid = all_binary(sum(latent_sizes))
    return [part.unsqueeze(1).unsqueeze(0)
            for part in torch.split(grid, list(latent_sizes), dim=-1)]


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
    """A lone model's (run 0's) parameter as numpy, in the stored layout."""
    return t.detach()[0].numpy()


def np_weight(layer) -> np.ndarray:
    """Run 0's W in the usual (H, C) layout (stored transposed as (R, C, H))."""
    return layer.weight.detach()[0].t().numpy()


def np_autoregressive(layer) -> np.ndarray:
    """Run 0's U in the usual layout, U[j, k] = U_jk (stored transposed: [k, j] = U_jk)."""
    return layer.autoregressive_weight.detach()[0].t().numpy()


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uniform_noise(request, seed: int):
    """Fill a list of `Noise` for a lone run from a seeded generator, in float64."""
    return draw({"n": request}, [generator(seed)], torch.float64)["n"]


# --------------------------------------------------------------------------------------------
# normalisation


@pytest.mark.parametrize("spec, num_features", [("sbn:2-3", 5), ("sbn:2-2-2", 4), ("fdarn:4", 6)])
def test_model_joint_sums_to_one(spec, num_features):
    model, _, _ = tiny_problem(spec, num_features=num_features, seed=1)
    xs = all_binary(num_features).unsqueeze(0)  # (1, 2^D, D)
    h = latent_grid(model.latent_sizes)
    with torch.no_grad():
        log_joint = model.log_joint(xs, h)
    assert log_joint.shape == (1, h[0].shape[1], xs.shape[1])
    assert torch.logsumexp(log_joint.flatten(), 0).item() == pytest.approx(0.0, abs=1e-10)
    # and the marginal over h alone (P(h) = sum_x P(x, h)) sums to one as well
    log_prior = torch.logsumexp(log_joint[0], 1)
    assert torch.logsumexp(log_prior, 0).item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("inference", ["factorial", "autoregressive"])
@pytest.mark.parametrize("spec", ["sbn:2-3", "sbn:2-2-2", "fdarn:4"])
def test_inference_sums_to_one_for_every_x(spec, inference):
    num_features = 4
    _, q_net, _ = tiny_problem(spec, num_features=num_features, seed=2, inference=inference)
    xs = all_binary(num_features).unsqueeze(0)
    h = latent_grid(q_net.latent_sizes)
    with torch.no_grad():
        log_q = q_net.log_prob(xs, h)  # (1, M, 2^D)
    assert log_q.shape == (1, h[0].shape[1], xs.shape[1])
    log_q = log_q[0]
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
        manual = log_bernoulli(x, np_weight(model.visible) @ h[0] + np_param(model.visible.bias))
        for i, layer in enumerate(model.conditionals):  # h[i] given h[i+1]
            manual += log_bernoulli(h[i], np_weight(layer) @ h[i + 1] + np_param(layer.bias))
        manual += log_bernoulli(h[-1], np_param(model.prior.bias))
        got = model.log_joint(torch.tensor(x).unsqueeze(0),
                              [torch.tensor(v).unsqueeze(0) for v in h])
        assert got.shape == (1,)
        assert got.item() == pytest.approx(manual, abs=1e-10)


def test_fdarn_prior_matches_manual_autoregressive_product():
    model, _, _ = tiny_problem("fdarn:4", num_features=3, seed=4)
    prior = model.prior
    # tiny_problem fills the whole stored matrix, the part the mask removes included (stored
    # transposed, [k, j] = U_jk: the kept part is strictly upper, the removed part is k >= j)
    stored = np_param(prior.autoregressive_weight)
    assert np.abs(np.tril(stored)).sum() > 0.5
    raw = np_autoregressive(prior)  # raw[j, k] = U_jk, unmasked
    for bits in itertools.product([0.0, 1.0], repeat=4):
        h = np.array(bits)
        manual = 0.0
        for j in range(4):
            a = np_param(prior.bias)[j] + sum(raw[j, k] * h[k] for k in range(j))
            manual += log_bernoulli(h[j:j + 1], np.array([a]))
        assert prior.log_prob(torch.tensor(h).unsqueeze(0)).item() == pytest.approx(manual, abs=1e-10)


@pytest.mark.parametrize("spec", ["sbn:4-3", "fdarn:4"])
def test_autoregressive_inference_starts_as_the_factorial_one(spec):
    # U starts at zero and draws no random numbers, so the same seed gives the same W and b, and
    # Q(h | x) equal to the factorial Q's for every h (Table 2's pairs start from one Q).
    x = (torch.rand(1, 6, 5, generator=generator(0)) < 0.5).float()
    nets = {}
    for inference in ("factorial", "autoregressive"):
        nets[inference] = ModelSpec.parse(spec, inference=inference, init_scale=0.5).build(
            5, generators=[generator(3)])[1]
    for layer in nets["autoregressive"].layers:
        assert layer.autoregressive and torch.count_nonzero(layer.autoregressive_weight) == 0
    h = [(torch.rand(1, 6, size, generator=generator(1)) < 0.5).float()
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
            u = np_autoregressive(layer)
            base = np_weight(layer) @ context + np_param(layer.bias)
            for j in range(layer.size):
                a = base[j] + sum(u[j, k] * value[k] for k in range(j))
                manual += log_bernoulli(value[j:j + 1], np.array([a]))
        got = q_net.log_prob(torch.tensor(x).unsqueeze(0),
                             [torch.tensor(v).unsqueeze(0) for v in h]).item()
        assert got == pytest.approx(manual, abs=1e-10)


# --------------------------------------------------------------------------------------------
# sampling agrees with log_prob


@pytest.mark.parametrize("spec, num_features", [("sbn:2-1", 3), ("sbn:1-1-2", 2), ("fdarn:3", 3)])
def test_model_samples_match_log_joint(spec, num_features):
    model, _, _ = tiny_problem(spec, num_features=num_features, seed=6)
    n = 50_000
    with torch.no_grad():
        x, h = model.sample(uniform_noise(model.noise(n), 11))
    assert x.shape == (1, n, num_features)
    assert [t.shape for t in h] == [(1, n, size) for size in model.latent_sizes]
    codes = config_index(torch.cat([x] + h, -1)[0])
    counts = np.bincount(codes.numpy(), minlength=2 ** (num_features + sum(model.latent_sizes)))
    # probabilities in the same order: x bits first, then h bits bottom-up
    grid = all_binary(num_features + sum(model.latent_sizes)).unsqueeze(0)
    xs, rest = grid[..., :num_features], grid[..., num_features:]
    hs = list(torch.split(rest, list(model.latent_sizes), dim=-1))
    with torch.no_grad():
        probs = model.log_joint(xs, hs)[0].exp().numpy()
    assert chi_square_p(counts, probs) > 1e-4


@pytest.mark.parametrize("inference", ["factorial", "autoregressive"])
def test_inference_samples_match_log_prob(inference):
    _, q_net, _ = tiny_problem("sbn:2-3", num_features=4, seed=7, inference=inference)
    q_net.input_mean.copy_(torch.tensor([[0.9, -1.5, 0.3, 2.0]]))  # sampling must centre too
    x = torch.tensor([[[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]]], dtype=torch.float64)
    n = 50_000
    with torch.no_grad():
        h, log_q = q_net.sample(x, uniform_noise(q_net.noise(n, 2), 12))
        grid = latent_grid(q_net.latent_sizes)
        probs = q_net.log_prob(x, grid).exp()[0]  # (M, B)
    codes = config_index(torch.cat(h, -1)[0])  # (n, B)
    for b in range(x.shape[1]):
        counts = np.bincount(codes[:, b].numpy(), minlength=probs.shape[0])
        assert chi_square_p(counts, probs[:, b].numpy()) > 1e-4
    # the returned log Q is the teacher-forced score of the returned sample
    assert torch.allclose(sum(log_q), q_net.log_prob(x, h), atol=1e-12)


def test_autoregressive_layer_samples_match_log_prob_with_context():
    torch.manual_seed(8)
    layer = LogisticLayer(4, 2, autoregressive=True, init_scale=1.5).double()
    with torch.no_grad():
        layer.bias.normal_()
    context = torch.tensor([[[1.0, -0.5], [-2.0, 1.0]]], dtype=torch.float64)  # (1, B, C)
    n = 50_000
    noise = torch.rand(1, n, 2, 4, generator=generator(13), dtype=torch.float64)
    with torch.no_grad():
        values = layer.sample(context.unsqueeze(1).expand(1, n, 2, 2), noise)
        grid = all_binary(4).unsqueeze(1).unsqueeze(0)  # (1, 16, 1, 4)
        probs = layer.log_prob(grid, context).exp()[0]  # (16, 2)
    assert torch.allclose(probs.sum(0), torch.ones(2, dtype=torch.float64), atol=1e-12)
    codes = config_index(values[0])
    for b in range(2):
        counts = np.bincount(codes[:, b].numpy(), minlength=16)
        assert chi_square_p(counts, probs[:, b].numpy()) > 1e-4


def test_sampling_with_explicit_noise_is_deterministic_inverse_cdf():
    layer = LogisticLayer(3, 0, autoregressive=False).double()
    with torch.no_grad():
        layer.bias[0] = torch.tensor([0.0, 2.0, -2.0])
    p = torch.sigmoid(layer.bias.detach()[0])
    noise = torch.stack([p - 1e-6, p + 1e-6]).unsqueeze(0)  # (1, 2, 3)
    assert layer.noise(2).shape == (2, 3)
    sample = layer.sample(None, noise)
    assert torch.equal(sample, torch.tensor([[[1.0, 1, 1], [0, 0, 0]]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_autoregressive_sample_is_each_units_inverse_cdf_given_the_units_before_it(dtype):
    # Ancestral sampling: unit j = [u_j < sigmoid(a_j)], a_j computed from the context and the
    # sampled units before j. Checked against the teacher-forced logits of the returned sample,
    # for a batch of samples and contexts (1, S, B, C) with shared context (1, B, C).
    torch.manual_seed(5)
    layer = LogisticLayer(7, 3, autoregressive=True, init_scale=1.5).to(dtype)
    context = torch.randn(1, 4, 3, dtype=dtype)
    noise = torch.rand(1, 6, 4, 7, dtype=dtype, generator=generator(2))
    with torch.no_grad():
        value = layer.sample(context, noise)
        logits = layer.logits(context.unsqueeze(1).expand(1, 6, 4, 3), value)
    assert value.dtype == dtype and value.shape == (1, 6, 4, 7)
    assert torch.equal(value, (noise < torch.sigmoid(logits)).to(dtype))
    assert 0 < value.mean() < 1


# --------------------------------------------------------------------------------------------
# autoregressive mask


def test_autoregressive_logit_depends_only_on_earlier_units():
    torch.manual_seed(9)
    layer = LogisticLayer(5, 3, autoregressive=True, init_scale=1.0).double()
    with torch.no_grad():
        layer.autoregressive_weight.normal_()  # full matrix: only the mask keeps it triangular
    context = torch.randn(1, 3, dtype=torch.float64)
    value = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    base = layer.logits(context, value)
    assert base.shape == (1, 5)
    for k in range(5):
        flipped = value.clone()
        flipped[0, k] = 1 - flipped[0, k]
        changed = ((layer.logits(context, flipped) - base).abs() > 1e-12)[0]
        assert not changed[: k + 1].any(), f"unit <= {k} saw unit {k}"
        assert changed[k + 1:].all(), f"units after {k} ignore it"
    jacobian = torch.autograd.functional.jacobian(
        lambda v: layer.logits(context, v.unsqueeze(0))[0], value[0])  # [j, k] = d a_j / d h_k
    assert torch.all(torch.triu(jacobian) == 0)
    rows, cols = torch.tril_indices(5, 5, -1)
    assert torch.all(jacobian[rows, cols] != 0)


def test_autoregressive_mask_is_strictly_upper_triangular_in_the_stored_layout():
    layer = LogisticLayer(4, 2, autoregressive=True)
    assert torch.equal(layer.autoregressive_mask, torch.triu(torch.ones(4, 4), 1))
    assert layer.autoregressive_weight.shape == (1, 4, 4)
    assert layer.weight.shape == (1, 2, 4) and layer.bias.shape == (1, 4)


def test_factorial_layer_logit_ignores_the_value():
    layer = LogisticLayer(4, 2).double()
    context = torch.randn(1, 2, dtype=torch.float64)
    a = layer.logits(context, torch.zeros(1, 4, dtype=torch.float64))
    b = layer.logits(context, torch.ones(1, 4, dtype=torch.float64))
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
    weight, bias = np_weight(model.visible), np_param(model.visible.bias)
    for _ in range(5):
        counts = rng.integers(0, 4, 7).astype(float)
        h = rng.integers(0, 2, 3).astype(float)
        logits = weight @ h + bias
        probs = np.exp(logits) / np.exp(logits).sum()
        manual = float(np.sum(counts * np.log(probs)))
        got = model.log_prob_terms(torch.tensor(counts).unsqueeze(0),
                                   [torch.tensor(h).unsqueeze(0)])[0].item()
        assert got == pytest.approx(manual, abs=1e-10)


@pytest.mark.parametrize("family", ["doc-sbn", "doc-fdarn"])
def test_document_model_normalised_over_word_sequences(family):
    """With the multinomial coefficient left out, log P(x|h) scores one ordered word sequence:
    summing coefficient * P(x, h) over every count vector of length L and every h gives 1."""
    model, _, _ = tiny_problem(f"{family}:3", num_features=7, seed=11)
    length = 3
    docs = [c for c in itertools.product(range(length + 1), repeat=7) if sum(c) == length]
    xs = torch.tensor(docs, dtype=torch.float64).unsqueeze(0)
    log_coef = torch.tensor([math.lgamma(length + 1) - sum(math.lgamma(c + 1) for c in doc)
                             for doc in docs], dtype=torch.float64)
    with torch.no_grad():
        log_joint = model.log_joint(xs, latent_grid(model.latent_sizes))  # (1, 8, num docs)
    assert log_joint.shape == (1, 8, len(docs))
    total = torch.logsumexp((log_joint + log_coef).flatten(), 0).item()
    assert total == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("family", ["doc-sbn", "doc-fdarn"])
def test_document_samples_have_requested_lengths(family):
    model, _, _ = tiny_problem(f"{family}:3", num_features=7, seed=12)
    lengths = torch.tensor([[0.0, 1.0, 5.0, 13.0, 2.0, 40.0]], dtype=torch.float64)
    noise = uniform_noise(model.noise(6, lengths=lengths), 0)
    assert noise[-1].shape == (1, 6, 40)  # one uniform per word of the longest document
    with torch.no_grad():
        x, h = model.sample(noise, lengths)
    assert x.shape == (1, 6, 7) and h[0].shape == (1, 6, 3)
    assert torch.equal(x.sum(-1), lengths)
    assert torch.equal(x, x.round()) and (x >= 0).all()
    # noise_like / lengths_like give fantasies shaped like a minibatch, with its lengths
    assert torch.equal(model.lengths_like(x), lengths)
    again, _ = model.sample(uniform_noise(model.noise_like(x), 1), model.lengths_like(x))
    assert torch.equal(again.sum(-1), lengths)


@pytest.mark.parametrize("family", ["doc-sbn", "doc-fdarn"])
def test_document_sampling_without_lengths_raises_value_error(family):
    # A multinomial visible needs lengths, both to say what noise it needs and to sample.
    model, _, _ = tiny_problem(f"{family}:3", num_features=7, seed=12)
    with pytest.raises(ValueError):
        model.noise(2)
    lengths = torch.full((1, 2), 3.0, dtype=torch.float64)
    noise = uniform_noise(model.noise(2, lengths=lengths), 0)
    with pytest.raises(ValueError):
        model.sample(noise)


def test_multinomial_sample_is_the_inverse_cdf_of_the_softmax():
    # Word n of a document is the first word whose cumulative probability reaches noise[..., n];
    # words past a document's length are not counted.
    layer = SoftmaxLayer(4, 2).double()
    with torch.no_grad():
        layer.bias[0] = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    context = torch.zeros(1, 1, 2, dtype=torch.float64)
    noise = torch.tensor([[[0.05, 0.15, 0.29, 0.31, 0.61, 0.99, 0.0]]], dtype=torch.float64)
    lengths = torch.tensor([[6.0]], dtype=torch.float64)
    counts = layer.sample(context, noise, lengths)
    assert torch.equal(counts, torch.tensor([[[1.0, 2.0, 1.0, 2.0]]], dtype=torch.float64))
    assert torch.equal(layer.sample(context, noise, lengths - 4),
                       torch.tensor([[[1.0, 1.0, 0.0, 0.0]]], dtype=torch.float64))


def test_multinomial_sample_frequencies_match_softmax():
    torch.manual_seed(13)
    layer = SoftmaxLayer(7, 3, init_scale=1.0).double()
    with torch.no_grad():
        layer.bias.normal_()
    context = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)  # (1, C)
    probs = torch.softmax(layer.logits(context), -1).detach()[0]
    n = 50_000
    gen = generator(14)
    # length-1 documents: one word each, a categorical draw
    ones = torch.ones(1, n, dtype=torch.float64)
    noise = draw({"w": [layer.noise(ones)]}, [gen], torch.float64)["w"][0]
    assert noise.shape == (1, n, 1)
    one = layer.sample(context.unsqueeze(1).expand(1, n, 3), noise, ones)
    assert torch.equal(one.sum(-1), ones)
    assert chi_square_p(one[0].sum(0).numpy(), probs.numpy()) > 1e-4
    # longer documents: expected counts are length * softmax (mixed lengths exercise the mask)
    m = 20_000
    lengths = torch.randint(0, 9, (1, m), generator=gen).double()
    noise = draw({"w": [layer.noise(lengths)]}, [gen], torch.float64)["w"][0]
    many = layer.sample(context.unsqueeze(1).expand(1, m, 3), noise, lengths)
    assert torch.equal(many.sum(-1), lengths)
    per_word = many[0].sum(0) / lengths.sum()
    se = (probs * (1 - probs) / lengths.sum()).sqrt()
    assert ((per_word - probs).abs() / se).max() < 4.5


# --------------------------------------------------------------------------------------------
# multiple samples per example broadcast


@pytest.mark.parametrize("inference", ["factorial", "autoregressive"])
@pytest.mark.parametrize("spec", ["sbn:2-3", "sbn:2-2-2", "fdarn:4"])
def test_multiple_samples_broadcast(spec, inference):
    model, q_net, x = tiny_problem(spec, num_features=5, batch_size=4, seed=14, inference=inference)
    assert x.shape == (1, 4, 5)
    samples = 6
    h, log_q = q_net.sample(x, uniform_noise(q_net.noise(samples, 4), 3))
    assert [t.shape for t in h] == [(1, samples, 4, size) for size in q_net.latent_sizes]
    assert all(t.shape == (1, samples, 4) for t in log_q)
    assert all(not t.requires_grad for t in h)
    assert all(t.requires_grad for t in log_q)
    log_p = model.log_prob_terms(x, h)
    assert all(t.shape == (1, samples, 4) for t in log_p)
    for s in range(samples):
        one = [t[:, s] for t in h]
        for a, b in zip(q_net.log_prob_terms(x, one), log_q, strict=True):
            assert torch.allclose(a, b[:, s], atol=1e-12)
        for a, b in zip(model.log_prob_terms(x, one), log_p, strict=True):
            assert torch.allclose(a, b[:, s], atol=1e-12)
        for i in range(x.shape[1]):  # and one example at a time (no batch dimension at all)
            single = [t[:, s, i] for t in h]
            assert torch.allclose(model.log_joint(x[:, i], single), sum(log_p)[:, s, i],
                                  atol=1e-12)


def test_document_model_scores_sample_dimension():
    model, q_net, x = tiny_problem("doc-fdarn:3", num_features=7, batch_size=3, seed=15)
    h, _ = q_net.sample(x, uniform_noise(q_net.noise(5, 3), 0))
    terms = model.log_prob_terms(x, h)
    assert all(t.shape == (1, 5, 3) for t in terms)
    for s in range(5):
        assert torch.allclose(model.log_joint(x, [h[0][:, s]]), sum(terms)[:, s], atol=1e-12)


# --------------------------------------------------------------------------------------------
# stacked runs are independent


STACKED = [("sbn:2-3", "factorial"), ("fdarn:3", "factorial"), ("doc-sbn:3", "factorial"),
           ("sbn:2-3", "autoregressive"), ("fdarn:3", "autoregressive")]


def _parameters(model, q_net) -> dict[str, torch.Tensor]:
    out = {f"p.{name}": value for name, value in model.named_parameters()}
    out.update({f"q.{name}": value for name, value in q_net.named_parameters()})
    return out


@pytest.mark.parametrize("spec, inference", STACKED)
def test_each_stacked_run_is_initialised_from_its_own_generator(spec, inference):
    # init_scale 0.5 so that the autoregressive prior's U is drawn too (fdarn)
    parsed = ModelSpec.parse(spec, inference=inference, init_scale=0.5)
    stacked = _parameters(*parsed.build(6, generators=[generator(3), generator(5)],
                                        dtype=torch.float64))
    lone = {seed: _parameters(*parsed.build(6, generators=[generator(seed)], dtype=torch.float64))
            for seed in (3, 5)}
    assert stacked.keys() == lone[5].keys()
    random_tensors = 0
    for name, value in stacked.items():
        assert value.shape[0] == 2 and lone[5][name].shape[0] == 1, name
        assert torch.equal(value[1], lone[5][name][0]), name
        assert torch.equal(value[0], lone[3][name][0]), name
        if value[0].abs().sum() > 0:
            random_tensors += 1
            assert not torch.equal(value[0], value[1]), name  # the runs really differ
    assert random_tensors >= 2  # the weights (the biases start at zero)


def _stacked_problem(spec, inference, runs=2, num_features=5, seed=20):
    """A stacked float64 model and inference network with O(1) random parameters and a distinct
    centring mean per run, and for each run a lone model holding that run's parameters."""
    parsed = ModelSpec.parse(spec, inference=inference, init_scale=1.0)
    model, q_net = parsed.build(num_features, generators=[None] * runs, dtype=torch.float64)
    gen = generator(seed)
    with torch.no_grad():
        for parameter in list(model.parameters()) + list(q_net.parameters()):
            parameter.copy_(torch.randn(parameter.shape, generator=gen, dtype=torch.float64))
        q_net.input_mean.copy_(torch.rand(q_net.input_mean.shape, generator=gen,
                                          dtype=torch.float64))
    lone = []
    for r in range(runs):
        p_r, q_r = parsed.build(num_features, dtype=torch.float64)
        p_r.load_state_dict({k: v[r:r + 1] for k, v in model.state_dict().items()})
        q_r.load_state_dict({k: v[r:r + 1] for k, v in q_net.state_dict().items()})
        lone.append((p_r, q_r))
    return model, q_net, lone


def _same(a, b, name):
    assert a.shape == b.shape, name
    assert torch.allclose(a, b, rtol=0, atol=1e-12), name


@pytest.mark.parametrize("spec, inference", STACKED)
def test_stacked_runs_sample_and_score_as_lone_models(spec, inference):
    runs, batch, samples = 2, 4, 3
    model, q_net, lone = _stacked_problem(spec, inference, runs)
    assert model.num_runs == runs and q_net.num_runs == runs
    documents = model.visible_kind == "multinomial"
    lengths = (torch.tensor([[3.0, 0.0, 5.0, 2.0], [7.0, 1.0, 1.0, 4.0]], dtype=torch.float64)
               if documents else None)
    gens = [generator(31), generator(32)]
    p_noise = draw({"x": model.noise(batch, lengths=lengths)}, gens, torch.float64)["x"]
    with torch.no_grad():
        x, h = model.sample(p_noise, lengths)
    assert x.shape == (runs, batch, 5)
    if documents:
        assert torch.equal(x.sum(-1), lengths)
    # each run's x drives the inference network of that run (x (R, B, D)); the data shared by
    # every run (x (1, B, D)) is scored by each run's parameters
    shared = x[:1]
    q_noise = draw({"q": q_net.noise(samples, batch)}, gens, torch.float64)["q"]
    hq, log_q = q_net.sample(x, q_noise)
    hq_shared, log_q_shared = q_net.sample(shared, q_noise)
    p_terms = model.log_prob_terms(x, hq)
    p_terms_shared = model.log_prob_terms(shared, hq_shared)
    q_terms = q_net.log_prob_terms(x, h)
    # latents shared by every run ((1, B, H_i), as exact enumeration passes them) as well
    h_shared = [t[:1] for t in h]
    p_terms_h_shared = model.log_prob_terms(shared, h_shared)
    q_terms_h_shared = q_net.log_prob_terms(shared, h_shared)
    assert all(t.shape == (runs, batch) for t in p_terms_h_shared + q_terms_h_shared)
    assert all(t.shape == (runs, samples, batch) for t in p_terms + log_q + log_q_shared)
    for r, (p_r, q_r) in enumerate(lone):
        with torch.no_grad():
            x_r, h_r = p_r.sample([t[r:r + 1] for t in p_noise],
                                  None if lengths is None else lengths[r:r + 1])
        assert torch.equal(x_r, x[r:r + 1])
        for a, b in zip(h_r, h, strict=True):
            assert torch.equal(a, b[r:r + 1])
        hq_r, log_q_r = q_r.sample(x[r:r + 1], [t[r:r + 1] for t in q_noise])
        hq_shared_r, log_q_shared_r = q_r.sample(shared, [t[r:r + 1] for t in q_noise])
        for a, b in zip(hq_r + hq_shared_r, hq + hq_shared, strict=True):
            assert torch.equal(a, b[r:r + 1])
        for a, b in zip(log_q_r + log_q_shared_r, log_q + log_q_shared, strict=True):
            _same(a, b[r:r + 1], "log Q of a sample")
        for a, b in zip(p_r.log_prob_terms(x[r:r + 1], hq_r), p_terms, strict=True):
            _same(a, b[r:r + 1], "log P terms")
        for a, b in zip(p_r.log_prob_terms(shared, hq_shared_r), p_terms_shared, strict=True):
            _same(a, b[r:r + 1], "log P terms of shared data")
        for a, b in zip(q_r.log_prob_terms(x[r:r + 1], [t[r:r + 1] for t in h]), q_terms,
                        strict=True):
            _same(a, b[r:r + 1], "log Q terms")
        for a, b in zip(p_r.log_prob_terms(shared, h_shared), p_terms_h_shared, strict=True):
            _same(a, b[r:r + 1], "log P terms of shared latents")
        for a, b in zip(q_r.log_prob_terms(shared, h_shared), q_terms_h_shared, strict=True):
            _same(a, b[r:r + 1], "log Q terms of shared latents")
    # and the runs really differ (else the comparison would be trivial)
    assert not torch.allclose(p_terms[0][0], p_terms[0][1])


# --------------------------------------------------------------------------------------------
# ModelSpec.parse


def test_spec_layers_deepest_first_and_bottom_up_in_beliefnet():
    spec = ModelSpec.parse("sbn:200-200-500")
    assert spec.family == "sbn" and spec.layers == (200, 200, 500)
    assert spec.name == "sbn:200-200-500" and spec.num_latents == 900
    model, q_net = spec.build(3)
    assert model.latent_sizes == (500, 200, 200)
    assert q_net.latent_sizes == (500, 200, 200)
    # stored transposed, (R, C, H) for H units fed by C
    assert model.visible.weight.shape == (1, 500, 3)  # x is fed by the 500-unit layer
    assert model.prior.size == 200
    assert [tuple(layer.weight.shape) for layer in model.conditionals] == [(1, 200, 500),
                                                                           (1, 200, 200)]
    assert q_net.layers[0].weight.shape == (1, 3, 500)
    assert [tuple(layer.weight.shape) for layer in q_net.layers[1:]] == [(1, 500, 200),
                                                                         (1, 200, 200)]


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
# visible bias initialisation and centring


def test_bernoulli_visible_bias_is_clamped_logit_of_mean():
    mean = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0])
    model, q_net = ModelSpec.parse("sbn:3").build(5, feature_mean=mean)
    assert model.visible.bias.shape == (1, 5)
    eps = 1e-3
    clamped = mean.double().clamp(eps, 1 - eps)
    expected = torch.log(clamped / (1 - clamped)).float()
    assert torch.allclose(model.visible.bias[0], expected, atol=1e-5)
    assert torch.isfinite(model.visible.bias).all()
    assert torch.sigmoid(model.visible.bias[0, 1:4]).tolist() == pytest.approx([0.25, 0.5, 0.9],
                                                                               abs=1e-5)
    # the same mean centres the inference network's input
    assert torch.allclose(q_net.centre(torch.ones(1, 1, 5))[0, 0], 1 - mean)


def test_visible_bias_untouched_without_mean():
    model, q_net = ModelSpec.parse("sbn:3").build(5)
    assert torch.equal(model.visible.bias, torch.zeros(1, 5))
    assert torch.equal(q_net.input_mean, torch.zeros(1, 5, dtype=torch.float64))


def test_multinomial_visible_bias_is_log_word_share():
    mean = torch.tensor([2.0, 1.0, 1.0, 0.0])
    model, _ = ModelSpec.parse("doc-sbn:3").build(4, feature_mean=mean)
    share = torch.log_softmax(model.visible.bias[0], -1).exp()
    assert torch.allclose(share[:3], torch.tensor([0.5, 0.25, 0.25]), atol=1e-5)


def test_stacked_runs_share_the_visible_bias_and_the_centring_mean():
    mean = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0])
    model, q_net = ModelSpec.parse("sbn:3").build(5, feature_mean=mean, generators=[None] * 3)
    assert model.visible.bias.shape == (3, 5) and q_net.input_mean.shape == (3, 5)
    assert torch.equal(model.visible.bias, model.visible.bias[:1].expand(3, 5))
    assert torch.equal(q_net.input_mean, mean.double().expand(3, 5))


@pytest.mark.parametrize("cast", [False, True])
def test_float64_network_is_centred_by_the_exact_mean(cast):
    # A mean that float32 cannot hold: rounding it to float32 (the old behaviour) moves it.
    m64 = torch.tensor([0.1, 1 / 3, 0.7, 2 / 3, 1e-9], dtype=torch.float64)
    assert not torch.equal(m64.float().double(), m64)
    spec = ModelSpec.parse("sbn:3")
    if cast:  # built in float32, then cast: the mean stays the float64 it was given
        _, q_net = spec.build(5, feature_mean=m64)
        q_net = q_net.double()
    else:
        _, q_net = spec.build(5, feature_mean=m64, dtype=torch.float64)
    assert q_net.layers[0].weight.dtype == torch.float64
    assert q_net.input_mean.dtype == torch.float64
    assert torch.equal(q_net.input_mean, m64.unsqueeze(0))
    x = (torch.rand(1, 3, 5, generator=generator(0), dtype=torch.float64) < 0.5).double()
    centred = q_net.centre(x)
    assert centred.dtype == torch.float64
    assert torch.equal(centred, x - m64)
    # the float32-rounded mean would fail these checks
    assert not torch.equal(m64.float().double().unsqueeze(0), q_net.input_mean)
    assert not torch.equal(x - m64.float().double(), centred)
    # and a float32 network (or a cast back) keeps the exact mean too
    assert torch.equal(q_net.float().input_mean, m64.unsqueeze(0))


def test_unknown_visible_kind_raises():
    with pytest.raises(ValueError, match="bernoulli"):
        BeliefNet((2,), 3, visible="gaussian")


def test_centring_is_recomputed_whenever_the_minibatch_or_the_mean_changes():
    # centre() keeps its last result for the same, unchanged x (the training loop refills one
    # minibatch tensor in place every update): an in-place change of x or of the mean, or another
    # tensor, must give a fresh result, never the kept one.
    mean = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0])
    _, q_net = ModelSpec.parse("sbn:3").build(5, feature_mean=mean)
    x = torch.zeros(1, 2, 5)
    first = q_net.centre(x)
    assert q_net.centre(x) is first                      # the same minibatch: kept
    x.copy_(torch.ones(1, 2, 5))                         # refilled in place
    assert torch.equal(q_net.centre(x), torch.ones(1, 2, 5) - mean)
    other = torch.ones(1, 2, 5)                          # another tensor, same values
    assert q_net.centre(other) is not q_net.centre(x)
    with torch.no_grad():                                # the mean changes (a loaded checkpoint)
        q_net.input_mean.fill_(0.5)
    assert torch.equal(q_net.centre(x), torch.full((1, 2, 5), 0.5))
