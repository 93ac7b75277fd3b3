"""The geometric-mean model of a top-down model P(x, h) and a bottom-up model Q(h | x)
(bidirectional Helmholtz machines, Bornschein et al. 2016; algorithms/bihm.py trains it):

    p̃*(x) = (sum_h sqrt(P(x, h) Q(h | x)))^2,    Z^2 = sum_x p̃*(x) <= 1,    p*(x) = p̃*(x) / Z^2

estimated by sampling: Z^2 from pairs (x, h) ~ P, h' ~ Q(h | x) (`estimate_log_z2`), and samples
of p* by importance resampling of P's samples (`sample_star`). Exact values for tiny models are
in models/exact.py. Binary visibles. Shapes: runs first, (R, N, D) samples, (R,) estimates.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from models.noise import draw as draw_noise


def estimate_log_z2(model, inference, num_samples: int, generators,
                    dtype=torch.float32, device="cpu", chunk: int = 1000) -> tuple[Tensor, Tensor]:
    """(log Ẑ^2, standard error of log Ẑ^2), each (R,), from `num_samples` pairs (x, h) ~ P,
    h' ~ Q(h | x) per run (the authors' estimator, unbiased for Z^2 on the linear scale; the
    error is the delta method's, se(mean) / mean). Binary visibles; chunks bound the memory."""
    log_terms = []
    with torch.no_grad():
        for start in range(0, num_samples, chunk):
            n = min(chunk, num_samples - start)
            fantasy = draw_noise({"p": model.noise(n)}, generators, dtype, device)["p"]
            x, h = model.sample(fantasy)                               # (R, n, D), (R, n, H_j)
            log_pp = model.log_joint(x, h)
            log_pq = inference.log_prob(x, h)
            q_noise = draw_noise({"q": inference.noise(n)}, generators, dtype, device)["q"]
            h_q, log_q_terms = inference.sample(x, q_noise)
            log_qq = sum(log_q_terms)
            log_qp = model.log_joint(x, h_q)
            log_terms.append(0.5 * (log_pq - log_pp + log_qp - log_qq))
    terms = torch.cat(log_terms, -1).double()                          # (R, N)
    log_mean = torch.logsumexp(terms, -1) - math.log(num_samples)
    relative = (terms - log_mean.unsqueeze(-1)).exp()                  # term / mean
    error = relative.std(-1) / math.sqrt(num_samples) if num_samples > 1 else torch.full_like(
        log_mean, math.inf)
    return log_mean, error


def sample_star(model, inference, num_samples: int, generators, oversample: int = 100,
                inner_samples: int = 10, dtype=torch.float32, device="cpu") -> Tensor:
    """Approximate samples from p*(x), (R, num_samples, D): `oversample` times as many ancestral
    samples (x, h) ~ P, resampled with weights sqrt(p̃*(x) Q(h | x) / P(x, h)), p̃*(x) estimated
    from `inner_samples` samples of Q (importance resampling, the authors' `sample`)."""
    with torch.no_grad():
        primary = num_samples * oversample
        fantasy = draw_noise({"p": model.noise(primary)}, generators, dtype, device)["p"]
        x, h = model.sample(fantasy)                                   # (R, N, D)
        log_pp = model.log_joint(x, h)
        log_pq = inference.log_prob(x, h)
        q_noise = draw_noise({"q": inference.noise(inner_samples, primary)}, generators, dtype,
                             device)["q"]
        h_q, log_q_terms = inference.sample(x, q_noise)                # (R, K, N, H_j)
        log_w = 0.5 * (model.log_joint(x, h_q) - sum(log_q_terms))     # (R, K, N)
        log_star = 2 * (torch.logsumexp(log_w, 1) - math.log(inner_samples))
        log_weight = 0.5 * (log_star + log_pq - log_pp)                # (R, N)
        picks = [torch.multinomial(torch.softmax(row, 0), num_samples, replacement=True,
                                   generator=g) for row, g in zip(log_weight, generators,
                                                                  strict=True)]
        return torch.stack([x[r, idx] for r, idx in enumerate(picks)])
