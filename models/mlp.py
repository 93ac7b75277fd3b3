"""Binary units whose logits are an MLP of the context: the conditionals of the "nonlinear" SBN
benchmarked by REBAR, ARM and DisARM (one stochastic layer of 200 binary units; P(x | h) and
Q(h | x) each an MLP with two deterministic hidden layers of 200 units).

    f^0 = c,   f^l = act(W_l f^{l-1} + b_l)  (l = 1..L, L = 2 by default)
    a   = W_out f^L + b_out                            (factorial)
    a_j = W_out_j f^L + b_out_j + sum_{k<j} U_jk h_k  (autoregressive within the layer)
    p(v | c) = prod_j Bernoulli(v_j; sigmoid(a_j))

Only v is random: the deterministic units f^l are functions of the context, so exact enumeration
(models/exact.py, bench/check.py) still enumerates the binary latents only.

How it is built. The layer is a deterministic trunk (c -> f^L) feeding an ordinary LogisticLayer
head (f^L -> v), to which every method delegates with the trunk's features as the head's context:
log_prob, sample, sample_with_log_prob (one trunk pass per example, broadcast over samples),
logits, context_logits, the closed-form backward (its context gradient flows into the trunk), the
in-layer autoregressive sampler, the outcome records of exact enumeration (models/noise.py), and
the broadcasting rules: x (R, B, D) scored against latents (R, S, B, C) runs the visible trunk on
the (R, S, B) latents and the head projects x once per example. As for LogisticLayer, log_prob
and sample_with_log_prob are not twice differentiable (the head's closed-form score); the logits
are (`context_logits`, `logits`: the trunk's `linear` products have a backward of plain torch
ops), so an estimator needing create_graph=True scores `context_logits(c)` with
models.layers.bernoulli_log_prob. The head's weight is deliberately not exposed as `.weight`: an
estimator that multiplied the context by `layer.weight` itself would get wrong logits silently.

Shapes, stored transposed per run as in models/layers.py: hidden_weights[l] (R, F_{l-1}, F_l) =
W_l^T with F_0 = C (context) and F_l = hidden[l-1]; hidden_biases[l] (R, F_l); output.weight
(R, F_L, H); output.bias (R, H) (also `.bias`, so BeliefNet.init_visible_bias starts a visible
MLP at the data's marginals); output.autoregressive_weight (R, H, H). context (R|1, *batch, C) ->
features (R, *batch, F_L) -> logits (R, *batch, H); log_prob -> (R, *batch).

Reading of the papers and their code (the papers give the sizes; the code gives the rest):

- ARM (Yin & Zhou 2019, arXiv 1807.11143; github mingzhang-yin/ARM-gradient,
  nonlinear/b_mnist_arm.py): encoder and decoder are `slim.stack(..., [200, 200])` of leaky
  ReLUs with slope 0.2 (lrelu(x) = relu(x) - 0.2 relu(-x)) followed by a linear dense layer to the
  logits; TF's defaults initialise every weight Glorot-uniform and every bias at zero; the prior
  is a fixed Bernoulli(1/2) (logits 0, not trained); the encoder sees the binarised x uncentred.
- DisARM (Dong, Mnih & Tucker 2020, arXiv 2006.10680; github google-research/google-research,
  disarm/binary/experiment_launcher_singlelayer.py, networks.py): encoder_type "nonlinear" is
  hidden sizes [200, 200, 200] with activations [LeakyReLU(alpha=0.3), LeakyReLU(alpha=0.3),
  linear] for the encoder and [200, 200, 784] likewise for the decoder; Keras Dense defaults:
  Glorot-uniform kernels, zero biases; the decoder's last bias optionally the logit of the
  training mean (flag initialize_with_bias); the prior logits a trainable zero vector (its own
  SGD optimizer, rate 1e-2); input centring behind a flag (demean_input, off by default).
- REBAR (Tucker et al. 2017; github tensorflow/models, research/rebar/rebar.py,
  `_create_transformation`): "nonlinear" is 2 tanh layers of n_hidden = 200 then a linear layer,
  variance-scaling initial weights, binary inputs mapped to ±1, the data centred, and the visible
  logits offset by the logit of the training mean.

Ambiguities and how they are resolved here:

1. Activation. The suite's issue asks for "two deterministic tanh layers of 200, as in the ARM
   and DisARM papers", but the authors' code of ARM uses leaky ReLU (slope 0.2) and DisARM's uses
   leaky ReLU (slope 0.3); tanh is REBAR's. So the activation is an option of the model family
   (models/specs.py): "tanh" (the default, as the issue asks; REBAR's), "lrelu0.2" (ARM's code),
   "lrelu0.3" (DisARM's code), or any "lrelu<slope>".
2. Initial weights: Glorot-uniform, U(±sqrt(6 / (fan_in + fan_out))), for every weight matrix of
   trunk and head, zero biases: the scheme of both ARM's and DisARM's code. The model spec's
   `init_scale` is not used for them (it still sets the scale of within-layer weights U where
   those are drawn at all; the inference network starts U at zero). Each run's matrices are
   drawn from that run's own generator in a fixed order, trunk bottom-up then the head, each
   (fan_out, fan_in) in the usual layout, so a run's initial parameters do not depend on the
   runs it is stacked with.
3. Visible bias: BeliefNet.init_visible_bias starts b_out of P(x | h) at the logit of the training
   mean (DisARM's initialize_with_bias, REBAR's offset), as for every family of the suite.
4. Prior: the factorial LogisticLayer of the suite, trainable, starting at logits 0 (DisARM;
   ARM keeps it fixed). It trains in the "model" group at the model's rate, not with DisARM's
   separate optimizer.
5. Q's input: centred by the training mean (InferenceNet, as in NVIL §4.2; REBAR centres, ARM
   does not, DisARM has a flag). Latent inputs enter as {0, 1} as in ARM and DisARM; REBAR's
   ±1 inputs are an affine reparametrisation of the first layer (W(2h - 1) + b = 2W h + b - W1)
   that changes only the initial distribution.
6. Depth: the papers' nonlinear model has one stochastic layer. The family allows several, each
   conditional (and each layer of Q) the same kind of MLP, as REBAR's code does for n_layer > 1.
7. Autoregressive Q (the suite's Table 2 option) adds U h_{<j} to the MLP logits, with U starting
   at zero; no paper here uses it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.layers import LogisticLayer, linear, stacked_normal

DEFAULT_HIDDEN = (200, 200)
DEFAULT_ACTIVATION = "tanh"
# tanh, or a leaky ReLU with its negative slope: lrelu0.2 is ARM's code's, lrelu0.3 DisARM's.
_LEAKY = re.compile(r"lrelu(\d+(?:\.\d*)?|\.\d+)")
ACTIVATION_FORMS = "tanh, lrelu<slope> (e.g. lrelu0.2 as in ARM's code, lrelu0.3 as in DisARM's)"


def parse_activation(name: str) -> tuple[str, float]:
    """("tanh", 0.0) or ("lrelu", slope); a ValueError naming the valid forms otherwise."""
    if name == "tanh":
        return "tanh", 0.0
    match = _LEAKY.fullmatch(name)
    if match:
        return "lrelu", float(match.group(1))
    raise ValueError(f"unknown activation {name!r}; valid: {ACTIVATION_FORMS}")


def glorot_uniform(generators: Sequence, fan_out: int, fan_in: int, dtype) -> Tensor:
    """(R, fan_in, fan_out): each run's (fan_out, fan_in) matrix drawn from its own generator,
    uniform within ±sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010; TF's default), stored
    transposed."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return torch.stack([
        torch.empty(fan_out, fan_in, dtype=dtype).uniform_(-bound, bound, generator=g)
        for g in generators]).transpose(1, 2).contiguous()


