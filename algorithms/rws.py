"""Reweighted wake-sleep (Bornschein & Bengio, ICLR 2015, arXiv 1406.2751, Algorithm 1).

For a minibatch x_1..x_B, K samples per example from the inference network, their importance
weights, and the weights normalised over the K samples:

    h_ik ~ Q(h | x_i),  k = 1..K
    ω_ik = P(x_i, h_ik) / Q(h_ik | x_i),     ω̃_ik = ω_ik / sum_k' ω_ik'   (softmax over k of log ω)
    bound:       log p̂(x_i) = log (1/K) sum_k ω_ik                 (p̂ is unbiased for P(x_i))
    model P:     Δθ = sum_i sum_k ω̃_ik ∇θ log P(x_i, h_ik)                        (wake phase)
    Q, wake:     Δφ_wake  = sum_i sum_k ω̃_ik ∇φ log Q(h_ik | x_i)
    Q, sleep:    (x'_i, h'_i) ~ P(x, h), i = 1..B,   Δφ_sleep = sum_i ∇φ log Q(h'_i | x'_i)
    Q:           Δφ = [wake_q] Δφ_wake + [sleep_q] Δφ_sleep

Surrogate losses: "model" is -sum ω̃ log P(x, h) and "inference" -sum ω̃ log Q(h | x) (wake) -
sum log Q(h' | x') (sleep), with ω̃ computed without a graph: the weights are functions of θ and
φ, but the estimator treats them as constants (the authors' code: `consider_constant=[w]`). The
samples h carry no gradient and the fantasies are drawn without one, so each loss reaches its own
group only.

What each update equals in expectation (the weights make both wake updates biased for finite K):

    E[Δθ]       = ∇θ L_K,  L_K = E_{h_1..K ~ Q} log (1/K) sum_k ω_k, the K-sample bound (Burda et
                  al. 2016): the samples do not depend on θ, so
                  ∇θ log p̂ = sum_k ω̃_k ∇θ log P(x, h_k).
                  L_1 is the ELBO (K = 1 is the wake-sleep wake phase); L_K -> log P(x) as K grows.
    E[Δφ_wake]  = E[sum_k ω̃_k ∇φ log Q(h_k | x)], the gradient of no fixed objective; it tends to
                  ∇φ sum_h P(h | x) log Q(h | x) = -∇φ KL(P(h|x) || Q(h|x)) as K grows, and is
                  E_Q[∇φ log Q] = 0 at K = 1.
    E[Δφ_sleep] = B ∇φ sum_{x,h} P(x, h) log Q(h | x)        (B fantasies; wake_sleep.py's sleep)

`claimed_update` (the bias check, bench/check.py) is these expectations computed exactly: for the
wake updates a sum over every K-tuple of latent configurations (models/exact.py,
`k_sample_tuples`) of prod_k Q(h_k | x) times the surrogate sum_k ω̃_k log(.)(h_k), with the tuple
probabilities and the weights held constant and the surrogate differentiated once; for the sleep
update B times the gradient of `exact_sleep_objective`. `exact_objectives` gives what the updates
estimate in the limit of many samples: log P(x) for the model; for Q, sum_h P(h|x) log Q(h|x)
(the wake update's limit) plus the sleep objective. tests/test_rws.py checks that the model claim
is ∇θ L_K (`exact_multisample_bound`, a second route), that both claims approach the gradients of
`exact_objectives` as K grows, and that K = 1 gives the ELBO's model gradient.

Reading of the paper and the authors' code (jbornschein/reweighted-ws: learning/models/rws.py,
`LayerStack.get_gradients` and `get_sleep_gradients`; learning/training.py, `Trainer`), and how
each ambiguity is resolved here:

- The two Q updates are SUMMED, each at full weight, not averaged: the authors apply the wake
  update at rate lr_q on every minibatch and the sleep update at rate lr_s, and every experiment
  file sets lr_p = lr_q = lr_s. (Pyro's `insomnia` interpolates the two convexly; that halves
  each term of "wake+sleep" and is not the authors' estimator.) Algorithm 1 makes each Q update
  optional, and the paper reports that using both works best: the default is both.
- The sleep schedule: the authors' Trainer takes one sleep step every `sleep_interleave` wake
  steps with sleep_interleave * B fantasies, i.e. one fantasy per example per update on average.
  Here every update draws B fantasies: the same expected update, without a step counter, and the
  same computation in every update (so runs stack).
- Learning rates: one rate for P, Q-wake and Q-sleep in the authors' code (1e-3 in every
  experiment file and the default of mnist/run-mnist; SGD with momentum 0.95 in the form
  v <- 0.95 v + 0.05 g, whose steady step is the rate times the gradient). So the inference
  network's rate scale is 1 here, not the 1/5 of Mnih & Gregor §4.1 that nvil and wake-sleep use
  (set inference_lr_scale=0.2 to compare at that convention), and MNIST's model rate is 1e-3.
- K: 5, as in the authors' experiment files (their Trainer's fallback is 10); the paper reports
  that a few samples (about 5) already train much better than wake-sleep. Presets k2 and k10
  vary it; k1 is K = 1 with the sleep update only, which the paper notes is the original
  wake-sleep: ω̃ = 1, and the update is exactly that of algorithms/wake_sleep.py
  (tests/test_rws.py compares them). K = 1 with the wake Q update is refused: that update then
  has expectation zero (pure noise).
- Sums, not means, over the minibatch (the authors' costs sum over examples; the suite's
  convention). The weights are normalised in log space; the authors' -log K before normalising
  cancels.
- Documents (multinomial visibles): each fantasy has the length of the matching document, as in
  algorithms/wake_sleep.py. The exact checks need binary visibles (they enumerate x for the
  sleep phase).

Parameter groups: "model" (rate 1) and "inference" (rate `inference_lr_scale`, default 1, above).
`num_samples` and `sleep_q` shape the computation (the noise of one update, the sleep phase) and
are structural; `wake_q` is per-run data (an (R, 1) column), so "sleep" and "wake+sleep" runs
stack. Evaluations per example: K (log P(x, h_k)) plus one ancestral pass with the sleep phase.

The bias check: one update draws K B H uniforms for Q's samples plus B (H + D) for the fantasies
(H latents, D pixels), at most 16 enumerable, so `check_model` is sbn:1 (one latent, 5 pixels):
every preset enumerates at minibatch 1 (default, wake+sleep, sleep, k10) or 2 (wake, k1, k2).
tests/test_rws.py also enumerates deeper and autoregressive cases with fewer pixels.

Shapes: x (R, B, D); noise "q" (R, K, B, H_j) per latent layer, "fantasy" as model.noise_like(x);
h[j] (R, K, B, H_j); log P, log Q, ω̃ (R, K, B); fantasies (R, B, D) and (R, B, H_j); metrics (R,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from algorithms.base import Algorithm, SamplesFromQ, StepResult
from bench.errors import UserError
from models.exact import exact_sleep_objective, k_sample_tuples, latent_configurations


@dataclass(frozen=True)
class RWSOptions:
    num_samples: int = 5            # K, the authors' experiment files
    wake_q: bool = True             # Q's wake-phase update, sum_k ω̃_k ∇ log Q(h_k | x)
    sleep_q: bool = True            # Q's sleep-phase update on fantasies (x', h') ~ P
    inference_lr_scale: float = 1.0  # the authors use one rate for P and Q (module docstring)

    def __post_init__(self):
        if int(self.num_samples) != self.num_samples or self.num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {self.num_samples}")
        if not (self.wake_q or self.sleep_q):
            raise ValueError("wake_q and sleep_q are both off: Q would get no update; turn one on")


class RWS(SamplesFromQ, Algorithm):
    name = "rws"
    Options = RWSOptions
    presets = {
        "": {},
        "wake+sleep": {"wake_q": True, "sleep_q": True},
        "wake": {"sleep_q": False},
        "sleep": {"wake_q": False},
        "k1": {"num_samples": 1, "wake_q": False},   # the original wake-sleep
        "k2": {"num_samples": 2},
        "k10": {"num_samples": 10},
    }
    structural_options = ("num_samples", "sleep_q")
    paper_learning_rates = {"mnist": 1e-3, "synthetic": 1e-3}  # authors' code; synthetic as MNIST
    check_model = "sbn:1"

    def __init__(self, model, inference, options, generators=None):
        super().__init__(model, inference, options, generators)
        first = self.options[0]
        if any(o.num_samples == 1 and o.wake_q for o in self.options):
            raise UserError("rws: with num_samples=1 the wake-phase Q update has expectation zero "
                            "(ω̃ = 1 and E_Q[∇ log Q] = 0); set wake_q=off (preset k1, the "
                            "original wake-sleep) or num_samples >= 2")
        self.sleep = first.sleep_q
        dtype = model.prior.bias.dtype
        self.register_buffer("wake_weight", self.option_column("wake_q", dtype), persistent=False)

    def evaluations_per_example(self, options) -> float:
        return super().evaluations_per_example(options) + (1 if options.sleep_q else 0)

    def noise(self, x):
        request = super().noise(x)
        if self.sleep:
            request["fantasy"] = self.model.noise_like(x)
        return request

    def step(self, x: Tensor, noise) -> StepResult:
        _, log_q, log_p = self.sample_from_q(x, noise)          # (R, K, B), graphs to φ, θ
        with torch.no_grad():
            log_w = log_p - log_q
            weights = torch.softmax(log_w, 1)                    # ω̃, constants of the update
            bound = torch.logsumexp(log_w, 1) - math.log(self.num_samples)          # (R, B)
            effective = 1.0 / weights.pow(2).sum(1)              # effective sample size (R, B)
        inference_loss = -(self.wake_weight * (weights * log_q).sum(1)).sum()
        metrics = {"bound": bound.mean(-1), "effective_samples": effective.mean(-1)}
        if self.sleep:
            fantasy_x, fantasy_h = self.model.sample(noise["fantasy"], self.model.lengths_like(x))
            sleep_log_q = self.inference.log_prob(fantasy_x, fantasy_h)            # (R, B)
            inference_loss = inference_loss - sleep_log_q.sum()
            metrics["sleep_log_q"] = sleep_log_q.detach().mean(-1)
        return StepResult({"model": -(weights * log_p).sum(), "inference": inference_loss},
                          metrics)

    # -- the bias check ---------------------------------------------------------------------
    def _wake_surrogates(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(model, Q-wake) surrogates (R,) whose gradients are the exact expected wake updates:
        sum over every K-tuple of configurations of prod_k Q(h_k | x) sum_k ω̃_k log P(x, h_k)
        (resp. log Q(h_k | x)), tuple probabilities and weights held constant, summed over the
        minibatch."""
        h = k_sample_tuples(self.model.latent_sizes, self.num_samples, x.dtype, x.device)
        log_p = self.model.log_joint(x, h)                       # (R, K, T, B)
        log_q = self.inference.log_prob(x, h)
        with torch.no_grad():
            probability = log_q.sum(1).exp()                     # (R, T, B)
            weights = torch.softmax(log_p - log_q, 1)
        model = (probability * (weights * log_p).sum(1)).sum((1, 2))
        wake = (probability * (weights * log_q).sum(1)).sum((1, 2))
        return model, wake

    def _sleep_objective(self, x: Tensor) -> Tensor:
        # B fantasies: B times the per-fantasy objective whose gradient is the sleep update.
        return x.shape[-2] * exact_sleep_objective(self.model, self.inference)

    def claimed_update(self, x: Tensor) -> dict[str, list[Tensor]]:
        """The exact expected value of -grad(losses[g]) (biased by design for finite K)."""
        model_surrogate, wake_surrogate = self._wake_surrogates(x)
        inference = (self.wake_weight.view(-1) * wake_surrogate).sum()
        if self.sleep:
            inference = inference + self._sleep_objective(x).sum()
        return self.group_gradients({"model": model_surrogate, "inference": inference})

    def exact_objectives(self, x: Tensor) -> dict[str, Tensor]:
        """What the updates estimate, each exactly in the limit K -> infinity (for finite K the
        expected update is `claimed_update`, biased relative to these by design): the model,
        log P(x); Q, [wake_q] sum_h P(h | x) log Q(h | x) (-KL(P(h|x) || Q(h|x)) up to a term
        free of φ) plus [sleep_q] B sum_{x,h} P(x, h) log Q(h | x). Enumerates configurations,
        not K-tuples, so it works wherever exact enumeration does."""
        sizes = self.model.latent_sizes
        h = next(latent_configurations(sizes, x.dtype, x.device, 2 ** sum(sizes)))  # (1, M, 1, H_j)
        log_joint = self.model.log_joint(x, h)                               # (R, M, B)
        log_likelihood = torch.logsumexp(log_joint, 1)                        # (R, B)
        posterior = (log_joint - log_likelihood.unsqueeze(1)).exp()
        wake = (posterior * self.inference.log_prob(x, h)).sum((1, 2))
        inference = self.wake_weight.view(-1) * wake
        if self.sleep:
            inference = inference + self._sleep_objective(x)
        return {"model": log_likelihood.sum(-1), "inference": inference}
