"""The synthetic sigmoid belief network: parameters, samples and the exact log-likelihood."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import datasets
from bench.errors import UserError
from datasets import synthetic


def test_parameters_shapes_and_seed():
    params = synthetic.generating_parameters()
    assert params["prior_logits"].shape == (4,)
    assert [w.shape for w in params["weights"]] == [(8, 4), (64, 8)]
    assert [b.shape for b in params["biases"]] == [(8,), (64,)]
    rng = np.random.default_rng(0)  # drawn in the documented order
    np.testing.assert_array_equal(params["prior_logits"], rng.normal(0, 1, 4))
    np.testing.assert_array_equal(params["weights"][0], rng.normal(0, 2, (8, 4)))
    # Callers get copies: changing them does not change the dataset.
    params["weights"][0][:] = 0
    assert np.abs(synthetic.generating_parameters()["weights"][0]).sum() > 0


def test_data_sizes_types_and_determinism():
    data = datasets.load("synthetic")
    assert (data.kind, data.split, data.num_features, data.vocab) == ("binary", "paper", 64, None)
    assert [data.part(p).shape for p in data.PARTS] == [(5_000, 64), (500, 64), (1_000, 64)]
    assert all(data.part(p).dtype == np.uint8 for p in data.PARTS)
    assert set(np.unique(data.train)) == {0, 1}
    again = datasets.load("synthetic")
    np.testing.assert_array_equal(data.test, again.test)
    assert not np.array_equal(data.train[:1_000], data.test)
    np.testing.assert_allclose(data.train_mean, data.train.mean(axis=0))


def joint_log_probability(x, h_top, h_mid, params):
    """log p(h_top, h_mid, x) term by term, straight from the model's definition."""
    def log_bernoulli(values, logits):
        # log sigmoid(l) if v == 1 else log sigmoid(-l); log(1 + e^l) = max(l, 0) + log1p(e^-|l|)
        return sum(v * logit - max(logit, 0.0) - math.log1p(math.exp(-abs(logit)))
                   for v, logit in zip(values, logits, strict=True))
    w_mid, w_x = params["weights"]
    b_mid, b_x = params["biases"]
    return (log_bernoulli(h_top, params["prior_logits"])
            + log_bernoulli(h_mid, w_mid @ np.asarray(h_top, float) + b_mid)
            + log_bernoulli(x, w_x @ np.asarray(h_mid, float) + b_x))


def test_exact_log_likelihood_equals_sum_over_all_4096_configurations():
    params = synthetic.generating_parameters()
    x = datasets.load("synthetic").test[:2]
    exact = synthetic.exact_log_likelihood(x)
    for row, value in zip(x, exact, strict=True):
        terms = [joint_log_probability(row, h_top, h_mid, params)
                 for h_top in itertools.product((0, 1), repeat=4)
                 for h_mid in itertools.product((0, 1), repeat=8)]
        peak = max(terms)
        reference = peak + math.log(sum(math.exp(t - peak) for t in terms))
        assert value == pytest.approx(reference, abs=1e-9)


def test_exact_log_likelihood_normalises_on_a_tiny_network():
    rng = np.random.default_rng(5)
    params = {"prior_logits": rng.normal(0, 1, 2),
              "weights": [rng.normal(0, 2, (3, 2)), rng.normal(0, 2, (4, 3))],
              "biases": [rng.normal(0, 1, 3), rng.normal(0, 1, 4)]}
    every_x = synthetic.all_configurations(4)
    total = np.exp(synthetic.log_likelihood_exact(every_x, params)).sum()
    assert total == pytest.approx(1.0, abs=1e-12)


def test_samples_follow_the_model_marginals():
    # p(x_i = 1) by enumeration vs the frequency in 5,000 samples (standard error <= 0.0071).
    params = synthetic.generating_parameters()
    every_mid = synthetic.all_configurations(8)
    log_p_mid = synthetic.log_likelihood_exact(
        every_mid, {"prior_logits": params["prior_logits"], "weights": params["weights"][:1],
                    "biases": params["biases"][:1]})
    pixel_probability = np.exp(log_p_mid) @ synthetic.expit(
        every_mid @ params["weights"][1].T + params["biases"][1])
    observed = datasets.load("synthetic").train.mean(axis=0)
    assert np.abs(observed - pixel_probability).max() < 0.035


def test_exact_log_likelihood_rejects_wrong_input():
    with pytest.raises(UserError, match="rows of 64"):
        synthetic.exact_log_likelihood(np.zeros((3, 10)))
    with pytest.raises(UserError, match="binary"):
        synthetic.exact_log_likelihood(np.full((2, 64), 0.5))
