"""Annealed importance sampling (AIS) for log p(x) of any model of the suite, and the bidirectional
(BDMC) gap. No inference network is used: the chains start from the model's own prior.

The path (Neal 2001, "Annealed importance sampling"; the geometric path from the prior to the
posterior). For one example x and the latents h = (h^1, ..., h^n),

    f_beta(h) = p(h) p(x | h)^beta,      Z_beta = sum_h / int f_beta(h),   Z_0 = 1,  Z_1 = p(x)

with 0 = beta_0 < beta_1 < ... < beta_T = 1, T = `steps`. Forward chain (Neal writes the
sequence from the target f_0 down to the simple f_n; the indices here are reversed so that t
runs from the prior to the target):

    h_0 ~ p(h)                                                   (ancestral, exact)
    for t = 1..T:   log w += (beta_t - beta_{t-1}) log p(x | h_{t-1})   [= log f_t(h_{t-1}) / f_{t-1}(h_{t-1})]
                    if t < T:  h_t ~ K_t(h_{t-1}, .)             (leaves f_{beta_t} invariant)

so T ratios and T - 1 transitions, one at each intermediate distribution beta_1 .. beta_{T-1}
(a transition at beta_T would not change the weight). E[w] = Z_1 / Z_0 = p(x) exactly, for any
T and any kernels that leave their f_t invariant (Neal's argument: AIS is importance sampling on
the extended space (h_0, ..., h_{T-1}), the target there built from f_T and the reversals of the
kernels, so the kernels need not mix at all for the weights to be unbiased). With
S independent chains, log p^(x) = log (1/S) sum_s w_s, and by Jensen E[log p^(x)] <= log p(x): a
stochastic lower bound, which tightens as T (the chains' closeness to equilibrium) and S grow.
T = 1 is plain importance sampling with the prior as the proposal.

The bidirectional gap (Grosse, Ghahramani & Adams 2015, "Sandwiching the marginal likelihood using
bidirectional Monte Carlo"). On data simulated from the model, (x, h) ~ p(x, h), the latents
h are an exact sample of the posterior p(h | x) = f_1 / Z_1, so AIS can also run backwards along
the same path, from beta = 1 to beta = 0 with the same kernels in reverse order:

    h_T = h (exact posterior sample)
    for t = T..1:   log v += (beta_{t-1} - beta_t) log p(x | h_t)   [= log f_{t-1}(h_t) / f_t(h_t)]
                    if t > 1:  h_{t-1} ~ K_{t-1}(h_t, .)

E[v] = Z_0 / Z_1 = 1 / p(x), so -log (1/S) sum_s v_s is a stochastic upper bound on log p(x)
(Jensen again). The two bounds sandwich log p(x) on simulated data; their gap bounds the forward
estimate's error there (in expectation), and shrinks to 0 as T grows. T = 1 backwards is the
harmonic-mean estimator. Here every reverse chain of an example starts from that example's one
exact sample: the S reverse weights are then dependent, but each has expectation 1 / p(x), so the
bound holds. Both directions run the same kernels with the same step sizes (the forward pilot's,
below), in opposite orders, as the sandwich needs.

Schedule (`schedule`): "sigmoid" (default; the sigmoidal schedule of Grosse et al. 2015):
beta~_t = sigmoid(delta (2t/T - 1)), beta_t = (beta~_t - beta~_0) / (beta~_T - beta~_0), delta =
`sharpness` = 4: small steps near the prior and near the posterior; or "linear": beta_t = t / T.

Kernels. A transition at beta updates the latent layers one after another, bottom-up, each with a
kernel that leaves f_beta invariant given the other layers (a composition of invariant kernels is
invariant). Only the two terms of log f_beta that contain layer i change:

    log f_beta(h) = [beta if i = 0 else 1] log p(h^{i-1} | h^i) + log p(h^i | h^{i+1}) + const

(h^0 = x; the second term is the prior for the top layer), so a layer's kernel evaluates those two.

- Binary layers (LogisticLayer, MLPLogisticLayer, autoregressive priors). Every kernel is a
  Metropolis-Hastings step whose proposal flips a set of units, h' = h XOR m, all units of the
  layer at once, for all chains and examples in one evaluation; they differ in how m is drawn.
  Default "dmala", the discrete Langevin proposal with its Metropolis correction (Zhang, Liu & Liu
  2022, "A Langevin-like sampler for discrete distributions", DMALA): with g = d log f_beta / dh
  at h (autograd, the binary h treated as real) and d_j = (1 - 2 h_j) g_j (the first-order change
  of log f_beta were unit j flipped), units flip independently,
      q(m | h) = prod_j sigmoid(l_j)^{m_j} sigmoid(-l_j)^{1 - m_j},   l_j = d_j / 2 - 1 / (2 alpha),
  and the move is accepted with probability min(1, f(h') q(m | h') / (f(h) q(m | h))), q(m | h')
  from the gradient at h' (the same units flip back). alpha is the step size: where the gradient
  is flat a unit flips with probability sigmoid(-1 / (2 alpha)). Cost: one evaluation and one
  gradient of the two terms per step (the gradient at the current state is kept from the last
  accepted proposal while the neighbouring layers do not move: one-layer models).
  "mh": the blind version, the mask drawn independently of h: unit j flips with probability q,
  and one unit chosen uniformly flips in any case (so each proposal moves); the proposal is
  symmetric (m's law does not depend on h, and flipping by m is its own inverse), so the
  acceptance probability is min(1, f_beta(h') / f_beta(h)). No gradient (about a third of
  DMALA's cost per step), but on a trained sbn:200 (MNIST) it needed 1,000 steps (8 s) for a
  bound DMALA beat in 300 (6 s) (README). "gibbs": an exact systematic-scan Gibbs sweep, unit by
  unit, each from its
  conditional p(h_j = 1 | rest) = sigmoid(log f(h_j = 1) - log f(h_j = 0)) (2H evaluations per
  layer and transition; for small layers).
- Gaussian layers (GaussianLayer): Hamiltonian Monte Carlo (Neal 2011) with `leapfrog_steps`
  leapfrog steps and a Metropolis correction; `leapfrog_steps=1` is MALA. The gradient of
  log f_beta with respect to the layer comes from autograd. The mass matrix is diag(1 / sigma^2)
  with sigma the layer's own (context-free) scale in p(h^i | h^{i+1}) (1 for the N(0, I) prior):
  in u = h / sigma the leapfrog is  r <- r + (eps/2) sigma grad,  h <- h + eps sigma r, ..., and
  the acceptance probability is min(1, exp(log f(h') - |r'|^2/2 - log f(h) + |r|^2/2)), r ~ N(0, I).
  sigma is a parameter, not a function of the state, so the kernel stays reversible.

Step sizes (eps for HMC, alpha for DMALA, q for the blind flips) are one per run, example and
layer, shared by the S chains of an example, and tuned towards a target acceptance rate (HMC
0.65, MALA 0.574, DMALA 0.5, blind flips 0.3) by log s <- log s + rate (a - target), a the
acceptance probability averaged over the chains of the previous transition. A kernel whose step size depends on the chains' own past is still
f_beta-invariant for every value of the step size, but the weights are then no longer exactly
unbiased (the telescoping argument needs kernels fixed in advance). So by default (`adapt="pilot"`)
the step sizes are tuned on a pilot run of `pilot_chains` chains per example, from its own random
numbers, and the schedule of step sizes it went through (one per transition) is then frozen for
the real chains, whose weights are therefore exactly unbiased; the pilot's weights are discarded.
`adapt="online"` tunes on the real chains themselves (cheaper; each chain then sways its own
step sizes through the mean over the S chains, a bias that shrinks as S grows);
`adapt="none"` keeps the initial step sizes.

Shapes. R runs (models/layers.py), S chains, B examples: x is (R|1, B, D); every latent layer is
(R, S, B, H_i); log weights are (R, S, B); estimates (R, B). Chains are run in chunks of at most
`_ELEMENTS_PER_CHUNK` chain x example x unit elements per run (memory is bounded by the chunk, not
by S), and the chunk depends on one run's sizes only. Every random number comes from the run's own
generator through models.noise.draw (never the global stream unless the generators are None), so
a run's numbers do not depend on the runs it is evaluated with. The model's parameters are held
without gradient during the run (HMC's autograd then differentiates with respect to h only).

API:
    schedule(steps, kind="sigmoid", sharpness=4.0)                  -> (steps + 1,) float64 betas
    ais(model, x, chains, steps, generators, options)               -> AISResult (forward)
    ais_log_likelihood(model, x, chains, steps, generators, options) -> (R, B) stochastic lower bound
    simulate(model, num_examples, generators, lengths=None)         -> (x (R, B, D), h [(R, B, H_i)])
    bidirectional_ais(model, x, h, chains, steps, generators, options) -> BidirectionalResult
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.errors import UserError, unknown_name
from models.layers import parameters_frozen
from models.noise import Noise
from models.noise import draw as draw_noise

SCHEDULES = ("sigmoid", "linear")
BINARY_KERNELS = ("mh", "dmala", "gibbs")
ADAPTATIONS = ("pilot", "online", "none")
#: chains x examples x units (the widest of the data and the layers) per chunk and run
_ELEMENTS_PER_CHUNK = 2 ** 23


@dataclass(frozen=True)
class AISOptions:
    """The kernels, the schedule and the step-size tuning (module docstring). Defaults: the
    sigmoid schedule (delta = 4), DMALA flips for binary layers, HMC with 5 leapfrog steps for
    Gaussian ones, step sizes tuned on a pilot run of 4 chains per example."""

    schedule: str = "sigmoid"
    sharpness: float = 4.0
    binary_kernel: str = "dmala"
    leapfrog_steps: int = 5
    step_size: float = 0.5            # initial HMC step, in units of the layer's sigma
    flip_rate: float | None = None    # "mh": initial extra-flip probability q; None: 1 / H
    adapt: str = "pilot"
    pilot_chains: int = 4
    adapt_rate: float = 0.2
    target_hmc: float | None = None   # None: 0.65 for HMC, 0.574 for MALA (one leapfrog step)
    target_flip: float = 0.3
    target_dmala: float = 0.5

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise unknown_name("AIS schedule", self.schedule, SCHEDULES)
        if self.binary_kernel not in BINARY_KERNELS:
            raise unknown_name("AIS binary kernel", self.binary_kernel, BINARY_KERNELS)
        if self.adapt not in ADAPTATIONS:
            raise unknown_name("AIS step-size adaptation", self.adapt, ADAPTATIONS,
                               "adaptations")
        if self.leapfrog_steps < 1 or self.pilot_chains < 1:
            raise UserError("AIS needs at least 1 leapfrog step and 1 pilot chain")
        if not self.step_size > 0 or (self.flip_rate is not None and not 0 <= self.flip_rate <= 0.5):
            raise UserError("the AIS step size must be positive and the flip rate in [0, 0.5]")

    @property
    def hmc_target(self) -> float:
        if self.target_hmc is not None:
            return self.target_hmc
        return 0.574 if self.leapfrog_steps == 1 else 0.65

    def describe(self, kinds: Sequence[str] = ("binary", "gaussian")) -> str:
        """One line naming the kernels that apply to latent layers of these kinds, the schedule
        and the tuning, e.g. "dmala + hmc(L=5); sigmoid(4) schedule; steps tuned on 4 pilot
        chains"."""
        parts = []
        if "binary" in kinds:
            parts.append({"mh": "mh-flip", "dmala": "dmala", "gibbs": "gibbs"}[
                self.binary_kernel])
        if "gaussian" in kinds:
            parts.append("mala" if self.leapfrog_steps == 1 else f"hmc(L={self.leapfrog_steps})")
        schedule = (f"sigmoid({self.sharpness:g})" if self.schedule == "sigmoid" else "linear")
        tuning = {"pilot": f"steps tuned on {self.pilot_chains} pilot chains",
                  "online": "steps tuned online", "none": "fixed steps"}[self.adapt]
        return f"{' + '.join(parts)}; {schedule} schedule; {tuning}"


