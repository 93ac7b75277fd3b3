"""Gauss-Hermite quadrature over standard normal noise: the exact expectations of tiny models with
Gaussian latents, as enumeration gives them for binary ones (models/exact.py).

For a smooth f, E_{eps ~ N(0, I_d)}[f(eps)] ≈ sum_m w_m f(eps_m) over the n^d products of the n
probabilists' Gauss-Hermite nodes of each coordinate (weights normalised to sum to 1). The rule is
exact for polynomials of degree < 2n in each coordinate, and converges geometrically for analytic
integrands such as the suite's (softplus of affine maps of Gaussian latents, quadratic log
densities): the error of an n-node rule falls like exp(-c sqrt(n)) with c set by the distance of
the integrand's nearest complex singularity.

Two uses:
    bench/check.py     replaces every element of an update's "normal" noise by the nodes
                       (up to QUADRATURE_NODES per element) and weights each configuration by its w, so
                       the expected update of an estimator with Gaussian noise is a finite sum;
    quadrature_elbo    ELBO(x) = E_Q[log P(x, h) - log Q(h | x)] with h = mu + sigma eps
                       reparameterised through the nodes (CLAIM_NODES per latent unit), whose
                       autograd gradient is the exact ELBO gradient up to the rule's error: the
                       claim of the bias check for Gaussian models (more nodes than the check
                       uses, so the two sums are independent computations of one integral).

Shapes: nodes (n,), weights (n,); a grid of d coordinates (n^d, d) with log weights (n^d,).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

#: most nodes per normal noise element in the bias check's enumeration (fewer where the
#: configurations would exceed its budget)
QUADRATURE_NODES = 64
#: fewest nodes per element the check uses (below, the rule's error reaches its tolerance)
MIN_QUADRATURE_NODES = 32
#: nodes per latent unit in the claimed ELBO of a Gaussian model
CLAIM_NODES = 96
#: most latent units per example the claimed ELBO integrates over (CLAIM_NODES^3 points)
MAX_QUADRATURE_UNITS = 3


@functools.cache
def _rule(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    points, weights = np.polynomial.hermite_e.hermegauss(nodes)
    return points, weights / weights.sum()


def gauss_hermite(nodes: int, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """The probabilists' Gauss-Hermite nodes and probability weights (summing to 1) of N(0, 1)."""
    points, weights = _rule(nodes)
    return torch.tensor(points, dtype=dtype), torch.tensor(weights, dtype=dtype)


def product_grid(dimensions: int, nodes: int, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """Every product of the nodes over `dimensions` coordinates, (nodes^d, d), and the log of
    each point's weight, (nodes^d,)."""
    points, weights = gauss_hermite(nodes, dtype)
    codes = torch.arange(nodes ** dimensions)
    digits = (codes.unsqueeze(-1) // nodes ** torch.arange(dimensions)) % nodes   # (M, d)
    return points[digits], torch.log(weights)[digits].sum(-1)


def quadrature_elbo(model, inference, x: Tensor, nodes: int = CLAIM_NODES) -> Tensor:
    """ELBO(x) per run and example, (R, B), for an inference network of Gaussian layers only,
    differentiable in every parameter (module docstring). x (R|1, B, D)."""
    if any(kind != "gaussian" for kind in inference.latent_kinds):
        raise ValueError("the quadrature ELBO needs Gaussian latent layers only")
    units = sum(inference.latent_sizes)
    if units > MAX_QUADRATURE_UNITS:
        raise ValueError(f"the quadrature ELBO integrates over at most {MAX_QUADRATURE_UNITS} "
                         f"latent units per example; this model has {units}")
    grid, log_weight = product_grid(units, nodes, x.dtype)
    grid, log_weight = grid.to(x.device), log_weight.to(x.device)
    runs, batch = inference.num_runs, x.shape[-2]
    # (R, M, B, H_j): the same points for every run and example
    noise = [part.view(1, grid.shape[0], 1, -1).expand(runs, -1, batch, -1)
             for part in torch.split(grid, list(inference.latent_sizes), dim=-1)]
    h, log_q = inference.rsample(x, noise)
    integrand = model.log_joint(x, h) - sum(log_q)                       # (R, M, B)
    return (log_weight.exp().view(1, -1, 1) * integrand).sum(1)


def log_weight_of_points(digits: Tensor, nodes: int) -> Tensor:
    """The log quadrature weight of configurations given by node indices, summed over every
    dimension after the first: digits (M, ...) -> (M,)."""
    _, weights = gauss_hermite(nodes)
    return torch.log(weights)[digits].reshape(digits.shape[0], -1).sum(-1)


__all__ = ["QUADRATURE_NODES", "MIN_QUADRATURE_NODES", "CLAIM_NODES", "gauss_hermite", "product_grid", "quadrature_elbo",
           "log_weight_of_points"]
