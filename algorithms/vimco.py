"""VIMCO: variational inference for Monte Carlo objectives (Mnih & Rezende 2016, ICML,
arXiv:1602.06725), for binary latent variables.

The objective is the K-sample bound (Burda et al. 2016) on log P(x): for one example x and K
independent samples h_1..h_K ~ Q(h | x),

    w_k = P(x, h_k) / Q(h_k | x),     L̂ = log (1/K) sum_k w_k,     L^K = E_Q[L̂]  <=  log P(x)

whose gradient splits into a score-function part and a part through the weights (§3):

    ∇ L^K = E[ sum_k L̂ ∇ log Q(h_k | x) ] + E[ sum_k w̃_k ∇ log w_k ],    w̃_k = w_k / sum_j w_j.

The first part gives every sample the same signal L̂. VIMCO replaces it by a per-sample signal
that subtracts what L̂ would be without sample k, with w_k replaced by a substitute computed from
the other samples only (a baseline independent of h_k, so the estimator stays unbiased):

    L̂_{-k}       = log (1/K) (sum_{j≠k} w_j + f̂_{-k})
    f̂_{-k}       = exp( 1/(K-1) sum_{j≠k} log w_j )        geometric mean (default)
                 = 1/(K-1) sum_{j≠k} w_j                   arithmetic mean (preset "arithmetic")
    L̂(h_k|h_-k)  = L̂ - L̂_{-k}                              the local learning signal

    Δ = sum_k L̂(h_k|h_-k) ∇ log Q(h_k | x) + sum_k w̃_k ∇ log w_k.

In this suite's models the samples are discrete, so nothing flows through h: ∇θ log w_k =
∇θ log P(x, h_k) and ∇φ log w_k = -∇φ log Q(h_k | x). For a minibatch x_1..x_n (B = n examples):

    model:      Δθ = sum_i sum_k w̃_ik ∇θ log P(x_i, h_ik)                   (= ∇θ L̂ exactly)
    inference:  Δφ = sum_i sum_k (L̂_i - L̂_{i,-k} - w̃_ik) ∇φ log Q(h_ik | x_i)

both with detached weights, and E[Δθ] = ∇θ L^K, E[Δφ] = ∇φ L^K (sum over examples). `python -m
bench check` verifies both by enumerating every draw of one update on `check_model`.

Sources and reading. The paper's text was not available here; the equations above follow its
gradient decomposition and local learning signals as restated by TensorFlow Probability's
`csiszar_vimco` (its "swap-out average": sample i's weight replaced by the leave-i-out geometric
average) and by tfsnippet's `vimco_estimator`, and by y0ast/VIMCO, a public Theano
reimplementation of the paper's MNIST experiments (VIMCO.py, which uses the arithmetic-mean
substitute and cites it as the paper's Eq. 10, the estimator as Eq. 11). Choices:
  - Substitute: the geometric mean is the default (the paper found it slightly better than the
    arithmetic mean, as public summaries of it report); the arithmetic mean is the preset
    "arithmetic". For K = 2 they coincide.
    Either is per-run data, so runs of the two presets stack.
  - K: the paper trains SBNs with K in {2, 5, 10, 50} and names no default; the default here is 5
    (the reimplementation's configuration), presets k2, k5, k10, k50. K >= 2 is required: a
    leave-one-out substitute needs another sample.
  - One signal per sample drives every layer of Q (the paper's signals are per sample, not per
    layer). The pathwise term -w̃_k ∇φ log Q is folded into sample k's weight of the score.
  - Rates: the reimplementation trains model and inference network with Adam at one rate (3e-4,
    β1 = 0.95, minibatches of 24); here the inference network's rate is one fifth of the model's
    (`inference_lr_scale`, Mnih & Gregor §4.1), the suite's protocol for every estimator
    (`--set inference_lr_scale=1 --optimizer adam` gives one rate).
  - Numerics: log sum_{j≠k} w_j is a logsumexp over the K - 1 other log-weights (a (K, K) mask
    per example), not log(sum_j w_j - w_k), which loses every digit when w_k dominates (the
    reimplementation clips there).
  - The reported bound is L̂, the K-sample bound estimate, averaged over the minibatch.

The claimed update is the gradient of the exact K-sample bound, from
`models.exact.exact_multisample_bound` (every ordered K-tuple of latent configurations) up to 2^16
tuples, and beyond from the same expectation summed over the far fewer multisets of K samples
(`multisample_bound_by_counts`, both in models/exact.py: the counts n_m of each configuration, multinomial probability
K!/prod n_m! prod Q_m^{n_m}), which reaches K = 50 on a model with one or two latent units
(`--model sbn:1`).

Noise: "q" one uniform per latent unit of each of the K samples, (R, K, B, H_j). Shapes: x
(R, B, D); h[j] (R, K, B, H_j); log P, log Q, log w, w̃, L̂_{-k} (R, K, B); L̂ (R, B); the
leave-one-out sets (R, K, K, B); metrics (R,). `num_samples` is structural, the substitute and the
rates are per run. Works on every model family and with autoregressive inference networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import Algorithm, SamplesFromQ, StepResult, log_sum_exp_of_others
from models.exact import exact_k_sample_bound

SUBSTITUTES = ("geometric", "arithmetic")


@dataclass(frozen=True)
class VIMCOOptions:
    num_samples: int = 5                 # K; the paper trains K = 2, 5, 10, 50
    leave_one_out: str = "geometric"     # the substitute f̂_{-k}: geometric or arithmetic mean
    inference_lr_scale: float = 0.2      # the suite's protocol (Mnih & Gregor §4.1)

    def __post_init__(self):
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be at least 2 (the leave-one-out substitute is "
                             f"made of the other samples); got {self.num_samples}")
        if self.leave_one_out not in SUBSTITUTES:
            raise ValueError(f"leave_one_out must be one of {', '.join(SUBSTITUTES)}; "
                             f"got {self.leave_one_out!r}")


class VIMCO(SamplesFromQ, Algorithm):
    name = "vimco"
    Options = VIMCOOptions
    presets = {"": {}, "k2": {"num_samples": 2}, "k5": {"num_samples": 5},
               "k10": {"num_samples": 10}, "k50": {"num_samples": 50},
               "arithmetic": {"leave_one_out": "arithmetic"}}
    structural_options = ("num_samples",)
    paper_learning_rates = {"mnist": 3e-4, "synthetic": 3e-4}  # the suite's MNIST protocol
    #: K = 5 samples of 3 latents (two layers) at batch 1: 15 binary draws, enumerable
    check_model = "sbn:1-2"

    def __init__(self, model, inference, options, generators=None):
        super().__init__(model, inference, options, generators)
        geometric = [o.leave_one_out == "geometric" for o in self.options]
        self.substitutes = {"geometric" if g else "arithmetic" for g in geometric}
        self.register_buffer("geometric", torch.tensor(geometric).view(-1, 1, 1),
                             persistent=False)

    def leave_one_out_bounds(self, log_weight: Tensor) -> Tensor:
        """L̂_{-k} = log (1/K) (sum_{j≠k} w_j + f̂_{-k}) for every k, (R, K, B), from log w
        (R, K, B), with each run's own substitute."""
        K = log_weight.shape[1]
        log_k = math.log(K)
        log_others = log_sum_exp_of_others(log_weight)                # log sum_{j≠k} w_j
        bounds = {}
        if "geometric" in self.substitutes:
            log_geometric = (log_weight.sum(1, keepdim=True) - log_weight) / (K - 1)
            bounds["geometric"] = torch.logaddexp(log_others, log_geometric) - log_k
        if "arithmetic" in self.substitutes:
            # log (1/K)(S + S/(K-1)) = log S/(K-1), S = sum_{j≠k} w_j
            bounds["arithmetic"] = log_others - math.log(K - 1)
        if len(bounds) == 1:
            return next(iter(bounds.values()))
        return torch.where(self.geometric, bounds["geometric"], bounds["arithmetic"])

    def step(self, x: Tensor, noise) -> StepResult:
        K = self.num_samples
        _, log_posterior, log_joint = self.sample_from_q(x, noise)    # (R, K, B) each
        with torch.no_grad():
            log_weight = log_joint - log_posterior                    # log w_k
            bound = torch.logsumexp(log_weight, 1) - math.log(K)      # L̂, (R, B)
            normalised = torch.softmax(log_weight, 1)                 # w̃_k
            # L̂_{-k} does not depend on h_k, so subtracting it leaves the expectation alone.
            signal = bound.unsqueeze(1) - self.leave_one_out_bounds(log_weight)
            # Sample k's weight of its score: the local signal, and -w̃_k from ∇φ log w_k.
            score_weight = signal - normalised
        return StepResult(
            losses={"model": -(normalised * log_joint).sum(),
                    "inference": -(score_weight * log_posterior).sum()},
            metrics={"bound": bound.mean(-1),
                     "effective_sample_size": normalised.pow(2).sum(1).reciprocal().mean(-1)})

    def exact_objectives(self, x: Tensor) -> dict[str, Tensor]:
        bound = exact_k_sample_bound(self.model, self.inference, x, self.num_samples).sum(-1)
        return {"model": bound, "inference": bound}
