"""Wake-sleep (Hinton et al. 1995), as compared against in Mnih & Gregor 2014 (§3.3, Table 1).

For a minibatch x_1..x_n:

    wake  (model):      h_i ~ Q(h | x_i),          Δθ = sum_i ∇θ log P(x_i, h_i)         (Eq. 5)
    sleep (inference):  (x'_i, h'_i) ~ P(x, h),    Δφ = sum_i ∇φ log Q(h'_i | x'_i)      (Eq. 13)

The sleep phase draws as many fantasies as the minibatch has examples; for document models each
fantasy has the length of the matching real document (a multinomial visible needs a length).
Wake-sleep has no objective shared by both phases; the reported training bound is the ELBO
estimate log P(x, h) - log Q(h | x) on the wake samples.

Parameter groups: "model" (rate 1), "inference" (rate `inference_lr_scale`; §4.1 always uses one
fifth of the model's rate). Every option is per run. Shapes: x (R, B, D), h[j] (R, B, H_j); noise
"q" is the wake sample's (one uniform per latent unit), "fantasy" the sleep phase's (prior,
conditionals top-down, visible); losses are sums over runs and the minibatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import Algorithm, StepResult
from models.exact import exact_elbo, exact_sleep_objective


@dataclass(frozen=True)
class WakeSleepOptions:
    inference_lr_scale: float = 0.2


class WakeSleep(Algorithm):
    name = "wake-sleep"
    # the claim (models/exact.py: exact_sleep_objective) enumerates binary latents
    latent_kinds = frozenset({"binary"})
    Options = WakeSleepOptions
    presets = {"": {}}
    structural_options = ()
    paper_learning_rates = {"mnist": 1e-4, "synthetic": 1e-4}  # §4.1; synthetic as MNIST

    def evaluations_per_example(self, options) -> float:
        return 2.0  # log P(x, h) on the wake sample, one ancestral pass for the fantasy

    def noise(self, x):
        return {"q": self.inference.noise(*x.shape[1:-1]), "fantasy": self.model.noise_like(x)}

    def step(self, x: Tensor, noise) -> StepResult:
        with torch.no_grad():
            h, log_q = self.inference.sample(x, noise["q"])
        log_joint = self.model.log_joint(x, h)
        fantasy_x, fantasy_h = self.model.sample(noise["fantasy"], self.model.lengths_like(x))
        sleep_log_q = self.inference.log_prob(fantasy_x, fantasy_h)
        bound = log_joint.detach() - sum(log_q)
        return StepResult(
            losses={"model": -log_joint.sum(), "inference": -sleep_log_q.sum()},
            metrics={"bound": bound.mean(-1), "sleep_log_q": sleep_log_q.detach().mean(-1)},
        )

    def exact_objectives(self, x: Tensor) -> dict[str, Tensor]:
        # Wake: the gradient of the bound w.r.t. θ (Eq. 3). Sleep: per fantasy, the gradient of
        # E_P(x,h)[log Q(h|x)]; a minibatch of B fantasies sums B of them.
        return {"model": exact_elbo(self.model, self.inference, x).sum(-1),
                "inference": x.shape[-2] * exact_sleep_objective(self.model, self.inference)}
