"""Gaussian latent layers: continuous units with diagonal Gaussian conditionals, for R runs at once.

    prior            p(z^n)            = N(0, I)                           (fixed, no parameters)
    generative       p(z^i | z^{i+1})  = N(mu(z^{i+1}), diag sigma^2)      sigma per unit, learned
    inference        q(z^i | c)        = N(mu(c), diag sigma(c)^2)         sigma from the context

with mu (and for inference layers log sigma) a linear function of the context, or an MLP of it
(`hidden` deterministic layers of `activation` units, then a linear head), as in models/mlp.py.
The generative conditionals' sigma does not depend on the context (the short-run MCMC paper's
N(mu(z_above), sigma^2)); the inference network's does (the VAE's encoder).

The interface is LogisticLayer's (models/layers.py), with the continuous additions an estimator
needs; every tensor leads with the run dimension R, batch dimensions broadcast right-aligned:

    log_prob(value, context)              -> (R, *batch)   differentiable in value, context, params
    sample(context, noise)                -> (R, *batch, H)  mu + sigma eps, no gradient
    sample_with_log_prob(context, noise)  -> (z, log q(z))   z detached, log q with the parameters'
                                                             gradient (score-function estimators)
    rsample_with_log_prob(context, noise) -> (z, log q(z))   z = mu + sigma eps with its gradient
                                                             (reparameterised estimators)
    noise(*batch)                         -> Noise("normal", (*batch, H)): eps ~ N(0, I)
    mean_and_log_scale(context)           -> (mu, log sigma), each (R, *batch, H)

`kind = "gaussian"` (LogisticLayer's units are binary): estimators that need binary latents ask
the model's `latent_kinds`.

Initial values. Linear maps: weights N(0, init_scale^2) drawn from each run's own generator (the
suite's scheme for linear-logistic layers), zero biases. MLPs: Glorot-uniform weights and zero
biases (models/mlp.py). log sigma starts at 0 (sigma = 1, the prior's scale): the per-unit
parameters at 0, and the inference layers' log sigma head with zero weights and biases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.layers import _transposed_normal, align, linear
from models.mlp import glorot_uniform, parse_activation
from models.noise import Noise

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)
SCALES = ("fixed", "unit", "context")


def normal_log_prob(value: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """sum_j log N(v_j; mu_j, sigma_j^2) over the last dimension, broadcasting right-aligned after
    the run dimension."""
    ndim = max(value.dim(), mean.dim(), log_scale.dim())
    value, mean, log_scale = (align(t, ndim) for t in (value, mean, log_scale))
    standardised = (value - mean) * torch.exp(-log_scale)
    return (-0.5 * standardised * standardised - log_scale).sum(-1) - HALF_LOG_TWO_PI * value.shape[-1]


class GaussianLayer(nn.Module):
    """Diagonal Gaussian units (module docstring). `scale`: "fixed" (sigma = 1, mu = 0: the prior;
    no context), "unit" (one learned log sigma per unit) or "context" (log sigma a second head of
    the context, as mu is). `hidden` empty: mu and log sigma are linear in the context."""

    kind = "gaussian"

    def __init__(self, size: int, context_size: int = 0, autoregressive: bool = False,
                 init_scale: float = 0.01, autoregressive_init_scale: float | None = None,
                 generators: Sequence = (None,), dtype=torch.float32,
                 hidden: Sequence[int] = (), activation: str = "tanh", scale: str = "unit"):
        super().__init__()
        if autoregressive:
            raise ValueError("Gaussian layers are factorial within the layer; an autoregressive "
                             "inference network needs binary latents")
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
        if (scale == "fixed") != (context_size == 0):
            raise ValueError("a Gaussian layer without context is the fixed N(0, I) prior, and "
                             "only it")
        runs = len(generators)
        self.size, self.context_size, self.scale = size, context_size, scale
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.activation_kind, self.negative_slope = parse_activation(activation)
        self.autoregressive = False
        if scale == "fixed":
            # N(0, I): the buffer gives the run count, dtype and device (`.bias` as for the
            # binary prior).
            self.register_buffer("bias", torch.zeros(runs, size, dtype=dtype))
            return
        fans = (context_size,) + self.hidden
        self.hidden_weights = nn.ParameterList(
            nn.Parameter(glorot_uniform(generators, fan_out, fan_in, dtype))
            for fan_in, fan_out in zip(fans[:-1], fans[1:], strict=True))
        self.hidden_biases = nn.ParameterList(
            nn.Parameter(torch.zeros(runs, fan_out, dtype=dtype)) for fan_out in self.hidden)

        def head():
            if self.hidden:
                return nn.Parameter(glorot_uniform(generators, size, fans[-1], dtype))
            return nn.Parameter(_transposed_normal(generators, size, fans[-1], init_scale, dtype))

        self.weight = head()
        self.bias = nn.Parameter(torch.zeros(runs, size, dtype=dtype))
        if scale == "context":
            # log sigma's weights start at zero (sigma = 1 whatever the context): with Gaussian
            # contexts, which are unbounded, random ones make exp(W c) explode down a deep linear
            # stack before training starts.
            self.scale_weight = nn.Parameter(torch.zeros(runs, fans[-1], size, dtype=dtype))
            self.scale_bias = nn.Parameter(torch.zeros(runs, size, dtype=dtype))
        else:
            self.log_scale = nn.Parameter(torch.zeros(runs, size, dtype=dtype))

    @property
    def num_runs(self) -> int:
        return self.bias.shape[0]

    def noise(self, *batch_shape) -> Noise:
        return Noise("normal", (*batch_shape, self.size))

    def features(self, context: Tensor) -> Tensor:
        out = context
        for weight, bias in zip(self.hidden_weights, self.hidden_biases, strict=True):
            pre = linear(out, weight, bias)
            out = torch.tanh(pre) if self.activation_kind == "tanh" else F.leaky_relu(
                pre, self.negative_slope)
        return out

    def mean_and_log_scale(self, context: Tensor | None, ndim: int = 2) -> tuple[Tensor, Tensor]:
        """(mu, log sigma): (R, *batch, H) each, or for the prior zeros (R, 1, ..., H) with
        `ndim` dimensions."""
        if self.scale == "fixed":
            zeros = align(self.bias, ndim)
            return zeros, zeros
        features = self.features(context)
        mean = linear(features, self.weight, self.bias)
        if self.scale == "context":
            return mean, linear(features, self.scale_weight, self.scale_bias)
        return mean, align(self.log_scale, mean.dim())

    def log_prob(self, value: Tensor, context: Tensor | None = None) -> Tensor:
        mean, log_scale = self.mean_and_log_scale(context, value.dim())
        return normal_log_prob(value, mean, log_scale)

    def _draw(self, context, noise) -> tuple[Tensor, Tensor, Tensor]:
        mean, log_scale = self.mean_and_log_scale(context, noise.dim())
        mean, log_scale = align(mean, noise.dim()), align(log_scale, noise.dim())
        return mean + torch.exp(log_scale) * noise, mean, log_scale

    def sample(self, context: Tensor | None, noise: Tensor) -> Tensor:
        """z = mu + sigma eps for the normal noise eps (R, *batch, H); no gradient."""
        with torch.no_grad():
            return self._draw(context, noise)[0]

    def sample_with_log_prob(self, context: Tensor | None, noise: Tensor) -> tuple[Tensor, Tensor]:
        """z (detached) and log q(z | c), differentiable in the parameters: the score-function
        form, with mu and sigma computed once for both."""
        value, mean, log_scale = self._draw(context, noise)
        value = value.detach()
        return value, normal_log_prob(value, mean, log_scale)

    def rsample_with_log_prob(self, context: Tensor | None, noise: Tensor
                              ) -> tuple[Tensor, Tensor]:
        """z = mu + sigma eps with its gradient, and log q(z | c) through z and the parameters."""
        value, mean, log_scale = self._draw(context, noise)
        return value, normal_log_prob(value, mean, log_scale)

    def extra_repr(self) -> str:
        return (f"runs={self.num_runs}, size={self.size}, context_size={self.context_size}, "
                f"hidden={self.hidden}, scale={self.scale}")