def schedule(steps: int, kind: str = "sigmoid", sharpness: float = 4.0) -> Tensor:
    """beta_0 = 0 < beta_1 < ... < beta_T = 1 (T = steps), float64 (module docstring)."""
    if steps < 1:
        raise UserError(f"AIS needs at least 1 step, got {steps}")
    if kind not in SCHEDULES:
        raise unknown_name("AIS schedule", kind, SCHEDULES)
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    if kind == "linear":
        return t
    raw = torch.sigmoid(sharpness * (2 * t - 1))
    betas = (raw - raw[0]) / (raw[-1] - raw[0])
    betas[0], betas[-1] = 0.0, 1.0
    return betas


@dataclass
class AISResult:
    """The chains' log weights (R, S, B), float64; per latent layer (bottom-up) the mean acceptance
    probability over transitions, chains and examples (R,) (None for Gibbs, or with no
    transitions), and the step sizes of the last transition (R, B) (None for Gibbs).
    `direction` "forward" (prior -> posterior: w estimates p(x)) or "reverse" (posterior -> prior:
    w estimates 1 / p(x))."""

    log_weights: Tensor
    acceptance: list[Tensor | None]
    step_sizes: list[Tensor | None]
    direction: str = "forward"

    @property
    def log_likelihood(self) -> Tensor:
        """(R, B): log (1/S) sum_s w_s forward (a stochastic lower bound on log p(x)), and
        -log (1/S) sum_s w_s reverse (a stochastic upper bound)."""
        value = torch.logsumexp(self.log_weights, 1) - math.log(self.log_weights.shape[1])
        return value if self.direction == "forward" else -value

    @property
    def standard_error(self) -> Tensor:
        """(R, B): the delta-method standard error of `log_likelihood`, sd(w) / (mean(w) sqrt S)."""
        chains = self.log_weights.shape[1]
        normalised = torch.exp(self.log_weights - self.log_weights.amax(1, keepdim=True))
        ratio = normalised.std(1, unbiased=True) / normalised.mean(1)
        return ratio / math.sqrt(chains) if chains > 1 else torch.full_like(ratio, math.inf)


