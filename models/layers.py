"""Stochastic layers for R independent runs at once: conditional distributions of one layer given
the layer that feeds it, with every parameter stacked along a leading run dimension.

Runs are a tensor dimension. A layer holds the parameters of R runs of one architecture as
stacked tensors, and every tensor it takes or returns leads with the run dimension: R, or 1 for a
tensor shared by every run (the data, when all runs score the same examples). A lone run is R = 1.

    log_prob(value, context)   -> (R, *batch)        log-density of `value`, summed over units
    sample(context, noise)     -> (R, *batch, size)  a sample made from explicit noise
    logits(context, value)     -> (R, *batch, size)  natural parameters (for estimators that need them)
    noise(*batch)              -> the `Noise` that `sample` needs for that batch shape

`context` is the layer above in the generative model or the layer below in the inference network,
None for a prior. Batch dimensions after the run dimension are right-aligned and broadcast: a
context of shape (R, S, B, C) with S samples of B examples works against a value of shape (R, B, H).

Noise is explicit (models/noise.py): a Bernoulli unit is h = [u < sigmoid(a)] for a uniform u that
the caller drew, so the harness controls every random number (one stream per run, antithetic pairs,
exact enumeration).

Weights are stored transposed, (R, C, H) for a layer of H units fed by C: batched products with the
context on the left run markedly faster from this layout on CPUs (up to 5x for the 100-unit
baseline layer in a micro-benchmark). Each run's initial values are drawn from that run's own
generator, as an (H, C) matrix in the usual layout, so a run's initial parameters do not depend on
which runs it is stacked with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import noise as noise_module
from models.noise import Noise


def bernoulli_log_prob(logits: Tensor, value: Tensor) -> Tensor:
    """sum_j [v_j a_j - softplus(a_j)] = sum_j log Bernoulli(v_j; sigmoid(a_j)), stable for any a.

    The two sums are taken separately so that logits shared by many values (a prior's bias, or
    (R, B, H) logits scoring (R, S, B, H) samples) can be passed unexpanded: their softplus is
    then computed once, not once per sample."""
    return (value * logits).sum(-1) - F.softplus(logits).sum(-1)


def align(tensor: Tensor, ndim: int) -> Tensor:
    """Insert singleton dimensions after the run dimension up to `ndim` dimensions, so that batch
    dimensions broadcast right-aligned while the run dimension stays first."""
    missing = ndim - tensor.dim()
    if missing <= 0:
        return tensor
    return tensor.reshape(tensor.shape[0], *([1] * missing), *tensor.shape[1:])


def linear(context: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """context (R|1, *batch, C) times weight (R, C, H) plus bias (R, H) -> (R, *batch, H): one
    batched product over the runs."""
    runs = weight.shape[0]
    flat = context.reshape(context.shape[0], -1, context.shape[-1])
    if flat.shape[0] == runs and bias is not None:
        if torch.is_grad_enabled() and (weight.requires_grad or bias.requires_grad):
            out = _Affine.apply(flat, weight, bias)
        else:
            out = torch.baddbmm(bias.unsqueeze(1), flat, weight)
    else:
        out = torch.matmul(flat, weight)
        if bias is not None:
            out = out + bias.unsqueeze(1)
    return out.reshape(runs, *context.shape[1:-1], weight.shape[-1])


# -- SGD steps taken in the backward pass ------------------------------------------------------
#
# The closed-form backwards below know each weight's gradient as one batched product,
# context^T delta. Plain SGD then needs neither the gradient tensor nor a second pass reading it
# back: within `sgd_in_backward`, a registered parameter's gradient is not returned but queued as
# p <- p + rate_r (context^T delta), one in-place batched product, and the queue is applied
# when the block ends (after the backward pass, so that no node sees a parameter change under
# it). A parameter reached by other nodes still gets their gradient in `.grad` as usual.

_SGD_RATES: dict[int, tuple[Tensor, Tensor]] | None = None  # id(p) -> (p, -lr per run)
_SGD_QUEUE: list[tuple[Tensor, Tensor | None, Tensor]] = []


@contextlib.contextmanager
def sgd_in_backward(negative_rates: dict[Tensor, Tensor]):
    """Within the block, closed-form backwards step the given parameters (each with its
    (R, 1, ..., 1) negative learning rates) instead of returning their gradients. Nothing is
    applied if the block raises."""
    global _SGD_RATES
    if _SGD_RATES is not None:
        raise RuntimeError("sgd_in_backward blocks do not nest")
    _SGD_RATES = {id(p): (p, rate) for p, rate in negative_rates.items()}
    _SGD_QUEUE.clear()
    try:
        yield
        with torch.no_grad():
            for parameter, context, delta in _SGD_QUEUE:
                if context is None:          # a bias: sum over the batch
                    parameter.add_(delta.sum(1))
                else:
                    parameter.baddbmm_(context.transpose(1, 2), delta)
    finally:
        _SGD_RATES = None
        _SGD_QUEUE.clear()


def _weight_and_bias_grads(ctx, context: Tensor, weight: Tensor, bias: Tensor, delta: Tensor,
                           first: int) -> tuple[Tensor | None, Tensor | None]:
    """The gradients of weight (R, C, H) and bias (R, H) for d loss / d logits = delta (R, N, H),
    or None for what is queued as an SGD step (see sgd_in_backward). `first` is the position of
    the weight among the Function's inputs (the bias follows it)."""
    grads = []
    for parameter, position, product in ((weight, first, True), (bias, first + 1, False)):
        if not ctx.needs_input_grad[position]:
            grads.append(None)
            continue
        step = _SGD_RATES.get(id(parameter)) if _SGD_RATES is not None else None
        if step is not None and step[0] is parameter and not torch.is_grad_enabled():
            rate = step[1].view(-1, 1, 1)
            _SGD_QUEUE.append((parameter, context if product else None, delta * rate))
            grads.append(None)
        elif product:
            grads.append(torch.bmm(context.transpose(1, 2), delta))
        else:
            grads.append(delta.sum(1))
    return grads[0], grads[1]


