"""Short-run MCMC inference (Nijkamp et al. 2020): T Langevin or discrete-Langevin steps from the prior.

Nijkamp, Pang, Han, Zhou, Zhu & Wu, "Learning Multi-layer Latent Variable Model via Variational
Optimization of Short Run MCMC for Approximate Inference", ECCV 2020, arXiv 1912.01909; code
github enijkamp/short_run_inf; and its binary counterpart built on
the discrete Langevin proposal (Zhang, Liu & Liu, "A Langevin-like Sampler for Discrete
Distributions", ICML 2022, arXiv 2206.09914; code github ruqizhang/discrete-langevin).

No inference network: every update runs, for each example, a chain of T steps started afresh
from the prior and updates the model on the chain's last state. The inference network Q is never
trained (it is in no update; runs validate with AIS, `validation_bound = "ais"`).

Gaussian latents (the paper). Langevin dynamics from the prior, T steps of

    v_{t+1} = v_t + (s_l^2 / 2) grad_v log p(x, v_t) + s_l eps_t,    eps_t ~ N(0, I),  v_0 ~ p(v)

with one step size s_l per latent layer l, all layers moved together by one gradient of the
joint (as the authors' `infer_z` does). Model update: the gradient of log p(x, v_T) at the
chain's last state, which is held fixed (no gradient flows through the chain):

    model loss = -sum_i log p(x_i, v_T,i),    v_T detached

Its expectation is E_{q_T(v | x)}[grad_theta log p(x, v)] with q_T, the chain's T-step
distribution, held fixed: the update of EM with q_T in place of the posterior, biased for
log p(x) by design (zero bias only as q_T -> p(v | x)).

The chain's variables v. The authors' code runs the chain on the standardised noises of the
stochastic layers (z_i = mu_i(z_{i+1}) + sigma_i eps_i; `sample_p_0` draws every layer's v from
N(0, I); the drift is -(s^2/2)(v + grad of the reconstruction error), i.e. grad_v of
log p(x | z(v)) + log N(v; 0, I)); `space = "noise"` does that, and then log p(x, v) =
log p(x | z(v)) + sum_l log N(v_l; 0, I) and the model loss's gradient flows through z(v; theta).
`space = "latent"` runs it on the latents z themselves (v = z, z_0 an ancestral sample,
log p(x, z) the model's joint). With one latent layer the two coincide.

The step size (§3, "variational optimization"). The paper chooses s to minimise
KL(q_s(v | x) || p(v | x)) = -E_q[log p(x, v_T)] - H(q_s) + log p(x). The entropy of q_s, the
T-step marginal, has no closed form. What the stored copies of the paper let us read is the
abstract (the step size "is variationally optimized by minimizing the Kullback-Leibler divergence
between the distribution produced by the short run MCMC and the posterior distribution"); the
paper's own treatment of the entropy term was not retrievable here, and the authors' released
code has no step-size learning at all: `z_step_size = 0.05` per layer, fixed, T = `z_n_iters` =
25, chosen by `pygrid`, a grid over whole training runs (`create_args_grid`, whose released grid
holds the single value 0.05) scored by MSE and FID. So the suite offers:

- "" (learn_step=True): the closest tractable version of the KL minimisation. Conditioning
  reduces entropy, H(q_T) >= H(v_T | v_{T-1}) = sum_l (D_l / 2) log(2 pi e s_l^2) (the last
  step is Gaussian given v_{T-1}), so

      J(s) = E[log p(x, v_T)] + sum_l (D_l / 2) log(2 pi e s_l^2)  <=  ELBO(q_T)  <=  log p(x)

  and maximising J minimises an upper bound on the KL. Its gradient in log s is taken by
  differentiating through the chain (v_T is a differentiable function of s, v_0 and the eps:
  second derivatives of log p, `create_graph`), with the model's parameters held fixed. The
  step sizes are a parameter of the estimator (`log_step`, (R, L)), group "step", at
  `step_lr_scale` times the model's rate; their surrogate is the minibatch mean of -J (a few
  scalars shared by the minibatch: their rate should not grow with the batch size).
- "fixed" (learn_step=False): s fixed at `step_size`, the authors' released configuration
  (T = 25, s = 0.05 for every layer). Their grid search is over whole runs: in the suite it is
  a suite of cells with `--set step_size=...`, not an option of the estimator.

Binary latents (SBNs: sigmoid belief nets, fDARN, document models, nonlinear SBNs). The chain
starts from an ancestral sample of the model's prior (its layers' `sample` from uniforms) and
moves one latent layer at a time, bottom-up within each of the T sweeps (the layer next to the
data first, so that the evidence of x reaches the layers above within a sweep). A sub-step on
layer l targets p(h^l | rest) ∝ p(h^l | h^{l+1}) p(h^{l-1} | h^l) (only those two terms of the
joint depend on h^l), and flips every unit of the layer in parallel:

    Delta_j = log p(x, h with h_j flipped) - log p(x, h)                 (flip gains)
    p_j = sigmoid(Delta_j / 2 - 1 / (2 alpha_l))                         (the discrete Langevin
                                                                          proposal for {0, 1})

Derivation (Zhang et al. Eq. 3): q(h' | h) ∝ exp(Delta(h)·(h' - h)/2 - ||h' - h||^2 / (2 alpha))
factorises over units; for h'_j in {h_j, 1 - h_j} the exponent is 0 (stay) or
Delta_j / 2 - 1 / (2 alpha) (flip, ||h' - h||^2 = 1), whence the logistic flip probability: the
authors' code (`LangevinSampler`, temp = 2) computes exactly sigmoid(Delta / 2 - 1 / (2 alpha)).
Gains: "gradient" (their code's `approx=True`, DLP's first-order Taylor form):
Delta_j ≈ (1 - 2 h_j) d/dh_j [log p(h^l | h^{l+1}) + log p(h^{l-1} | h^l)], one backward pass,
any layer kind; "exact": the exact differences (their `difference_function`), in closed form for
linear-logistic layers (the unit's own term changes by (1 - 2 h_j) a_j; the logits of the layer
below shift by ±W_j, one (B, H, D) softplus), by evaluating every flipped state otherwise.

- "dlp" (kernel=dlp): DULA, the flips accepted as proposed (unadjusted, as the paper's Langevin
  is); alpha = 0.1 (their DULA setting in rbm_sample.py and pcd.py).
- "dmala" (kernel=dmala): DMALA, the flipped layer accepted with the Metropolis-Hastings
  probability A = min(1, p(x, h') q(h | h') / (p(x, h) q(h' | h))) (the reverse proposal uses the
  gains at h' and the same flipped units), so each sub-step leaves p(h | x) invariant;
  alpha = 0.2 (their DMALA setting). "" on binary latents is DMALA: unlike the unadjusted
  chains its T -> infinity limit is the posterior.
- "gibbs" (kernel=gibbs): exact Gibbs sweeps, unit by unit within each layer (bottom-up),
  h_j flipped with probability sigmoid(Delta_j) from the exact gain at the current state. No
  step size.

Step size alpha_l per layer, learned by the same criterion as s (a stated substitute for the
gradient, which cannot flow through binary draws): J = E[log p(x, h_T)] + H(h_T | h_{T-1}) with
H(h_T | h_{T-1}) <= H(q_T) estimated per sample on the last sweep (the sweep's output and input
determine every intermediate layer state, so the conditional entropy is the sum over its
sub-steps): DLP sum_j H_bern(p_j) exactly; DMALA H_bern(A) of the proposal made (a lower bound:
conditioning on the proposal as well); its gradient in log alpha by the score function of every
binary decision of the chain (flips and acceptances), each weighted by J_i - log p(x_i, h before
that decision) (a baseline from the past, zero in expectation), plus the explicit dependence of
the entropy terms on alpha. Since every discrete distribution has H >= 0, E[log p(x, h_T)] alone
is already <= log p(x) for binary latents.

Metrics: "bound" = mean over the minibatch of log p(x, v_T) + H(v_T | v_{T-1}) (per sample, as
above): its expectation is a lower bound on log p(x) (<= ELBO(q_T)), loose but finite and
comparable along a run; "log_joint" = mean log p(x, v_T) (not a bound for Gaussian latents,
where a density may exceed p(x)); "entropy" the last step's conditional entropy; "step_size_l"
per layer; "flip_rate" and "accept_rate" for the binary kernels.

Expected updates (the bias check's claim, `exact_objectives`). Binary latents: on a tiny model
all 2^H latent states are enumerated; each sub-step's transition matrix K_k (B, S, S) is built
from the same gains and flip probabilities the sampler uses (proposal product over the layer's
units; MH moves and the rejected mass on the diagonal; Gibbs one unit at a time), the chain's
T-step distribution is prior · (K_1 ... K_n)^T, and the claims are
model: sum_i E_{q_T}[grad_theta log p(x_i, h)] (q_T held fixed) and step:
grad_{log alpha} mean_i (E_{q_T}[log p(x_i, h)] + E[entropy terms]) (differentiable in alpha
through the K's). Gaussian latents: the expectation is an integral over the (1 + T)·H normals
of the chain, computed by Gauss-Hermite quadrature (models/quadrature.py, CLAIM_NODES per
dimension) when there are at most 2 (e.g. gauss:1 with T = 1); larger chains are refused with
a UserError (tests/test_short_run.py checks a linear-Gaussian chain against its closed form).

Cost: `evaluations_per_example` counts evaluations of log p(x, .) (each with its gradient in the
latents where the kernel needs one) plus the final model update: Langevin T + 1 (learning s also
backpropagates through the chain: about twice the chain's cost, not counted); DLP T + 1 (one
gains evaluation per sweep); DMALA 2T + 1 (gains at the state and at the proposal; T + 2 for
one latent layer, where the proposal's gains are reused); Gibbs T + 1 (each sweep scores every
unit's conditional once, incrementally for linear-logistic layers).

Shapes: x (R, B, D); chain variables v_l / h_l (R, B, H_l) (an extra sample dimension
(R, M, B, H_l) in the quadrature and (R, S, B, H_l) in the enumeration); noise "prior" the
ancestral sample's (top-down, as `BeliefNet.noise`), "eps" (R, T, B, H_l) and "flips"
(R, T, B, H_l) bottom-up, "accept" (R, T, B) per layer; log_step (R, L).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from algorithms.base import Algorithm, StepResult
from bench.errors import UserError
from models import noise as noise_module
from models.gaussian import HALF_LOG_TWO_PI
from models.layers import LogisticLayer, align, bernoulli_log_prob, parameters_frozen
from models.noise import Noise
from models.quadrature import CLAIM_NODES, product_grid

KERNELS = ("auto", "langevin", "dlp", "dmala", "gibbs")
BINARY_KERNELS = ("dlp", "dmala", "gibbs")
GAINS = ("gradient", "exact")
SPACES = ("noise", "latent")
#: the binary claim enumerates 2^H states and (B, S, S) transition matrices
MAX_CLAIM_UNITS = 10
#: the Gaussian claim integrates over at most this many normals per example
MAX_CLAIM_NORMALS = 2
HALF_LOG_TWO_PI_E = 0.5 * math.log(2 * math.pi * math.e)


@dataclass(frozen=True)
class ShortRunOptions:
    kernel: str = "auto"          # auto: langevin for Gaussian latents, dmala for binary ones
    num_steps: int = 25           # T: the authors' code, z_n_iters = 25
    step_size: float = 0.05       # Langevin s (initial when learned): their z_step_size = 0.05
    flip_step_size: float = 0.2   # alpha of DLP/DMALA (initial when learned): their DMALA's 0.2
    learn_step: bool = True       # optimise the step sizes by the KL bound J (module docstring)
    step_lr_scale: float = 1.0    # the step sizes' rate relative to the model's
    gains: str = "gradient"       # DLP/DMALA flip gains: gradient (their code's) or exact
    space: str = "noise"          # Langevin on the layers' standardised noises (their code) or
                                  # on the latents

    def __post_init__(self):
        for name, value, valid in (("kernel", self.kernel, KERNELS), ("gains", self.gains, GAINS),
                                   ("space", self.space, SPACES)):
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be at least 1, got {self.num_steps}")
        if not (self.step_size > 0 and self.flip_step_size > 0):
            raise ValueError("step_size and flip_step_size must be positive")
        if self.step_lr_scale < 0:
            raise ValueError("step_lr_scale must be non-negative")



def _bernoulli_entropy(logit: Tensor) -> Tensor:
    """H of Bernoulli(sigmoid(logit)), elementwise: p softplus(-z) + (1 - p) softplus(z)."""
    p = torch.sigmoid(logit)
    return p * F.softplus(-logit) + (1 - p) * F.softplus(logit)


def _log_one_minus_exp(log_a: Tensor) -> Tensor:
    """log(1 - e^a) for a <= 0, -inf at a = 0, with finite gradients everywhere (double where)."""
    inside = log_a < 0
    safe = torch.where(inside, log_a, torch.full_like(log_a, -1.0))
    value = torch.where(safe > -0.693, torch.log(-torch.expm1(safe)), torch.log1p(-torch.exp(safe)))
    return torch.where(inside, value, torch.full_like(log_a, -math.inf))


def _acceptance_entropy(log_a: Tensor) -> Tensor:
    """H_bern(a) for a = e^{log_a} <= 1 (0 at a = 1 and at a = 0), finite gradients."""
    inside = (log_a < 0) & (log_a > -700.0)
    safe = torch.where(inside, log_a, torch.full_like(log_a, -1.0))
    a = torch.exp(safe)
    value = -a * safe - (1 - a) * _log_one_minus_exp(safe)
    return torch.where(inside, value, torch.zeros_like(log_a))


def _decision_log_prob(taken: Tensor, logit: Tensor) -> Tensor:
    """log-probability of Bernoulli(sigmoid(logit)) outcomes `taken` (bool), summed over units."""
    return F.logsigmoid(torch.where(taken, logit, -logit)).sum(-1)


def _linear_logistic(layer) -> bool:
    """Whether a layer's logits are W context + b (+ U value), W stored as `weight` (R, C, H)."""
    return type(layer) is LogisticLayer and layer.weight is not None