@dataclass
class BidirectionalResult:
    """Forward and reverse AIS on the same simulated examples: `lower` and `upper` (R, B) sandwich
    log p(x) (each in expectation), `gap` = upper - lower."""

    forward: AISResult
    reverse: AISResult

    @property
    def lower(self) -> Tensor:
        return self.forward.log_likelihood

    @property
    def upper(self) -> Tensor:
        return self.reverse.log_likelihood

    @property
    def gap(self) -> Tensor:
        return self.upper - self.lower


# -- the model's terms, layer by layer -------------------------------------------------------------

def _own_layer(model, i: int):
    """The layer that generates latent layer i: its conditional given layer i + 1, or the prior."""
    return model.conditionals[i] if i < len(model.conditionals) else model.prior


def _term(model, x: Tensor, h: Sequence[Tensor], k: int) -> Tensor:
    """Term k of `model.log_prob_terms(x, h)`, (R, S, B): log p(x | h^1) for k = 0, log p(h^k |
    h^{k+1}) in between, the prior's for k = n."""
    n = len(h)
    if k == 0:
        return model.visible.log_prob(x, h[0])
    if k < n:
        return model.conditionals[k - 1].log_prob(h[k - 1], h[k])
    return model.prior.log_prob(h[n - 1])


def _local_terms(model, x, h, i: int, value: Tensor) -> tuple[Tensor, Tensor]:
    """(term i, term i + 1) with latent layer i set to `value`: the two terms that contain it."""
    trial = list(h)
    trial[i] = value
    return _term(model, x, trial, i), _term(model, x, trial, i + 1)


