"""The one evaluation path, shared by every algorithm: bounds on log P(x) from the model and its
inference network, whatever trained them.

    elbo   (the paper's metric, §4.1):  (1/K) sum_k [log P(x, h_k) - log Q(h_k | x)],  K = 10
    iw     importance-sampled bound:    log (1/K) sum_k P(x, h_k) / Q(h_k | x),        any K
    exact  log P(x) by enumeration, for models with at most 20 latent units (Gaussian latents:
           by numerical integration over at most 2 Gaussian units, models/exact.py)
    ais    annealed importance sampling from the prior (models/ais.py): log (1/K) sum_k w_k over
           K chains of `steps` temperatures; needs no inference network

and, for the geometric-mean model p*(x) = p̃*(x) / Z^2 of P and Q (bidirectional Helmholtz
machines, models/star.py), whatever trained the pair:

    star-unnormalised   log p̃*(x) ≈ 2 log (1/K) sum_k sqrt(P(x, h_k) / Q(h_k | x)),   any K
    star                the same minus log Ẑ^2, Z^2 estimated from `z2_samples` pairs of P and Q
                        (its estimate, standard error and sample count are kept with the bound)
    star-exact          log p*(x) by enumeration of h, and of x for Z^2 (tiny binary models)

Every bound says which model it scores (`QUANTITY`: p, p~* or p*), so tables never mix them.

The sampled bounds of P (elbo, iw, ais) are lower bounds in expectation; the iw bound tightens
towards log P(x) as K grows, AIS as its steps (and K) grow. K = 5000 runs in bounded memory: samples are drawn in chunks and combined with a running
logsumexp, so memory scales with the chunk, not with K. A chunk holds samples x examples rows, so
its cost per example does not depend on how many examples one call scores.

Speed: for one factorial latent layer under a Bernoulli visible layer with a factorial Q (sbn:H, the
MNIST models), FactorialLogWeights computes the same log-weights from the same random stream with
the per-example terms hoisted out of the sample loop; every other model goes through the layers'
own log_prob (log_weights). At K = 5000 the cost is then the decoder's matrix product and one
softplus per pixel and sample, plus the serial random stream.

Documents: perplexity = exp(-(1/N) sum_n bound_n / L_n) with L_n the document's length (§4.3);
the per-document bounds and lengths are kept so any other convention can be recomputed.
Models hold R runs (models/layers.py); every run is scored at once, each with its own random
stream. Shapes: x (B, D) -> per-run, per-example bounds (R, B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.errors import UserError
from models.ais import AISOptions, ais_log_likelihood
from models.exact import (
    MAX_EXACT_LATENTS,
    MAX_INTEGRATED_GAUSSIANS,
    exact_bihm_log_unnormalised,
    exact_bihm_log_z2,
    exact_log_likelihood,
    gaussian_units,
)
from models.layers import LogisticLayer, linear
from models.noise import draw as draw_noise
from models.noise import uniform
from models.star import estimate_log_z2

BOUNDS = ("elbo", "iw", "exact", "star-unnormalised", "star", "star-exact", "ais")
#: which model each bound scores: P itself, the unnormalised p̃*, or the normalised p*
QUANTITY = {"elbo": "p", "iw": "p", "exact": "p", "ais": "p", "star-unnormalised": "p~*",
            "star": "p*", "star-exact": "p*"}
STAR_BOUNDS = ("star-unnormalised", "star", "star-exact")
#: pairs (x, h) ~ P, h' ~ Q(h | x) behind the Z^2 of the "star" bound unless a caller says
DEFAULT_Z2_SAMPLES = 100_000
#: offset of a run's Z^2 stream from its seed's evaluation streams (training and `bench eval`)
Z2_SEED_OFFSET = -99
#: temperatures of the "ais" bound unless a caller says (its K is the number of chains)
DEFAULT_AIS_STEPS = 1000
#: the "ais" bound's kernels, schedule and step-size tuning (models/ais.py)
AIS_OPTIONS = AISOptions()


def z2_seed(run_seed: int) -> int:
    """The seed of a run's Z^2 estimate: one per run, whatever K or split is scored."""
    return run_seed * 1_000_003 + Z2_SEED_OFFSET