class _Affine(torch.autograd.Function):
    """context (R, N, C) W (R, C, H) + b (R, H) with its closed-form backward (which may take an
    SGD step, see sgd_in_backward); otherwise the same as torch.baddbmm."""

    @staticmethod
    def forward(ctx, context, weight, bias):
        ctx.save_for_backward(context, weight, bias)
        return torch.baddbmm(bias.unsqueeze(1), context, weight)

    @staticmethod
    def backward(ctx, grad):
        context, weight, bias = ctx.saved_tensors
        grad_context = (torch.bmm(grad, weight.transpose(1, 2)) if ctx.needs_input_grad[0]
                        else None)
        grad_weight, grad_bias = _weight_and_bias_grads(ctx, context, weight, bias, grad, 1)
        return grad_context, grad_weight, grad_bias


class _LogisticLogProb(torch.autograd.Function):
    """log p(v | c) = sum_j [v_j a_j - softplus(a_j)] with a = c W^T + b, for every run, with its
    closed-form backward. For a linear-logistic layer the gradient of any weighted sum
    sum_i g_i log p(v_i | c_i) is local: d/da = g (v - sigmoid(a)), the score, so

        grad W^T = c^T (g score)   (one batched product)     grad b = sum_i g_i score_i
        grad c   = (g score) W     (only if c needs it)      grad v = g a   (only if v needs it)

    One node instead of the half-dozen of the plain expression, and the sigmoid is computed once,
    in the forward pass. Every estimator whose surrogate has this form (score-function, wake,
    sleep and reweighted losses) gets it from the layer. With `sample`, the value is drawn in the
    same pass as [u < sigmoid(a)] from the uniforms u (it carries no gradient). Under
    `sgd_in_backward` the weight's and bias's gradients become SGD steps.

    Shapes: context (R, N, C), weight (R, C, H), bias (R, H), value or noise (R, N, H) -> (R, N)."""

    @staticmethod
    def forward(ctx, context, weight, bias, value_or_noise, sample: bool):
        logits = torch.baddbmm(bias.unsqueeze(1), context, weight)
        probability = torch.sigmoid(logits)
        value = ((value_or_noise < probability).to(logits.dtype) if sample
                 else value_or_noise)
        log_prob = (value * logits).sum(-1) - F.softplus(logits).sum(-1)
        ctx.save_for_backward(context, weight, bias, value - probability,
                              logits if not sample and ctx.needs_input_grad[3] else None)
        if sample:
            ctx.mark_non_differentiable(value)
            return value, log_prob
        return log_prob

    @staticmethod
    def backward(ctx, *grads):
        context, weight, bias, score, logits = ctx.saved_tensors
        grad = grads[-1].unsqueeze(-1)                     # d loss / d log_prob, (R, N, 1)
        delta = score * grad
        grad_context = torch.bmm(delta, weight.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_weight, grad_bias = _weight_and_bias_grads(ctx, context, weight, bias, delta, 1)
        grad_value = logits * grad if logits is not None else None
        return grad_context, grad_weight, grad_bias, grad_value, None


@contextlib.contextmanager
def parameters_frozen(module: nn.Module):
    """No parameter of `module` needs a gradient inside the block: a caller differentiating with
    respect to latents only (MCMC kernels) then makes the closed-form backwards skip the weights."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def stacked_normal(generators: Sequence, shape: tuple, scale: float, dtype) -> Tensor:
    """One (shape) draw of N(0, scale^2) per run, each from that run's generator, stacked (R, ...).
    Runs without generators (the bias check's thousands of copies, overwritten at once) draw in
    one call from the global generator."""
    if all(g is None for g in generators):
        return torch.randn((len(generators), *shape), dtype=dtype) * scale
    return torch.stack([torch.randn(shape, generator=g, dtype=dtype) * scale for g in generators])


def _transposed_normal(generators, rows: int, columns: int, scale: float, dtype) -> Tensor:
    """(R, columns, rows): each run's (rows, columns) matrix drawn in the usual layout, stored
    transposed."""
    return stacked_normal(generators, (rows, columns), scale, dtype).transpose(1, 2).contiguous()


class LogisticLayer(nn.Module):
    """Binary units with linear-logistic conditionals (Eq. 10 and 11 of Mnih & Gregor 2014).

    a = W context + b                               (factorial within the layer)
    a_j = W_j context + b_j + sum_{k<j} U_jk h_k    (autoregressive within the layer, fDARN / Table 2)
    p(h | context) = prod_j Bernoulli(h_j; sigmoid(a_j))

    Stored per run, transposed: weight (R, C, H) = W^T, bias (R, H), autoregressive_weight
    (R, H, H) with [k, j] = U_jk, used strictly upper triangular (k < j).
    """

    def __init__(self, size: int, context_size: int = 0, autoregressive: bool = False,
                 init_scale: float = 0.01, autoregressive_init_scale: float | None = None,
                 generators: Sequence = (None,), dtype=torch.float32):
        super().__init__()
        runs = len(generators)
        self.size = size
        self.context_size = context_size
        self.autoregressive = autoregressive
        self.bias = nn.Parameter(torch.zeros(runs, size, dtype=dtype))
        self.weight = (nn.Parameter(_transposed_normal(generators, size, context_size, init_scale,
                                                       dtype))
                       if context_size else None)
        if autoregressive:
            # U's own scale (default: init_scale); 0 starts the layer as the factorial one and
            # draws no random numbers for U.
            scale = init_scale if autoregressive_init_scale is None else autoregressive_init_scale
            self.autoregressive_weight = nn.Parameter(
                _transposed_normal(generators, size, size, scale, dtype) if scale
                else torch.zeros(runs, size, size, dtype=dtype))
            # Unit j sees only units before it: [k, j] is kept for k < j.
            self.register_buffer("autoregressive_mask",
                                 torch.triu(torch.ones(size, size, dtype=dtype), 1),
                                 persistent=False)
        else:
            self.autoregressive_weight = None

    @property
    def num_runs(self) -> int:
        return self.bias.shape[0]

    def noise(self, *batch_shape) -> Noise:
        return noise_module.uniform(*batch_shape, self.size)

    def context_logits(self, context: Tensor | None, ndim: int = 2) -> Tensor:
        """W context + b, (R, *batch, H); a prior's bias comes unexpanded as (R, 1, ..., H) with
        `ndim` dimensions."""
        if context is None:
            return align(self.bias, ndim)
        return linear(context, self.weight, self.bias)

    def masked_autoregressive_weight(self) -> Tensor:
        return self.autoregressive_weight * self.autoregressive_mask

    def logits(self, context: Tensor | None, value: Tensor) -> Tensor:
        """Logits of every unit given the context and, for autoregressive layers, the units before it."""
        logits = align(self.context_logits(context, value.dim()), value.dim())
        if self.autoregressive:
            logits = logits + linear(value, self.masked_autoregressive_weight(), None)
        return logits

    def _closed_form(self, context: Tensor | None, other: Tensor) -> bool:
        """Whether `_LogisticLogProb` applies: a factorial layer with a context of the same
        batch shape as the value (or noise), every run's own."""
        return (not self.autoregressive and context is not None
                and context.shape[:-1] == other.shape[:-1] and context.shape[0] == self.num_runs)

    def log_prob(self, value: Tensor, context: Tensor | None = None) -> Tensor:
        if self._closed_form(context, value):
            runs = self.num_runs
            flat = _LogisticLogProb.apply(context.reshape(runs, -1, self.context_size),
                                          self.weight, self.bias,
                                          value.reshape(runs, -1, self.size), False)
            return flat.reshape(value.shape[:-1])
        if self.autoregressive:
            return bernoulli_log_prob(self.logits(context, value), value)
        if context is None or value.dim() >= context.dim():
            logits = self.context_logits(context, value.dim())
            ndim = max(logits.dim(), value.dim())
            return bernoulli_log_prob(align(logits, ndim), align(value, ndim))
        # A value shared by many contexts (the data x (R, B, D) scored under latent samples
        # (R, S, B, C)): sum_j v_j a_j = c . (W^T v) + b . v projects v once per example, so only
        # the softplus pass runs over the (R, S, B, size) logits.
        logits = self.context_logits(context)
        projected = linear(value, self.weight.transpose(1, 2), None)   # (R, *vbatch, C)
        linear_term = (context * align(projected, context.dim())).sum(-1)
        bias_term = align((value * align(self.bias, value.dim())).sum(-1), context.dim() - 1)
        return linear_term + bias_term - F.softplus(logits).sum(-1)

    def sample(self, context: Tensor | None, noise: Tensor) -> Tensor:
        """h = [u < sigmoid(a)] for the uniform noise u (R, *batch, H); no gradient."""
        return self._sample_from(self.context_logits(context, noise.dim()), noise)

    def sample_with_log_prob(self, context: Tensor | None, noise: Tensor) -> tuple[Tensor, Tensor]:
        """A sample (no gradient) and its log-probability (with gradient) from ONE evaluation of
        the context's logits: the inference network's hot path, which would otherwise compute its
        largest matrix product twice. A context of shape (R, B, C) with noise (R, S, B, H) is
        multiplied once and broadcast over the S samples."""
        if self._closed_form(context, noise):
            runs = self.num_runs
            value, log_prob = _LogisticLogProb.apply(
                context.reshape(runs, -1, self.context_size), self.weight, self.bias,
                noise.reshape(runs, -1, self.size), True)
            if noise_module.recording():
                noise_module.record_outcome(log_prob.detach())
            return value.reshape(noise.shape), log_prob.reshape(noise.shape[:-1])
        base = self.context_logits(context, noise.dim())
        value = self._sample_from(base.detach(), noise)
        logits = align(base, value.dim())
        if self.autoregressive:
            logits = logits + linear(value, self.masked_autoregressive_weight(), None)
        return value, bernoulli_log_prob(logits, value)

    @torch.no_grad()
    def _sample_from(self, base: Tensor, noise: Tensor) -> Tensor:
        base = align(base, noise.dim())
        if base.shape != noise.shape:
            base = base.expand(noise.shape)
        if not self.autoregressive:
            value = (noise < torch.sigmoid(base)).to(base.dtype)
            if noise_module.recording():
                noise_module.record_outcome(bernoulli_log_prob(base, value))
            return value
        # Ancestral sampling within the layer: unit j's logit collects U_jk h_k for k < j as
        # the units are drawn: after drawing unit k, the logits get h_k times row k of the stored
        # U^T (zero for the units up to k), added in place. The loop runs once per unit, so each
        # step is kept to three operations writing into preallocated tensors (the sleep phase of
        # wake-sleep on fDARN spends most of its update here).
        runs = base.shape[0]
        rows = self.masked_autoregressive_weight()                  # (R, H, H): row k = h_k's effect
        running = base.reshape(runs, -1, self.size).clone()          # (R, N, H)
        values = torch.empty_like(running)
        probability = running.new_empty(running.shape[:2])
        uniforms = noise.reshape(runs, -1, self.size)
        for k in range(self.size):
            torch.lt(uniforms[..., k], torch.sigmoid(running[..., k], out=probability),
                     out=values[..., k])
            running.addcmul_(values[..., k:k + 1], rows[:, k:k + 1, :])
        if noise_module.recording():
            noise_module.record_outcome(bernoulli_log_prob(running, values))
        return values.reshape(noise.shape)

    def extra_repr(self) -> str:
        return (f"runs={self.num_runs}, size={self.size}, context_size={self.context_size}, "
                f"autoregressive={self.autoregressive}")


class SoftmaxLayer(nn.Module):
    """Multinomial visible layer of the document models (§4.3).

    Every word of a document is drawn from one softmax over the vocabulary given the latents:
    log p(x | h) = sum_w x_w log softmax(W h + b)_w, with x the word-count vector.
    The multinomial coefficient is left out, as in the perplexities of the document-model
    literature (Replicated Softmax, DocNADE, NVIL), which score the ordered word sequence.

    Stored per run, transposed: weight (R, C, V) = W^T, bias (R, V).
    """

    def __init__(self, size: int, context_size: int, init_scale: float = 0.01,
                 generators: Sequence = (None,), dtype=torch.float32):
        super().__init__()
        self.size = size
        self.context_size = context_size
        self.bias = nn.Parameter(torch.zeros(len(generators), size, dtype=dtype))
        self.weight = nn.Parameter(_transposed_normal(generators, size, context_size, init_scale,
                                                      dtype))

    def logits(self, context: Tensor, value: Tensor | None = None) -> Tensor:
        return linear(context, self.weight, self.bias)

    def log_prob(self, value: Tensor, context: Tensor) -> Tensor:
        log_probs = torch.log_softmax(self.logits(context), -1)
        ndim = max(log_probs.dim(), value.dim())
        return (align(value, ndim) * align(log_probs, ndim)).sum(-1)

    def noise(self, lengths: Tensor) -> Noise:
        """One uniform per word: lengths (R, *batch); each run draws for its longest document."""
        if lengths is None:
            raise ValueError("sampling documents needs their lengths")
        longest = lengths.reshape(lengths.shape[0], -1).amax(-1).long().tolist()
        return Noise("uniform", [(*lengths.shape[1:], n) for n in longest])

    @torch.no_grad()
    def sample(self, context: Tensor, noise: Tensor, lengths: Tensor) -> Tensor:
        """Word counts (R, *batch, V) for documents of the given lengths (R, *batch): word n of a
        document is the inverse CDF of the softmax at the uniform noise[..., n]."""
        if lengths is None:
            raise ValueError("sampling documents needs their lengths")
        cumulative = torch.softmax(self.logits(context), -1).cumsum(-1)
        words = torch.searchsorted(cumulative.contiguous(), noise.contiguous()).clamp_(max=self.size - 1)
        keep = torch.arange(noise.shape[-1], device=noise.device) < lengths.unsqueeze(-1)
        counts = torch.zeros_like(cumulative)
        return counts.scatter_add_(-1, words, keep.to(counts.dtype))


def logit(p: Tensor, eps: float = 1e-3) -> Tensor:
    p = p.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


def uniform_linear_init(generator, fan_in: int, fan_out: int, dtype) -> tuple[Tensor, Tensor]:
    """(fan_out, fan_in) weights and (fan_out,) biases uniform within ±1/sqrt(fan_in), drawn from
    `generator` in torch.nn.Linear's order (weight, then bias), as torch.nn.Linear initialises."""
    bound = 1.0 / fan_in ** 0.5
    weight = torch.empty(fan_out, fan_in, dtype=dtype).uniform_(-bound, bound, generator=generator)
    bias = torch.empty(fan_out, dtype=dtype).uniform_(-bound, bound, generator=generator)
    return weight, bias
