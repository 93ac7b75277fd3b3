"""The generative model P(x, h) and the inference network Q(h | x) (Mnih & Gregor 2014, §2.3.3).

Latent layers are indexed bottom-up in code: `h[0]` is h^1 (next to x), `h[-1]` is h^n (the top).
The model specs write layers deepest first, as the paper's tables do ("sbn:200-200-500" has a
500-unit layer next to the data).

    P(x, h) = P(x | h^1) prod_{i=1}^{n-1} P(h^i | h^{i+1}) P(h^n)          (Eq. 10)
    Q(h | x) = Q(h^1 | x) prod_{i=1}^{n-1} Q(h^{i+1} | h^i)                 (Eq. 11)

Both return log-probabilities per layer, so that an algorithm can build the local learning signals
of Eq. 12, and both score latents they did not sample (the sleep phase and exact enumeration need
that). Shapes: x is (..., B, D); each h[i] is (S, B, H_i) or (B, H_i); every returned term has the
broadcast batch shape (S, B) or (B,).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.layers import LogisticLayer, SoftmaxLayer, logit


class BeliefNet(nn.Module):
    """A directed model with binary latent layers: SBN, fDARN, and their document versions.

    `prior_autoregressive` gives the top layer's prior connections between its units (fDARN);
    `visible` is 'bernoulli' (binary images) or 'multinomial' (bags of words).
    """

    def __init__(self, latent_sizes: Sequence[int], num_features: int, visible: str = "bernoulli",
                 prior_autoregressive: bool = False, init_scale: float = 0.01):
        super().__init__()
        self.latent_sizes = tuple(latent_sizes)  # bottom-up: latent_sizes[0] feeds x
        self.num_features = num_features
        self.visible_kind = visible
        self.prior = LogisticLayer(self.latent_sizes[-1], 0, autoregressive=prior_autoregressive,
                                   init_scale=init_scale)
        # conditionals[i] is P(h^{i+1} | h^{i+2}) in the paper's 1-based names: h[i] given h[i+1].
        self.conditionals = nn.ModuleList(
            LogisticLayer(below, above, init_scale=init_scale)
            for below, above in zip(self.latent_sizes[:-1], self.latent_sizes[1:], strict=True)
        )
        if visible == "bernoulli":
            self.visible = LogisticLayer(num_features, self.latent_sizes[0], init_scale=init_scale)
        elif visible == "multinomial":
            self.visible = SoftmaxLayer(num_features, self.latent_sizes[0], init_scale=init_scale)
        else:
            raise ValueError(f"unknown visible layer {visible!r}; valid: bernoulli, multinomial")

    def init_visible_bias(self, feature_mean: Tensor) -> None:
        """Start the visible layer at the data's marginals: logit of the mean pixel, or the log of
        each word's share of all words (a standard start that saves many early updates)."""
        with torch.no_grad():
            if self.visible_kind == "bernoulli":
                self.visible.bias.copy_(logit(feature_mean))
            else:
                share = feature_mean / feature_mean.sum().clamp_min(1e-12)
                self.visible.bias.copy_(torch.log(share.clamp_min(1e-6)))

    def log_prob_terms(self, x: Tensor, h: Sequence[Tensor]) -> list[Tensor]:
        """[log P(x | h^1), log P(h^1 | h^2), ..., log P(h^n)]: index k is the term of layer k
        (k = 0 is the data), matching `InferenceNet.log_prob_terms` shifted by one."""
        terms = [self.visible.log_prob(x, h[0])]
        terms += [layer.log_prob(h[i], h[i + 1]) for i, layer in enumerate(self.conditionals)]
        terms.append(self.prior.log_prob(h[-1]))
        return terms

    def log_joint(self, x: Tensor, h: Sequence[Tensor]) -> Tensor:
        return sum(self.log_prob_terms(x, h))

    def sample_like(self, x: Tensor, generator=None) -> tuple[Tensor, list[Tensor]]:
        """Fantasies shaped like the minibatch x: one per row, and for a multinomial visible layer
        with the length of the matching document (the sleep phase needs nothing else)."""
        lengths = x.sum(-1) if self.visible_kind == "multinomial" else None
        return self.sample(x.shape[:-1], generator, lengths)

    def sample(self, batch_shape, generator=None, lengths: Tensor | None = None
               ) -> tuple[Tensor, list[Tensor]]:
        """Ancestral sample (x, [h^1, ..., h^n]); documents need `lengths` (one per example)."""
        batch_shape = tuple(batch_shape)
        top = self.prior.sample(None, batch_shape, generator)
        h = [top]
        for layer in reversed(self.conditionals):
            h.insert(0, layer.sample(h[0], generator=generator))
        if self.visible_kind == "multinomial":
            x = self.visible.sample(h[0], generator=generator, lengths=lengths)
        else:
            x = self.visible.sample(h[0], generator=generator)
        return x, h


