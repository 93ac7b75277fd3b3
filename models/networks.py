"""The generative model P(x, h) and the inference network Q(h | x) (Mnih & Gregor 2014, §2.3.3).

Latent layers are indexed bottom-up in code: `h[0]` is h^1 (next to x), `h[-1]` is h^n (the top).
The model specs write layers deepest first, as the paper's tables do ("sbn:200-200-500" has a
500-unit layer next to the data).

    P(x, h) = P(x | h^1) prod_{i=1}^{n-1} P(h^i | h^{i+1}) P(h^n)          (Eq. 10)
    Q(h | x) = Q(h^1 | x) prod_{i=1}^{n-1} Q(h^{i+1} | h^i)                 (Eq. 11)

Both return log-probabilities per layer, so that an algorithm can build the local learning signals
of Eq. 12, and both score latents they did not sample (the sleep phase and exact enumeration need
that). Both hold R runs of one architecture (models/layers.py): every tensor leads with the run
dimension. Shapes: x is (R|1, B, D); each h[i] is (R, S, B, H_i) or (R, B, H_i); every returned term
has the broadcast shape (R, S, B) or (R, B). Sampling takes explicit noise, one tensor per layer in
the order of `noise(...)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from models.layers import LogisticLayer, SoftmaxLayer, logit
from models.noise import Noise


class BeliefNet(nn.Module):
    """A directed model with binary latent layers: SBN, fDARN, and their document versions.

    `prior_autoregressive` gives the top layer's prior connections between its units (fDARN);
    `visible` is 'bernoulli' (binary images) or 'multinomial' (bags of words). `generators` holds
    one generator per run for the initial weights (its length is the number of runs R).
    `conditional_layer` builds the Bernoulli visible layer and the conditionals, called as
    LogisticLayer is (models/mlp.py's MLPLogisticLayer for the nonlinear family), or a list of one
    builder per conditional (bottom-up) where the layers differ (mixed binary and Gaussian stacks,
    models/gaussian.py); `prior_layer` builds the prior (LogisticLayer, or the N(0, I) Gaussian
    prior), `visible_layer` the Bernoulli visible layer (default: `conditional_layer`).
    """

    def __init__(self, latent_sizes: Sequence[int], num_features: int, visible: str = "bernoulli",
                 prior_autoregressive: bool = False, init_scale: float = 0.01,
                 generators: Sequence = (None,), dtype=torch.float32,
                 conditional_layer: Callable[..., nn.Module] | Sequence[Callable] = LogisticLayer,
                 prior_layer: Callable[..., nn.Module] = LogisticLayer,
                 visible_layer: Callable[..., nn.Module] | None = None):
        super().__init__()
        if visible not in ("bernoulli", "multinomial"):
            raise ValueError(f"unknown visible layer {visible!r}; valid: bernoulli, multinomial")
        self.latent_sizes = tuple(latent_sizes)  # bottom-up: latent_sizes[0] feeds x
        self.num_features = num_features
        self.visible_kind = visible
        common = {"init_scale": init_scale, "generators": generators, "dtype": dtype}
        self.prior = prior_layer(self.latent_sizes[-1], 0, autoregressive=prior_autoregressive,
                                 **common)
        # conditionals[i] is P(h^{i+1} | h^{i+2}) in the paper's 1-based names: h[i] given h[i+1].
        builders = per_layer(conditional_layer, len(self.latent_sizes) - 1)
        self.conditionals = nn.ModuleList(
            build(below, above, **common) for build, below, above in zip(
                builders, self.latent_sizes[:-1], self.latent_sizes[1:], strict=True)
        )
        if visible == "bernoulli":
            build = visible_layer or conditional_layer
            self.visible = build(num_features, self.latent_sizes[0], **common)
        else:
            self.visible = SoftmaxLayer(num_features, self.latent_sizes[0], **common)

    @property
    def num_runs(self) -> int:
        return self.prior.num_runs

    @property
    def latent_kinds(self) -> tuple[str, ...]:
        """Each latent layer's units, bottom-up: "binary" or "gaussian" (models/gaussian.py)."""
        layers = list(self.conditionals) + [self.prior]
        return tuple(getattr(layer, "kind", "binary") for layer in layers)

    def init_visible_bias(self, feature_mean: Tensor) -> None:
        """Start the visible layer at the data's marginals: logit of the mean pixel, or the log of
        each word's share of all words (a standard start that saves many early updates)."""
        mean = torch.as_tensor(feature_mean, dtype=torch.float64)
        with torch.no_grad():
            if self.visible_kind == "bernoulli":
                start = logit(mean)
            else:
                share = mean / mean.sum().clamp_min(1e-12)
                start = torch.log(share.clamp_min(1e-6))
            self.visible.bias.copy_(start.to(self.visible.bias.dtype).expand_as(self.visible.bias))

    def log_prob_terms(self, x: Tensor, h: Sequence[Tensor]) -> list[Tensor]:
        """[log P(x | h^1), log P(h^1 | h^2), ..., log P(h^n)]: index k is the term of layer k
        (k = 0 is the data), matching `InferenceNet.log_prob_terms` shifted by one."""
        terms = [self.visible.log_prob(x, h[0])]
        terms += [layer.log_prob(h[i], h[i + 1]) for i, layer in enumerate(self.conditionals)]
        terms.append(self.prior.log_prob(h[-1]))
        return terms

    def log_joint(self, x: Tensor, h: Sequence[Tensor]) -> Tensor:
        return sum(self.log_prob_terms(x, h))

    def noise(self, *batch_shape, lengths: Tensor | None = None) -> list[Noise]:
        """What `sample` needs: the prior, the conditionals top-down, the visible layer (documents:
        one uniform per word, for `lengths` (R, *batch))."""
        latent = [self.prior.noise(*batch_shape)]
        latent += [layer.noise(*batch_shape) for layer in reversed(self.conditionals)]
        if self.visible_kind == "multinomial":
            return latent + [self.visible.noise(lengths)]
        return latent + [self.visible.noise(*batch_shape)]

    def noise_like(self, x: Tensor) -> list[Noise]:
        """The noise of fantasies shaped like the minibatch x (R, B, D): one per row, and for
        documents with the length of the matching document (the sleep phase needs nothing else)."""
        return self.noise(*x.shape[1:-1], lengths=self.lengths_like(x))

    def lengths_like(self, x: Tensor) -> Tensor | None:
        return x.sum(-1) if self.visible_kind == "multinomial" else None

    @torch.no_grad()
    def sample(self, noise: Sequence[Tensor], lengths: Tensor | None = None
               ) -> tuple[Tensor, list[Tensor]]:
        """Ancestral sample (x, [h^1, ..., h^n]) from noise shaped as `noise(...)` asks."""
        h = [self.prior.sample(None, noise[0])]
        for layer, layer_noise in zip(reversed(self.conditionals), noise[1:-1], strict=True):
            h.insert(0, layer.sample(h[0], layer_noise))
        if self.visible_kind == "multinomial":
            return self.visible.sample(h[0], noise[-1], lengths), h
        return self.visible.sample(h[0], noise[-1]), h


class InferenceNet(nn.Module):
    """Q(h | x) mirroring the model layer by layer (Eq. 11), factorial or autoregressive within
    each layer (Table 2). The data is centred by the training-set mean before it enters (§4.2);
    deeper layers see the binary samples of the layer below as they are. The mean is kept in
    float64, so a float64 network is centred by the exact mean.

    An autoregressive Q starts as the factorial one: its within-layer weights U start at zero
    (the paper does not say how it initialised them). Random U of the factorial weights' scale
    (std 0.1 on MNIST) gave Q within-layer couplings as large as the data's own contribution to
    the logits, which plain SGD at the inference network's rate had not undone after 20,000
    updates: autoregressive Q then lost to factorial Q on every Table 2 model (results/README.md).
    `conditional_layer` builds every layer, called as LogisticLayer is, or is a list of one builder
    per layer (BeliefNet)."""

    def __init__(self, num_features: int, latent_sizes: Sequence[int], autoregressive: bool = False,
                 input_mean: Tensor | None = None, init_scale: float = 0.01,
                 generators: Sequence = (None,), dtype=torch.float32,
                 conditional_layer: Callable[..., nn.Module] | Sequence[Callable] = LogisticLayer):
        super().__init__()
        self.latent_sizes = tuple(latent_sizes)  # bottom-up, as in BeliefNet
        self.num_features = num_features
        self.autoregressive = autoregressive
        contexts = (num_features,) + self.latent_sizes[:-1]
        self.layers = nn.ModuleList(
            build(size, context, autoregressive=autoregressive, init_scale=init_scale,
                  autoregressive_init_scale=0.0, generators=generators, dtype=dtype)
            for build, size, context in zip(per_layer(conditional_layer, len(self.latent_sizes)),
                                            self.latent_sizes, contexts, strict=True)
        )
        mean = (torch.zeros(num_features, dtype=torch.float64) if input_mean is None
                else torch.as_tensor(input_mean, dtype=torch.float64))
        self.register_buffer("input_mean", mean.clone().expand(len(generators), -1).clone())

    def _apply(self, fn, recurse=True):
        # The centring mean stays float64 whatever dtype the network is moved to (only its device
        # follows): a float64 network must not be centred by a float32-rounded mean.
        mean = self.input_mean
        result = super()._apply(fn, recurse)
        self.input_mean = mean.to(self.input_mean.device)
        return result

    @property
    def num_runs(self) -> int:
        return self.layers[0].num_runs

    @property
    def latent_kinds(self) -> tuple[str, ...]:
        return tuple(getattr(layer, "kind", "binary") for layer in self.layers)

    def centre(self, x: Tensor) -> Tensor:
        """x - mean, (R, *batch, D) for x (R|1, *batch, D).

        The last result is kept for the same x (the same tensor, unchanged since): Q's first
        layer and an estimator's baseline both centre the minibatch in one update, and for 16
        runs of MNIST each pass is a (16, 20, 784) subtraction."""
        if torch.compiler.is_compiling() or x.requires_grad:
            return x - align_mean(self._mean_as(x.dtype), x.dim())
        mean = self._mean_as(x.dtype)
        kept = getattr(self, "_centred", None)
        if kept is not None and kept[0] is x and kept[1] == x._version and kept[2] is mean:
            return kept[3]
        centred = x - align_mean(mean, x.dim())
        self._centred = (x, x._version, mean, centred)
        return centred

    def _mean_as(self, dtype) -> Tensor:
        # The float64 mean cast once per dtype (and again only if it changes, e.g. on loading a
        # checkpoint): centring runs several times per update.
        if torch.compiler.is_compiling():  # a compiled graph casts it once itself
            return self.input_mean.to(dtype)
        key = (dtype, self.input_mean.device, self.input_mean._version, id(self.input_mean))
        if getattr(self, "_cast_mean_key", None) != key:
            self._cast_mean = self.input_mean.to(dtype)
            self._cast_mean_key = key
        return self._cast_mean

    def noise(self, *batch_shape) -> list[Noise]:
        """What `sample` needs for latents of batch shape (B,) or (S, B): one uniform per unit."""
        return [layer.noise(*batch_shape) for layer in self.layers]

    def sample(self, x: Tensor, noise: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Draw h ~ Q(h | x) from the noise and return (h, [log Q(h^1|x), log Q(h^2|h^1), ...]).

        With noise of batch shape (S, B) the latents get a sample dimension: (R, S, B, H_i).
        The samples carry no gradient; the log-probabilities do (for score-function estimators).
        """
        # The data is the same for every sample: the first layer's logits are computed once per
        # example and broadcast over the samples.
        return self._ancestral(x, noise, "sample_with_log_prob")

    def _ancestral(self, x: Tensor, noise: Sequence[Tensor], draw: str):
        """Layer by layer from x, each layer's `draw` method given the value below."""
        context = self.centre(x)
        h, log_q = [], []
        for layer, layer_noise in zip(self.layers, noise, strict=True):
            value, log_prob = getattr(layer, draw)(context, layer_noise)
            h.append(value)
            log_q.append(log_prob)
            context = value
        return h, log_q

    def rsample(self, x: Tensor, noise: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Reparameterised h ~ Q(h | x) for Gaussian layers: h[j] = mu + sigma eps carries the
        gradient of φ (and of the layers below), and so does each log Q term, through h and φ.
        Every layer must be Gaussian."""
        if any(kind != "gaussian" for kind in self.latent_kinds):
            raise ValueError("reparameterised sampling needs Gaussian latent layers only")
        return self._ancestral(x, noise, "rsample_with_log_prob")

    def log_prob_terms(self, x: Tensor, h: Sequence[Tensor]) -> list[Tensor]:
        """[log Q(h^1 | x), log Q(h^2 | h^1), ...] for given latents."""
        contexts = [self.centre(x)] + list(h[:-1])
        return [layer.log_prob(value, context)
                for layer, value, context in zip(self.layers, h, contexts, strict=True)]

    def log_prob(self, x: Tensor, h: Sequence[Tensor]) -> Tensor:
        return sum(self.log_prob_terms(x, h))


def per_layer(builder, count: int) -> list:
    """One layer builder per layer: `builder` itself for each, or its items if it is a list."""
    if isinstance(builder, (list, tuple)):
        if len(builder) != count:
            raise ValueError(f"{len(builder)} layer builders for {count} layers")
        return list(builder)
    return [builder] * count


def align_mean(mean: Tensor, ndim: int) -> Tensor:
    """(R, D) -> (R, 1, ..., D) with `ndim` dimensions."""
    return mean.reshape(mean.shape[0], *([1] * (ndim - 2)), mean.shape[-1])
