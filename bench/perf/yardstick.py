"""The yardsticks: the NVIL update of each model family written the way a careful user would in
plain PyTorch, one run at a time.

Algorithm 1 of Mnih & Gregor (2014) at the paper's protocol: minibatch of 20, one sample from the
inference network, input-dependent baseline (100 tanh units) for every learning signal, local
learning signals for deep models (§2.3.3: signal j is log P of the layers from j-1 up minus log Q
of the layers from j up, the first one the global signal), running mean and variance of each
signal (α = 0.8), variance normalisation, the suite's default optimizer (SGD on summed gradients,
inference network at one fifth of the rate). nn.Linear layers, autograd, torch.optim.SGD, nothing
clever. Self-contained on purpose: nothing of the suite's models or algorithms is imported, so a
change there cannot move its own yardstick.

The families (Mnih & Gregor 2014, §4; models/specs.py says what the suite builds):

    SBNYardstick            sbn:L1-...-Ln   logistic layers, a factorial prior on the top layer
    FDARNYardstick          fdarn:H         one layer with an autoregressive prior,
                                            logit_j = b_j + sum_{k<j} U_jk h_k
    DocSBNYardstick         doc-sbn:H       softmax over the vocabulary given h, scoring word
                                            counts: log P(x | h) = sum_w x_w log softmax(W h + b)_w
    DocFDARNYardstick       doc-fdarn:H     the document model with fDARN's prior
    SBNAutoregressiveQYardstick  sbn:... with Q autoregressive within each layer (Table 2):
                                            sampled unit by unit, then scored in one product
    GaussianYardstick       gauss:L1-...-Ln  linear Gaussian layers (N(0, I) on the top one) and
                                            a Gaussian Q: the score-function update of NVIL on
                                            continuous latents

Each lives here only to measure against: every speed figure of `bench perf` is a ratio to the
yardstick of its model family and architecture, measured in the same run.

Shapes: x (B, D) (pixels, or word counts over D words); h[l] (B, H_l), bottom-up (h[0] feeds x);
every log-probability term (B,).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)


class SBNYardstick:
    """NVIL for a sigmoid belief network with `latents` layers (bottom-up sizes) over
    `num_features` binary pixels. The other families override what differs: the visible layer,
    the top layer's prior, or how Q samples a layer."""

    def __init__(self, num_features: int = 784, latents=(200,), feature_mean=None,
                 learning_rate: float = 3e-4, seed: int = 0, optimizer: str = "sgd"):
        torch.manual_seed(seed)
        latents = (latents,) if isinstance(latents, int) else tuple(latents)
        self.latents = latents
        contexts = (num_features, *latents[:-1])          # what each layer of Q sees
        self.decoder = nn.Linear(latents[0], num_features)  # P(x | h[0])
        self.conditionals = nn.ModuleList(                  # P(h[l] | h[l+1])
            nn.Linear(above, below) for below, above in zip(latents[:-1], latents[1:], strict=True))
        self.prior_logits = nn.Parameter(torch.zeros(latents[-1]))  # P(h[top])
        self.encoders = nn.ModuleList(                      # Q(h[l] | h[l-1]), h[-1] = x
            nn.Linear(context, size) for context, size in zip(contexts, latents, strict=True))
        self.baselines = nn.ModuleList(                     # C_j(context of Q's layer j)
            nn.Sequential(nn.Linear(context, 100), nn.Tanh(), nn.Linear(100, 1))
            for context in contexts)
        self.build_extra()
        self.mean = torch.zeros(num_features) if feature_mean is None else feature_mean
        self.c = [0.0] * len(latents)
        self.v = [0.0] * len(latents)
        self.alpha = 0.8
        make = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]
        self.optimizers = [
            make(self.model_parameters(), lr=learning_rate),
            make(self.inference_parameters(), lr=learning_rate / 5),
            make(self.baselines.parameters(), lr=learning_rate),
        ]

    # -- what a family changes ---------------------------------------------------------------
    def build_extra(self) -> None:
        """Parameters a family adds (its autoregressive weights)."""

    def model_parameters(self) -> list:
        return [*self.decoder.parameters(), *self.conditionals.parameters(), self.prior_logits]

    def inference_parameters(self) -> list:
        return list(self.encoders.parameters())

    def visible_log_prob(self, x, h0):
        return bernoulli_log_prob(self.decoder(h0), x)

    def prior_log_prob(self, top):
        return bernoulli_log_prob(self.prior_logits.expand_as(top), top)

    def conditional_log_prob(self, layer: int, above, below):
        """log P(h[layer] = below | h[layer + 1] = above)."""
        return bernoulli_log_prob(self.conditionals[layer](above), below)

    def sample_layer(self, layer: int, context):
        """A sample of Q's layer (no gradient) and its log-probability (with gradient)."""
        logits = self.encoders[layer](context)
        h = torch.bernoulli(torch.sigmoid(logits)).detach()
        return h, bernoulli_log_prob(logits, h)

    # -- the update ----------------------------------------------------------------------------
    def step(self, x: torch.Tensor) -> float:
        centred = x - self.mean
        h, log_q, context = [], [], centred
        for layer in range(len(self.latents)):
            value, term = self.sample_layer(layer, context)
            h.append(value)
            log_q.append(term)
            context = value
        # log P terms: [x | h0, h0 | h1, ..., prior of the top]
        log_p = [self.visible_log_prob(x, h[0])]
        log_p += [self.conditional_log_prob(i, h[i + 1], h[i])
                  for i in range(len(self.conditionals))]
        log_p.append(self.prior_log_prob(h[-1]))
        loss = -sum(term.sum() for term in log_p)
        contexts = [centred, *h[:-1]]
        for j in range(len(self.latents)):
            signal = (sum(log_p[j:]) - sum(log_q[j:])).detach()  # local signal j (Eq. 12)
            if j == 0:
                bound = signal
            baseline = self.baselines[j](contexts[j]).squeeze(-1)
            residual = signal - baseline.detach()
            self.c[j] = self.alpha * self.c[j] + (1 - self.alpha) * residual.mean().item()
            self.v[j] = (self.alpha * self.v[j]
                         + (1 - self.alpha) * residual.var(unbiased=False).item())
            normalised = (residual - self.c[j]) / max(1.0, math.sqrt(self.v[j]))
            loss = loss - (normalised * log_q[j]).sum() - (normalised * baseline).sum()
        for optimizer in self.optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        return bound.mean().item()


