"""bench/evaluation.py on the synthetic setting, against exact enumeration (models/exact.py).

The sampled bounds are estimators: the ELBO estimate is unbiased for the exact ELBO (Eq. 1), the
importance-weighted bound's expectation rises towards log P(x) as K grows; chunking the samples
changes no number (single-layer networks draw the same stream) or no distribution (deeper ones);
the fast path for one factorial layer (FactorialLogWeights) gives the numbers of the plain path
and of a by-hand computation on the same samples; perplexity is exp(-mean(bound / length)) (§4.3);
mistakes are UserErrors.

Models hold R runs stacked along a leading dimension (models/layers.py): the bounds are (R, B), and
a stacked model evaluated with one seed per run gives each run exactly the numbers that run gives
alone with its seed. The sbn/fdarn fixtures below are lone models (R = 1); `[0]` takes their run.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import scipy.sparse
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli

import bench.evaluation as evaluation
from bench.check import tiny_model, tiny_problem
from bench.errors import UserError
from bench.evaluation import (
    BOUNDS,
    FactorialLogWeights,
    evaluate,
    evaluate_runs,
    log_likelihood_bound,
    log_weights,
)
from models import ModelSpec, bernoulli_log_prob, exact_elbo, exact_log_likelihood
from models.noise import draw as draw_noise


@pytest.fixture(scope="module")
def problem():
    """A lone model (R = 1), its x (1, B, D), and the exact log P(x) and ELBO per example (B,)."""
    model, q_net, x = tiny_problem("sbn:2-3", num_features=5, batch_size=10, seed=0)
    assert model.num_runs == 1 and x.shape == (1, 10, 5)
    with torch.no_grad():
        log_px = exact_log_likelihood(model, x)
        elbo = exact_elbo(model, q_net, x)
    assert log_px.shape == elbo.shape == (1, 10)
    return model, q_net, x, log_px[0], elbo[0]


def repeated_bound(model, q_net, x, bound, num_samples, repeats, seed):
    """(repeats, B): the lone run's bound, `repeats` times from one seeded stream."""
    generators = [torch.Generator().manual_seed(seed)]
    values = [log_likelihood_bound(model, q_net, x, bound, num_samples, generators)
              for _ in range(repeats)]
    assert values[0].shape == (1, x.shape[-2])
    return torch.stack([value[0] for value in values])


def test_problem_is_not_trivial(problem):
    _, _, _, log_px, elbo = problem
    # the bounds below have something to converge over: a gap of more than a nat on average
    assert (log_px - elbo).mean() > 1.0


def test_iw_bound_converges_to_log_likelihood(problem):
    model, q_net, x, log_px, elbo = problem
    plan = [(1, 200), (10, 100), (100, 40), (1000, 10), (5000, 4)]
    gaps, errors = [], []
    for seed, (k, repeats) in enumerate(plan):
        values = repeated_bound(model, q_net, x, "iw", k, repeats, seed)
        per_example_se = values.std(0) / math.sqrt(repeats)
        gaps.append((log_px - values.mean(0)).mean().item())
        errors.append((per_example_se.pow(2).sum().sqrt() / x.shape[-2]).item())
    # K = 1 is the ELBO: same expectation
    elbo_gap = (log_px - elbo).mean().item()
    assert abs(gaps[0] - elbo_gap) < 4 * errors[0]
    # a lower bound in expectation, whose gap shrinks as K grows
    for gap, error in zip(gaps, errors, strict=True):
        assert gap > -4 * error
    for i in range(len(plan) - 1):
        assert gaps[i + 1] < gaps[i] + 4 * math.hypot(errors[i], errors[i + 1])
    assert gaps[1] < 0.5 * gaps[0] and gaps[2] < 0.5 * gaps[1]
    assert abs(gaps[-1]) < 0.03


def test_elbo_estimate_is_unbiased_for_exact_elbo(problem):
    model, q_net, x, log_px, elbo = problem
    k = 20_000
    generators = [torch.Generator().manual_seed(1)]
    estimate = log_likelihood_bound(model, q_net, x, "elbo", k, generators)[0]
    with torch.no_grad():
        weights = log_weights(model, q_net, x, 4000, generators)
    assert weights.shape == (1, 4000, x.shape[-2])
    spread = weights[0].std(0)
    z = (estimate - elbo) / (spread / math.sqrt(k))
    assert z.abs().max() < 4.0
    # and it does not exceed the exact log-likelihood
    assert (estimate < log_px).all()
    assert estimate.mean() < log_px.mean() - 1.0


