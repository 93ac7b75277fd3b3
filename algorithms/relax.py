"""RELAX: REBAR with a learned control variate (Grathwohl, Choi, Wu, Roeder & Duvenaud 2018, ICLR;
arXiv 1711.00123; the authors' code is duvenaud/relax, binary_vae_multilayer_per_layer.py; section
numbers below are those of the paper's source in that repository, paper/generalized_rebar.tex).

The estimator for discrete variables (the paper's g_RELAX, §3.2), per latent layer l of Q in
logit space (notation, noise, z, z~, the per-layer construction and the chain rule to Q's
parameters as in algorithms/rebar.py):

    g_l = [f(b) - c_l(z~)] (b_l - sigma(a_l)) + d/da_l c_l(z) - d/da_l c_l(z~)

with the control variate of the paper's discrete-VAE experiments (§6.2: "the ELBO, evaluated at
continuously relaxed inputs as in REBAR", plus a neural network),

    c_l(z) = eta_l [ f(b_<l, sigma_lam(z_l), y_>l) + r_l(x - mean, z_l, b_<l) ]

where f(...) is REBAR's relaxed learning signal (the layers above relaxed from their own noise and
fed by the relaxed layer l) and r_l a perceptron with `cv_depth` hidden layers of `cv_hidden` ReLU
units and a scalar output that sees the centred data, the logistic sample z_l (not its sigmoid)
and the binary samples of the layers below, as the authors' Q_func does (which maps b to 2b - 1:
here b enters as the 0/1 the inference network sees). As in the authors' code, eta_l multiplies
the whole control variate (the paper's text writes c = f(sigma_lam(z)) + r(z) without eta; eta = 1
is that), there is one eta and one lam per layer, and the relaxation is the concrete sigma(z/lam)
(the authors' `concrete_relaxation`; relaxation=muprop gives REBAR's modified one). The
unbiasedness argument is REBAR's: it holds for any c differentiable in z, whatever its
parameters, so E[g_l] = d/da_l ELBO (the paper's Appendix A).

Control parameters psi = {eta, log lam, r's weights} (group "control") follow the single-sample
variance gradient of the paper's algorithm (§3.1, Appendix A), g_psi = d/dpsi g_theta^2, with
g_theta the update of Q's parameters: here, as for REBAR, d/dpsi of V = mean over Q's parameter
elements of (Delta phi / B)^2 (the authors' code averages the square of the per-example
logit-space g_l instead; both are unbiased for the gradient of a variance that the control
variate cannot bias). r's parameters also get L2 weight decay, gradient weight_decay * rho (the
authors' Q_wd, on every parameter of r). Defaults are the paper's best discrete-VAE configuration
(experimental-details appendix, "Discrete VAE": layers of 200 ReLU units, "the larger (4 layer)
control variate architecture with weight decay of .001 and learning rate scaling of 1"; presets
give the other architecture and rate scaling it tried), noise tied as in the authors' code (z~ = z
in value, see algorithms/rebar.py), the inference network at the suite's 1/5 of the model's rate
(the authors use one rate for both). Not reproduced: the authors' 1000 control-variate updates
before training (the harness starts every estimator at its first update), and Adam's
beta2 = 0.99999.

Shapes: x (R, B, D); r_l's input (R, 2B, D + H_l + sum_{k<l} H_k) (z and z~ as one batch);
eta (R, L), log lam (R, L); r_l's weights (R, in, out) per layer of the perceptron.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from algorithms.rebar import REBAR, RunMLP, check_common_options


@dataclass(frozen=True)
class RELAXOptions:
    temperature: float = 0.5          # initial lam (the authors' create_log_temp: log 0.5)
    learn_temperature: bool = True    # log lam follows the variance gradient
    learn_eta: bool = True            # eta follows the variance gradient
    relaxation: str = "concrete"      # the authors' concrete_relaxation sigma(z/lam); or muprop
    tied_noise: bool = True           # v from u, so z~ = z in value (the authors' v_from_u)
    cv_depth: int = 4                 # hidden layers of r (the paper's better of 2 and 4)
    cv_hidden: int = 200              # units per hidden layer of r (the paper's 200)
    activation: str = "relu"          # r's nonlinearity (the paper's ReLU); tanh: a smooth r
    weight_decay: float = 0.001       # L2 on r's parameters (the paper's best)
    inference_lr_scale: float = 0.2   # the suite's 1/5 (§4.1 of Mnih & Gregor)
    control_lr_scale: float = 1.0     # the paper's best "learning rate scaling of 1"

    def __post_init__(self):
        check_common_options(self)
        if self.cv_depth < 1 or self.cv_hidden < 1:
            raise ValueError("cv_depth and cv_hidden must be positive")
        if self.activation not in RunMLP.ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(RunMLP.ACTIVATIONS)}, "
                             f"got {self.activation!r}")
        if self.weight_decay < 0:
            raise ValueError("weight_decay must be non-negative")


class RELAX(REBAR):
    name = "relax"
    Options = RELAXOptions
    presets = {
        "": {},
        "cv-depth-2": {"cv_depth": 2},                    # the paper's other architecture
        "control-lr-10": {"control_lr_scale": 10.0},      # the paper's other rate scaling
        "independent-noise": {"tied_noise": False},
        "fixed-temperature": {"learn_temperature": False},
    }
    structural_options = ("cv_depth", "cv_hidden", "activation")
    #: r's 200-unit layers make a step on the check's tiny model ~10 times REBAR's
    check_steps = 400

    def build_control(self, dtype) -> None:
        """r_l for every latent layer l, fed (x - mean, z_l, b_<l)."""
        first = self.options[0]
        sizes = self.model.latent_sizes
        self.surrogates = nn.ModuleList(
            RunMLP([self.model.num_features + sizes[k] + sum(sizes[:k]),
                    *[first.cv_hidden] * first.cv_depth, 1], first.activation,
                   self.generators, dtype)
            for k in range(self.num_layers))
        self.register_buffer("weight_decay", self.option_column("weight_decay", dtype),
                             persistent=False)

    def eta_columns(self) -> list[list[int]]:
        # one eta per layer scales the control variate in the update of all its tensors
        return [[k] * len(list(layer.parameters()))
                for k, layer in enumerate(self.inference.layers)]

    def score_baseline(self, centred: Tensor) -> Tensor:
        return torch.zeros((), dtype=centred.dtype, device=centred.device)

    def control_variate(self, layer, relaxed_signal, z, centred, below):
        inputs = torch.cat([centred, z, *below], -1)
        return relaxed_signal + self.surrogates[layer](inputs)

    def control_parameters(self) -> list[nn.Parameter]:
        return [self.eta, self.log_temperature, *self.surrogates.parameters()]

    def control_gradient_extra(self, parameter: nn.Parameter) -> Tensor | None:
        if parameter is self.eta or parameter is self.log_temperature:
            return None
        # weight decay (weight_decay / 2) |rho|^2 per run: gradient weight_decay * rho
        return self.weight_decay.view(-1, *([1] * (parameter.dim() - 1))) * parameter.detach()
