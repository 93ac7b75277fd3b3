"""Bidirectional Helmholtz machines: geometric mean matching of a top-down and a bottom-up model
(Bornschein, Shabanian, Fischer & Bengio, "Bidirectional Helmholtz Machines", ICML 2016,
arXiv 1506.03877; the authors' code jbornschein/bihm, src/helmholtz/bihm.py).

Two directed models of the same latents: the top-down model P(x, h) (the suite's SBN, `model`)
and the bottom-up model Q(h | x) (the suite's inference network, `inference`). The machine is
the normalised geometric mean of the two,

    p̃*(x)  = ( sum_h sqrt(P(x, h) Q(h | x)) )^2  = ( E_{Q(h|x)} sqrt(P(x, h) / Q(h | x)) )^2
    Z^2    = sum_x p̃*(x),       p*(x) = p̃*(x) / Z^2,

and p̃*(x) <= P(x) by Cauchy-Schwarz (equality iff Q(h | x) = P(h | x)), so log p̃*(x) is a lower
bound on the top-down model's log-likelihood that training pushes up, and Z^2 <= 1: the
normalised p*(x) is at least p̃*(x). Reading of the code: Q has no model of x of its own
(`log_prob_q` sets the bottom layer's term to 0), so q(x, h) is Q(h | x) here, as in the code,
and any constant factor of a uniform q(x) is absorbed into Z.

Training (the authors' `get_gradients`). K samples per example from Q, weights normalised over
the samples on the square-root scale:

    h_k ~ Q(h | x),   log w_k = (log P(x, h_k) - log Q(h_k | x)) / 2,   w̃_k = softmax_k(log w_k)
    bound:   log p̃*(x) ≈ 2 (log (1/K) sum_k w_k)                     (biased low for finite K)
    P:       Δθ = sum_k w̃_k ∇θ log P(x, h_k)
    Q:       Δφ = sum_k (w̃_k - 1/K) ∇φ log Q(h_k | x)

Both are self-normalised importance estimates of ∇ log p̃*(x) = E_{p̃*(h|x)}[∇ log P(x, h) +
∇ log Q(h | x)] with p̃*(h | x) ∝ sqrt(P(x, h) Q(h | x)), the score of the sampling distribution
left out (as in reweighted wake-sleep, algorithms/rws.py); the 1/K of Q's update is the authors'
baseline (zero mean: E_Q ∇φ log Q = 0). The weights are constants of the update (the code's
gradients are taken per layer with the weights given). Both are therefore biased for finite K,
by design: `claimed_update` is the exact expectation of the update (every K-tuple of latent
configurations, models/exact.py `k_sample_tuples`), which `python -m bench check bihm` verifies,
and `exact_objectives` what it tends to as K grows, log p̃*(x) itself (tests/test_bihm.py checks
both, and that the claims approach the gradient of log p̃*(x) as K grows).

The normaliser (the authors' `estimate_log_z2`): for (x, h) ~ P and h' ~ Q(h | x),

    Ẑ^2 = sqrt(Q(h | x) / P(x, h)) sqrt(P(x, h') / Q(h' | x)),       E[Ẑ^2] = Z^2

(E over h' gives sqrt(p̃*(x)); then E over (x, h) ~ P of sqrt(Q(h|x)/P(x,h)) sqrt(p̃*(x)) sums to
sum_x p̃*(x)). `models.star.estimate_log_z2` averages N of them (the code's logsumexp, here
divided by N) and gives the standard error; log p*(x) = log p̃*(x) - log Ẑ^2 in the evaluation
path (bench/evaluation.py, bounds "star-unnormalised", "star" and "star-exact"), exact on tiny
models (`models.exact.exact_bihm_log_unnormalised`, `exact_bihm_log_z2`). These are quantities
of the pair (P, Q), whatever trained it, so they live with the models.

Sampling from p* (the paper's §2.3): `models.star.sample_star` resamples ancestral samples of P by their
weights sqrt(p̃*(x) Q(h | x) / P(x, h)) (importance resampling, the code's `sample`, with p̃*(x)
estimated from K samples of Q). The Gibbs chain of the paper (alternating resampling of x and of
each layer from p*'s conditionals, the authors' inpainting) is not implemented.

Choices: K = 10 (the authors' default; presets k5, k100); one rate for both models
(`inference_lr_scale` = 1: the code trains P and Q with one Adam rate, 1e-3 by default, batch
100, which the `bihm` suite sets); the regularisers of the code (l1reg, l2reg, 0 by default) are
left out. Deterministic layers between stochastic ones (the code's option, 0 by default) are the
suite's `nsbn` models. Works with factorial and autoregressive Q and on every SBN family.

Noise: "q" one uniform per latent unit of each of the K samples, (R, K, B, H_j). Shapes: x
(R, B, D); h[j] (R, K, B, H_j); log P, log Q, log w, w̃ (R, K, B); metrics (R,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import Algorithm, SamplesFromQ, StepResult
from models.exact import exact_bihm_log_unnormalised, k_sample_tuples


@dataclass(frozen=True)
class BiHMOptions:
    num_samples: int = 10                # K, the authors' default
    inference_lr_scale: float = 1.0      # one rate for P and Q, as in the authors' code

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be at least 1; got {self.num_samples}")


class BiHM(SamplesFromQ, Algorithm):
    name = "bihm"
    Options = BiHMOptions
    presets = {"": {}, "k5": {"num_samples": 5}, "k100": {"num_samples": 100}}
    structural_options = ("num_samples",)
    paper_learning_rates = {"mnist": 1e-3, "synthetic": 1e-3}  # the authors' default (Adam)
    #: K = 10 samples of one latent at batch 1: 10 binary draws, enumerable
    check_model = "sbn:1"

    def step(self, x: Tensor, noise) -> StepResult:
        K = self.num_samples
        _, log_q, log_p = self.sample_from_q(x, noise)                 # (R, K, B) each
        with torch.no_grad():
            log_w = 0.5 * (log_p - log_q)
            weights = torch.softmax(log_w, 1)                          # w̃_k
            bound = 2 * (torch.logsumexp(log_w, 1) - math.log(K))      # log p̃*(x), (R, B)
            log_px = torch.logsumexp(2 * log_w, 1) - math.log(K)       # the K-sample bound of P
        return StepResult(
            losses={"model": -(weights * log_p).sum(),
                    "inference": -((weights - 1.0 / K) * log_q).sum()},
            metrics={"bound": bound.mean(-1), "log_px": log_px.mean(-1),
                     "effective_samples": weights.pow(2).sum(1).reciprocal().mean(-1)})

    # -- the bias check ---------------------------------------------------------------------
    def claimed_update(self, x: Tensor) -> dict[str, list[Tensor]]:
        """The exact expected value of -grad(losses[g]): a sum over every K-tuple of latent
        configurations of prod_k Q(h_k | x) times the surrogate (sum_k w̃_k log P(x, h_k), resp.
        sum_k (w̃_k - 1/K) log Q(h_k | x)), tuple probabilities and weights held constant."""
        K = self.num_samples
        h = k_sample_tuples(self.model.latent_sizes, K, x.dtype, x.device)
        log_p = self.model.log_joint(x, h)                             # (R, K, T, B)
        log_q = self.inference.log_prob(x, h)
        with torch.no_grad():
            probability = log_q.sum(1).exp()                           # (R, T, B)
            weights = torch.softmax(0.5 * (log_p - log_q), 1)
        return self.group_gradients({
            "model": (probability * (weights * log_p).sum(1)).sum(),
            "inference": (probability * ((weights - 1.0 / K) * log_q).sum(1)).sum()})

    def exact_objectives(self, x: Tensor) -> dict[str, Tensor]:
        """What both updates tend to as K grows: log p̃*(x), summed over the minibatch."""
        bound = exact_bihm_log_unnormalised(self.model, self.inference, x).sum(-1)
        return {"model": bound, "inference": bound}