class InferenceNet(nn.Module):
    """Q(h | x) mirroring the model layer by layer (Eq. 11), factorial or autoregressive within
    each layer (Table 2). The data is centred by the training-set mean before it enters (§4.2);
    deeper layers see the binary samples of the layer below as they are.

    An autoregressive Q starts as the factorial one: its within-layer weights U start at zero
    (the paper does not say how it initialised them). Random U of the factorial weights' scale
    (std 0.1 on MNIST) gave Q within-layer couplings as large as the data's own contribution to
    the logits, which plain SGD at the inference network's rate had not undone after 20,000
    updates: autoregressive Q then lost to factorial Q on every Table 2 model (README)."""

    def __init__(self, num_features: int, latent_sizes: Sequence[int], autoregressive: bool = False,
                 input_mean: Tensor | None = None, init_scale: float = 0.01):
        super().__init__()
        self.latent_sizes = tuple(latent_sizes)  # bottom-up, as in BeliefNet
        self.num_features = num_features
        self.autoregressive = autoregressive
        contexts = (num_features,) + self.latent_sizes[:-1]
        self.layers = nn.ModuleList(
            LogisticLayer(size, context, autoregressive=autoregressive, init_scale=init_scale,
                          autoregressive_init_scale=0.0)
            for size, context in zip(self.latent_sizes, contexts, strict=True)
        )
        mean = torch.zeros(num_features) if input_mean is None else torch.as_tensor(input_mean)
        self.register_buffer("input_mean", mean.clone().float())

    def centre(self, x: Tensor) -> Tensor:
        return x - self.input_mean.to(x.dtype)

    def sample(self, x: Tensor, num_samples: int | None = None, generator=None
               ) -> tuple[list[Tensor], list[Tensor]]:
        """Draw h ~ Q(h | x) and return (h, [log Q(h^1|x), log Q(h^2|h^1), ...]).

        With `num_samples` S the latents get a leading sample dimension: (S, B, H_i).
        The samples carry no gradient; the log-probabilities do (for score-function estimators).
        """
        context = self.centre(x)
        # The data is the same for every sample: the first layer's logits are computed once per
        # example and broadcast over the samples.
        batch_shape = context.shape[:-1] if num_samples is None else (num_samples, *context.shape[:-1])
        h, log_q = [], []
        for layer in self.layers:
            value, log_prob = layer.sample_with_log_prob(context, batch_shape, generator)
            h.append(value)
            log_q.append(log_prob)
            context = value
        return h, log_q

    def log_prob_terms(self, x: Tensor, h: Sequence[Tensor]) -> list[Tensor]:
        """[log Q(h^1 | x), log Q(h^2 | h^1), ...] for given latents."""
        contexts = [self.centre(x)] + list(h[:-1])
        return [layer.log_prob(value, context)
                for layer, value, context in zip(self.layers, h, contexts, strict=True)]

    def log_prob(self, x: Tensor, h: Sequence[Tensor]) -> Tensor:
        return sum(self.log_prob_terms(x, h))
