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

The multi-sample form (DisARM for the K-sample bound with VIMCO-style local signals, §5 of the
paper) is not implemented here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from algorithms.arm import ARM


class DisARM(ARM):
    name = "disarm"

    def layer_gradients(self, u: Tensor, sample: Tensor, flipped: Tensor, logits: Tensor,
                        f_sample: Tensor, f_flipped: Tensor) -> Tensor:
        disagree = (sample != flipped).to(logits.dtype)
        sign = 1.0 - 2.0 * sample                                     # (-1)^{b_j}
        return (0.5 * (f_flipped - f_sample)).unsqueeze(-1) * sign * disagree * torch.sigmoid(
            logits.abs())