def _smooth_log_prob(layer, value: Tensor, context: Tensor | None) -> Tensor:
    """log p(value | context), twice differentiable in the context (the closed-form backward of
    LogisticLayer.log_prob is not: the Langevin chain's step-size gradient needs second
    derivatives). Binary units score their logits; Gaussian units are plain torch already."""
    if getattr(layer, "kind", "binary") == "gaussian":
        return layer.log_prob(value, context)
    logits = (layer.logits(context, value) if getattr(layer, "autoregressive", False)
              else layer.context_logits(context, value.dim()))
    ndim = max(logits.dim(), value.dim())
    return bernoulli_log_prob(align(logits, ndim), align(value, ndim))


def _standard_normal_log_prob(value: Tensor) -> Tensor:
    return (-0.5 * value * value).sum(-1) - HALF_LOG_TWO_PI * value.shape[-1]


class _ChainRecord:
    """What the binary chain keeps for the step-size gradient and the metrics."""

    def __init__(self):
        self.scores: list[tuple[Tensor, Tensor]] = []   # (log-prob of decisions, baseline)
        self.entropy: Tensor | float = 0.0               # the last sweep's, (R, B)
        self.flips: list[Tensor] = []
        self.accepts: list[Tensor] = []


class ShortRun(Algorithm):
    name = "short-run"
    Options = ShortRunOptions
    presets = {"": {}, "fixed": {"learn_step": False},
               "dlp": {"kernel": "dlp", "flip_step_size": 0.1},
               "dmala": {"kernel": "dmala"},
               "gibbs": {"kernel": "gibbs"}}
    structural_options = ("kernel", "num_steps", "learn_step", "gains", "space")
    check_model = "sbn:2-3"
    #: T = 25 sweeps per step: the default's Monte Carlo check takes about a minute at 400
    check_steps = 400
    validation_bound = "ais"

    def __init__(self, model, inference, options, generators=None):
        super().__init__(model, inference, options, generators)
        first = self.options[0]
        kinds = set(model.latent_kinds)
        if len(kinds) > 1:
            raise UserError(f"{self.name} runs one kind of chain over every latent layer; this "
                            f"model mixes binary and Gaussian layers: choose a model with all "
                            f"layers Gaussian (gauss:64-64) or all binary (sbn:200-200)")
        gaussian = kinds == {"gaussian"}
        kernel = first.kernel
        if kernel == "auto":
            kernel = "langevin" if gaussian else "dmala"
        if gaussian and kernel != "langevin":
            raise UserError(f"{self.name} kernel {kernel} flips binary units, but this model's "
                            f"latents are Gaussian: use {self.name} (Langevin) or "
                            f"--set kernel=langevin")
        if not gaussian and kernel == "langevin":
            raise UserError(f"{self.name} kernel langevin needs Gaussian latents, but this "
                            f"model's are binary: use {self.name}:dmala, {self.name}:dlp or "
                            f"{self.name}:gibbs")
        self.kernel = kernel
        self.num_steps = first.num_steps
        self.learn_step = first.learn_step and kernel != "gibbs"
        self.gains = "exact" if kernel == "gibbs" else first.gains
        self.space = first.space
        sizes = model.latent_sizes
        initial = [math.log(o.step_size if kernel == "langevin" else o.flip_step_size)
                   for o in self.options]
        reference = model.prior.bias
        self.log_step = nn.Parameter(torch.tensor(initial, dtype=reference.dtype,
                                                  device=reference.device)
                                     .view(-1, 1).repeat(1, len(sizes)))

    # -- the contract -------------------------------------------------------------------------
    def parameter_groups(self):
        return {"model": list(self.model.parameters()),
                "inference": list(self.inference.parameters()),
                "step": [self.log_step]}

    def learning_rate_scales(self, options):
        # The inference network is left out (rate 0): short-run inference trains none.
        scales = {"model": 1.0}
        if self.learn_step:
            scales["step"] = float(options.step_lr_scale)
        return scales

    def evaluations_per_example(self, options) -> float:
        T = options.num_steps
        if self.kernel == "dmala":
            return float((T + 1 if len(self.model.latent_sizes) == 1 else 2 * T) + 1)
        return float(T + 1)

    def noise(self, x: Tensor) -> dict[str, list[Noise]]:
        batch, T = x.shape[-2], self.num_steps
        sizes = self.model.latent_sizes
        top_down = [self.model.prior] + list(reversed(self.model.conditionals))
        request = {"prior": [layer.noise(batch) for layer in top_down]}
        if self.kernel == "langevin":
            request["eps"] = [Noise("normal", (T, batch, size)) for size in sizes]
            return request
        request["flips"] = [noise_module.uniform(T, batch, size) for size in sizes]
        if self.kernel == "dmala":
            request["accept"] = [noise_module.uniform(T, batch) for _ in sizes]
        return request

    def step(self, x: Tensor, noise) -> StepResult:
        if self.kernel == "langevin":
            return self._langevin_step(x, noise)
        return self._binary_step(x, noise)

    def posterior_noise(self, x: Tensor):
        return self.noise(x)

    def posterior_latents(self, x: Tensor, noise) -> list[Tensor]:
        """The chain's last state for x (the paper's reconstructions are made from it)."""
        with torch.no_grad():
            log_step = self.log_step.detach()
        if self.kernel == "langevin":
            with parameters_frozen(self.model):
                v = self._langevin(x, self._gaussian_start(noise["prior"]), noise["eps"],
                                   log_step, create_graph=False)
                return [z.detach() for z in (self._decode(v) if self.space == "noise" else v)]
        with parameters_frozen(self.model), torch.no_grad():
            h, _ = self._binary_chain(x, noise, log_step, learn=False)
        return h

    def exact_objectives(self, x: Tensor) -> dict[str, Tensor]:
        if self.kernel == "langevin":
            return self._gaussian_objectives(x)
        return self._binary_objectives(x)

    # -- step sizes ---------------------------------------------------------------------------
    def _step_sizes(self, log_step: Tensor, ndim: int) -> list[Tensor]:
        """Each layer's step size (R, 1, ..., 1) with `ndim` dimensions."""
        return [torch.exp(align(log_step[:, layer], ndim)) for layer in range(log_step.shape[1])]

    def _flip_logits(self, gains: Tensor, layer: int, log_step: Tensor) -> Tensor:
        """logit of each unit's flip probability, DLP for {0, 1} units: Delta / 2 - 1 / (2 alpha)."""
        alpha = torch.exp(align(log_step[:, layer], gains.dim()))
        return gains / 2 - 1 / (2 * alpha)

    def _step_metrics(self, log_step: Tensor) -> dict[str, Tensor]:
        return {f"step_size_{layer}": torch.exp(log_step[:, layer]).detach()
                for layer in range(log_step.shape[1])}

    # -- Langevin (Gaussian latents) ----------------------------------------------------------
    def _gaussian_start(self, prior_noise: list[Tensor]) -> list[Tensor]:
        """The chain's initial variables, bottom-up, from the prior noise (top-down): the
        standardised noises themselves (space "noise"), or an ancestral sample of z."""
        if self.space == "noise":
            return list(reversed(prior_noise))
        with torch.no_grad():
            z = [self.model.prior.sample(None, prior_noise[0])]
            for layer, eps in zip(reversed(self.model.conditionals), prior_noise[1:], strict=True):
                z.insert(0, layer.sample(z[0], eps))
        return z

    def _decode(self, v: list[Tensor]) -> list[Tensor]:
        """z(v): z_top = mu + sigma v_top, z_i = mu_i(z_{i+1}) + sigma_i v_i (bottom-up list)."""
        def draw(layer, context, eps):
            mean, log_scale = layer.mean_and_log_scale(context, eps.dim())
            return align(mean, eps.dim()) + torch.exp(align(log_scale, eps.dim())) * eps

        z = [draw(self.model.prior, None, v[-1])]
        for i in reversed(range(len(self.model.conditionals))):
            z.insert(0, draw(self.model.conditionals[i], z[0], v[i]))
        return z

    def _smooth_log_joint(self, x: Tensor, v: list[Tensor]) -> Tensor:
        """log p(x, v) of the chain's variables, (R, *batch), twice differentiable in v."""
        model = self.model
        if self.space == "noise":
            z = self._decode(v)
            prior = sum(_standard_normal_log_prob(part) for part in v)
        else:
            z = v
            prior = model.prior.log_prob(z[-1])
            for i, layer in enumerate(model.conditionals):
                prior = prior + layer.log_prob(z[i], z[i + 1])
        return _smooth_log_prob(model.visible, x, z[0]) + prior

    def _model_log_joint(self, x: Tensor, v: list[Tensor]) -> Tensor:
        """log p(x, v) with the model parameters' gradient, v fixed: the model update."""
        if self.space == "latent":
            return self.model.log_joint(x, v)
        z = self._decode(v)
        return self.model.visible.log_prob(x, z[0]) + sum(_standard_normal_log_prob(p) for p in v)

    def _langevin(self, x: Tensor, v: list[Tensor], eps: list[Tensor], log_step: Tensor,
                  create_graph: bool) -> list[Tensor]:
        """T Langevin steps from v (bottom-up list); eps[l] (R, T, *batch, H_l). With
        `create_graph` the result is differentiable in log_step (through the chain)."""
        scales = self._step_sizes(log_step, v[0].dim())
        v = [part.detach().requires_grad_(True) for part in v]
        for t in range(self.num_steps):
            with torch.enable_grad():
                log_p = self._smooth_log_joint(x, v)
                grads = torch.autograd.grad(log_p.sum(), v, create_graph=create_graph)
            with torch.set_grad_enabled(create_graph):
                v = [part + 0.5 * s * s * g + s * noise[:, t]
                     for part, g, s, noise in zip(v, grads, scales, eps, strict=True)]
            if not create_graph:
                v = [part.detach().requires_grad_(True) for part in v]
        return v

    def _gaussian_entropy(self, log_step: Tensor) -> Tensor:
        """H(v_T | v_{T-1}) = sum_l D_l (log s_l + log(2 pi e) / 2), (R, 1)."""
        sizes = torch.tensor(self.model.latent_sizes, dtype=log_step.dtype, device=log_step.device)
        return ((log_step + HALF_LOG_TWO_PI_E) * sizes).sum(-1, keepdim=True)

    def _langevin_step(self, x: Tensor, noise) -> StepResult:
        learn = self.learn_step
        log_step = self.log_step if learn else self.log_step.detach()
        with parameters_frozen(self.model):
            v = self._langevin(x, self._gaussian_start(noise["prior"]), noise["eps"], log_step,
                               create_graph=learn)
            entropy = self._gaussian_entropy(log_step)                       # (R, 1)
            objective = self._smooth_log_joint(x, v) + entropy if learn else None
        final = [part.detach() for part in v]
        log_joint = self._model_log_joint(x, final)                           # (R, B), θ
        losses = {"model": -log_joint.sum()}
        if learn:
            losses["step"] = -objective.mean(-1).sum()
        bound = log_joint.detach() + entropy.detach()
        metrics = {"bound": bound.mean(-1), "log_joint": log_joint.detach().mean(-1),
                   "entropy": entropy.detach()[:, 0], **self._step_metrics(self.log_step)}
        return StepResult(losses=losses, metrics=metrics)

    def _gaussian_objectives(self, x: Tensor) -> dict[str, Tensor]:
        """The exact expected updates by Gauss-Hermite quadrature over every normal draw of the
        chain (module docstring): {model: sum_i E[log p(x_i, v_T)] with v_T's law fixed,
        step: mean_i E[J_i]}, each (R,)."""
        sizes = list(self.model.latent_sizes)
        dims = (1 + self.num_steps) * sum(sizes)
        if dims > MAX_CLAIM_NORMALS:
            raise UserError(f"{self.name}'s expected update on Gaussian latents is an integral "
                            f"over the chain's (1 + T)·H = {dims} normal draws per example, "
                            f"computable by quadrature for at most {MAX_CLAIM_NORMALS}: check "
                            f"with --model gauss:1 --set num_steps=1")
        runs, batch = self.num_runs, x.shape[-2]
        grid, log_weight = product_grid(dims, CLAIM_NODES, x.dtype)
        grid, weight = grid.to(x.device), log_weight.exp().to(x.device)
        points = grid.shape[0]
        columns = iter(torch.split(grid, [size for size in sizes[::-1]]
                                   + [size for size in sizes for _ in range(self.num_steps)], -1))

        def expand(block):  # (M, H) -> (R, M, B, H): the same points for every run and example
            return block.view(1, points, 1, -1).expand(runs, points, batch, -1)

        prior = [expand(next(columns)) for _ in sizes]                         # top-down
        eps = [torch.stack([expand(next(columns)) for _ in range(self.num_steps)], 1)
               for _ in sizes]                                                 # (R, T, M, B, H)
        with parameters_frozen(self.model):
            v = self._langevin(x, self._gaussian_start(prior), eps, self.log_step,
                               create_graph=self.learn_step)
            objective = self._smooth_log_joint(x, v) + self._gaussian_entropy(self.log_step
                                                                              ).unsqueeze(-1)
        weight = weight.view(1, points, 1)
        log_joint = self._model_log_joint(x, [part.detach() for part in v])   # (R, M, B)
        objectives = {"model": (weight * log_joint).sum((1, 2))}
        if self.learn_step:
            objectives["step"] = (weight * objective).sum(1).mean(-1)
        return objectives

    # -- binary kernels -----------------------------------------------------------------------
    def _local_layers(self, i: int):
        """(the layer scoring the values below h^i given h^i, the layer of h^i itself)."""
        model = self.model
        below = model.visible if i == 0 else model.conditionals[i - 1]
        own = model.conditionals[i] if i < len(model.conditionals) else model.prior
        return below, own

    def _local_terms(self, x: Tensor, h: list[Tensor], i: int, value: Tensor):
        """(log p(below | h^i = value), log p(h^i = value | h^{i+1})): the two terms of the joint
        that depend on layer i (terms i and i + 1 of `BeliefNet.log_prob_terms`)."""
        below_layer, own_layer = self._local_layers(i)
        below_value = x if i == 0 else h[i - 1]
        context = h[i + 1] if i + 1 < len(h) else None
        return below_layer.log_prob(below_value, value), own_layer.log_prob(value, context)

    def _term(self, x: Tensor, h: list[Tensor], k: int) -> Tensor:
        """Term k of log p(x, h) alone (k = 0: the data's)."""
        if k < len(h):
            return self._local_terms(x, h, k, h[k])[0]
        return self.model.prior.log_prob(h[-1])

    def _layer_gains(self, x: Tensor, h: list[Tensor], i: int):
        """(flip gains of every unit of layer i (R, *batch, H_i), term i, term i + 1), detached."""
        if self.gains == "gradient":
            with torch.enable_grad():
                value = h[i].detach().requires_grad_(True)
                below, own = self._local_terms(x, h, i, value)
                (grad,) = torch.autograd.grad((below + own).sum(), value)
            return (1 - 2 * h[i]) * grad, below.detach(), own.detach()
        return self._exact_gains(x, h, i)

    @torch.no_grad()
    def _exact_gains(self, x: Tensor, h: list[Tensor], i: int):
        """Exact flip gains: closed forms for linear-logistic layers, every flipped state scored
        otherwise (module docstring)."""
        value = h[i]
        sign = 1 - 2 * value
        below_layer, own_layer = self._local_layers(i)
        below_value = x if i == 0 else h[i - 1]
        context = h[i + 1] if i + 1 < len(h) else None
        below, own = self._local_terms(x, h, i, value)
        flipped = None
        if type(own_layer) is LogisticLayer and not own_layer.autoregressive:
            logits = align(own_layer.context_logits(context, value.dim()), value.dim())
            own_gain = sign * logits
        else:
            flipped = value.unsqueeze(1) + torch.diag_embed(sign).movedim(-2, 1)  # (R, H, *b, H)
            own_gain = own_layer.log_prob(flipped, context).movedim(1, -1) - own.unsqueeze(-1)
        if _linear_logistic(below_layer):
            base = below_layer.logits(value, below_value)                   # (R, *b, D)
            weight = align(below_layer.weight, value.dim() + 1)             # (R, 1.., H, D)
            shift = sign.unsqueeze(-1) * weight                             # (R, *b, H, D)
            below_gain = ((align(below_value, base.dim()).unsqueeze(-2) * shift).sum(-1)
                          - (F.softplus(base.unsqueeze(-2) + shift)
                             - F.softplus(base).unsqueeze(-2)).sum(-1))
        else:
            if flipped is None:
                flipped = value.unsqueeze(1) + torch.diag_embed(sign).movedim(-2, 1)
            below_gain = (below_layer.log_prob(below_value, flipped).movedim(1, -1)
                          - below.unsqueeze(-1))
        return own_gain + below_gain, below, own

    def _ancestral(self, prior_noise: list[Tensor]) -> list[Tensor]:
        """An ancestral sample of the prior, bottom-up (each layer records its draws)."""
        with torch.no_grad():
            h = [self.model.prior.sample(None, prior_noise[0])]
            for layer, u in zip(reversed(self.model.conditionals), prior_noise[1:], strict=True):
                h.insert(0, layer.sample(h[0], u))
        return h

    def _binary_chain(self, x: Tensor, noise, log_step: Tensor, learn: bool):
        """T bottom-up sweeps from an ancestral prior sample: (h_T bottom-up, _ChainRecord)."""
        h = self._ancestral(noise["prior"])
        layers = len(h)
        record = _ChainRecord()
        terms: list[Tensor | None] = [None] * (layers + 1)
        cache: list[tuple | None] = [None] * layers
        for t in range(self.num_steps):
            last = t == self.num_steps - 1
            for i in range(layers):
                u = noise["flips"][i][:, t]
                if self.kernel == "gibbs":
                    h[i], entropy = self._gibbs_layer(x, h, i, u, record)
                    terms[i] = terms[i + 1] = None
                    cache = [None] * layers
                else:
                    accept_u = noise["accept"][i][:, t] if self.kernel == "dmala" else None
                    entropy = self._flip_layer(x, h, i, u, accept_u, log_step, learn, terms,
                                               cache, record)
                if last:
                    record.entropy = record.entropy + entropy
        return h, record

    def _baseline(self, x, h, terms) -> Tensor:
        for k, term in enumerate(terms):
            if term is None:
                terms[k] = self._term(x, h, k).detach()
        return sum(terms)

    def _flip_layer(self, x, h, i, u, accept_u, log_step, learn, terms, cache, record) -> Tensor:
        """One DLP or DMALA sub-step on layer i (in place on h, terms, cache); the sub-step's
        per-sample entropy term (R, B). Every binary decision is [u < p], recorded with its
        log-probability for exact enumeration."""
        gains, below, own = cache[i] if cache[i] is not None else self._layer_gains(x, h, i)
        terms[i], terms[i + 1] = below, own
        baseline = self._baseline(x, h, terms) if learn else None
        logit = self._flip_logits(gains, i, log_step)                   # differentiable in alpha
        flip = u < torch.sigmoid(logit.detach())
        log_forward = _decision_log_prob(flip, logit)
        if noise_module.recording():
            noise_module.record_outcome(log_forward.detach())
        proposal = torch.where(flip, 1 - h[i], h[i])
        record.flips.append(flip.to(h[i].dtype).mean(-1))
        for k in (i - 1, i, i + 1):
            if 0 <= k < len(cache):
                cache[k] = None
        if self.kernel == "dlp":
            h[i] = proposal
            terms[i] = terms[i + 1] = None
            if learn:
                record.scores.append((log_forward, baseline))
            return _bernoulli_entropy(logit).sum(-1)
        trial = h[:i] + [proposal] + h[i + 1:]
        gains_back, below_back, own_back = self._layer_gains(x, trial, i)
        log_backward = _decision_log_prob(flip, self._flip_logits(gains_back, i, log_step))
        log_ratio = below_back + own_back - below - own + log_backward - log_forward
        # A NaN ratio (gains that overflowed) is a rejection, as in models/ais.py.
        log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
        log_accept = log_ratio.clamp_max(0.0)
        accept = accept_u < torch.exp(log_accept.detach())
        log_reject = _log_one_minus_exp(log_accept)
        if noise_module.recording():
            noise_module.record_outcome(torch.where(accept, log_accept, log_reject).detach())
        record.accepts.append(accept.to(h[i].dtype))
        keep = accept.unsqueeze(-1)
        h[i] = torch.where(keep, proposal, h[i])
        terms[i] = torch.where(accept, below_back, below)
        terms[i + 1] = torch.where(accept, own_back, own)
        cache[i] = (torch.where(keep, gains_back, gains), terms[i], terms[i + 1])
        if learn:
            # A rejection of a certain move (A = 1) never happens; its score is set to 0 so that
            # the forced configurations of exact enumeration stay finite.
            rejected = torch.where(torch.isfinite(log_reject), log_reject,
                                   torch.zeros_like(log_reject))
            record.scores.append((log_forward + torch.where(accept, log_accept, rejected),
                                  baseline))
        return _acceptance_entropy(log_accept)

    def _gibbs_layer(self, x, h, i, u, record) -> tuple[Tensor, Tensor]:
        """One Gibbs sweep over the units of layer i in order: unit j flipped with probability
        sigmoid(Delta_j) (its exact conditional). Returns (new h^i, the sweep's conditional
        entropy per sample)."""
        value = h[i].clone()
        below_layer, own_layer = self._local_layers(i)
        below_value = x if i == 0 else h[i - 1]
        context = h[i + 1] if i + 1 < len(h) else None
        entropy = torch.zeros(value.shape[:-1], dtype=value.dtype, device=value.device)
        fast = (type(own_layer) is LogisticLayer and not own_layer.autoregressive
                and _linear_logistic(below_layer))
        with torch.no_grad():
            if fast:
                own_logits = align(own_layer.context_logits(context, value.dim()), value.dim())
                base = below_layer.logits(value, below_value)
                data = align(below_value, base.dim())
            flips = []
            for j in range(value.shape[-1]):
                sign = 1 - 2 * value[..., j]
                if fast:
                    weight = align(below_layer.weight[:, j], base.dim())
                    shifted = base + sign.unsqueeze(-1) * weight
                    gain = (sign * own_logits[..., j] + sign * (data * weight).sum(-1)
                            - (F.softplus(shifted) - F.softplus(base)).sum(-1))
                else:
                    other = value.clone()
                    other[..., j] = 1 - other[..., j]
                    current = h[:i] + [value] + h[i + 1:]
                    gain = (sum(self._local_terms(x, current, i, other))
                            - sum(self._local_terms(x, current, i, value)))
                flip = u[..., j] < torch.sigmoid(gain)
                if noise_module.recording():
                    noise_module.record_outcome(F.logsigmoid(torch.where(flip, gain, -gain)))
                entropy = entropy + _bernoulli_entropy(gain)
                value[..., j] = torch.where(flip, 1 - value[..., j], value[..., j])
                if fast:
                    base = torch.where(flip.unsqueeze(-1), shifted, base)
                flips.append(flip.to(value.dtype))
        record.flips.append(torch.stack(flips, -1).mean(-1))
        return value, entropy

    def _binary_step(self, x: Tensor, noise) -> StepResult:
        learn = self.learn_step
        log_step = self.log_step if learn else self.log_step.detach()
        with parameters_frozen(self.model):
            h, record = self._binary_chain(x, noise, log_step, learn)
        log_joint = self.model.log_joint(x, h)                                 # (R, B), θ
        losses = {"model": -log_joint.sum()}
        entropy = record.entropy
        if learn:
            objective = (log_joint.detach() + entropy).detach()
            signal = sum((objective - baseline) * log_prob for log_prob, baseline in record.scores)
            losses["step"] = -(signal + entropy).mean(-1).sum()
        entropy = torch.as_tensor(entropy).detach().expand_as(log_joint)
        metrics = {"bound": (log_joint.detach() + entropy).mean(-1),
                   "log_joint": log_joint.detach().mean(-1), "entropy": entropy.mean(-1),
                   "flip_rate": torch.stack(record.flips).mean((0, -1))}
        if record.accepts:
            metrics["accept_rate"] = torch.stack(record.accepts).mean((0, -1))
        if self.kernel != "gibbs":
            metrics.update(self._step_metrics(self.log_step))
        return StepResult(losses=losses, metrics=metrics)

    # -- the exact expected update of the binary kernels --------------------------------------
    def _binary_objectives(self, x: Tensor) -> dict[str, Tensor]:
        """{model: sum_i E_{q_T}[log p(x_i, h)] (q_T fixed), step: mean_i E[J_i]}, (R,) each, by
        enumerating every latent state (module docstring)."""
        sizes = list(self.model.latent_sizes)
        total = sum(sizes)
        if total > MAX_CLAIM_UNITS:
            raise UserError(f"{self.name}'s expected update enumerates 2^H latent states; this "
                            f"model has H = {total}, at most {MAX_CLAIM_UNITS}: use a smaller "
                            f"--model, e.g. sbn:2-3")
        runs, batch = self.num_runs, x.shape[-2]
        states = 2 ** total
        codes = torch.arange(states, device=x.device)
        bits = ((codes.unsqueeze(-1) >> torch.arange(total, device=x.device)) & 1).to(x.dtype)
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        h = [bits[:, o:o + size].view(1, states, 1, size).expand(runs, states, batch, size)
             for o, size in zip(offsets, sizes, strict=True)]
        xs = x.expand(runs, *x.shape[-2:]).unsqueeze(1).expand(runs, states, *x.shape[-2:])
        with parameters_frozen(self.model), torch.no_grad():
            terms = self.model.log_prob_terms(xs, h)
            log_joint = sum(terms)                                              # (R, S, B)
            prior = sum(terms[1:]).exp().transpose(1, 2)                        # (R, B, S)
        with parameters_frozen(self.model):
            kernels = []
            for i, size in enumerate(sizes):
                gains = self._layer_gains(xs, h, i)[0]                          # (R, S, B, H_i)
                if self.kernel == "gibbs":
                    for j in range(size):
                        kernels.append(self._gibbs_kernel(gains[..., j], codes,
                                                          1 << (offsets[i] + j)))
                else:
                    kernels.append(self._flip_kernel(gains, i, offsets[i], codes, log_joint))
            distribution, entropy = prior, 0.0
            for t in range(self.num_steps):
                for transition, entropies in kernels:
                    if t == self.num_steps - 1:
                        entropy = entropy + (distribution * entropies).sum(-1)
                    distribution = torch.einsum("rbs,rbst->rbt", distribution, transition)
        with_theta = sum(self.model.log_prob_terms(xs, h)).transpose(1, 2)     # (R, B, S)
        objectives = {"model": (distribution.detach() * with_theta).sum((1, 2))}
        if self.learn_step:
            expected = (distribution * log_joint.transpose(1, 2)).sum(-1) + entropy
            objectives["step"] = expected.mean(-1)
        return objectives

    def _flip_kernel(self, gains, i, offset, codes, log_joint):
        """(K (R, B, S, S), expected entropy term per state (R, B, S)) of a DLP or DMALA
        sub-step on layer i, from every state's gains."""
        size = gains.shape[-1]
        runs, states, batch = gains.shape[:3]
        logit = self._flip_logits(gains, i, self.log_step)                     # (R, S, B, H_i)
        patterns = ((torch.arange(2 ** size, device=codes.device).unsqueeze(-1)
                     >> torch.arange(size, device=codes.device)) & 1).to(gains.dtype)
        log_q = F.logsigmoid(logit) @ patterns.T + F.logsigmoid(-logit) @ (1 - patterns).T
        pattern_codes = torch.arange(2 ** size, device=codes.device) << offset
        target = codes.unsqueeze(-1) ^ pattern_codes                             # (S, P)
        index = target.view(1, states, 1, -1).expand(runs, states, batch, -1)
        transition = torch.zeros(runs, batch, states, states, dtype=gains.dtype,
                                 device=gains.device)
        if self.kernel == "dlp":
            move = log_q.exp()
            entropies = _bernoulli_entropy(logit).sum(-1)
        else:
            log_back = torch.gather(log_q, 1, index)
            joint = log_joint.unsqueeze(-1).expand_as(log_q)
            log_ratio = torch.gather(joint, 1, index) - joint + log_back - log_q
            log_accept = log_ratio.clamp_max(0.0)
            move = (log_q + log_accept).exp()
            rejected = (log_q.exp() * -torch.expm1(log_accept)).sum(-1)         # (R, S, B)
            diagonal = torch.diag_embed(rejected.transpose(1, 2))
            transition = transition + diagonal
            entropies = (log_q.exp() * _acceptance_entropy(log_accept)).sum(-1)
        transition = transition.scatter_add(-1, index.transpose(1, 2), move.transpose(1, 2))
        return transition, entropies.transpose(1, 2)

    def _gibbs_kernel(self, gain, codes, bit):
        """K of one Gibbs update of one unit: flip with probability sigmoid(gain)."""
        runs, states, batch = gain.shape
        flip = torch.sigmoid(gain).transpose(1, 2)                              # (R, B, S)
        transition = torch.diag_embed(1 - flip)
        index = (codes ^ bit).view(1, 1, states, 1).expand(runs, batch, states, 1)
        transition = transition.scatter_add(-1, index, flip.unsqueeze(-1))
        return transition, torch.zeros_like(flip)


__all__ = ["ShortRun", "ShortRunOptions"]