# Samples x examples x units per chunk of the sampled bounds: (chunk, B, D) activations near
# 64 MiB. Deeper networks draw each chunk layer by layer, so this size is part of their random
# stream: changing it changes their numbers (not their distribution).
_ELEMENTS_PER_CHUNK = 2 ** 24
# The same for the fast path, which draws the same stream whatever its chunks: 8 MiB of float32
# logits, which run faster on CPU than 64 MiB (beyond 32 MiB every temporary is a fresh mmap, paid
# in page faults, and little stays in cache); much smaller chunks pay per-chunk overhead.
_FAST_ELEMENTS_PER_CHUNK = 2 ** 21


def _generators(seeds, device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def log_weights(model, inference, x: Tensor, num_samples: int, generators) -> Tensor:
    """log P(x, h_k) - log Q(h_k | x) for h_k ~ Q(h | x), shape (R, num_samples, B); x (R|1, B, D);
    each run's samples from its own generator."""
    noise = draw_noise({"q": inference.noise(num_samples, x.shape[-2])}, generators, x.dtype,
                       x.device)["q"]
    h, log_q = inference.sample(x, noise)
    return model.log_joint(x, h) - sum(log_q)


def _factorial(layer) -> bool:
    return isinstance(layer, LogisticLayer) and not layer.autoregressive


class FactorialLogWeights:
    """log_weights for one factorial latent layer between a Bernoulli visible layer and a factorial
    Q (sbn:H with factorial inference), with every term that depends only on x computed once.

    With c = Q's logits for x (R, B, H), p the prior's logits and a = W h + b the visible logits
    (R, S, B, D):
        log Q(h | x) = h.c - sum softplus(c)
        log P(h)     = h.p - sum softplus(p)
        log P(x | h) = x.a - sum_j softplus(a_j) = h.(W^T x) + x.b - sum_j softplus(a_j)
    so  log w = h.(W^T x + p - c) + [x.b - sum softplus(p) + sum softplus(c)] - sum_j softplus(a_j):
    all the linear terms are one dot product per sample, and only the softplus pass runs over the
    (R, S, B, D) logits. Samples are drawn as LogisticLayer draws them, h = [u < sigmoid(c)] with u
    uniform (R, S, B, H) from each run's generator, so the numbers equal log_weights' on the same
    streams.
    """

    @classmethod
    def applies(cls, model, inference) -> bool:
        return (len(model.latent_sizes) == 1 and len(inference.layers) == 1
                and all(map(_factorial, (inference.layers[0], model.prior, model.visible))))

    def __init__(self, model, inference, x: Tensor, generators):
        q_logits = inference.layers[0].context_logits(inference.centre(x))   # (R, B, H)
        prior, visible = model.prior.bias.unsqueeze(1), model.visible        # (R, 1, H)
        self.q_probs = torch.sigmoid(q_logits).unsqueeze(1)                   # (R, 1, B, H)
        # W^T x: visible.weight is stored (R, H, D)
        self.coefficients = (linear(x, visible.weight.transpose(1, 2), None) + prior
                             - q_logits).unsqueeze(1)
        self.constant = ((x * visible.bias.unsqueeze(1)).sum(-1) - F.softplus(prior).sum(-1)
                         + F.softplus(q_logits).sum(-1)).unsqueeze(1)         # (R, 1, B)
        self.weight, self.bias = visible.weight, visible.bias
        self.generators = generators
        self.num_units = q_logits.shape[-1]

    def __call__(self, num_samples: int) -> Tensor:
        batch = self.q_probs.shape[-2]
        noise = draw_noise({"q": [uniform(num_samples, batch, self.num_units)]}, self.generators,
                           self.q_probs.dtype, self.q_probs.device)["q"][0]
        h = noise.lt_(self.q_probs)  # in place: the noise becomes the binary sample
        visible_logits = linear(h, self.weight, self.bias)
        return (self.constant + (h * self.coefficients).sum(-1)
                - F.softplus(visible_logits).sum(-1))


@torch.no_grad()
def log_likelihood_bound(model, inference, x: Tensor, bound: str = "elbo", num_samples: int = 10,
                         generators=None, steps: int = DEFAULT_AIS_STEPS) -> Tensor:
    """Per-run, per-example estimate of log P(x), (R, B): the ELBO, the importance-sampled bound,
    AIS (`num_samples` chains of `steps` temperatures; `inference` is not used), or the exact
    value. x is (B, D) or (R|1, B, D); `generators` one per run (their draws are the samples of
    each run)."""
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if bound == "exact":
        return exact_log_likelihood(model, x)
    if bound == "ais":
        if num_samples < 1:
            raise UserError(f"the number of AIS chains K must be at least 1, got {num_samples}")
        return ais_log_likelihood(model, x, num_samples, steps, generators, AIS_OPTIONS)
    if bound == "star-exact":
        return (exact_bihm_log_unnormalised(model, inference, x)
                - exact_bihm_log_z2(model, inference).unsqueeze(-1))
    if num_samples < 1:
        raise UserError(f"the number of samples K must be at least 1, got {num_samples}")
    if generators is None:
        generators = [None] * model.num_runs
    # draw(n): the log-weights of n fresh samples per example, (R, n, B)
    if FactorialLogWeights.applies(model, inference):
        draw = FactorialLogWeights(model, inference, x, generators)
        elements = _FAST_ELEMENTS_PER_CHUNK
    else:
        draw = partial(log_weights, model, inference, x, generators=generators)
        elements = _ELEMENTS_PER_CHUNK
    batch = x.shape[-2]
    width = max(x.shape[-1], *model.latent_sizes)
    # The chunk depends on one run's sizes only, so that a run's numbers do not depend on how many
    # runs are evaluated with it.
    chunk = max(1, min(num_samples, elements // max(1, batch * width)))
    runs = model.num_runs
    if bound == "elbo":
        total = torch.zeros(runs, batch, dtype=x.dtype, device=x.device)
        for start in range(0, num_samples, chunk):
            total += draw(min(chunk, num_samples - start)).sum(1)
        return total / num_samples
    if bound in ("iw", "star-unnormalised"):
        # p̃* averages the square roots of the same importance weights
        power = 1.0 if bound == "iw" else 0.5
        running = torch.full((runs, batch), -math.inf, dtype=x.dtype, device=x.device)
        for start in range(0, num_samples, chunk):
            weights = draw(min(chunk, num_samples - start))
            running = torch.logaddexp(running, torch.logsumexp(power * weights, 1))
        return (running - math.log(num_samples)) / power
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
    normaliser: dict | None = None      # "star": log_z2, log_z2_se, z2_samples (subtracted)
    steps: int | None = None            # "ais": temperatures per chain (num_samples: chains)
    kernel: str | None = None           # "ais": the kernels, schedule and step-size tuning

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
                   "num_examples": int(self.per_example.size), "quantity": QUANTITY[self.bound]}
        if self.normaliser is not None:
            summary.update(self.normaliser)
        if self.bound == "ais":
            summary.update({"ais_steps": self.steps, "ais_kernel": self.kernel})
        if self.lengths is not None:
            summary["perplexity"] = self.perplexity
        return summary


def evaluate_runs(model, inference, rows, bound: str = "elbo", num_samples: int = 10,
                  batch_size: int | None = None, seeds=(0,), device="cpu", dtype=torch.float32,
                  counts: bool = False, progress=None,
                  z2_samples: int = DEFAULT_Z2_SAMPLES, z2_seeds=None,
                  steps: int = DEFAULT_AIS_STEPS) -> list[Evaluation]:
    """The bound on every row of a split for each of the model's R runs, run r with its own seeded
    random stream `seeds[r]` (so an evaluation is reproducible, does not disturb the training
    streams, and gives a run the same numbers whichever runs it is evaluated with). The "star"
    bound's Z^2 comes from its own streams, `z2_seeds` (default: derived from `seeds`): callers
    that score several K give every K the same seeds, so the K share one estimate of Z^2.
    `steps`: the "ais" bound's temperatures (its K chains are `num_samples`); `inference` may be
    None for "ais" and "exact"."""
    if bound not in BOUNDS:
        raise UserError(f"unknown bound {bound!r}; valid bounds: {', '.join(BOUNDS)}")
    gaussians = gaussian_units(model)
    if bound == "exact" and gaussians > MAX_INTEGRATED_GAUSSIANS:
        raise UserError(f"exact log-likelihood integrates at most {MAX_INTEGRATED_GAUSSIANS} "
                        f"Gaussian latent units; this model has {gaussians}: use --bound ais")
    if bound == "exact" and sum(model.latent_sizes) - gaussians > MAX_EXACT_LATENTS:
        raise UserError(f"exact log-likelihood needs at most {MAX_EXACT_LATENTS} latent units; "
                        f"this model has {sum(model.latent_sizes)}: use --bound iw")
    if bound == "ais" and steps < 1:
        raise UserError(f"the ais bound needs at least 1 step (--steps), got {steps}")
    if bound in STAR_BOUNDS and model.visible_kind != "bernoulli":
        raise UserError(f"the {bound} bound (the geometric-mean model p* of P and Q) needs binary "
                        f"visibles; use --bound iw for document models")
    if bound == "star-exact" and sum(model.latent_sizes) + model.num_features > MAX_EXACT_LATENTS:
        raise UserError(f"the star-exact bound enumerates latents and pixels together (at most "
                        f"{MAX_EXACT_LATENTS}); use --bound star for this model")
    if len(seeds) != model.num_runs:
        raise ValueError(f"{len(seeds)} seeds for {model.num_runs} runs")
    generators = _generators(seeds, device)
    normalisers = [None] * model.num_runs
    per_example_bound = bound
    if bound == "star":
        # Z^2 from its own streams, so the per-example samples are those of star-unnormalised.
        z2_seeds = [s + 7_919 for s in seeds] if z2_seeds is None else list(z2_seeds)
        log_z2, error = estimate_log_z2(model, inference, z2_samples,
                                        _generators(z2_seeds, device), dtype, device)
        normalisers = [{"log_z2": float(log_z2[r]), "log_z2_se": float(error[r]),
                        "z2_samples": z2_samples} for r in range(model.num_runs)]
        per_example_bound = "star-unnormalised"
    num_rows = rows.shape[0]
    if batch_size is None:
        batch_size = 1000 if bound == "elbo" else 100
    values, lengths = [], []
    for start in range(0, num_rows, batch_size):
        x = rows_as_tensor(rows[start:start + batch_size], dtype, device)
        values.append(log_likelihood_bound(model, inference, x, per_example_bound, num_samples,
                                           generators, steps).cpu())
        if counts:
            lengths.append(x.sum(-1).cpu())
        if progress is not None:
            progress(x.shape[0])
    per_example = torch.cat(values, 1).double().numpy()
    run_lengths = torch.cat(lengths).double().numpy() if counts else None
    exact = bound in ("exact", "star-exact")
    annealed = {"steps": steps, "kernel": AIS_OPTIONS.describe(model.latent_kinds)} \
        if bound == "ais" else {}
    return [Evaluation(bound, None if exact else num_samples,
                       per_example[r] - (normalisers[r]["log_z2"] if normalisers[r] else 0.0),
                       run_lengths, normalisers[r], **annealed) for r in range(model.num_runs)]


def evaluate(model, inference, rows, bound: str = "elbo", num_samples: int = 10,
             batch_size: int | None = None, seed: int = 0, device="cpu", dtype=torch.float32,
             counts: bool = False, progress=None,
             z2_samples: int = DEFAULT_Z2_SAMPLES, z2_seed: int | None = None,
             steps: int = DEFAULT_AIS_STEPS) -> Evaluation:
    """`evaluate_runs` for a lone run (R = 1) with one seed."""
    if model.num_runs != 1:
        raise ValueError("evaluate() scores one run; use evaluate_runs() for stacked runs")
    return evaluate_runs(model, inference, rows, bound, num_samples, batch_size, [seed], device,
                         dtype, counts, progress, z2_samples,
                         None if z2_seed is None else [z2_seed], steps)[0]