def test_elbo_estimate_never_exceeds_log_likelihood_on_average(problem):
    model, q_net, x, log_px, _ = problem
    values = repeated_bound(model, q_net, x, "elbo", 10, 200, seed=2)
    se = values.std(0) / math.sqrt(200)
    assert (values.mean(0) < log_px + 3 * se).all()


def test_iw_is_at_least_elbo_on_the_same_samples(problem):
    """Same seed, same batch size: both bounds see the same log-weights, and log-mean-exp is at
    least the mean (Jensen)."""
    model, q_net, x, _, _ = problem
    rows = x[0].numpy()
    kwargs = dict(num_samples=50, batch_size=4, seed=3, dtype=torch.float64)
    iw = evaluate(model, q_net, rows, "iw", **kwargs).per_example
    elbo = evaluate(model, q_net, rows, "elbo", **kwargs).per_example
    assert np.all(iw >= elbo - 1e-12)
    assert np.all(iw > elbo + 1e-3)


def test_exact_bound_matches_enumeration_whatever_the_batch_size(problem):
    model, q_net, x, log_px, _ = problem
    for batch_size in (None, 3, 10):
        result = evaluate(model, q_net, x[0].numpy(), "exact", batch_size=batch_size,
                          dtype=torch.float64)
        assert result.num_samples is None
        assert np.allclose(result.per_example, log_px.numpy(), atol=1e-10)
        assert result.mean == pytest.approx(log_px.mean().item(), abs=1e-10)
        assert result.nll == pytest.approx(-log_px.mean().item(), abs=1e-10)
        assert result.perplexity is None


@pytest.mark.parametrize("bound", ["elbo", "iw"])
@pytest.mark.parametrize("spec, inference", [("sbn:4", "factorial"), ("fdarn:3", "autoregressive")])
def test_chunking_changes_no_number_for_single_layer_networks(monkeypatch, spec, inference, bound):
    """One latent layer draws its noise in one block per chunk, so the stream is the same."""
    model, q_net, x = tiny_problem(spec, num_features=5, batch_size=7, seed=4, inference=inference)
    rows = x[0].numpy()
    kwargs = dict(num_samples=37, batch_size=3, seed=5, dtype=torch.float64)
    whole = evaluate(model, q_net, rows, bound, **kwargs).per_example

    def chunks_of(elements):  # for the generic path and the fast path (sbn:4, factorial) alike
        monkeypatch.setattr(evaluation, "_ELEMENTS_PER_CHUNK", elements)
        monkeypatch.setattr(evaluation, "_FAST_ELEMENTS_PER_CHUNK", elements)

    chunks_of(1)  # one sample per chunk
    chunked = evaluate(model, q_net, rows, bound, **kwargs).per_example
    chunks_of(4 * 5 * 3)  # 4 samples: 10 chunks
    uneven = evaluate(model, q_net, rows, bound, **kwargs).per_example
    assert np.allclose(whole, chunked, atol=1e-10)
    assert np.allclose(whole, uneven, atol=1e-10)


@pytest.mark.parametrize("bound", ["elbo", "iw"])
def test_chunking_keeps_the_distribution_for_deep_networks(monkeypatch, bound):
    model, q_net, x = tiny_problem("sbn:2-2-2", num_features=5, batch_size=4, seed=6,
                                   inference="autoregressive")
    rows = x[0].numpy()
    k, repeats = 20, 150

    def draws():
        return np.stack([evaluate(model, q_net, rows, bound, num_samples=k, seed=seed,
                                  dtype=torch.float64).per_example for seed in range(repeats)])

    whole = draws()
    monkeypatch.setattr(evaluation, "_ELEMENTS_PER_CHUNK", 3 * 4 * 5)  # 3 samples per chunk
    chunked = draws()
    assert not np.allclose(whole, chunked)  # a different stream...
    se = np.sqrt(whole.var(0, ddof=1) / repeats + chunked.var(0, ddof=1) / repeats)
    z = (whole.mean(0) - chunked.mean(0)) / se
    assert np.abs(z).max() < 4.0  # ...with the same expectation
    with torch.no_grad():
        target = (exact_elbo(model, q_net, x) if bound == "elbo"
                  else exact_log_likelihood(model, x)).numpy()
    assert target.shape == (1, 4)
    assert np.all(chunked.mean(0) < target[0] + 4 * np.sqrt(chunked.var(0, ddof=1) / repeats))


