"""A small sigmoid belief network and data sampled from it, with an exact log-likelihood.

Structure, deepest layer first: 4 -> 8 latent binary units -> 64 binary visible units.
- top layer: factorial Bernoulli prior, p(h1_j = 1) = sigmoid(prior_logits_j);
- each layer below: p(below_i = 1 | above) = sigmoid(logits_i), logits_below = W @ h_above + b,
  with W of shape (units below, units above).

With 12 latent units there are 2^12 latent configurations, so log p(x) is computed exactly
(`exact_log_likelihood`), which lets tests and benchmarks measure the bias and variance of
estimators against the truth. The chain structure is used to marginalise one layer at a time
(16 x 256 terms, then 256 x N), in float64 with logsumexp; the result equals the sum over all
4,096 joint configurations.

Parameters are drawn once with `numpy.random.default_rng(PARAMETER_SEED)` (seed 0), in this
order: prior logits ~ N(0, 1); then per layer, deepest first, W ~ N(0, 2^2) and b ~ N(0, 1).
Weights this large make the posterior over the latent units far from factorial, so inference
is not trivial. Data: ancestral samples, each part with its own generator
(`default_rng(DATA_SEEDS[part])`): train 5,000, valid 500, test 1,000 rows, uint8.
Nothing is downloaded or cached: generating it takes milliseconds.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from bench.errors import UserError
from datasets._data import BINARY, Data, column_mean

NAME = "synthetic"
KIND = BINARY
SPLITS = ("paper",)
FETCHABLE = False
LATENT_SIZES = (4, 8)  # deepest first
NUM_VISIBLE = 64
PARAMETER_SEED = 0
PRIOR_LOGIT_STD = 1.0
WEIGHT_STD = 2.0
BIAS_STD = 1.0
PART_SIZES = {"train": 5_000, "valid": 500, "test": 1_000}
DATA_SEEDS = {"train": 1, "valid": 2, "test": 3}
PROCESSING_VERSION = "v1"


# numpy versions of scipy.special.expit / logsumexp: scipy.special alone takes half a second
# to import, which every `import datasets` would pay.
def expit(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    peak = values.max(axis=axis, keepdims=True)
    return (peak + np.log(np.exp(values - peak).sum(axis=axis, keepdims=True))).squeeze(axis)


@functools.cache
def _parameters() -> dict:
    rng = np.random.default_rng(PARAMETER_SEED)
    sizes = (*LATENT_SIZES, NUM_VISIBLE)
    prior_logits = rng.normal(0.0, PRIOR_LOGIT_STD, size=sizes[0])
    weights, biases = [], []
    for above, below in zip(sizes[:-1], sizes[1:], strict=True):
        weights.append(rng.normal(0.0, WEIGHT_STD, size=(below, above)))
        biases.append(rng.normal(0.0, BIAS_STD, size=below))
    return {"prior_logits": prior_logits, "weights": weights, "biases": biases}


def generating_parameters() -> dict:
    """Copies of the true parameters: float64 arrays.

    prior_logits: (4,); weights: deepest first, [(8, 4), (64, 8)]; biases: [(8,), (64,)].
    Convention: logits_below = W @ h_above + b.
    """
    params = _parameters()
    return {"prior_logits": params["prior_logits"].copy(),
            "weights": [w.copy() for w in params["weights"]],
            "biases": [b.copy() for b in params["biases"]]}


def sample(num_rows: int, rng: np.random.Generator, params: dict | None = None) -> np.ndarray:
    """Ancestral samples of the visible layer, uint8 (num_rows, 64)."""
    params = params or _parameters()
    units = (rng.random((num_rows, params["prior_logits"].size))
             < expit(params["prior_logits"])).astype(np.float64)
    for weight, bias in zip(params["weights"], params["biases"], strict=True):
        probabilities = expit(units @ weight.T + bias)
        units = (rng.random(probabilities.shape) < probabilities).astype(np.float64)
    return units.astype(np.uint8)


def all_configurations(num_units: int) -> np.ndarray:
    """Every binary vector of length num_units, as float64 rows (2^num_units, num_units)."""
    codes = np.arange(2 ** num_units)[:, None]
    return ((codes >> np.arange(num_units)[None, :]) & 1).astype(np.float64)


def _log_bernoulli(values: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """sum_i log Bernoulli(values_i; sigmoid(logits_i)) for every pair of rows.

    values (A, D), logits (B, D) -> (A, B); log sigmoid(l) = l - softplus(l).
    """
    return values @ logits.T - np.logaddexp(0.0, logits).sum(axis=1)[None, :]


def log_likelihood_exact(x: np.ndarray, params: dict) -> np.ndarray:
    """log p(x) per row for any sigmoid belief network given as `params`, by enumeration."""
    x = np.asarray(x, dtype=np.float64)
    top = all_configurations(params["prior_logits"].size)
    # log p(top layer configuration), shape (configs,)
    log_marginal = _log_bernoulli(top, params["prior_logits"][None, :])[:, 0]
    layer = top
    for depth, (weight, bias) in enumerate(zip(params["weights"], params["biases"], strict=True)):
        logits = layer @ weight.T + bias  # (configs above, units below)
        if depth == len(params["weights"]) - 1:
            below = x
        else:
            below = all_configurations(weight.shape[0])
        # log p(below) = logsumexp over configurations above of log p(above) + log p(below | above)
        log_marginal = logsumexp(log_marginal[None, :] + _log_bernoulli(below, logits), axis=1)
        layer = below
    return log_marginal


def exact_log_likelihood(x: np.ndarray) -> np.ndarray:
    """log p(x) under the generating network, per row of x (N, 64) of 0/1, float64 (N,)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != NUM_VISIBLE:
        raise UserError(f"expected rows of {NUM_VISIBLE} binary values, got shape {x.shape}")
    if x.size and not np.isin(x, (0, 1)).all():
        raise UserError("exact_log_likelihood takes binary data (0/1 values only)")
    return log_likelihood_exact(x, _parameters())


def load(split: str, root: Path | None = None) -> Data:
    parts = {part: sample(size, np.random.default_rng(DATA_SEEDS[part]))
             for part, size in PART_SIZES.items()}
    return Data(
        name=NAME, split=split, kind=KIND, num_features=NUM_VISIBLE,
        train=parts["train"], valid=parts["valid"], test=parts["test"],
        train_mean=column_mean(parts["train"]), vocab=None,
        provenance={
            "raw_files": {},
            "generator": "sigmoid belief network 4-8-64, datasets.synthetic",
            "parameter_seed": PARAMETER_SEED,
            "data_seeds": dict(DATA_SEEDS),
            "processing_version": f"{NAME}-{split}-{PROCESSING_VERSION}",
            "cache_file": None,
        },
    )


def fetch(root: Path) -> list[Path]:
    return []


def check_files(root: Path) -> list:
    return []
