"""RLOO: REINFORCE with K samples and leave-one-out baselines (Kool, van Hoof & Welling 2019,
"Buy 4 REINFORCE samples, get a baseline for free!", ICLR 2019 workshop DeepRLStructPred).

For a function f of a sample and K independent samples y_1..y_K ~ p_φ, each sample's baseline is
the mean of the other K - 1 samples' values, which does not depend on that sample, so

    ∇φ E[f] ≈ (1/K) sum_k (f(y_k) - 1/(K-1) sum_{j≠k} f(y_j)) ∇φ log p_φ(y_k)
            = 1/(K-1) sum_k (f(y_k) - (1/K) sum_j f(y_j)) ∇φ log p_φ(y_k)

is unbiased (the two forms are equal term by term). Here the function is the ELBO's learning
signal (Mnih & Gregor 2014, Eq. 7), one per sample of one example: for a minibatch x_1..x_n (B = n
examples) and K samples h_i1..h_iK ~ Q(h | x_i) per example,

    l_ik  = log P(x_i, h_ik) - log Q(h_ik | x_i)                           (detached)
    b_ik  = 1/(K-1) sum_{j≠k} l_ij                                          leave-one-out baseline
    model:      Δθ = sum_i (1/K) sum_k ∇θ log P(x_i, h_ik)                  (Eq. 5 with n = K)
    inference:  Δφ = sum_i (1/K) sum_k (l_ik - b_ik) ∇φ log Q(h_ik | x_i)

The objective is the ELBO (Eq. 1), not a K-sample bound: the K samples only buy the baseline (and
average K estimates). E[Δθ] = ∇θ ELBO and E[Δφ] = ∇φ ELBO exactly, which `python -m bench check`
verifies by enumeration. The reported bound is the ELBO estimate, the mean of l over samples and
examples.

Reading. The workshop paper's text was not available here; the estimator above is the one its
title and abstract describe, as the authors implement it in the code of their follow-up paper
(wouterkool/estimating-gradients-without-replacement, vae/vae.py, estimator 'rfwr', "REINFORCE
with replacement", the 2019 estimator as the ICLR 2020 paper's baseline): the advantage is
K/(K-1) (f_k - mean_j f_j), averaged over samples and examples, and the decoder's loss is the mean
over the K samples; both are the forms above (the suite sums over examples where the authors
average). Choices:
  - f is the sampled learning signal l; its direct dependence on φ (through -log Q) has zero
    expectation and is left out, as in Eq. 4 of Mnih & Gregor (the authors' VAE used an analytic
    KL term instead, which an SBN does not have).
  - One global signal for every layer of Q (the paper's signal is one reward per sample).
  - K = 4 by default (the paper's title, and the authors' main setting); presets k2, k5, k8, k10
    (the authors also run 8). K >= 2 is required: with one sample there is no other to lean on.
  - The inference network's rate is one fifth of the model's (`inference_lr_scale`, Mnih & Gregor
    §4.1), the suite's protocol for every estimator; the authors train encoder and decoder with
    Adam at one rate (`--set inference_lr_scale=1 --optimizer adam`).

Noise: "q" one uniform per latent unit of each of the K samples, (R, K, B, H_j). Shapes: x
(R, B, D); h[j] (R, K, B, H_j); log P, log Q, l, b (R, K, B); metrics (R,). `num_samples` shapes
the computation (structural); `inference_lr_scale` is per run. Works on every model family and
with autoregressive inference networks (only log Q of each sample is needed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import Algorithm, SamplesFromQ, StepResult
from models.exact import exact_elbo


@dataclass(frozen=True)
class RLOOOptions:
    num_samples: int = 4                 # K, "Buy 4 REINFORCE samples"
    inference_lr_scale: float = 0.2      # the suite's protocol (Mnih & Gregor §4.1)

    def __post_init__(self):
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be at least 2 (each sample's baseline is the mean "
                             f"of the others); got {self.num_samples}")


class RLOO(SamplesFromQ, Algorithm):
    name = "rloo"
    Options = RLOOOptions
    presets = {"": {}, "k2": {"num_samples": 2}, "k5": {"num_samples": 5},
               "k8": {"num_samples": 8}, "k10": {"num_samples": 10}}
    structural_options = ("num_samples",)
    paper_learning_rates = {"mnist": 3e-4, "synthetic": 3e-4}  # the suite's MNIST protocol
    #: K = 4 samples of 3 latents at batch 1: 12 binary draws, enumerable (sbn:2-3 would need 20)
    check_model = "sbn:1-2"

    def step(self, x: Tensor, noise) -> StepResult:
        K = self.num_samples
        _, log_posterior, log_joint = self.sample_from_q(x, noise)    # (R, K, B) each
        with torch.no_grad():
            signal = log_joint - log_posterior                        # l, (R, K, B)
            # b_k leaves sample k out, so it is independent of h_k: E[b_k ∇ log Q(h_k)] = 0.
            baseline = (signal.sum(1, keepdim=True) - signal) / (K - 1)
            advantage = signal - baseline
        return StepResult(
            losses={"model": -log_joint.sum() / K,
                    "inference": -(advantage * log_posterior).sum() / K},
            metrics={"bound": signal.mean((1, 2))})

    def exact_objectives(self, x: Tensor) -> dict[str, Tensor]:
        bound = exact_elbo(self.model, self.inference, x).sum(-1)
        return {"model": bound, "inference": bound}