def run_data(x, r):
    """Run r's rows of x (R|1, B, D): a leading 1 is shared by every run."""
    return x[r if x.shape[0] > 1 else 0]


def q_logits_of_run(q_net, x, r):
    """Run r's logits of Q's one layer, (B, H), in the usual layout: the stored weight is W^T."""
    layer = q_net.layers[0]
    centred = run_data(x, r) - q_net.input_mean[r].to(x.dtype)
    return F.linear(centred, layer.weight[r].T, layer.bias[r])


def draw_like_a_logistic_layer(q_net, x, num_samples, generators):
    """h ~ Q(h | x) for one factorial layer as LogisticLayer draws it: [u < sigmoid(c)], with u
    uniform of shape (S, B, H) from run r's generator in one block; (R, S, B, H)."""
    samples = []
    for r, generator in enumerate(generators):
        q_logits = q_logits_of_run(q_net, x, r)
        u = torch.rand((num_samples, *q_logits.shape), generator=generator, dtype=x.dtype)
        samples.append((u < torch.sigmoid(q_logits)).to(x.dtype))
    return torch.stack(samples)


def reference_log_weights(model, q_net, x, h):
    """log P(x | h) + log P(h) - log Q(h | x) for one latent layer, written out run by run with
    torch.distributions (its own Bernoulli log-density) and the weights in the usual layout,
    shape (R, S, B) for h (R, S, B, H)."""
    weights = []
    for r in range(h.shape[0]):
        x_r = run_data(x, r)
        log_q = Bernoulli(logits=q_logits_of_run(q_net, x, r)).log_prob(h[r]).sum(-1)
        log_prior = Bernoulli(logits=model.prior.bias[r]).log_prob(h[r]).sum(-1)
        visible_logits = F.linear(h[r], model.visible.weight[r].T, model.visible.bias[r])
        log_likelihood = Bernoulli(logits=visible_logits).log_prob(x_r).sum(-1)
        weights.append(log_likelihood + log_prior - log_q)
    return torch.stack(weights)


@pytest.mark.parametrize("spec, inference, fast", [
    ("sbn:4", "factorial", True), ("sbn:4", "autoregressive", False),
    ("sbn:3-4", "factorial", False), ("fdarn:4", "factorial", False),
    ("doc-sbn:4", "factorial", False)])
def test_only_one_factorial_layer_takes_the_fast_path(spec, inference, fast):
    model, q_net = ModelSpec.parse(spec, inference=inference).build(6)
    assert FactorialLogWeights.applies(model, q_net) == fast


@pytest.mark.parametrize("bound", ["elbo", "iw"])
def test_fast_path_matches_the_plain_path_and_a_reference_on_the_same_samples(monkeypatch,
                                                                              bound):
    model, q_net, x = tiny_problem("sbn:6", num_features=8, batch_size=5, seed=8)
    assert FactorialLogWeights.applies(model, q_net)
    k, seed = 300, 9
    with torch.no_grad():
        h = draw_like_a_logistic_layer(q_net, x, k, [torch.Generator().manual_seed(seed)])
        reference = reference_log_weights(model, q_net, x, h)
        fast_weights = FactorialLogWeights(model, q_net, x,
                                           [torch.Generator().manual_seed(seed)])(k)
        plain_weights = log_weights(model, q_net, x, k, [torch.Generator().manual_seed(seed)])
    assert reference.shape == fast_weights.shape == plain_weights.shape == (1, k, 5)
    assert torch.allclose(fast_weights, reference, rtol=0, atol=1e-10)
    assert torch.allclose(plain_weights, reference, rtol=0, atol=1e-10)
    expected = (torch.logsumexp(reference, 1) - math.log(k) if bound == "iw"
                else reference.mean(1))

    def bound_with_seed():
        return log_likelihood_bound(model, q_net, x, bound, k,
                                    [torch.Generator().manual_seed(seed)])

    monkeypatch.setattr(evaluation, "_FAST_ELEMENTS_PER_CHUNK", 7 * 5 * 8)  # 7 samples a chunk
    fast = bound_with_seed()
    monkeypatch.setattr(FactorialLogWeights, "applies", classmethod(lambda cls, m, q: False))
    plain = bound_with_seed()
    assert fast.shape == plain.shape == (1, 5)
    assert torch.allclose(fast, expected, rtol=0, atol=1e-10)
    assert torch.allclose(plain, expected, rtol=0, atol=1e-10)


