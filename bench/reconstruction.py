"""Reconstruction error: how well the latents that a trained run infers for x reproduce x.

    squared error(x) = sum_d (x_d - E[x_d | h^1])^2,    h ~ the run's posterior inference for x

with E[x_d | h^1] = sigmoid(a_d) the Bernoulli means of the visible layer. The latents are a
sample of what the estimator infers (`Algorithm.posterior_noise` / `posterior_latents`): Q's sample
for the amortised estimators, the last state of the MCMC chain for short-run inference, as the
short-run MCMC paper (Nijkamp et al. 2020) scores its reconstructions with the chain's output.
`mse` is the squared error per pixel (that paper's MSE), `squared_error` per image. Binary images
only (Bernoulli visibles). Each run draws from its own seeded generator. Shapes: x (R|1, B, D) ->
errors (R, B).
"""

from __future__ import annotations

import torch

from bench.errors import UserError
from bench.evaluation import _generators, rows_as_tensor
from models.noise import draw


def squared_errors(algorithm, x, generators):
    """(R, B) squared errors of reconstructing x (R|1, B, D) from inferred latents."""
    model = algorithm.model
    x = x.expand(model.num_runs, *x.shape[-2:])
    noise = draw(algorithm.posterior_noise(x), generators, x.dtype, x.device)
    with torch.no_grad():
        h = algorithm.posterior_latents(x, noise)
        mean = torch.sigmoid(model.visible.context_logits(h[0].detach()))
        return ((x - mean) ** 2).sum(-1)


def reconstruction_errors(algorithm, rows, seeds, device="cpu", dtype=torch.float32,
                          batch_size: int = 500, progress=None) -> list[dict]:
    """Per run: the mean squared error per image and per pixel over the rows, and their number."""
    if algorithm.model.visible_kind != "bernoulli":
        raise UserError("reconstruction error needs binary images (Bernoulli visibles)")
    generators = _generators(seeds, device)
    totals = torch.zeros(algorithm.model.num_runs, dtype=torch.float64)
    count = 0
    for start in range(0, rows.shape[0], batch_size):
        x = rows_as_tensor(rows[start:start + batch_size], dtype, device).unsqueeze(0)
        totals += squared_errors(algorithm, x, generators).double().sum(-1).cpu()
        count += x.shape[-2]
        if progress is not None:
            progress(x.shape[-2])
    pixels = algorithm.model.num_features
    return [{"squared_error": float(total) / count, "mse": float(total) / (count * pixels),
             "num_examples": count} for total in totals]
