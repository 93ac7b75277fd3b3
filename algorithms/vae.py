"""VAE: the reparameterised gradient of the ELBO for Gaussian latents (Kingma & Welling 2014,
"Auto-Encoding Variational Bayes", §2.3-2.4, the SGVB estimator; Rezende, Mohamed & Wierstra 2014).

For a minibatch x_1..x_B and K samples eps_ik ~ N(0, I) per example, each latent layer of Q drawn
as h^j = mu_j(h^{j-1}) + sigma_j(h^{j-1}) * eps^j (h^0 = x centred, bottom-up, models/gaussian.py):

    L~(x_i) = (1/K) sum_k [log P(x_i, h_ik) - log Q(h_ik | x_i)],    h_ik = g_φ(eps_ik, x_i)
    model:      Δθ = sum_i ∇θ L~(x_i)      = sum_i (1/K) sum_k ∇θ log P(x_i, h_ik)
    inference:  Δφ = sum_i ∇φ L~(x_i)      (through h_ik = g_φ(eps_ik, x_i) and log Q's parameters)

Both are unbiased for the ELBO gradient (the expectation over eps does not depend on θ or φ).
The estimator of Kingma & Welling's experiments is K = 1 with minibatches of 100 (their §5); the
"SGVB B" form with an analytic KL applies only to one Gaussian layer under N(0, I), so the
Monte Carlo form, which serves every depth, is used: KL terms are not split out. The path-wise
gradient keeps the score term ∇φ log Q(h | x) at fixed h (zero in expectation), as both papers'
estimators do.

The surrogate losses. The harness asks for one loss per parameter group with no gradient with
respect to any other group (algorithms/base.py), while L~ depends on θ and φ at once. So the step
takes the gradient of L~ once, with respect to both groups (one backward pass through P and Q),
and returns -sum g.detach() * p per group: the gradient of each surrogate is that group's part of
∇L~, and the harness's backward pass over it is a cheap elementwise one.

Needs Gaussian latent layers only (the reparameterisation h = mu + sigma eps); every other option
is per run. Parameter groups: "model" (rate 1) and "inference" (rate `inference_lr_scale`, 1: both
networks share one rate in Kingma & Welling's experiments, Adagrad with a rate from {0.01, 0.02,
0.1}; the suite's optimizer and rate are the spec's). Shapes: x (R, B, D); eps and h^j
(R, K, B, H_j); log P and log Q (R, K, B); metrics (R,).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import Algorithm, StepResult
from models.exact import exact_elbo


@dataclass(frozen=True)
class VAEOptions:
    num_samples: int = 1               # K samples of eps per example (Kingma & Welling §5: 1)
    inference_lr_scale: float = 1.0    # φ's rate relative to θ's


class VAE(Algorithm):
    name = "vae"
    Options = VAEOptions
    presets = {"": {}, "k5": {"num_samples": 5}}
    structural_options = ("num_samples",)
    latent_kinds = frozenset({"gaussian"})
    check_model = "gauss:1-1"

    def evaluations_per_example(self, options) -> float:
        return float(options.num_samples)

    def noise(self, x: Tensor):
        return {"eps": self.inference.noise(self.options[0].num_samples, x.shape[-2])}

    def step(self, x: Tensor, noise) -> StepResult:
        h, log_q = self.inference.rsample(x, noise["eps"])        # (R, K, B, H_j), (R, K, B)
        bound = (self.model.log_joint(x, h) - sum(log_q)).mean(1)  # (R, B)
        groups = self.parameter_groups()
        parameters = groups["model"] + groups["inference"]
        grads = torch.autograd.grad(bound.sum(), parameters, allow_unused=True)
        grad_of = {id(p): g for p, g in zip(parameters, grads, strict=True)}
        losses = {group: -sum((grad_of[id(p)].detach() * p).sum() for p in members
                              if grad_of[id(p)] is not None)
                  for group, members in groups.items()}
        return StepResult(losses=losses, metrics={"bound": bound.detach().mean(-1)})

    def exact_objectives(self, x: Tensor):
        bound = exact_elbo(self.model, self.inference, x).sum(-1)
        return {"model": bound, "inference": bound}
