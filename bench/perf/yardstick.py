"""The yardstick: NVIL for `sbn:200` written the way a careful user would in plain PyTorch.

Algorithm 1 of Mnih & Gregor (2014) at the paper's protocol: minibatch of 20, one sample from the
inference network, input-dependent baseline (100 tanh units), running mean and variance of the
signal (α = 0.8), variance normalisation, the suite's default optimizer (SGD on summed gradients,
inference network at one fifth of the rate). nn.Linear layers and autograd, nothing clever.
It lives here only to measure against: every speed figure of the suite is a ratio to it, measured
in the same run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class YardstickNVIL:
    def __init__(self, num_features: int = 784, latents: int = 200, feature_mean=None,
                 learning_rate: float = 3e-4, seed: int = 0):
        torch.manual_seed(seed)
        self.decoder = nn.Linear(latents, num_features)       # P(x | h)
        self.prior_logits = nn.Parameter(torch.zeros(latents))  # P(h)
        self.encoder = nn.Linear(num_features, latents)       # Q(h | x)
        self.baseline = nn.Sequential(nn.Linear(num_features, 100), nn.Tanh(), nn.Linear(100, 1))
        self.mean = torch.zeros(num_features) if feature_mean is None else feature_mean
        self.c, self.v, self.alpha = 0.0, 0.0, 0.8
        model_params = list(self.decoder.parameters()) + [self.prior_logits]
        self.optimizers = [
            torch.optim.SGD(model_params, lr=learning_rate),
            torch.optim.SGD(self.encoder.parameters(), lr=learning_rate / 5),
            torch.optim.SGD(self.baseline.parameters(), lr=learning_rate),
        ]

    def step(self, x: torch.Tensor) -> float:
        centred = x - self.mean
        q_logits = self.encoder(centred)
        h = torch.bernoulli(torch.sigmoid(q_logits)).detach()
        log_q = -F.binary_cross_entropy_with_logits(q_logits, h, reduction="none").sum(-1)
        log_prior = -F.binary_cross_entropy_with_logits(
            self.prior_logits.expand_as(h), h, reduction="none").sum(-1)
        log_lik = -F.binary_cross_entropy_with_logits(self.decoder(h), x, reduction="none").sum(-1)
        log_joint = log_prior + log_lik
        signal = (log_joint - log_q).detach()
        baseline = self.baseline(centred).squeeze(-1)
        residual = signal - baseline.detach()
        self.c = self.alpha * self.c + (1 - self.alpha) * residual.mean().item()
        self.v = self.alpha * self.v + (1 - self.alpha) * residual.var(unbiased=False).item()
        normalised = (residual - self.c) / max(1.0, self.v ** 0.5)
        loss = -(log_joint.sum() + (normalised * log_q).sum() + (normalised * baseline).sum())
        for optimizer in self.optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        return signal.mean().item()
