"""DisARM: ARM with the uniform integrated out given the pair (Dong, Mnih & Tucker 2020).

NeurIPS 2020, arXiv 2006.10680; authors' code google-research/disarm.

For one layer with logits a and the antithetic pair b = [u < sigmoid(a)], b~ = [1 - u < sigmoid(a)]
of algorithms/arm.py, DisARM is the conditional expectation of ARM's estimate given (b, b~)
(Dong et al., Eq. 6; as in the authors' `disarm_factor`):

    d/da_j E[f(b)] = E[ 1/2 (f(b~) - f(b)) (-1)^{b_j} [b_j != b~_j] sigmoid(|a_j|) ]    (DisARM)

so unit j contributes only when the pair disagrees on it, and u enters only through the pair:
its variance is never above ARM's. Every other part (the layer-wise scheme over several stochastic
layers with one continuation per antithetic branch, the updates, the groups and their rates, the
noise, the shapes, the refusal of autoregressive layers) is ARM's; see algorithms/arm.py.

Multi-sample DisARM (`num_samples` K >= 2; presets k2, k5, k10). The objective is then the
K-sample bound L^K = E log (1/K) sum_k w_k (algorithms/vimco.py), with K independent antithetic
pairs (b_k, b~_k), one per sample. Reading of the authors' code (google-research disarm/
networks.py, `get_local_disarm_losses` and `get_local_disarm_learning_signal`, "VIMCO-DisARM"):
sample k's pair is scored by the bound with only sample k swapped, the others held at b,

    L̂ = log (1/K) sum_j w(b_j),    L̂_{k→~} = log (1/K) (sum_{j≠k} w(b_j) + w(b~_k))
    g_k = 1/2 (L̂_{k→~} - L̂) (-1)^{b_k} [b_k != b~_k] sigmoid(|a|)       (local DisARM)

which, given the other samples, is DisARM for the function b_k -> L̂ of sample k alone, so each
term is unbiased for the gradient through sample k's distribution. The same holds layer by layer,
with sample k's branch continued as in the one-sample form, so the suite applies it to every
stochastic layer (the authors' code has it for one layer). The model's update is ∇θ L̂ = sum_k
w̃_k ∇θ log P(x, b_k) (as in VIMCO), the reported bound L̂.

One choice differs from that code. L̂ depends on φ also through the weights, ∇φ log w_k =
-∇φ log Q(b_k | x), and for K >= 2 that term does not vanish in expectation
(E sum_k w̃_k ∇φ log Q(b_k) tends to sum_h P(h | x) ∇φ log Q(h | x) as K grows). The code we read
leaves it out of the inference network's loss (its VIMCO keeps it); here it is kept, as
sum_k (1/K - w̃_k) ∇φ log Q(b_k | x) (the 1/K has zero mean and makes the term vanish at K = 1),
so that the update is unbiased for ∇φ L^K, which `python -m bench check disarm:k2 --model
sbn:1-2` verifies by enumeration (tests/test_arm.py shows the form without it is biased). The
authors' `symmetrized` variant (averaging the roles of b and b~) is not implemented.

Cost: K (1 + n) evaluations of f per example for n stochastic layers. Shapes as in
algorithms/arm.py with the sample dimension K: h[t], the pairs' u (R, K, B, H_t), f (R, K, B).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.arm import ARM


@dataclass(frozen=True)
class DisARMOptions:
    num_samples: int = 1                 # K: 1 the ELBO (the paper's main form), >= 2 the K-sample bound
    inference_lr_scale: float = 0.2      # the suite's protocol (Mnih & Gregor §4.1), as ARM

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be at least 1; got {self.num_samples}")


class DisARM(ARM):
    name = "disarm"
    Options = DisARMOptions
    presets = {"": {}, "k2": {"num_samples": 2}, "k5": {"num_samples": 5},
               "k10": {"num_samples": 10}}
    structural_options = ("num_samples",)

    def layer_gradients(self, u: Tensor, sample: Tensor, flipped: Tensor, logits: Tensor,
                        difference: Tensor) -> Tensor:
        disagree = (sample != flipped).to(logits.dtype)
        sign = 1.0 - 2.0 * sample                                     # (-1)^{b_j}
        return (0.5 * difference).unsqueeze(-1) * sign * disagree * torch.sigmoid(logits.abs())
