"""REINFORCE: the score-function estimator with no variance reduction (Mnih & Gregor 2014, §2.2).

The floor every other estimator of the suite is measured against: NVIL without any of the
techniques of §2.3. For a minibatch x_1..x_n (B = n examples), one sample h_i ~ Q(h | x_i) each
(§4.1: "a single sample from the inference network"):

    model:      Δθ = sum_i ∇θ log P(x_i, h_i)                                        (Eq. 5)
    inference:  Δφ = sum_i l_i ∇φ log Q(h_i | x_i)                                   (Eq. 6)
    signal:     l_i = log P(x_i, h_i) - log Q(h_i | x_i)          (Eq. 7; detached, no baseline)

Reading. Eq. 5 and 6 average n samples of one observation; with the single sample of §4.1 they are
the terms above, summed over the minibatch as Algorithm 1 sums them. Eq. 6 is the Monte Carlo form
of Eq. 4: the bound's direct dependence on φ through -log Q has zero expectation,
E_Q[∇φ log Q] = 0, and is left out, so the signal is a constant weight of the score (detached).
One global signal drives every layer of Q (the local signals of Eq. 12 are one of NVIL's
variance-reduction techniques, not part of Eq. 6). In expectation both updates are the gradient
of the ELBO (Eq. 1): E_Q[∇θ log P] = ∇θ L (Eq. 3), E_Q[l ∇φ log Q] = ∇φ L (Eq. 4); `python -m
bench check` verifies both by enumeration.

Surrogate losses (summed over runs and examples): model -sum log P(x, h); inference
-sum l.detach() log Q(h | x), a weighted sum of the layers' log-probabilities (the layers'
closed-form backward serves it).

Parameter groups: "model" (rate 1) and "inference" (rate `inference_lr_scale`, one fifth, §4.1).
Every option is per run. Works for every model family and for autoregressive inference
networks (only log Q of the sample is needed). Shapes: x (R, B, D); h[j] (R, B, H_j); log P and
log Q terms (R, B); l (R, B); metrics (R,).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from algorithms.base import Algorithm, StepResult
from models.exact import exact_elbo


@dataclass(frozen=True)
class ReinforceOptions:
    inference_lr_scale: float = 0.2      # "five times smaller than for the model", §4.1


class Reinforce(Algorithm):
    name = "reinforce"
    Options = ReinforceOptions
    presets = {"": {}}
    structural_options = ()
    paper_learning_rates = {"mnist": 3e-4, "synthetic": 3e-4}  # §4.1 (Figure 1 uses one rate)

    def noise(self, x):
        return {"q": self.inference.noise(x.shape[-2])}

    def step(self, x: Tensor, noise) -> StepResult:
        h, log_q = self.inference.sample(x, noise["q"])
        log_joint = self.model.log_joint(x, h)                        # (R, B)
        log_posterior = sum(log_q)                                    # (R, B)
        # The signal weights the score and is not differentiated (Eq. 6 from Eq. 4).
        signal = (log_joint - log_posterior).detach()                 # (R, B)
        return StepResult(
            losses={"model": -log_joint.sum(), "inference": -(signal * log_posterior).sum()},
            metrics={"bound": signal.mean(-1)})

    def exact_objectives(self, x: Tensor) -> dict[str, Tensor]:
        bound = exact_elbo(self.model, self.inference, x).sum(-1)
        return {"model": bound, "inference": bound}