def strictly_lower(size: int) -> torch.Tensor:
    return torch.tril(torch.ones(size, size), -1)


class AutoregressivePrior:
    """fDARN's prior on the top layer: logit_j = b_j + sum_{k<j} U_jk h_k (U masked)."""

    def build_extra(self) -> None:
        super().build_extra()
        size = self.latents[-1]
        self.prior_weight = nn.Parameter(torch.randn(size, size) * 0.01)
        self.prior_mask = strictly_lower(size)

    def model_parameters(self) -> list:
        return [*super().model_parameters(), self.prior_weight]

    def prior_log_prob(self, top):
        logits = F.linear(top, self.prior_weight * self.prior_mask, self.prior_logits)
        return bernoulli_log_prob(logits, top)


class SoftmaxVisible:
    """The document models' visible layer: every word drawn from one softmax over the vocabulary,
    x the document's word counts (the multinomial coefficient left out)."""

    def visible_log_prob(self, x, h0):
        return (x * torch.log_softmax(self.decoder(h0), -1)).sum(-1)


class FDARNYardstick(AutoregressivePrior, SBNYardstick):
    pass


class DocSBNYardstick(SoftmaxVisible, SBNYardstick):
    pass


class DocFDARNYardstick(SoftmaxVisible, AutoregressivePrior, SBNYardstick):
    pass


class SBNAutoregressiveQYardstick(SBNYardstick):
    """Q autoregressive within each layer (Table 2): unit j of a layer also sees the units before
    it. Sampling goes unit by unit, as it must; the sample is then scored in one product."""

    def build_extra(self) -> None:
        super().build_extra()
        # Zero at the start, as the factorial Q it extends.
        self.encoder_weights = nn.ParameterList(
            nn.Parameter(torch.zeros(size, size)) for size in self.latents)
        self.encoder_masks = [strictly_lower(size) for size in self.latents]

    def inference_parameters(self) -> list:
        return [*super().inference_parameters(), *self.encoder_weights]

    def sample_layer(self, layer: int, context):
        base = self.encoders[layer](context)
        weight = self.encoder_weights[layer] * self.encoder_masks[layer]
        with torch.no_grad():
            h = torch.zeros_like(base)
            for j in range(base.shape[-1]):
                logit = base[:, j] + h @ weight[j]  # h[:, k] is still 0 for k >= j
                h[:, j] = torch.bernoulli(torch.sigmoid(logit))
        return h, bernoulli_log_prob(base + F.linear(h, weight), h)


def normal_log_prob(mean, log_scale, value) -> torch.Tensor:
    return (-0.5 * ((value - mean) * torch.exp(-log_scale)) ** 2 - log_scale
            - 0.5 * math.log(2 * math.pi)).sum(-1)


class GaussianYardstick(SBNYardstick):
    """NVIL (the score-function estimator, §2 of Mnih & Gregor) on Gaussian latents: prior
    N(0, I) on the top layer, P(h[l] | h[l+1]) = N(W h[l+1] + b, diag sigma_l^2) with one learned
    sigma per unit, Q(h[l] | c) = N(mu(c), diag sigma(c)^2) with linear mu and log sigma heads,
    the log sigma heads starting at zero (sigma = 1). The prior's logits go unused."""

    def build_extra(self) -> None:
        super().build_extra()
        self.encoder_log_scales = nn.ModuleList(
            nn.Linear(encoder.in_features, encoder.out_features) for encoder in self.encoders)
        for head in self.encoder_log_scales:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.conditional_log_scales = nn.ParameterList(
            nn.Parameter(torch.zeros(layer.out_features)) for layer in self.conditionals)

    def model_parameters(self) -> list:
        return [*self.decoder.parameters(), *self.conditionals.parameters(),
                *self.conditional_log_scales]

    def inference_parameters(self) -> list:
        return [*super().inference_parameters(), *self.encoder_log_scales.parameters()]

    def prior_log_prob(self, top):
        return normal_log_prob(torch.zeros_like(top), torch.zeros_like(top), top)

    def conditional_log_prob(self, layer: int, above, below):
        mean = self.conditionals[layer](above)
        return normal_log_prob(mean, self.conditional_log_scales[layer].expand_as(mean), below)

    def sample_layer(self, layer: int, context):
        mean = self.encoders[layer](context)
        log_scale = self.encoder_log_scales[layer](context)
        h = (mean + torch.exp(log_scale) * torch.randn_like(mean)).detach()
        return h, normal_log_prob(mean, log_scale, h)


# (family, inference network) -> the yardstick of that family
YARDSTICKS = {
    ("sbn", "factorial"): SBNYardstick,
    ("fdarn", "factorial"): FDARNYardstick,
    ("doc-sbn", "factorial"): DocSBNYardstick,
    ("doc-fdarn", "factorial"): DocFDARNYardstick,
    ("sbn", "autoregressive"): SBNAutoregressiveQYardstick,
    ("gauss", "factorial"): GaussianYardstick,
}

# The sbn:200 yardstick under its earlier name.
YardstickNVIL = SBNYardstick