def test_fast_path_in_float32_is_as_accurate_as_the_plain_path():
    """sbn:200 on 784 pixels with O(1) weights (logits in the tens, as a trained model's can be):
    in float32 both paths stay within float rounding of the float64 value on the same samples."""
    torch.manual_seed(10)
    model, q_net = ModelSpec.parse("sbn:200", init_scale=1.0).build(784)
    with torch.no_grad():
        x, _ = model.sample(draw_noise({"x": model.noise(6)}, [None], torch.float32)["x"])
        assert x.shape == (1, 6, 784) and x.dtype == torch.float32
        k, seed = 200, 11
        h = draw_like_a_logistic_layer(q_net, x, k, [torch.Generator().manual_seed(seed)])
        exact = reference_log_weights(copy.deepcopy(model).double(),
                                      copy.deepcopy(q_net).double(), x.double(), h.double())
        fast = FactorialLogWeights(model, q_net, x, [torch.Generator().manual_seed(seed)])(k)
        plain = log_weights(model, q_net, x, k, [torch.Generator().manual_seed(seed)])
    assert fast.dtype == plain.dtype == torch.float32
    tolerance = 1e-6 * exact.abs().max().item()
    assert (plain.double() - exact).abs().max() < tolerance
    assert (fast.double() - exact).abs().max() < tolerance


def test_data_shared_by_many_samples_scores_as_if_broadcast():
    """LogisticLayer.log_prob projects a value shared across contexts once (c . W^T v + b . v)."""
    torch.manual_seed(12)
    layer = ModelSpec.parse("sbn:3", init_scale=1.0).build(5)[0].visible.double()
    value = (torch.rand(1, 4, 5) < 0.5).double()         # (R, B, D): the data
    context = (torch.rand(1, 7, 4, 3) < 0.5).double()    # (R, S, B, H): samples of the latents
    broadcast = value.unsqueeze(1).expand(1, 7, 4, 5)
    expected = bernoulli_log_prob(layer.logits(context, broadcast), broadcast)
    assert torch.allclose(layer.log_prob(value, context), expected, rtol=0, atol=1e-12)
    assert torch.allclose(layer.log_prob(broadcast, context), expected, rtol=0, atol=1e-12)


def test_perplexity_is_exp_of_minus_mean_bound_per_word():
    model, q_net, x = tiny_problem("doc-sbn:3", num_features=7, batch_size=6, seed=7)
    counts = x[0].clone()
    counts[0] = torch.tensor([0, 0, 1, 0, 0, 0, 0], dtype=torch.float64)  # a one-word document
    counts[1] = torch.tensor([5, 3, 0, 2, 0, 1, 9], dtype=torch.float64)
    rows = counts.numpy()
    for bound in ("exact", "elbo", "iw"):
        result = evaluate(model, q_net, rows, bound, num_samples=5, seed=1, dtype=torch.float64,
                          counts=True)
        assert np.array_equal(result.lengths, rows.sum(-1))
        by_hand = math.exp(-np.mean([b / length for b, length in
                                     zip(result.per_example, rows.sum(-1), strict=True)]))
        assert result.perplexity == pytest.approx(by_hand, rel=1e-12)
        assert result.summary()["perplexity"] == pytest.approx(by_hand, rel=1e-12)
        assert result.summary()["num_examples"] == 6
    exact = evaluate(model, q_net, rows, "exact", dtype=torch.float64, counts=True)
    with torch.no_grad():
        assert np.allclose(exact.per_example, exact_log_likelihood(model, counts[None])[0].numpy())


def test_evaluation_is_reproducible_and_leaves_the_global_stream_alone(problem):
    model, q_net, x, _, _ = problem
    rows = x[0].numpy()
    state = torch.get_rng_state()
    a = evaluate(model, q_net, rows, "iw", num_samples=20, seed=11, dtype=torch.float64)
    b = evaluate(model, q_net, rows, "iw", num_samples=20, seed=11, dtype=torch.float64)
    c = evaluate(model, q_net, rows, "iw", num_samples=20, seed=12, dtype=torch.float64)
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(a.per_example, b.per_example)
    assert not np.array_equal(a.per_example, c.per_example)
    assert a.num_samples == 20 and a.bound == "iw"
    assert a.summary()["k"] == 20 and a.summary()["nll"] == pytest.approx(-a.mean)