def _combine(below: Tensor, own: Tensor, i: int, beta: float) -> Tensor:
    """The part of log f_beta that depends on latent layer i."""
    return (beta * below if i == 0 else below) + own


def _expand(term: Tensor, shape) -> Tensor:
    return term.expand(shape) if term.shape != shape else term


def _gaussian_scale(layer, dtype, device) -> Tensor | float:
    """sigma of p(h^i | h^{i+1}) per unit (R, 1, 1, H) when it does not depend on the context
    (HMC's mass matrix), else 1."""
    if getattr(layer, "scale", None) == "unit":
        return torch.exp(layer.log_scale.detach()).to(dtype).reshape(layer.num_runs, 1, 1, -1)
    return 1.0



def _metropolis(log_ratio: Tensor, uniform: Tensor) -> Tensor:
    """Accept where log u < log ratio (a NaN ratio, e.g. an HMC trajectory that overflowed, is
    rejected)."""
    return torch.log(uniform) < torch.nan_to_num(log_ratio, nan=-math.inf)


def _acceptance(log_ratio: Tensor) -> Tensor:
    """min(1, exp(log ratio)) averaged over the chains, (R, B)."""
    return torch.exp(torch.nan_to_num(log_ratio, nan=-math.inf).clamp(max=0.0)).mean(1)


# -- the chains --------------------------------------------------------------------------------

