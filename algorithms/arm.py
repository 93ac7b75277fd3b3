"""ARM: augment-REINFORCE-merge (Yin & Zhou, ICLR 2019, arXiv 1807.11143), layer by layer.

For one layer of independent binary units with logits a (Q(h_j = 1) = sigmoid(a_j)) and a
function f of the sample, ARM writes the gradient with respect to the logits as an expectation
over one uniform vector u and its antithetic partner 1 - u (Yin & Zhou, Theorem 1, as in the
authors' code and the DisARM authors' reimplementation, google-research/disarm):

    b  = [u < sigmoid(a)],   b~ = [1 - u < sigmoid(a)]           (each marginally Q's sample)
    d/da E[f(b)] = E_u[(f(b~) - f(b)) (u - 1/2)]                                    (ARM)

The whole layer is flipped antithetically at once: one extra evaluation of f per layer, whatever
its width. Here f is the ELBO's learning signal f(h) = log P(x, h) - log Q(h | x) (Mnih & Gregor,
Eq. 7), the objective E_Q[f] of the inference network. Its direct dependence on φ,
E_Q[∇φ f] = -E_Q[∇φ log Q] = 0, is left out (zero mean).

Several stochastic layers (the multi-layer form of ARM, §3 of Yin & Zhou; DisARM, Dong, Mnih &
Tucker 2020, uses the same layer-wise scheme). Q samples bottom-up, h^1 | x, h^2 | h^1, ...
For the logits a_t of layer t (given h^{t-1} of the sampled trajectory):

    d/da_t E[f] = E[(f_t(b~_t) - f_t(b_t)) (u_t - 1/2)],   f_t(b_t) = E_{h^{>t} ~ Q(. | b_t)} f(h)

where f_t is estimated by continuing the trajectory above layer t from each branch. Reading and
choice: the branch b_t is the sampled trajectory itself (its layers above t were drawn from b_t
with their own noise, independent of u_t), so only the antithetic branch b~_t needs a
continuation: it gets its own uniforms (one leaf per layer above t). Each layer's estimate is then
unbiased, and one update costs 1 + n evaluations of f for n stochastic layers (the authors'
multi-layer code draws a fresh continuation for both branches: 2n + 1). Giving the antithetic
branch fresh noise rather than the trajectory's (the authors' `shared_randomness` option) also
keeps every uniform a single Bernoulli draw, which exact enumeration needs.

Updates for a minibatch (B examples), each gradient a sum over examples:

    model:      Δθ = sum_i ∇θ log P(x_i, h_i)                    (the trajectory, Eq. 5)
    inference:  Δφ = sum_i sum_t (∂a_t / ∂φ)^T g_t,  g_t the layer's estimate of d/da_t E[f]

as the surrogate loss -sum_t sum_i g_t . a_t with g_t detached. Groups: "model" (rate 1) and
"inference" (rate `inference_lr_scale`; one fifth as in Mnih & Gregor §4.1, so that the
estimators of the suite are compared under one protocol; the ARM paper trains both with Adam at
one rate, which `--set inference_lr_scale=1 --optimizer adam` gives).

Factorial inference layers only: within an autoregressive layer, unit j's logit depends on the
units before it and the antithetic flip of the whole layer is no longer a pair of samples from
one conditional (the papers do not define it); such a Q is refused.

Noise (drawn by the harness): "pairs" one antithetic leaf per layer (R, 2, K, B, H_t) =
(u_t, 1 - u_t); "continuation" one uniform leaf (R, K, B, H_j) for every layer j above every t.
K is the number of samples per example: 1 for ARM (DisARM's multi-sample form, algorithms/
disarm.py, uses the same code with K >= 2). Shapes: x (R, B, D); h[t] (R, K, B, H_t); the branches
stacked as (R, n K, B, H_j) for one evaluation of f; f (R, K, B); g_t (R, K, B, H_t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from algorithms.base import Algorithm, StepResult, log_sum_exp_of_others
from bench.errors import UserError
from models.exact import exact_elbo, exact_k_sample_bound
from models.noise import antithetic, antithetic_bernoulli, uniform


@dataclass(frozen=True)
class ARMOptions:
    inference_lr_scale: float = 0.2


class ARM(Algorithm):
    name = "arm"
    latent_kinds = frozenset({"binary"})
    Options = ARMOptions
    presets = {"": {}}
    structural_options = ()
    paper_learning_rates = {"mnist": 3e-4, "synthetic": 3e-4}  # the suite's MNIST protocol (§4.1)

    def __init__(self, model, inference, options, generators=None):
        super().__init__(model, inference, options, generators)
        if inference.autoregressive:
            raise UserError(f"{self.name} needs a factorial inference network (the antithetic "
                            f"flip of a layer is defined for independent units); use "
                            f"--inference factorial")
        self.num_samples = getattr(self.options[0], "num_samples", 1)  # K; ARM's own is 1

    def evaluations_per_example(self, options) -> float:
        # the trajectory and one branch per layer, for each of the K samples
        return float(getattr(options, "num_samples", 1) * (1 + len(self.model.latent_sizes)))

    def noise(self, x):
        batch = (self.num_samples, *x.shape[1:-1])
        sizes = self.inference.latent_sizes
        return {"pairs": [antithetic(*batch, size) for size in sizes],
                "continuation": [uniform(*batch, sizes[j]) for t in range(len(sizes))
                                 for j in range(t + 1, len(sizes))]}

    def layer_gradients(self, u: Tensor, sample: Tensor, flipped: Tensor, logits: Tensor,
                        difference: Tensor) -> Tensor:
        """The estimate g (R, K, B, H) of d/da E[f] from one antithetic pair, given the
        difference f(b~) - f(b) (R, K, B) of the objective between the two branches: ARM's."""
        return difference.unsqueeze(-1) * (u - 0.5)

    def trajectory_log_prob(self, trajectory: list[Tensor], logits: list[Tensor]) -> Tensor:
        """log Q(h | x) (R, K, B) of the sampled trajectory from its layers' logits, with
        gradient (no second pass through the inference network)."""
        return sum((h * a - F.softplus(a)).sum(-1) for h, a in zip(trajectory, logits, strict=True))

    def step(self, x: Tensor, noise) -> StepResult:
        layers = self.inference.layers
        n, K = len(layers), self.num_samples
        continuation = iter(noise["continuation"])
        context = self.inference.centre(x)
        trajectory, logits, pairs = [], [], []
        for t, layer in enumerate(layers):
            a = layer.context_logits(context)               # (R, K, B, H_t); (R, B, H_1) first
            if t == 0:
                a = a.unsqueeze(1)                          # shared by the K samples of x
            u, sample, flipped = antithetic_bernoulli(noise["pairs"][t], a.detach())
            logits.append(a)
            pairs.append((u, sample, flipped))
            trajectory.append(sample)
            context = sample
        with torch.no_grad():
            # Branch t: the trajectory below t, the flipped layer t, a fresh continuation above.
            branches = [[] for _ in range(n)]
            for t in range(n):
                value = pairs[t][2]
                for j in range(n):
                    if j < t:
                        branches[j].append(trajectory[j])
                    elif j == t:
                        branches[j].append(value)
                    else:
                        value = layers[j].sample(value, next(continuation))
                        branches[j].append(value)
            stacked = [torch.stack(values, 1).flatten(1, 2) for values in branches]  # (R, nK, B, H)
            batch = x.shape[-2]
            log_w_branches = (self.model.log_joint(x, stacked)
                              - self.inference.log_prob(x, stacked)).view(-1, n, K, batch)
        # The trajectory's log P and log Q, each computed once: the model's update differentiates
        # log P, the weights' φ term log Q (from the layers' logits, no second inference pass).
        log_joint = self.model.log_joint(x, trajectory)                          # (R, K, B)
        log_q = self.trajectory_log_prob(trajectory, logits)                     # (R, K, B)
        with torch.no_grad():
            log_w = log_joint - log_q                                            # (R, K, B)
            log_k = math.log(K)
            bound = torch.logsumexp(log_w, 1) - log_k                            # L̂, (R, B)
            # L̂ with sample k's trajectory replaced by its branch t, (R, n, K, B)
            replaced = torch.logaddexp(log_sum_exp_of_others(log_w).unsqueeze(1),
                                       log_w_branches) - log_k
            difference = replaced - bound.view(-1, 1, 1, batch)
            normalised = torch.softmax(log_w, 1)                                 # w̃_k
        inference_loss = 0.0
        for t in range(n):
            u, sample, flipped = pairs[t]
            g = self.layer_gradients(u, sample, flipped, logits[t].detach(), difference[:, t])
            inference_loss = inference_loss - (g * logits[t]).sum()
        if K > 1:
            # The weights' own dependence on φ: ∇φ log w_k = -∇φ log Q(h_k), weighted by w̃_k;
            # the 1/K subtracted has zero mean (E ∇ log Q = 0) and makes it vanish for K = 1.
            inference_loss = inference_loss - ((1.0 / K - normalised) * log_q).sum()
        return StepResult(losses={"model": -(normalised * log_joint).sum(),
                                  "inference": inference_loss},
                          metrics={"bound": bound.mean(-1)})

    def exact_objectives(self, x: Tensor) -> dict[str, Tensor]:
        if self.num_samples > 1:
            bound = exact_k_sample_bound(self.model, self.inference, x, self.num_samples).sum(-1)
        else:
            bound = exact_elbo(self.model, self.inference, x).sum(-1)
        return {"model": bound, "inference": bound}
