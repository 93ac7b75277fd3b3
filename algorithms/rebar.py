"""REBAR: REINFORCE with a concrete-relaxation control variate (Tucker, Mnih, Maddison, Lawson &
Sohl-Dickstein 2017, NeurIPS; arXiv 1703.07370; the authors' code is tensorflow/models
research/rebar, rebar.py).

Notation of the suite: latent layers bottom-up h[0] .. h[L-1] (h[0] next to x), R runs, B examples.
For latent layer l of Q, a_l = a_l(c_l; phi_l) are its logits (R, B, H_l), W_l c_l + b_l for the
linear families and an MLP of c_l for the nonlinear one, with c_0 = x - mean (the centred data)
and c_l = h[l-1]; f(h) = log P(x, h) - log Q(h | x) is the learning signal, whose expectation under
Q is the ELBO (Eq. 1 of Mnih & Gregor).

Noise and the two relaxed samples, per unit (u, v uniform on [0, 1], requested per latent unit):

    b = [u < sigma(a)]                       the suite's Bernoulli draw (LogisticLayer.sample)
    z = a + log(1 - u) - log u               logistic, H(z) = [z > 0] = b
    z~ ~ p(z | b):  b = 1: z~ = softplus(a + log(1 - v)) - log v
                    b = 0: z~ = log(1 - v) - softplus(log v - a)
    sigma_lam(z) = sigma(z / lam + m a lam / (1 + lam))

The paper writes z = a + log(u / (1 - u)) with b = H(z); this is the same law with u -> 1 - u,
chosen so that b is the suite's [u < sigma(a)] and REBAR sees the same h as every other estimator given the
same noise. z~ is the paper's conditional sample (its appendix, as restated in the RELAX paper's
Appendix B: v' = v(1 - theta) for b = 0, v' = v theta + 1 - theta for b = 1), here in the u -> 1 - u
convention, z~ = a - logit(v theta) for b = 1 and a - logit(theta + v (1 - theta)) for b = 0, and
simplified with log(theta / (1 - theta)) = a so that no probability is ever formed. m = 1 is REBAR's
modification of the relaxation (the authors' `muprop_relaxation=True`, their default:
sigma(z/lam + a lam/(1 + lam)) tends to the mean field sigma(a) of MuProp as lam -> infinity and to
H(z) as lam -> 0); m = 0 (preset "concrete") is the concrete relaxation sigma(z / lam).

The estimator (the paper's REBAR estimator, applied per layer), in logit space, i.e. the update
of a_l:

    g_l = [f(b) - C(x) - eta c_l(z~)] (b_l - sigma(a_l)) + eta d/da_l c_l(z) - eta d/da_l c_l(z~)

    c_l(z) = f(b_<l, sigma_lam(z_l), y_>l),  y_k = sigma_lam(a_k(y_{k-1}) + log(1 - u_k) - log u_k)

i.e. the relaxed value of layer l is fed to the layers above, which are relaxed from their own
noise u_k, k > l, held fixed (no gradient through it); layers below l keep their binary samples.
b_l - sigma(a_l) = d/da_l log Q(b_l | c_l) is the score. d/da_l is the total derivative with the
noise fixed: through sigma_lam(z_l), through the direct dependence of log Q(y_l | c_l) and of the
relaxation (m) on a_l, and through the logits of every layer above. Given b_<l the identity

    E_u[d/da c(z)] = d/da E_u[c(z)] = d/da sum_b Q(b) E_v[c(z~)]
                   = E[c(z~) (b - sigma(a))] + E[d/da c(z~)]

makes the last three terms of g_l zero in expectation for any eta, lam and C(x), so
E[g_l] = d/da_l ELBO given b_<l, and layer l's parameters get the chain rule,
Delta phi_l = sum_i (d a_li / d phi_l)^T g_li (a vector-Jacobian product: sum_i c_li (x) g_li and
sum_i g_li for a linear layer; through the MLP for the nonlinear family). The direct dependence of
f(b) on Q (its -log Q(b|x) term) is left out, as in the REBAR code: its expectation is zero. The
model's update is Delta theta = sum_i grad_theta log P(x_i, b_i) (Eq. 5 of Mnih & Gregor).

Control parameters (group "control"), fitted to the variance of the inference update: eta (one
per parameter tensor of Q, as the authors' `multiply_by_eta_per_layer`), log lam (one per latent
layer; the authors' TensorFlow code shares one lam over the layers, which their one-layer models
cannot tell apart) and the input-dependent baseline C(x) of the authors' code (`_create_baseline`:
one hidden layer of 100 tanh units on the centred data, trained with eta by the variance
objective, not by regression). Every value of them gives an unbiased update, so
grad E[g^2] = grad Var(g), and the single-sample gradient w.r.t. (eta, log lam, C) of

    V = mean over Q's parameter elements of (Delta phi / B)^2   (the authors' variance_objective)

is an unbiased estimate of the variance's gradient. It is computed inside `step` with
torch.autograd.grad(..., create_graph=True), so Delta phi must be twice differentiable: it is
built from the layers' `logits` / `context_logits` (linear maps whose backward is made of
differentiable operations) and models.layers.bernoulli_log_prob, never from the layers'
`log_prob`, whose closed-form score serves first derivatives only. Each group's loss is linear in
its own parameters with a detached coefficient: -sum Delta phi . phi for the inference network,
sum (dV / d psi) . psi for the control parameters, so no loss reaches another group. The
temperature's gradient is the whole derivative of V, through the values of f at the relaxed
samples and through their reparameterisation gradients (the authors' "dynamic REBAR"; preset
"fixed-temperature" is their REBAR with lam fixed and eta learned).

Tied noise. As in both authors' codes (REBAR's `_u_to_v`, RELAX's `v_from_u(force_same=True)`),
v is by default not the second uniform but u's position within the interval that gave b,
v = u / theta (b = 1) or (u - theta) / (1 - theta) (b = 0), detached: v is uniform and independent
of b, and z~ then equals z in value while keeping the conditional sample's gradient. Preset
"independent-noise" uses the requested second uniform, as the papers' equations write it. The
noise v is requested either way, so runs of both kinds share one computation.

Ambiguities and how they are resolved. (1) Multi-layer SBNs: the estimator is applied layer by
layer; the relaxed pass of layer l is built as above, following the per-layer implementation of
the RELAX authors (duvenaud/relax binary_vae_multilayer_per_layer.py), whose REBAR "gave identical
or slightly improved performance compared to the implementation of Tucker et al." (RELAX paper,
§6.2). The REBAR TensorFlow code's multi-layer ("quadratic") control variate, as we read it,
relaxes the upper layers of the conditional pass from noise that keeps a gradient path to those
layers' own logits; that path is not covered by the identity above, so it is not taken here.
Cost: 1 + 2L model evaluations per example (the binary pass, then c(z) and c(z~) per layer).
(2) Learning rates: the authors train P and Q at one rate and the control parameters at ten times
it (`extra_optimizer`); here inference_lr_scale defaults to the suite's 1/5 of the model's rate
(Mnih & Gregor §4.1), so estimators are compared like for like, and control_lr_scale to 10. The
authors use Adam with beta2 = 0.99999; the harness's Adam has torch's 0.999.
(3) eta is used as is, starting at 1 (the RELAX code; the REBAR code parameterises it as
2 sigmoid(rho), which keeps it in (0, 2)). (4) V averages over Q's parameters only (the authors'
vector also holds P's, whose estimate does not depend on the control parameters: a constant
factor).

Autoregressive inference networks are refused: the relaxation treats the units of a layer as
independent given the layer below. fDARN's autoregressive prior and the multinomial visible layer
of the document models are in P and are evaluated at relaxed values by the same formulas
(sum_j y_j a_j - softplus(a_j), and x . log softmax(W y + b)).

Shapes: x (R, B, D); noise u[l], v[l] (R, B, H_l); logits, samples, scores and g_l (R, B, H_l);
f, C(x) and the relaxed values c (R, B) (the two relaxed passes of a layer run as one batch of 2B);
eta (R, number of Q's parameter tensors), log lam (R, L), option columns (R, 1); V and the metrics
(R,).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from algorithms.base import Algorithm, StepResult
from bench.errors import UserError
from models import noise as noise_module
from models.exact import exact_elbo
from models.layers import align, bernoulli_log_prob, linear, uniform_linear_init

RELAXATIONS = ("muprop", "concrete")


@dataclass(frozen=True)
class REBAROptions:
    temperature: float = 0.5               # initial lam (the authors' hparams.temperature)
    learn_temperature: bool = True          # dynamic REBAR: log lam follows the variance gradient
    learn_eta: bool = True                  # eta follows the variance gradient
    relaxation: str = "muprop"              # sigma(z/lam + a lam/(1+lam)); "concrete": sigma(z/lam)
    tied_noise: bool = True                 # v from u, so z~ = z in value (the authors' code)
    input_dependent_baseline: bool = True   # C(x) in the score term (the authors' code)
    baseline_hidden: int = 100              # tanh units of C(x) (the authors' _create_baseline)
    inference_lr_scale: float = 0.2         # the suite's 1/5 (§4.1 of Mnih & Gregor)
    control_lr_scale: float = 10.0          # the authors' extra optimizer: 10 times the rate

    def __post_init__(self):
        check_common_options(self)
        if self.baseline_hidden < 1:
            raise ValueError("baseline_hidden must be positive")


def check_common_options(options) -> None:
    if not options.temperature > 0:
        raise ValueError(f"temperature must be positive, got {options.temperature}")
    if options.relaxation not in RELAXATIONS:
        raise ValueError(f"relaxation must be one of {', '.join(RELAXATIONS)}, "
                         f"got {options.relaxation!r}")


# -- evaluation at relaxed values, twice differentiable --------------------------------------


def plain_log_joint(model, x: Tensor, h: Sequence[Tensor]) -> Tensor:
    """log P(x, h) (R, *batch) for binary or relaxed latents h (bottom-up). Each layer's logits
    come from its own `logits` (linear maps whose backward is made of differentiable operations),
    and the log-probabilities from models.layers.bernoulli_log_prob: unlike the layers'
    `log_prob`, whose closed-form score serves first derivatives only, this can be differentiated
    twice."""
    visible = model.visible.logits(h[0], x)
    if model.visible_kind == "bernoulli":
        total = bernoulli_log_prob(visible, x)
    else:
        total = (x * torch.log_softmax(visible, -1)).sum(-1)
    for i, layer in enumerate(model.conditionals):
        total = total + bernoulli_log_prob(layer.logits(h[i + 1], h[i]), h[i])
    return total + bernoulli_log_prob(model.prior.logits(None, h[-1]), h[-1])


class RunMLP(nn.Module):
    """A perceptron with a scalar output for each of R runs: sizes [in, hidden..., 1], `activation`
    between layers, weights stored (R, in, out). Initialised per run from its generator as
    torch.nn.Linear initialises (uniform within +-1/sqrt(fan_in))."""

    ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}

    def __init__(self, sizes: Sequence[int], activation: str, generators, dtype):
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: tanh, relu")
        self.activation = self.ACTIVATIONS[activation]
        drawn = [[uniform_linear_init(g, fan_in, fan_out, dtype)
                  for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True)]
                 for g in generators]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([run[k][0] for run in drawn]).transpose(1, 2).contiguous())
            for k in range(len(sizes) - 1))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([run[k][1] for run in drawn])) for k in range(len(sizes) - 1))

    def forward(self, inputs: Tensor) -> Tensor:
        hidden = inputs
        for k, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            hidden = linear(hidden, weight, bias)
            if k < len(self.weights) - 1:
                hidden = self.activation(hidden)
        return hidden.squeeze(-1)


# -- the relaxed samples -----------------------------------------------------------------------


def clamp_uniform(u: Tensor) -> Tensor:
    """Keep a uniform inside (0, 1): log u and log(1 - u) stay finite (torch.rand can give 0)."""
    info = torch.finfo(u.dtype)
    return u.clamp(info.tiny, 1.0 - info.eps / 2)


def logistic_noise(u: Tensor) -> Tensor:
    """log(1 - u) - log u: z = a + this is logistic with H(z) = [u < sigma(a)]."""
    u = clamp_uniform(u)
    return torch.log1p(-u) - torch.log(u)


def tied_uniform(u: Tensor, logits: Tensor, b: Tensor) -> Tensor:
    """u's position within the interval that gave b, [0, theta) for b = 1 and [theta, 1) for
    b = 0: uniform and independent of b, and z~ from it equals z (the authors' `_u_to_v`)."""
    theta = torch.sigmoid(logits)
    return torch.where(b > 0.5, u / theta, (u - theta) / (1 - theta))


def conditional_logistic(logits: Tensor, b: Tensor, v: Tensor) -> Tensor:
    """z~ ~ p(z | H(z) = b) from the uniform v: a - logit(v theta) for b = 1 and
    a - logit(theta + v (1 - theta)) for b = 0, in log space (theta = sigma(a))."""
    v = clamp_uniform(v)
    log_v, log_not_v = torch.log(v), torch.log1p(-v)
    one = F.softplus(logits + log_not_v) - log_v
    zero = log_not_v - F.softplus(log_v - logits)
    return torch.where(b > 0.5, one, zero)


# -- the estimator ------------------------------------------------------------------------------


class REBAR(Algorithm):
    name = "rebar"
    latent_kinds = frozenset({"binary"})
    Options = REBAROptions
    presets = {
        "": {},
        "fixed-temperature": {"learn_temperature": False},
        "concrete": {"relaxation": "concrete"},
        "independent-noise": {"tied_noise": False},
        "no-baseline": {"input_dependent_baseline": False},
    }
    structural_options = ("baseline_hidden",)
    check_steps = 1000
    not_enumerable = ("its uniforms are used continuously (the relaxation); tests/test_rebar_relax.py "
                      "integrates its expected update numerically")
    #: the group of the estimator's own parameters (eta, log lam, C(x) or c_phi's network)
    CONTROL = "control"

    def __init__(self, model, inference, options, generators=None):
        super().__init__(model, inference, options, generators)
        if inference.autoregressive:
            raise UserError(f"{self.name} needs a factorial inference network (its relaxation "
                            f"treats the units of a layer as independent); use --inference "
                            f"factorial")
        dtype = model.prior.bias.dtype
        self.num_layers = len(model.latent_sizes)
        self.log_temperature = nn.Parameter(torch.tensor(
            [[math.log(o.temperature)] * self.num_layers for o in self.options], dtype=dtype))
        self.columns = self.eta_columns()
        self.eta = nn.Parameter(torch.ones(self.num_runs, max(max(c) for c in self.columns) + 1,
                                           dtype=dtype))
        for name, option in (("learns_temperature", "learn_temperature"),
                             ("learns_eta", "learn_eta"), ("ties_noise", "tied_noise")):
            self.register_buffer(name, self.option_column(option, dtype), persistent=False)
        self.register_buffer("muprop", torch.tensor(
            [float(o.relaxation == "muprop") for o in self.options], dtype=dtype).view(-1, 1),
            persistent=False)
        self.build_control(dtype)

    # -- what REBAR and RELAX do differently (relax.py overrides these) -------------------------
    def build_control(self, dtype) -> None:
        """C(x): one hidden layer of tanh units on the centred data (the authors' baseline)."""
        first = self.options[0]
        self.baseline = RunMLP([self.model.num_features, first.baseline_hidden, 1], "tanh",
                               self.generators, dtype)
        self.register_buffer("uses_baseline", self.option_column("input_dependent_baseline", dtype),
                             persistent=False)

    def eta_columns(self) -> list[list[int]]:
        """For each layer of Q, the column of eta that scales the control variate in the update
        of each of its parameter tensors: here one column per tensor (W_l, b_l; an MLP layer's
        every weight and bias), as the authors' `multiply_by_eta_per_layer`."""
        columns, start = [], 0
        for layer in self.inference.layers:
            count = len(list(layer.parameters()))
            columns.append(list(range(start, start + count)))
            start += count
        return columns

    def score_baseline(self, centred: Tensor) -> Tensor:
        """What the score term subtracts besides eta c(z~): C(x), (R, B)."""
        return self.uses_baseline * self.baseline(centred)

    def control_variate(self, layer: int, relaxed_signal: Tensor, z: Tensor, centred: Tensor,
                        below: Sequence[Tensor]) -> Tensor:
        """c_l at the relaxed sample z of layer `layer` (R, N): REBAR's is f at the relaxed
        latents."""
        return relaxed_signal

    def control_parameters(self) -> list[nn.Parameter]:
        return [self.eta, self.log_temperature, *self.baseline.parameters()]

    def control_gradient_extra(self, parameter: nn.Parameter) -> Tensor | None:
        """A term added to the variance gradient of a control parameter (RELAX: weight decay)."""
        return None

    # -- the contract ---------------------------------------------------------------------------
    def parameter_groups(self):
        return {"model": list(self.model.parameters()),
                "inference": list(self.inference.parameters()),
                self.CONTROL: self.control_parameters()}

    def learning_rate_scales(self, options):
        return {"model": 1.0, "inference": options.inference_lr_scale,
                self.CONTROL: options.control_lr_scale}

    def evaluations_per_example(self, options) -> float:
        return 1.0 + 2.0 * self.num_layers  # f(b), then c(z) and c(z~) for every layer

    def noise(self, x):
        batch = x.shape[1:-1]
        return {"u": self.inference.noise(*batch), "v": self.inference.noise(*batch)}

    def temperatures(self) -> Tensor:
        return self.log_temperature.exp()                                   # (R, L)

    def relax(self, z: Tensor, logits: Tensor, layer: int) -> Tensor:
        """sigma_lam(z) = sigma(z / lam + m a lam / (1 + lam)) with layer `layer`'s lam."""
        lam = align(self.temperatures()[:, layer:layer + 1], z.dim())
        return torch.sigmoid(z / lam + align(self.muprop, z.dim()) * logits * lam / (1 + lam))

    def relaxed_signal(self, x: Tensor, hard: Sequence[Tensor], hard_log_q: Tensor, layer: int,
                       z: Tensor, logits: Tensor, noise_u: Sequence[Tensor]) -> Tensor:
        """f(b_<l, sigma_lam(z_l), y_>l) (R, N): layer l relaxed at z, the layers above relaxed
        from their own noise, fed by the relaxed layer below. `hard` holds the binary samples of
        every layer (only those below l are used), `hard_log_q` is log Q of b_<l."""
        value = self.relax(z, logits, layer)
        latents = list(hard[:layer]) + [value]
        log_q = hard_log_q + bernoulli_log_prob(logits, value)
        for k in range(layer + 1, self.num_layers):
            upper = self.inference.layers[k].context_logits(value)
            value = self.relax(upper + noise_u[k], upper, k)
            latents.append(value)
            log_q = log_q + bernoulli_log_prob(upper, value)
        return plain_log_joint(self.model, x, latents) - log_q

    def conditional_noise(self, u: Tensor, v: Tensor, logits: Tensor, b: Tensor) -> Tensor:
        """The uniform z~ is made from: u's position in its interval (tied) or v."""
        tied = tied_uniform(u, logits.detach(), b)
        return torch.where(align(self.ties_noise, u.dim()) > 0.5, tied, v)

    def conditional_sample(self, logits: Tensor, b: Tensor, v: Tensor) -> Tensor:
        """z~ ~ p(z | H(z) = b)."""
        return conditional_logistic(logits, b, v)

    def logit_gradient(self, signal: Tensor, conditional_value: Tensor, score: Tensor,
                       reparam: Tensor, **_) -> tuple[Tensor, Tensor]:
        """g_l = A + eta E in logit space, (R, B, H) each: A = [f(b) - C(x)] (b - sigma(a)) and
        E = dc(z)/da - dc(z~)/da - c(z~) (b - sigma(a)). `signal` is f(b) - C(x) (R, B),
        `conditional_value` c(z~) (R, B), `score` b - sigma(a), `reparam` the difference of the
        two gradients."""
        return (signal.unsqueeze(-1) * score,
                reparam - conditional_value.unsqueeze(-1) * score)

    def step(self, x: Tensor, noise) -> StepResult:
        layers = self.inference.layers
        centred = self.inference.centre(x)
        # The binary pass: b_l = [u_l < sigma(a_l)], as LogisticLayer.sample draws it.
        logits, hard = [], []
        context = centred
        for layer, u in zip(layers, noise["u"], strict=True):
            a = layer.context_logits(context)
            with torch.no_grad():
                b = (u < torch.sigmoid(a)).to(a.dtype)
            logits.append(a)
            hard.append(b)
            context = b
        with torch.no_grad():
            log_q = [bernoulli_log_prob(a.detach(), b) for a, b in zip(logits, hard, strict=True)]
        if noise_module.recording():
            noise_module.record_outcome(sum(log_q))
        log_joint = self.model.log_joint(x, hard)                               # (R, B)
        signal_value = log_joint.detach() - sum(log_q)                          # f(b)
        signal = signal_value - self.score_baseline(centred)                    # f(b) - C(x)
        noise_u = [logistic_noise(u) for u in noise["u"]]

        batch = x.shape[-2]
        # c(z) and c(z~) of a layer run as one batch of 2B: examples [0, B) at z, [B, 2B) at z~.
        x2, centred2 = (torch.cat([t, t], 1) for t in (x, centred))
        hard2, log_q2, noise_u2 = ([torch.cat([t, t], 1) for t in ts]
                                   for ts in (hard, log_q, noise_u))
        # d/da of the sum with signs (+1 on [0, B), -1 on [B, 2B)) is dc(z)/da - dc(z~)/da.
        sign = torch.cat([torch.ones_like(signal_value), -torch.ones_like(signal_value)], -1)
        updates: dict[int, Tensor] = {}          # id(parameter) -> its update Delta phi (R, ...)
        for j, (layer, a, b) in enumerate(zip(layers, logits, hard, strict=True)):
            v = self.conditional_noise(noise["u"][j], noise["v"][j], a, b)
            both_z = torch.cat([a + noise_u[j], self.conditional_sample(a, b, v)], 1)
            both_a = torch.cat([a, a], 1)
            below_log_q = sum(log_q2[:j], torch.zeros_like(sign))
            relaxed = self.relaxed_signal(x2, hard2, below_log_q, j, both_z, both_a, noise_u2)
            values = self.control_variate(j, relaxed, both_z, centred2, hard2[:j])  # (R, 2B)
            reparam, = torch.autograd.grad(values, a, sign, create_graph=True)   # (R, B, H)
            free, scaled = self.logit_gradient(
                signal, values[:, batch:], b - torch.sigmoid(a.detach()), reparam,
                values=values, logits=a, log_q=log_q[j])
            # The chain rule a_l -> phi_l, (da_l / dphi_l)^T g_l (for a linear layer,
            # sum_i c_i (x) g_i and sum_i g_i), as differentiable functions of g_l.
            parameters = list(layer.parameters())
            free_part = torch.autograd.grad(a, parameters, free, retain_graph=True,
                                            create_graph=True)
            scaled_part = torch.autograd.grad(a, parameters, scaled, retain_graph=True,
                                              create_graph=True)
            for parameter, column, f_part, s_part in zip(parameters, self.columns[j], free_part,
                                                         scaled_part, strict=True):
                eta = self.eta[:, column].view(-1, *([1] * (parameter.dim() - 1)))
                updates[id(parameter)] = f_part + eta * s_part

        inference_parameters = list(self.inference.parameters())
        count = sum(p[0].numel() for p in inference_parameters)
        variance = sum((updates[id(p)] / batch).pow(2).flatten(1).sum(-1)
                       for p in inference_parameters) / count                    # (R,)
        control = self.control_parameters()
        grads = torch.autograd.grad(variance.sum(), control, allow_unused=True)
        control_loss = 0.0
        for parameter, grad in zip(control, grads, strict=True):
            grad = torch.zeros_like(parameter) if grad is None else grad
            if parameter is self.log_temperature:
                grad = grad * self.learns_temperature
            elif parameter is self.eta:
                grad = grad * self.learns_eta
            extra = self.control_gradient_extra(parameter)
            if extra is not None:
                grad = grad + extra
            control_loss = control_loss + (grad.detach() * parameter).sum()
        inference_loss = -sum((updates[id(p)].detach() * p).sum() for p in inference_parameters)
        losses = {"model": -log_joint.sum(), "inference": inference_loss,
                  self.CONTROL: control_loss}
        metrics = {"bound": signal_value.mean(-1), "variance": variance.detach(),
                   "temperature": self.temperatures().detach().mean(-1),
                   "eta": self.eta.detach().mean(-1)}
        return StepResult(losses, metrics)

    def exact_objectives(self, x: Tensor) -> dict[str, Tensor]:
        # P and Q both ascend the ELBO; the control parameters follow the variance of the
        # inference update and are not checked against the bound.
        bound = exact_elbo(self.model, self.inference, x).sum(-1)
        return {"model": bound, "inference": bound}