class _Chains:
    """S chains of B examples for R runs: the latents h (bottom-up, each (R, S, B, H_i)), the
    cached terms of log p(x, h) (each (R, S, B)), the log weights and the step sizes."""

    def __init__(self, model, x: Tensor, h: list[Tensor], generators, options: AISOptions,
                 log_sizes: list[Tensor | None]):
        self.model, self.x, self.h = model, x, h
        self.generators, self.options = generators, options
        self.dtype, self.device = h[0].dtype, h[0].device
        self.shape = h[0].shape[:-1]                                      # (R, S, B)
        self.terms = [_expand(_term(model, x, h, k), self.shape) for k in range(len(h) + 1)]
        self.log_weights = torch.zeros(self.shape, dtype=torch.float64, device=self.device)
        self.kinds = model.latent_kinds
        self.log_sizes = log_sizes
        self.acceptance_sums = [None] * len(h)
        self.transitions = 0
        # per layer, the gradients (of term i, of term i + 1) at the current h[i], or None:
        # kept while the neighbouring layers stay put, so that a one-layer model's gradient
        # kernels need one gradient per proposal, not two
        self.gradients: list[tuple[Tensor, Tensor] | None] = [None] * len(h)

    def draw(self, *leaves: Noise) -> list[Tensor]:
        return draw_noise({"ais": list(leaves)}, self.generators, self.dtype, self.device)["ais"]

    def transition(self, beta: float, log_sizes: list[Tensor | None] | None) -> list[Tensor | None]:
        """One transition leaving f_beta invariant: each latent layer's kernel in turn, bottom-up,
        with the given step sizes (None: the chains' own, adapted). Returns each layer's
        acceptance probability averaged over the chains, (R, B) (None for Gibbs)."""
        accepted = []
        for i, kind in enumerate(self.kinds):
            size = self.log_sizes[i] if log_sizes is None else log_sizes[i]
            if kind == "gaussian":
                rate = self._hmc(i, beta, size)
            elif self.options.binary_kernel == "mh":
                rate = self._flip(i, beta, size)
            elif self.options.binary_kernel == "dmala":
                rate = self._dmala(i, beta, size)
            else:
                rate = self._gibbs(i, beta)
            accepted.append(rate)
            if rate is not None:
                total = rate.mean(-1)
                self.acceptance_sums[i] = (total if self.acceptance_sums[i] is None
                                           else self.acceptance_sums[i] + total)
        self.transitions += 1
        return accepted

    def adapt(self, accepted: list[Tensor | None]) -> None:
        """log s <- log s + rate (a - target), per run, example and layer."""
        for i, rate in enumerate(accepted):
            if rate is None:
                continue
            kernel = _kernel(self.kinds[i], self.options)
            target = {"hmc": self.options.hmc_target, "mh": self.options.target_flip,
                      "dmala": self.options.target_dmala}[kernel]
            step = self.options.adapt_rate * (rate - target).unsqueeze(1).unsqueeze(-1)
            low, high = _SIZE_BOUNDS[kernel](self.h[i].shape[-1])
            self.log_sizes[i] = (self.log_sizes[i] + step).clamp(low, high)

    def _update(self, i: int, accept: Tensor, proposal: Tensor, below: Tensor, own: Tensor,
                gradients: tuple[Tensor, Tensor] | None = None):
        """Move the accepted chains of layer i to the proposal (with its terms and, from the
        gradient kernels, its gradients)."""
        keep = accept.unsqueeze(-1)
        self.h[i] = torch.where(keep, proposal, self.h[i])
        self.terms[i] = torch.where(accept, _expand(below, self.shape), self.terms[i])
        self.terms[i + 1] = torch.where(accept, _expand(own, self.shape), self.terms[i + 1])
        current = self.gradients[i]
        self.gradients[i] = (None if gradients is None or current is None else
                             tuple(torch.where(keep, new, old)
                                   for new, old in zip(gradients, current, strict=True)))
        self._moved(i)

    def _moved(self, i: int) -> None:
        """Layer i may have changed: its neighbours' cached gradients no longer hold."""
        for j in (i - 1, i + 1):
            if 0 <= j < len(self.gradients):
                self.gradients[j] = None

    def _flip(self, i: int, beta: float, log_rate: Tensor) -> Tensor:
        """MH with a state-independent flip mask (module docstring)."""
        h = self.h[i]
        units = h.shape[-1]
        flips, pick, u = self.draw(Noise("uniform", tuple(h.shape[1:])),
                                   Noise("uniform", tuple(self.shape[1:])),
                                   Noise("uniform", tuple(self.shape[1:])))
        chosen = (pick * units).long().clamp_(max=units - 1)
        mask = flips < torch.exp(log_rate)
        mask.scatter_(-1, chosen.unsqueeze(-1), True)
        proposal = torch.where(mask, 1 - h, h)
        below, own = _local_terms(self.model, self.x, self.h, i, proposal)
        log_ratio = (_combine(below, own, i, beta)
                     - _combine(self.terms[i], self.terms[i + 1], i, beta))
        self._update(i, _metropolis(log_ratio, u), proposal, below, own)
        return _acceptance(log_ratio)

    def _dmala(self, i: int, beta: float, log_alpha: Tensor) -> Tensor:
        """The discrete Langevin proposal with its MH correction (module docstring): every unit
        flips independently with probability sigmoid(d_j / 2 - 1 / (2 alpha)), d_j the
        gradient's first-order estimate of the change in log f_beta were unit j flipped."""
        h = self.h[i]
        flips, u = self.draw(Noise("uniform", tuple(h.shape[1:])),
                             Noise("uniform", tuple(self.shape[1:])))
        penalty = 0.5 * torch.exp(-log_alpha)
        log_f0, grad = self._current(i, beta)
        forward_logits = 0.5 * (1 - 2 * h) * grad - penalty
        mask = flips < torch.sigmoid(forward_logits)
        proposal = torch.where(mask, 1 - h, h)
        below, own, gradients = self._evaluate(i, proposal)
        log_f1 = _combine(below, own, i, beta)
        reverse_logits = 0.5 * (1 - 2 * proposal) * _combine(*gradients, i, beta) - penalty
        # log q(h' | h) and log q(h | h'): the same units flip either way
        log_forward = torch.where(mask, F.logsigmoid(forward_logits),
                                  F.logsigmoid(-forward_logits)).sum(-1)
        log_reverse = torch.where(mask, F.logsigmoid(reverse_logits),
                                  F.logsigmoid(-reverse_logits)).sum(-1)
        log_ratio = log_f1 - log_f0 + log_reverse - log_forward
        self._update(i, _metropolis(log_ratio, u), proposal, below, own, gradients)
        return _acceptance(log_ratio)

    def _gibbs(self, i: int, beta: float) -> None:
        """A systematic-scan Gibbs sweep over the units of layer i, each from its exact
        conditional."""
        (uniforms,) = self.draw(Noise("uniform", tuple(self.h[i].shape[1:])))
        for j in range(self.h[i].shape[-1]):
            values = []
            for bit in (0.0, 1.0):
                value = self.h[i].clone()
                value[..., j] = bit
                values.append((value, *_local_terms(self.model, self.x, self.h, i, value)))
            (off, below0, own0), (on, below1, own1) = values
            log_odds = _combine(below1, own1, i, beta) - _combine(below0, own0, i, beta)
            one = uniforms[..., j] < torch.sigmoid(log_odds)
            self.h[i] = torch.where(one.unsqueeze(-1), on, off)
            self.terms[i] = torch.where(one, _expand(below1, self.shape),
                                        _expand(below0, self.shape))
            self.terms[i + 1] = torch.where(one, _expand(own1, self.shape),
                                            _expand(own0, self.shape))
        self.gradients[i] = None
        self._moved(i)
        return None

    def _evaluate(self, i: int, value: Tensor):
        """(term i, term i + 1) with layer i at `value`, and the gradient of each with respect
        to it (the two terms' graphs share only `value`: two backward passes cost one)."""
        with torch.enable_grad():
            value = value.detach().requires_grad_(True)
            below, own = _local_terms(self.model, self.x, self.h, i, value)
            gradients = tuple(
                grad if grad is not None else torch.zeros_like(value)
                for grad in (torch.autograd.grad(term.sum(), value, allow_unused=True)[0]
                             for term in (below, own)))
        return below.detach(), own.detach(), gradients

    def _current(self, i: int, beta: float) -> tuple[Tensor, Tensor]:
        """log f_beta's part in layer i and its gradient at the current h[i]."""
        if self.gradients[i] is None:
            self.gradients[i] = self._evaluate(i, self.h[i])[2]
        below, own = self.gradients[i]
        return (_combine(self.terms[i], self.terms[i + 1], i, beta),
                _combine(below, own, i, beta))

    def _hmc(self, i: int, beta: float, log_step: Tensor) -> Tensor:
        """HMC with `leapfrog_steps` leapfrog steps, mass diag(1 / sigma^2) (module docstring)."""
        h = self.h[i]
        sigma = _gaussian_scale(_own_layer(self.model, i), self.dtype, self.device)
        momentum, u = self.draw(Noise("normal", tuple(h.shape[1:])),
                                Noise("uniform", tuple(self.shape[1:])))
        step = torch.exp(log_step) * sigma                                # (R, 1, B, H)
        log_f0, grad = self._current(i, beta)
        position, r = h, momentum + 0.5 * torch.exp(log_step) * sigma * grad
        leapfrogs = self.options.leapfrog_steps
        for step_index in range(leapfrogs):
            position = position + step * r
            below, own, gradients = self._evaluate(i, position)
            scale = 1.0 if step_index < leapfrogs - 1 else 0.5
            r = r + scale * torch.exp(log_step) * sigma * _combine(*gradients, i, beta)
        log_f = _combine(below, own, i, beta)
        log_ratio = ((log_f - 0.5 * (r * r).sum(-1))
                     - (log_f0 - 0.5 * (momentum * momentum).sum(-1)))
        self._update(i, _metropolis(log_ratio, u), position, below, own, gradients)
        return _acceptance(log_ratio)