class MLPLogisticLayer(nn.Module):
    """Binary units with an MLP conditional: a = W_out act(... act(W_1 c + b_1) ...) + b_out
    (module docstring). The interface is LogisticLayer's; `hidden` gives the deterministic
    layers' sizes (bottom-up, at least one) and `activation` their nonlinearity."""

    def __init__(self, size: int, context_size: int, autoregressive: bool = False,
                 init_scale: float = 0.01, autoregressive_init_scale: float | None = None,
                 generators: Sequence = (None,), dtype=torch.float32,
                 hidden: Sequence[int] = DEFAULT_HIDDEN, activation: str = DEFAULT_ACTIVATION):
        super().__init__()
        if context_size < 1:
            raise ValueError("an MLP layer needs a context; a prior is a LogisticLayer")
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"an MLP layer needs at least one hidden layer of positive size, "
                             f"got {hidden}")
        self.activation_kind, self.negative_slope = parse_activation(activation)
        self.activation = activation
        self.size = size
        self.context_size = context_size
        self.hidden = hidden
        self.autoregressive = autoregressive
        runs = len(generators)
        fans = (context_size,) + hidden
        self.hidden_weights = nn.ParameterList(
            nn.Parameter(glorot_uniform(generators, fan_out, fan_in, dtype))
            for fan_in, fan_out in zip(fans[:-1], fans[1:], strict=True))
        self.hidden_biases = nn.ParameterList(
            nn.Parameter(torch.zeros(runs, fan_out, dtype=dtype)) for fan_out in hidden)
        # The head draws its own initial weights from scratch generators (its N(0, s^2) scheme
        # is not the papers'); they are replaced at once by draws from the runs' generators, so
        # that the runs' streams see only this layer's scheme.
        scratch = [torch.Generator().manual_seed(0) for _ in range(runs)]
        self.output = LogisticLayer(size, hidden[-1], autoregressive=autoregressive,
                                    init_scale=1.0, autoregressive_init_scale=0.0,
                                    generators=scratch, dtype=dtype)
        with torch.no_grad():
            self.output.weight.copy_(glorot_uniform(generators, size, hidden[-1], dtype))
            self.output.bias.zero_()
            scale = init_scale if autoregressive_init_scale is None else autoregressive_init_scale
            if autoregressive and scale:
                self.output.autoregressive_weight.copy_(
                    stacked_normal(generators, (size, size), scale, dtype).transpose(1, 2))

    @property
    def num_runs(self) -> int:
        return self.output.num_runs

    @property
    def bias(self) -> nn.Parameter:
        """b_out, (R, H): the head's bias (a visible MLP starts it at the data's marginals)."""
        return self.output.bias

    def noise(self, *batch_shape):
        return self.output.noise(*batch_shape)

    def _act(self, pre: Tensor) -> Tensor:
        if self.activation_kind == "tanh":
            return torch.tanh(pre)
        return F.leaky_relu(pre, self.negative_slope)

    def features(self, context: Tensor) -> Tensor:
        """f^L = act(W_L ... act(W_1 c + b_1) ... + b_L), (R, *batch, F_L) for a context
        (R|1, *batch, C): the head's context."""
        if context is None:
            raise ValueError("an MLP layer needs a context")
        out = context
        for weight, bias in zip(self.hidden_weights, self.hidden_biases, strict=True):
            out = self._act(linear(out, weight, bias))
        return out

    def context_logits(self, context: Tensor, ndim: int = 2) -> Tensor:
        """W_out f^L(c) + b_out, (R, *batch, H)."""
        return self.output.context_logits(self.features(context), ndim)

    def masked_autoregressive_weight(self) -> Tensor:
        return self.output.masked_autoregressive_weight()

    def logits(self, context: Tensor, value: Tensor) -> Tensor:
        return self.output.logits(self.features(context), value)

    def log_prob(self, value: Tensor, context: Tensor) -> Tensor:
        return self.output.log_prob(value, self.features(context))

    def sample(self, context: Tensor, noise: Tensor) -> Tensor:
        """v = [u < sigmoid(a)] for the uniform noise u (R, *batch, H); no gradient."""
        with torch.no_grad():
            return self.output.sample(self.features(context), noise)

    def sample_with_log_prob(self, context: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """A sample (no gradient) and its log-probability (with gradient), from one trunk pass per
        example: a context (R, B, C) with noise (R, S, B, H) is run through the MLP once and its
        features broadcast over the S samples by the head."""
        return self.output.sample_with_log_prob(self.features(context), noise)

    def extra_repr(self) -> str:
        return (f"runs={self.num_runs}, size={self.size}, context_size={self.context_size}, "
                f"hidden={self.hidden}, activation={self.activation}, "
                f"autoregressive={self.autoregressive}")
