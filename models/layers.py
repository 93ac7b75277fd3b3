"""Stochastic layers: conditional distributions of one layer given the layer that feeds it.

Every layer is a module with the same small contract, so that the belief network, the inference
network and later continuous layers can be stacked without knowing what is inside:

    log_prob(value, context)  -> (...)         log-density of `value`, summed over the layer's units
    sample(context, batch_shape, generator, noise) -> (..., size)
    logits(context, value)    -> (..., size)   natural parameters (for estimators that need them)

`context` is the layer above in the generative model, or the layer below in the inference network;
it is None for a prior. Leading dimensions broadcast: a context of shape (S, B, C) with S samples per
example and B examples works everywhere, as does a value of shape (S, B, size) scored against a
context of shape (B, C).

Sampling takes optional uniform noise so that a caller can control the random stream exactly
(antithetic pairs, one stream per batched run); without it, noise comes from `generator`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def bernoulli_log_prob(logits: Tensor, value: Tensor) -> Tensor:
    """sum_j [v_j a_j - softplus(a_j)] = sum_j log Bernoulli(v_j; sigmoid(a_j)), stable for any a.

    The two sums are taken separately so that logits shared by many values (a prior's bias, or
    (B, H) logits scoring (S, B, H) samples) can be passed unexpanded: their softplus is then
    computed once, not once per sample."""
    return (value * logits).sum(-1) - F.softplus(logits).sum(-1)


def uniform_noise(shape, generator, like: Tensor) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)


class LogisticLayer(nn.Module):
    """Binary units with linear-logistic conditionals (Eq. 10 and 11 of Mnih & Gregor 2014).

    a = W context + b                      (factorial within the layer)
    a_j = W_j context + b_j + sum_{k<j} U_jk h_k   (autoregressive within the layer, fDARN / Table 2)
    p(h | context) = prod_j Bernoulli(h_j; sigmoid(a_j))

    Shapes: W (size, context_size), b (size,), U (size, size) strictly lower triangular.
    """

    def __init__(self, size: int, context_size: int = 0, autoregressive: bool = False,
                 init_scale: float = 0.01, autoregressive_init_scale: float | None = None):
        super().__init__()
        self.size = size
        self.context_size = context_size
        self.autoregressive = autoregressive
        self.bias = nn.Parameter(torch.zeros(size))
        self.weight = (nn.Parameter(torch.randn(size, context_size) * init_scale)
                       if context_size else None)
        if autoregressive:
            # U's own scale (default: init_scale); 0 starts the layer as the factorial one and
            # draws no random numbers for U.
            scale = init_scale if autoregressive_init_scale is None else autoregressive_init_scale
            self.autoregressive_weight = nn.Parameter(
                torch.randn(size, size) * scale if scale else torch.zeros(size, size))
            # Unit j sees only units before it: the mask keeps U strictly lower triangular.
            self.register_buffer("autoregressive_mask", torch.tril(torch.ones(size, size), -1),
                                 persistent=False)
        else:
            self.autoregressive_weight = None

    def context_logits(self, context: Tensor | None, batch_shape=()) -> Tensor:
        if context is None:
            return self.bias.expand(*batch_shape, self.size)
        return F.linear(context, self.weight, self.bias)

    def masked_autoregressive_weight(self) -> Tensor:
        return self.autoregressive_weight * self.autoregressive_mask

    def logits(self, context: Tensor | None, value: Tensor) -> Tensor:
        """Logits of every unit given the context and, for autoregressive layers, the units before it."""
        logits = self.context_logits(context, value.shape[:-1])
        if self.autoregressive:
            logits = logits + F.linear(value, self.masked_autoregressive_weight())
        return logits

    def log_prob(self, value: Tensor, context: Tensor | None = None) -> Tensor:
        if self.autoregressive:
            return bernoulli_log_prob(self.logits(context, value), value)
        # Factorial: logits a = W c + b do not depend on the value, so a prior's bias stays
        # unexpanded (see bernoulli_log_prob).
        logits = self.context_logits(context)
        if context is None or value.numel() >= logits.numel():
            return bernoulli_log_prob(logits, value)
        # A value shared by many contexts (the data x scored under S latent samples (S, B, C)):
        # sum_j v_j a_j = c . (W^T v) + b . v projects v once per example, so only the softplus
        # pass runs over the (S, B, size) logits.
        return ((context * (value @ self.weight)).sum(-1) + value @ self.bias
                - F.softplus(logits).sum(-1))

    def sample(self, context: Tensor | None = None, batch_shape=(), generator=None,
               noise: Tensor | None = None) -> Tensor:
        return self._sample_from(self.context_logits(context, batch_shape), batch_shape,
                                 generator, noise)

    def sample_with_log_prob(self, context: Tensor | None = None, batch_shape=(), generator=None,
                             noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """A sample (no gradient) and its log-probability (with gradient) from ONE evaluation of
        the context's logits: the inference network's hot path, which would otherwise compute its
        largest matrix product twice. A context of shape (B, C) with batch_shape (S, B) is
        multiplied once and broadcast over the S samples."""
        base = self.context_logits(context, batch_shape)
        value = self._sample_from(base.detach(), batch_shape, generator, noise)
        logits = base
        if self.autoregressive:
            logits = base + F.linear(value, self.masked_autoregressive_weight())
        return value, bernoulli_log_prob(logits, value)

    def _sample_from(self, base: Tensor, batch_shape, generator, noise) -> Tensor:
        if tuple(batch_shape) and tuple(base.shape[:-1]) != tuple(batch_shape):
            base = base.expand(*batch_shape, self.size)
        if noise is None:
            noise = uniform_noise(base.shape, generator, base)
        with torch.no_grad():
            if not self.autoregressive:
                return (noise < torch.sigmoid(base)).to(base.dtype)
            # Ancestral sampling within the layer: unit j's logit collects U_jk h_k for k < j as
            # the units are drawn: after drawing unit j, the logits get h_j times column j of U
            # (zero for the units up to j), added in place. The loop runs once per unit, so each
            # step is kept to three operations writing into preallocated tensors (the sleep
            # phase of wake-sleep on fDARN spends most of its update here).
            columns = self.masked_autoregressive_weight().t().contiguous()  # row j = column j of U
            running = base.reshape(-1, self.size).clone()
            values = torch.empty_like(running)
            probability = running.new_empty(running.shape[0])
            # Row j of a transpose is unit j's column (a view).
            running_units, uniform_units, value_units = (
                running.t(), noise.reshape(-1, self.size).t(), values.t())
            for j in range(self.size):
                torch.lt(uniform_units[j], torch.sigmoid(running_units[j], out=probability),
                         out=value_units[j])
                running.addr_(value_units[j], columns[j])
            return values.reshape(base.shape)

    def extra_repr(self) -> str:
        return f"size={self.size}, context_size={self.context_size}, autoregressive={self.autoregressive}"


class SoftmaxLayer(nn.Module):
    """Multinomial visible layer of the document models (§4.3).

    Every word of a document is drawn from one softmax over the vocabulary given the latents:
    log p(x | h) = sum_w x_w log softmax(W h + b)_w, with x the word-count vector.
    The multinomial coefficient is left out, as in the perplexities of the document-model
    literature (Replicated Softmax, DocNADE, NVIL), which score the ordered word sequence.

    Shapes: W (vocab, context_size), b (vocab,).
    """

    def __init__(self, size: int, context_size: int, init_scale: float = 0.01):
        super().__init__()
        self.size = size
        self.context_size = context_size
        self.bias = nn.Parameter(torch.zeros(size))
        self.weight = nn.Parameter(torch.randn(size, context_size) * init_scale)

    def logits(self, context: Tensor, value: Tensor | None = None) -> Tensor:
        return F.linear(context, self.weight, self.bias)

    def log_prob(self, value: Tensor, context: Tensor) -> Tensor:
        return (value * torch.log_softmax(self.logits(context), -1)).sum(-1)

    def sample(self, context: Tensor, batch_shape=(), generator=None, noise=None,
               lengths: Tensor | None = None) -> Tensor:
        """Word counts for documents of the given lengths (one per row of `context`)."""
        if lengths is None:
            raise ValueError("sampling documents needs their lengths")
        probs = torch.softmax(self.logits(context), -1)
        flat_probs = probs.reshape(-1, self.size)
        flat_lengths = lengths.expand(probs.shape[:-1]).reshape(-1).long()
        max_length = int(flat_lengths.max().item()) if flat_lengths.numel() else 0
        counts = torch.zeros_like(flat_probs)
        if max_length > 0:
            words = torch.multinomial(flat_probs, max_length, replacement=True, generator=generator)
            keep = torch.arange(max_length, device=words.device) < flat_lengths.unsqueeze(-1)
            counts.scatter_add_(1, words, keep.to(counts.dtype))
        return counts.reshape(probs.shape)


def logit(p: Tensor, eps: float = 1e-3) -> Tensor:
    p = p.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)