#: bounds of log step size per kernel, as a function of the layer's size: HMC eps in [1e-4, 10]
#: sigma units; the flip rate q in [1e-3 / H, 0.5]; DMALA's alpha in [0.02, 10]
_SIZE_BOUNDS = {"hmc": lambda units: (math.log(1e-4), math.log(10.0)),
                "mh": lambda units: (math.log(1e-3 / units), math.log(0.5)),
                "dmala": lambda units: (math.log(0.02), math.log(10.0))}


def _kernel(kind: str, options: AISOptions) -> str:
    return "hmc" if kind == "gaussian" else options.binary_kernel


def _initial_log_sizes(model, options: AISOptions, runs: int, batch: int, dtype, device):
    sizes = []
    for kind, units in zip(model.latent_kinds, model.latent_sizes, strict=True):
        if kind == "gaussian":
            value = math.log(options.step_size)
        elif options.binary_kernel == "mh":
            rate = options.flip_rate if options.flip_rate is not None else 1.0 / units
            value = math.log(max(rate, 1e-3 / units))
        elif options.binary_kernel == "dmala":
            # alpha such that a unit flips with probability 1 / (H + 1) where the gradient is 0
            value = -math.log(2 * math.log(units + 1))
        else:
            sizes.append(None)
            continue
        sizes.append(torch.full((runs, 1, batch, 1), value, dtype=dtype, device=device))
    return sizes


