"""The one evaluation path, shared by every algorithm: bounds on log P(x) from the model and its
inference network, whatever trained them.

    elbo   (the paper's metric, §4.1):  (1/K) sum_k [log P(x, h_k) - log Q(h_k | x)],  K = 10
    iw     importance-sampled bound:    log (1/K) sum_k P(x, h_k) / Q(h_k | x),        any K
    exact  log P(x) by enumeration, for models with at most 20 latent units

Both sampled bounds are lower bounds in expectation; the iw bound tightens towards log P(x) as K
grows. K = 5000 runs in bounded memory: samples are drawn in chunks and combined with a running
logsumexp, so memory scales with the chunk, not with K.

Documents: perplexity = exp(-(1/N) sum_n bound_n / L_n) with L_n the document's length (§4.3);
the per-document bounds and lengths are kept so any other convention can be recomputed.
Shapes: x (B, D) -> per-example bounds (B,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bench.errors import UserError
from models.exact import MAX_EXACT_LATENTS, exact_log_likelihood

BOUNDS = ("elbo", "iw", "exact")
# Samples x examples per chunk of the iw bound: keeps the (chunk, B, D) activations near 64 MiB.
_ELEMENTS_PER_CHUNK = 2 ** 24


def log_weights(model, inference, x: Tensor, num_samples: int, generator=None) -> Tensor:
    """log P(x, h_k) - log Q(h_k | x) for h_k ~ Q(h | x), shape (num_samples, B)."""
    h, log_q = inference.sample(x, num_samples=num_samples, generator=generator)
    return model.log_joint(x, h) - sum(log_q)


@torch.no_grad()
def log_likelihood_bound(model, inference, x: Tensor, bound: str = "elbo", num_samples: int = 10,
                         generator=None) -> Tensor:
    """Per-example estimate of log P(x): the ELBO, the importance-sampled bound, or the exact value."""
    if bound == "exact":
        return exact_log_likelihood(model, x)
    if num_samples < 1:
        raise UserError(f"the number of samples K must be at least 1, got {num_samples}")
    width = max(x.shape[-1], *model.latent_sizes)
    chunk = max(1, min(num_samples, _ELEMENTS_PER_CHUNK // max(1, x.shape[0] * width)))
    if bound == "elbo":
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for start in range(0, num_samples, chunk):
            total += log_weights(model, inference, x, min(chunk, num_samples - start),
                                 generator).sum(0)
        return total / num_samples
    if bound == "iw":
        running = torch.full((x.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
        for start in range(0, num_samples, chunk):
            weights = log_weights(model, inference, x, min(chunk, num_samples - start), generator)
            running = torch.logaddexp(running, torch.logsumexp(weights, 0))
        return running - math.log(num_samples)
    raise UserError(f"unknown bound {bound!r}; valid bounds: {', '.join(BOUNDS)}")


def rows_as_tensor(rows, dtype=torch.float32, device="cpu") -> Tensor:
    """A block of data rows (numpy array or scipy sparse matrix) as a dense float tensor."""
    if hasattr(rows, "toarray"):
        rows = rows.toarray()
    return torch.as_tensor(np.asarray(rows), dtype=dtype, device=device)


@dataclass
class Evaluation:
    """A bound over a whole split. `per_example` holds each example's bound (nats)."""

    bound: str
    num_samples: int | None
    per_example: np.ndarray
    lengths: np.ndarray | None = None

    @property
    def mean(self) -> float:
        return float(self.per_example.mean())

    @property
    def nll(self) -> float:
        return -self.mean

    @property
    def perplexity(self) -> float | None:
        if self.lengths is None:
            return None
        return float(np.exp(-np.mean(self.per_example / self.lengths)))

    def summary(self) -> dict:
        summary = {"bound": self.bound, "k": self.num_samples, "mean": self.mean, "nll": self.nll,
                   "num_examples": int(self.per_example.size)}
        if self.lengths is not None:
            summary["perplexity"] = self.perplexity
        return summary


def evaluate(model, inference, rows, bound: str = "elbo", num_samples: int = 10,
             batch_size: int | None = None, seed: int = 0, device="cpu", dtype=torch.float32,
             counts: bool = False, progress=None) -> Evaluation:
    """The bound on every row of a split, with its own seeded random stream (so an evaluation is
    reproducible and does not disturb the training stream)."""
    if bound not in BOUNDS:
        raise UserError(f"unknown bound {bound!r}; valid bounds: {', '.join(BOUNDS)}")
    if bound == "exact" and sum(model.latent_sizes) > MAX_EXACT_LATENTS:
        raise UserError(f"exact log-likelihood needs at most {MAX_EXACT_LATENTS} latent units; "
                        f"this model has {sum(model.latent_sizes)}: use --bound iw")
    generator = torch.Generator(device=device).manual_seed(seed)
    num_rows = rows.shape[0]
    if batch_size is None:
        batch_size = 1000 if bound == "elbo" else 100
    values, lengths = [], []
    for start in range(0, num_rows, batch_size):
        x = rows_as_tensor(rows[start:start + batch_size], dtype, device)
        values.append(log_likelihood_bound(model, inference, x, bound, num_samples, generator).cpu())
        if counts:
            lengths.append(x.sum(-1).cpu())
        if progress is not None:
            progress(x.shape[0])
    per_example = torch.cat(values).double().numpy()
    return Evaluation(bound, None if bound == "exact" else num_samples, per_example,
                      torch.cat(lengths).double().numpy() if counts else None)
