"""Exact quantities by enumerating every latent configuration, for models with few latent units.

These are the ground truth that the estimators and the evaluation path are tested against:

    log P(x)      = logsumexp_h log P(x, h)
    ELBO(x)       = sum_h Q(h|x) [log P(x, h) - log Q(h|x)]                       (Eq. 1)
    sleep(θ, φ)   = sum_{x, h} P(x, h) log Q(h|x)       (the objective whose φ-gradient is Eq. 13)

All are differentiable, so autograd gives the exact gradients. Models hold R runs: configurations
are (1, M, 1, H_i) with M = 2^(total latents), shared by every run and broadcast against x of shape
(R|1, B, D); results are (R, B), or (R,) for the sleep objective.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from bench.errors import UserError

MAX_EXACT_LATENTS = 20
#: ordered K-tuples up to which the claim enumerates them (`exact_multisample_bound`); beyond,
#: the far fewer multisets of samples (models/exact.py itself refuses more than 2^20 tuples)
MAX_TUPLES = 2 ** 16
#: most (multisets x configurations x examples x runs) terms `multisample_bound_by_counts` holds
MAX_COUNT_TERMS = 2 ** 24


def binary_configurations(num_units: int, dtype=torch.float64, device=None) -> Tensor:
    """All 2^num_units binary vectors, shape (2^num_units, num_units)."""
    codes = torch.arange(2 ** num_units, device=device)
    bits = 2 ** torch.arange(num_units, device=device)
    return ((codes.unsqueeze(-1) & bits) > 0).to(dtype)


def _check_size(latent_sizes) -> int:
    total = sum(latent_sizes)
    if total > MAX_EXACT_LATENTS:
        raise ValueError(f"exact enumeration needs at most {MAX_EXACT_LATENTS} latent units; "
                         f"this model has {total}")
    return total


def latent_configurations(latent_sizes, dtype, device=None, chunk_size: int = 65536):
    """Yield chunks of joint configurations as lists of per-layer tensors, each (1, M_chunk, 1, H_i)."""
    total = _check_size(latent_sizes)
    all_configs = binary_configurations(total, dtype, device)
    for start in range(0, all_configs.shape[0], chunk_size):
        chunk = all_configs[start:start + chunk_size]
        yield [part.unsqueeze(1).unsqueeze(0) for part in torch.split(chunk, list(latent_sizes), dim=-1)]


def _chunk_for(batch_size: int) -> int:
    # Keep configurations x examples near 2^22 entries per chunk: bounded memory at 20 latents.
    return max(1, 2 ** 22 // max(1, batch_size))


def exact_log_likelihood(model, x: Tensor) -> Tensor:
    """log P(x) for each row of x, by enumeration (and for Gaussian latents by numerical
    integration: `gaussian_exact_log_likelihood`)."""
    if "gaussian" in getattr(model, "latent_kinds", ()):
        return gaussian_exact_log_likelihood(model, x)
    chunks = [model.log_joint(x, h)
              for h in latent_configurations(model.latent_sizes, x.dtype, x.device,
                                             _chunk_for(x.shape[-2]))]
    return torch.logsumexp(torch.cat(chunks, 1), 1)


def exact_elbo(model, inference, x: Tensor) -> Tensor:
    """The variational bound sum_h Q(h|x) [log P(x,h) - log Q(h|x)] for each row of x; for
    Gaussian latents the same integral by Gauss-Hermite quadrature (models/quadrature.py)."""
    if "gaussian" in getattr(inference, "latent_kinds", ()):
        from models.quadrature import quadrature_elbo
        return quadrature_elbo(model, inference, x)
    total = 0.0
    for h in latent_configurations(model.latent_sizes, x.dtype, x.device, _chunk_for(x.shape[-2])):
        log_q = inference.log_prob(x, h)
        total = total + (log_q.exp() * (model.log_joint(x, h) - log_q)).sum(1)
    return total


def exact_sleep_objective(model, inference) -> Tensor:
    """sum_{x,h} P(x,h) log Q(h|x) for a binary-visible model small enough to enumerate x too.

    Its gradient w.r.t. the inference network is the expected sleep-phase update (Eq. 13).
    """
    if model.visible_kind != "bernoulli":
        raise ValueError("the exact sleep objective enumerates x: binary visibles only")
    _check_size(tuple(model.latent_sizes) + (model.num_features,))
    dtype = model.prior.bias.dtype
    xs = binary_configurations(model.num_features, dtype, model.prior.bias.device).unsqueeze(0)
    total = 0.0
    for h in latent_configurations(model.latent_sizes, dtype, xs.device, _chunk_for(xs.shape[1])):
        log_joint = model.log_joint(xs, h)  # (R, M, 2^D)
        total = total + (log_joint.exp() * inference.log_prob(xs, h)).sum((1, 2))
    return total



def k_sample_tuples(latent_sizes, num_samples: int, dtype=torch.float64, device=None):
    """Every ordered K-tuple of joint latent configurations, as per-layer tensors (1, K, T, 1, H_i)
    with T = (2^total)^K tuples (sample k of tuple t is configuration digit k of t in base 2^total).
    Scored by a model or inference network against x (R|1, B, D), each gives (R, K, T, B) terms:
    the ground truth for K-sample estimators (the K-sample bound, self-normalised weights)."""
    total = _check_size(latent_sizes)
    count = 2 ** total
    if count ** num_samples > 2 ** 20:
        raise ValueError(f"{count}^{num_samples} K-sample tuples is too many to enumerate; use a "
                         f"model with fewer latent units or fewer samples")
    configs = binary_configurations(total, dtype, device)                  # (count, total)
    tuples = torch.cartesian_prod(*[torch.arange(count, device=device)] * num_samples)
    tuples = tuples.reshape(-1, num_samples)                               # (T, K)
    joint = configs[tuples.T]                                              # (K, T, total)
    return [part.unsqueeze(-2).unsqueeze(0)
            for part in torch.split(joint, list(latent_sizes), dim=-1)]


def exact_k_sample_expectation(model, inference, x: Tensor, num_samples: int, function) -> Tensor:
    """E over K independent samples h_1..h_K ~ Q(h | x) of function(log_p, log_q), where log_p and
    log_q are (R, K, T, B) log P(x, h_k) and log Q(h_k | x) for every K-tuple; function returns
    (R, T, B) (or anything broadcasting to it), and the result is (R, B). Differentiable."""
    h = k_sample_tuples(model.latent_sizes, num_samples, x.dtype, x.device)
    log_p = model.log_joint(x, h)
    log_q = inference.log_prob(x, h)
    weight = log_q.sum(1).exp()                                            # (R, T, B)
    return (weight * function(log_p, log_q)).sum(1)


def exact_multisample_bound(model, inference, x: Tensor, num_samples: int) -> Tensor:
    """The K-sample bound E_{h_1..K ~ Q} log (1/K) sum_k P(x, h_k) / Q(h_k | x) (Burda et al.
    2016; VIMCO's objective) for each row of x, (R, B); K = 1 is the ELBO."""
    log_k = torch.log(torch.tensor(float(num_samples), dtype=x.dtype))
    return exact_k_sample_expectation(
        model, inference, x, num_samples,
        lambda log_p, log_q: torch.logsumexp(log_p - log_q, 1) - log_k)


def exact_k_sample_bound(model, inference, x: Tensor, num_samples: int) -> Tensor:
    """The exact K-sample bound (R, B): by ordered K-tuples (models/exact.py) while they are few,
    else by multisets of samples (equal, and C(K + M - 1, K) terms instead of M^K)."""
    configurations = 2 ** sum(model.latent_sizes)
    if configurations ** num_samples <= MAX_TUPLES:
        return exact_multisample_bound(model, inference, x, num_samples)
    return multisample_bound_by_counts(model, inference, x, num_samples)


def sample_counts(num_samples: int, num_configurations: int) -> Tensor:
    """Every vector of M = num_configurations non-negative counts summing to K = num_samples,
    (C, M) with C = binomial(K + M - 1, M - 1) (stars and bars)."""
    rows = []
    for bars in itertools.combinations(range(num_samples + num_configurations - 1),
                                       num_configurations - 1):
        edges = (-1,) + bars + (num_samples + num_configurations - 1,)
        rows.append([edges[m + 1] - edges[m] - 1 for m in range(num_configurations)])
    return torch.tensor(rows, dtype=torch.float64)


def multisample_bound_by_counts(model, inference, x: Tensor, num_samples: int) -> Tensor:
    """E over K independent samples h_1..h_K ~ Q(h | x) of log (1/K) sum_k w_k, (R, B).

    The value depends on the samples only through how often each of the M latent configurations
    occurs, so the sum over M^K ordered tuples collapses to one over the C multisets of counts n:
    E = sum_n K!/prod_m n_m! prod_m Q_m^{n_m} log (1/K) sum_m n_m w_m. Differentiable; equal to
    `models.exact.exact_multisample_bound` (tests/test_score_function_estimators.py)."""
    sizes = tuple(model.latent_sizes)
    if sum(sizes) > MAX_EXACT_LATENTS:
        raise UserError(f"the exact K-sample bound enumerates latent configurations: at most "
                        f"{MAX_EXACT_LATENTS} latent units (this model has {sum(sizes)})")
    count = 2 ** sum(sizes)
    multisets = math.comb(num_samples + count - 1, count - 1)
    runs = max(model.num_runs, x.shape[0])
    if multisets * count * x.shape[-2] * runs > MAX_COUNT_TERMS:
        raise UserError(f"the exact {num_samples}-sample bound on a model with {sum(sizes)} latent "
                        f"units sums over {multisets} multisets of samples, too many; use fewer "
                        f"samples or a model with fewer latent units (e.g. --model sbn:1)")
    h = next(latent_configurations(sizes, x.dtype, x.device, chunk_size=count))  # (1, M, 1, H_i)
    log_q = inference.log_prob(x, h)                                   # (R, M, B)
    log_w = model.log_joint(x, h) - log_q                             # (R, M, B)
    counts = sample_counts(num_samples, count).to(x.dtype).to(x.device)        # (C, M)
    log_coefficient = (math.lgamma(num_samples + 1)
                       - torch.lgamma(counts + 1).sum(-1))                     # (C,)
    log_probability = (torch.einsum("cm,rmb->rcb", counts, log_q)
                       + log_coefficient.view(1, -1, 1))                       # (R, C, B)
    log_counts = torch.where(counts > 0, counts.log(), -math.inf)             # (C, M)
    value = torch.logsumexp(log_counts.view(1, *counts.shape, 1) + log_w.unsqueeze(1), 2)
    return (log_probability.exp() * (value - math.log(num_samples))).sum(1)


# -- bidirectional Helmholtz machines (algorithms/bihm.py) -----------------------------------------


def exact_bihm_log_unnormalised(model, inference, x: Tensor) -> Tensor:
    """log p̃*(x) = 2 log sum_h sqrt(P(x, h) Q(h | x)) for each row of x, (R, B): the
    unnormalised marginal of the bidirectional Helmholtz machine of P and Q (Bornschein et al.
    2016), at most log P(x) (Cauchy-Schwarz)."""
    chunks = [0.5 * (model.log_joint(x, h) + inference.log_prob(x, h))
              for h in latent_configurations(model.latent_sizes, x.dtype, x.device,
                                             _chunk_for(x.shape[-2]))]
    return 2 * torch.logsumexp(torch.cat(chunks, 1), 1)


def exact_bihm_log_z2(model, inference) -> Tensor:
    """log Z^2 = log sum_x p̃*(x), (R,), for a binary-visible model small enough to enumerate x:
    the normaliser of p*(x) = p̃*(x) / Z^2."""
    if model.visible_kind != "bernoulli":
        raise ValueError("the exact normaliser enumerates x: binary visibles only")
    _check_size(tuple(model.latent_sizes) + (model.num_features,))
    dtype = model.prior.bias.dtype
    xs = binary_configurations(model.num_features, dtype, model.prior.bias.device).unsqueeze(0)
    return torch.logsumexp(exact_bihm_log_unnormalised(model, inference, xs), -1)


# -- Gaussian latents: numerical integration (models/gaussian.py) ----------------------------------
#
# log P(x) for models with at most MAX_INTEGRATED_GAUSSIANS Gaussian latent units in all (and any
# binary layers, enumerated), by the trapezoid rule in the noise coordinates of the Gaussian units:
# a Gaussian layer is z = mu(parent) + sigma(parent) eps with eps ~ N(0, I), so
#
#     P(x) = sum_b int N(eps; 0, I) prod_{binary layers} P(b_i | parent) P(x | h^1) d eps,
#
# h built top-down from (b, eps). In eps the Gaussian factor is the standard normal whatever the
# model's means and scales, so one fixed grid serves every model: [-GRID_HALF_WIDTH,
# GRID_HALF_WIDTH] per unit, GRID_POINTS points (spacing 0.045). Accuracy: the integrand is
# N(eps; 0, I) times a probability (at most 1) of the binary units and visibles, so truncating
# at |eps| = 9 loses at most 2 Phi(-9) ~ 2e-19 of prior mass per unit (relative to P(x):
# 2e-19 / P(x)). The trapezoid rule on a smooth, rapidly decaying integrand analytic in a strip
# converges exponentially in 1 / spacing: sigmoid(a eps) is analytic within pi / a of the real
# line, so the discretisation error is about exp(-2 pi^2 / (a * spacing)) = exp(-440 / a), below
# 1e-13 for logit slopes a = |w| sigma up to 15. Measured on the tiny models (gauss:2 and
# gauss:1-1 over 5 to 200 pixels, O(1) parameters): 201 and 1601 points agree to 3e-14;
# tests/test_ais.py checks that 201 points agree with the default.

MAX_INTEGRATED_GAUSSIANS = 2
GRID_HALF_WIDTH = 9.0
GRID_POINTS = 401


def gaussian_units(model) -> int:
    """How many Gaussian latent units the model has (0 for the binary families)."""
    kinds = getattr(model, "latent_kinds", ("binary",) * len(model.latent_sizes))
    return sum(size for size, kind in zip(model.latent_sizes, kinds, strict=True)
               if kind == "gaussian")


def trapezoid_grid(points: int = GRID_POINTS, half_width: float = GRID_HALF_WIDTH,
                   dtype=torch.float64, device=None) -> tuple[Tensor, Tensor]:
    """The 1-D nodes (points,) on [-half_width, half_width] and the trapezoid rule's log weights
    (spacing, halved at the two ends)."""
    nodes = torch.linspace(-half_width, half_width, points, dtype=dtype, device=device)
    weights = torch.full((points,), 2 * half_width / (points - 1), dtype=dtype, device=device)
    weights[0] = weights[-1] = weights[0] / 2
    return nodes, weights.log()


def gaussian_exact_log_likelihood(model, x: Tensor, points: int = GRID_POINTS,
                                  half_width: float = GRID_HALF_WIDTH) -> Tensor:
    """log P(x) (R, B) for a model with Gaussian latents: binary layers enumerated, at most
    MAX_INTEGRATED_GAUSSIANS Gaussian units integrated by the trapezoid rule (above).
    Differentiable in the parameters."""
    kinds, sizes = model.latent_kinds, tuple(model.latent_sizes)
    gaussians = gaussian_units(model)
    binaries = sum(sizes) - gaussians
    if gaussians > MAX_INTEGRATED_GAUSSIANS or binaries > MAX_EXACT_LATENTS:
        raise UserError(f"the exact log-likelihood integrates at most {MAX_INTEGRATED_GAUSSIANS} "
                        f"Gaussian latent units (this model has {gaussians}) and enumerates at "
                        f"most {MAX_EXACT_LATENTS} binary ones (it has {binaries}); use --bound ais")
    dtype, device = x.dtype, x.device
    nodes, log_trapezoid = trapezoid_grid(points, half_width, dtype, device)
    grid_count = points ** gaussians
    binary_count = 2 ** binaries
    configs = binary_configurations(binaries, dtype, device)                 # (M, binaries)
    total = grid_count * binary_count
    chunk = _chunk_for(x.shape[-2])
    pieces = []
    for start in range(0, total, chunk):
        index = torch.arange(start, min(total, start + chunk), device=device)
        binary_index, grid_index = index // grid_count, index % grid_count
        # grid digits in base `points`, one per Gaussian unit
        digits = torch.stack([(grid_index // points ** k) % points for k in range(gaussians)], -1)
        eps = nodes[digits]                                               # (N, gaussians)
        log_weight = log_trapezoid[digits].sum(-1) - 0.5 * (eps * eps).sum(-1) \
            - 0.5 * math.log(2 * math.pi) * gaussians                     # (N,)
        bits = configs[binary_index]                                      # (N, binaries)
        h = [None] * len(sizes)
        eps_parts = torch.split(eps, [s for s, k in zip(sizes, kinds, strict=True)
                                      if k == "gaussian"], -1)
        bit_parts = torch.split(bits, [s for s, k in zip(sizes, kinds, strict=True)
                                       if k != "gaussian"], -1)
        gaussian_iter, binary_iter = iter(reversed(eps_parts)), iter(reversed(bit_parts))
        log_terms = log_weight.view(1, -1, 1)
        for i in reversed(range(len(sizes))):                             # top-down
            layer = model.conditionals[i] if i < len(model.conditionals) else model.prior
            context = h[i + 1] if i + 1 < len(sizes) else None
            if kinds[i] == "gaussian":
                noise = next(gaussian_iter).unsqueeze(0).unsqueeze(2)    # (1, N, 1, H_i)
                mean, log_scale = layer.mean_and_log_scale(context, noise.dim())
                h[i] = mean + torch.exp(log_scale) * noise
            else:
                h[i] = next(binary_iter).unsqueeze(0).unsqueeze(2)
                log_terms = log_terms + layer.log_prob(h[i], context)
        log_terms = log_terms + model.visible.log_prob(x, h[0])           # (R, N, B)
        pieces.append(torch.logsumexp(log_terms, 1))
    return torch.logsumexp(torch.stack(pieces, 0), 0)