def test_sparse_rows_and_progress(problem):
    model, q_net, x, _, _ = problem
    seen = []
    dense = evaluate(model, q_net, x[0].numpy(), "elbo", num_samples=5, batch_size=4, seed=0,
                     dtype=torch.float64)
    sparse = evaluate(model, q_net, scipy.sparse.csr_matrix(x[0].numpy()), "elbo", num_samples=5,
                      batch_size=4, seed=0, dtype=torch.float64, progress=seen.append)
    assert np.array_equal(dense.per_example, sparse.per_example)
    assert seen == [4, 4, 2]


def test_unknown_bound_raises_user_error(problem):
    model, q_net, x, _, _ = problem
    with pytest.raises(UserError) as info:
        evaluate(model, q_net, x[0].numpy(), "nosuch", dtype=torch.float64)
    for name in BOUNDS:
        assert name in str(info.value)
    with pytest.raises(UserError, match="nosuch"):
        log_likelihood_bound(model, q_net, x, "nosuch")


def test_too_few_samples_raise_user_error(problem):
    model, q_net, x, _, _ = problem
    with pytest.raises(UserError, match="at least 1"):
        evaluate(model, q_net, x[0].numpy(), "iw", num_samples=0, dtype=torch.float64)


def test_exact_bound_on_a_large_model_raises_user_error():
    model, q_net = ModelSpec.parse("sbn:11-10").build(3)
    with pytest.raises(UserError) as info:
        evaluate(model, q_net, np.zeros((2, 3)), "exact")
    assert "20" in str(info.value) and "iw" in str(info.value)


# -- stacked runs ------------------------------------------------------------------------------

def stacked_problem(spec, inference, runs=3, num_features=5, seed=20):
    """A float64 model of `runs` runs with O(1) random parameters that differ between runs (the
    inference network's centring mean too)."""
    torch.manual_seed(seed)
    model, q_net = tiny_model(spec, num_features, runs, inference)
    with torch.no_grad():
        for parameter in list(model.parameters()) + list(q_net.parameters()):
            parameter.normal_(0.0, 1.0)
        q_net.input_mean.copy_(torch.rand(runs, num_features, dtype=torch.float64))
    assert model.num_runs == q_net.num_runs == runs
    return model, q_net


def lone_run(model, q_net, r, spec, inference, num_features=5):
    """A lone model (R = 1) holding run r's parameters of the stacked model, and its inference net."""
    lone, lone_q = tiny_model(spec, num_features, 1, inference)
    with torch.no_grad():
        for stacked, single in ((model, lone), (q_net, lone_q)):
            state = stacked.state_dict()
            assert set(state) == set(single.state_dict())
            for name, value in single.state_dict().items():
                value.copy_(state[name][r:r + 1])
    assert lone.num_runs == lone_q.num_runs == 1
    return lone, lone_q


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("bound", ["elbo", "iw", "exact"])
@pytest.mark.parametrize("spec, inference, fast", [
    ("sbn:4", "factorial", True), ("sbn:2-3", "factorial", False),
    ("fdarn:3", "autoregressive", False)])
def test_each_stacked_run_scores_as_it_does_alone_with_its_seed(monkeypatch, spec, inference,
                                                                 fast, bound, chunked):
    """evaluate_runs on R = 3 runs with seeds [s0, s1, s2] gives run r exactly the numbers of a
    lone model holding run r's parameters evaluated with seed s_r, on the fast path and the
    general one, whether a batch's samples come in one chunk or several."""
    model, q_net = stacked_problem(spec, inference)
    assert FactorialLogWeights.applies(model, q_net) == fast
    if chunked:  # 4 samples a chunk on batches of 4 rows of 5 pixels
        monkeypatch.setattr(evaluation, "_ELEMENTS_PER_CHUNK", 4 * 4 * 5)
        monkeypatch.setattr(evaluation, "_FAST_ELEMENTS_PER_CHUNK", 4 * 4 * 5)
    rows = (np.random.default_rng(21).random((11, 5)) < 0.4).astype(np.uint8)
    seeds = [30, 7, 1234]
    kwargs = dict(num_samples=37, batch_size=4, dtype=torch.float64)
    seen = []
    stacked = evaluate_runs(model, q_net, rows, bound, seeds=seeds, progress=seen.append,
                            **kwargs)
    assert len(stacked) == 3 and seen == [4, 4, 3]
    for r, seed in enumerate(seeds):
        lone, lone_q = lone_run(model, q_net, r, spec, inference)
        alone = evaluate(lone, lone_q, rows, bound, seed=seed, **kwargs)
        assert stacked[r].bound == alone.bound == bound
        assert stacked[r].num_samples == alone.num_samples
        assert stacked[r].per_example.shape == (11,)
        np.testing.assert_allclose(stacked[r].per_example, alone.per_example, rtol=0, atol=1e-12)
    # the runs are different models: the comparison above is not between equal numbers
    assert not np.allclose(stacked[0].per_example, stacked[1].per_example)
    assert not np.allclose(stacked[1].per_example, stacked[2].per_example)