def _prior_sample(model, chains: int, batch: int, generators, dtype, device) -> list[Tensor]:
    """h ~ p(h), ancestral, each layer (R, S, B, H_i), from each run's generator."""
    request = [model.prior.noise(chains, batch)]
    request += [layer.noise(chains, batch) for layer in reversed(model.conditionals)]
    noise = draw_noise({"prior": request}, generators, dtype, device)["prior"]
    h = [model.prior.sample(None, noise[0])]
    for layer, layer_noise in zip(reversed(model.conditionals), noise[1:], strict=True):
        h.insert(0, layer.sample(h[0], layer_noise))
    return h


def _run_chains(model, x, h, betas: Tensor, generators, options: AISOptions,
                frozen: list[list[Tensor | None]] | None, adapt: bool):
    """Run chains starting at h (at beta = betas[0]) along betas; returns the chains and the step
    sizes each transition used (a list per transition)."""
    batch = x.shape[-2]
    runs = h[0].shape[0]
    chains = _Chains(model, x, h, generators, options,
                     _initial_log_sizes(model, options, runs, batch, h[0].dtype, h[0].device))
    used = []
    steps = betas.shape[0] - 1
    for t in range(1, steps + 1):
        chains.log_weights += (float(betas[t]) - float(betas[t - 1])) * chains.terms[0].double()
        if t == steps:
            break
        sizes = frozen[t - 1] if frozen is not None else None
        used.append(list(chains.log_sizes) if sizes is None else sizes)
        accepted = chains.transition(float(betas[t]), sizes)
        if adapt and sizes is None:
            chains.adapt(accepted)
    return chains, used