@pytest.mark.parametrize("spec, inference", [("sbn:4", "factorial"), ("sbn:2-3", "factorial")])
def test_stacked_bounds_take_per_run_data_or_data_shared_by_every_run(spec, inference):
    """log_likelihood_bound on x (R, B, D), (1, B, D) or (B, D): run r scores its own rows (or the
    shared ones) with its own generator, as the lone run r does on them."""
    model, q_net = stacked_problem(spec, inference)
    x = torch.as_tensor(np.random.default_rng(22).random((3, 6, 5)) < 0.4, dtype=torch.float64)
    for bound in ("elbo", "iw"):
        per_run = log_likelihood_bound(model, q_net, x, bound, 25,
                                       [torch.Generator().manual_seed(40 + r) for r in range(3)])
        shared = log_likelihood_bound(model, q_net, x[:1], bound, 25,
                                      [torch.Generator().manual_seed(40 + r) for r in range(3)])
        flat = log_likelihood_bound(model, q_net, x[0], bound, 25,
                                    [torch.Generator().manual_seed(40 + r) for r in range(3)])
        assert per_run.shape == shared.shape == flat.shape == (3, 6)
        assert torch.equal(shared, flat)
        for r in range(3):
            lone, lone_q = lone_run(model, q_net, r, spec, inference)
            own = log_likelihood_bound(lone, lone_q, x[r:r + 1], bound, 25,
                                       [torch.Generator().manual_seed(40 + r)])
            first = log_likelihood_bound(lone, lone_q, x[0], bound, 25,
                                         [torch.Generator().manual_seed(40 + r)])
            assert own.shape == first.shape == (1, 6)
            assert torch.allclose(per_run[r], own[0], rtol=0, atol=1e-12)
            assert torch.allclose(shared[r], first[0], rtol=0, atol=1e-12)


def test_fast_path_on_stacked_runs_matches_a_reference_run_by_run():
    """FactorialLogWeights and log_weights on R = 3 runs, each with its own rows and generator,
    equal the by-hand log-weights of each run (weights read in the usual layout, W = weight^T)."""
    model, q_net = stacked_problem("sbn:4", "factorial")
    x = torch.as_tensor(np.random.default_rng(23).random((3, 6, 5)) < 0.4, dtype=torch.float64)
    k = 50

    def generators():
        return [torch.Generator().manual_seed(50 + r) for r in range(3)]

    with torch.no_grad():
        reference = reference_log_weights(model, q_net, x,
                                          draw_like_a_logistic_layer(q_net, x, k, generators()))
        fast = FactorialLogWeights(model, q_net, x, generators())(k)
        plain = log_weights(model, q_net, x, k, generators())
    assert reference.shape == fast.shape == plain.shape == (3, k, 6)
    assert torch.allclose(fast, reference, rtol=0, atol=1e-10)
    assert torch.allclose(plain, reference, rtol=0, atol=1e-10)


def test_evaluate_scores_one_run_only():
    model, q_net = stacked_problem("sbn:2-3", "factorial", runs=2)
    rows = np.zeros((3, 5))
    for bound in ("elbo", "iw", "exact"):
        with pytest.raises(ValueError):
            evaluate(model, q_net, rows, bound, num_samples=5, seed=0, dtype=torch.float64)
    # evaluate_runs needs one seed per run
    with pytest.raises(ValueError):
        evaluate_runs(model, q_net, rows, "elbo", num_samples=5, seeds=[0], dtype=torch.float64)
    assert len(evaluate_runs(model, q_net, rows, "elbo", num_samples=5, seeds=[0, 1],
                             dtype=torch.float64)) == 2