def _chunk(model, x: Tensor, chains: int) -> int:
    width = max(x.shape[-1], *model.latent_sizes)
    return max(1, min(chains, _ELEMENTS_PER_CHUNK // max(1, x.shape[-2] * width)))


def _check(chains: int, steps: int) -> None:
    if steps < 1:
        raise UserError(f"AIS needs at least 1 step (--steps), got {steps}")
    if chains < 1:
        raise UserError(f"AIS needs at least 1 chain (--k), got {chains}")


def _as_batched(x: Tensor) -> Tensor:
    return x.unsqueeze(0) if x.dim() == 2 else x


def _pilot(model, x, betas, generators, options, start=None) -> list[list[Tensor | None]] | None:
    """The step sizes of every transition, tuned on `pilot_chains` chains (from the prior, or
    from `start`), or None when the real chains tune their own (or keep the initial ones)."""
    if options.adapt != "pilot" or betas.shape[0] <= 2:
        return None
    batch, dtype, device = x.shape[-2], x.dtype, x.device
    h = (_prior_sample(model, options.pilot_chains, batch, generators, dtype, device)
         if start is None else [layer[:, :1].expand(-1, options.pilot_chains, -1, -1).clone()
                                for layer in start])
    _, used = _run_chains(model, x, h, betas, generators, options, None, adapt=True)
    return used


def _forward_or_reverse(model, x, chains, betas, generators, options, frozen, start,
                        direction) -> AISResult:
    """Chains in chunks along betas (from the prior, or from `start` (R, 1, B, H_i) expanded),
    with the step sizes `frozen` (or their own: options.adapt)."""
    runs = max(model.num_runs, x.shape[0])
    batch = x.shape[-2]
    chunk = _chunk(model, x, chains)
    weights, acceptance, sizes = [], [0.0] * len(model.latent_sizes), None
    for first in range(0, chains, chunk):
        count = min(chunk, chains - first)
        h = (_prior_sample(model, count, batch, generators, x.dtype, x.device) if start is None
             else [layer.expand(-1, count, -1, -1).clone() for layer in start])
        run, _ = _run_chains(model, x, h, betas, generators, options, frozen,
                             adapt=options.adapt != "none")
        weights.append(run.log_weights)
        for i, total in enumerate(run.acceptance_sums):
            if total is not None:
                acceptance[i] = acceptance[i] + total * count / run.transitions
        sizes = run.log_sizes if frozen is None else (frozen[-1] if frozen else run.log_sizes)
    acceptance = [a / chains if torch.is_tensor(a) else None for a in acceptance]
    final = [None if s is None else torch.exp(s).reshape(runs, batch) for s in sizes]
    return AISResult(torch.cat(weights, 1), acceptance, final, direction)


@torch.no_grad()
def ais(model, x: Tensor, chains: int, steps: int, generators=None,
        options: AISOptions | None = None) -> AISResult:
    """Forward AIS from the prior to the posterior of each example of x (B, D) or (R|1, B, D):
    `chains` chains, `steps` = T ratios (T - 1 transitions); one generator per run (None: the
    global stream)."""
    _check(chains, steps)
    options = options or AISOptions()
    x = _as_batched(x)
    generators = [None] * model.num_runs if generators is None else list(generators)
    betas = schedule(steps, options.schedule, options.sharpness)
    with parameters_frozen(model):
        frozen = _pilot(model, x, betas, generators, options)
        return _forward_or_reverse(model, x, chains, betas, generators, options, frozen, None,
                                   "forward")


def ais_log_likelihood(model, x: Tensor, chains: int, steps: int, generators=None,
                       options: AISOptions | None = None) -> Tensor:
    """log (1/S) sum_s w_s per run and example, (R, B): a stochastic lower bound on log p(x)."""
    return ais(model, x, chains, steps, generators, options).log_likelihood


@torch.no_grad()
def simulate(model, num_examples: int, generators=None, lengths: Tensor | None = None,
             dtype=None, device=None) -> tuple[Tensor, list[Tensor]]:
    """(x, h) ~ p(x, h): x (R, B, D) and the latents [(R, B, H_i)] bottom-up, an exact posterior
    sample for each x. Document models need `lengths` (R, B)."""
    dtype = dtype or model.prior.bias.dtype
    device = device or model.prior.bias.device
    generators = [None] * model.num_runs if generators is None else list(generators)
    noise = draw_noise({"x": model.noise(num_examples, lengths=lengths)}, generators, dtype,
                       device)["x"]
    return model.sample(noise, lengths)


@torch.no_grad()
def bidirectional_ais(model, x: Tensor, h: Sequence[Tensor], chains: int, steps: int,
                      generators=None, options: AISOptions | None = None) -> BidirectionalResult:
    """Forward AIS (a stochastic lower bound on log p(x)) and reverse AIS from the exact posterior
    samples h (a stochastic upper bound) on examples simulated from the model (`simulate`):
    x (R, B, D), h [(R, B, H_i)]. Both use the same kernels and the same step sizes (tuned by a
    forward pilot run, or each chain's own)."""
    _check(chains, steps)
    options = options or AISOptions()
    x = _as_batched(x)
    generators = [None] * model.num_runs if generators is None else list(generators)
    betas = schedule(steps, options.schedule, options.sharpness)
    start = [layer.unsqueeze(1) if layer.dim() == 3 else layer[:, :1] for layer in h]
    with parameters_frozen(model):
        frozen = _pilot(model, x, betas, generators, options)
        forward = _forward_or_reverse(model, x, chains, betas, generators, options, frozen, None,
                                      "forward")
        reverse = _forward_or_reverse(model, x, chains, betas.flip(0), generators, options,
                                      None if frozen is None else frozen[::-1], start, "reverse")
    return BidirectionalResult(forward, reverse)
