"""NVIL: neural variational inference and learning (Mnih & Gregor 2014, §2 and Algorithm 1).

For a minibatch x_1..x_n (B = n examples), one sample h_i ~ Q(h | x_i) each:

    model:      Δθ = sum_i ∇θ log P(x_i, h_i)                                         (Eq. 5)
    inference:  Δφ = sum_i sum_j s_ij ∇φ_j log Q(h^j_i | h^{j-1}_i)                  (Eq. 6, 12)
    baselines:  Δψ = sum_i sum_j s_ij ∇ψ_j C_j(h^{j-1}_i)                  (fits E[(l - C - c)^2])

with, for each learning signal j (one per latent layer with local signals, else one global):

    l_ij  = log P(h^{j-1:n}_i) - log Q(h^{j:n}_i | h^{j-1}_i)    local signal, Eq. 12 (h^0 = x);
            for j = 1 this is the global signal l = log P(x, h) - log Q(h | x)          (Eq. 7)
    r_ij  = l_ij - C_j(h^{j-1}_i)                   input-dependent baseline (IDB), §2.3.1
    c_j  <- α c_j + (1 - α) mean_i r_ij             constant baseline, α = 0.8 (Algorithm 1)
    s_ij  = (r_ij - c_j) / max(1, sqrt(v_j))         variance normalisation (VN), §2.3.2
    v_j  <- α v_j + (1 - α) var_i r_ij              (after use: see below)

Reading of Algorithm 1. As printed, the algorithm takes c and v as statistics of l, while §2.3.1
trains the baseline network to minimise E[(l - C_ψ(x) - c)^2]. The reading consistent with §2.3.1
is used here: c and v are the running mean and variance of the residual r = l - C_ψ(x) that is left
after the input-dependent baseline (with the IDB switched off, r = l and both readings agree). Then c
minimises that same squared error given C_ψ, and v is the variance of the signal actually being
normalised. The baseline network's update uses the same normalised signal s as the inference
network, as in Algorithm 1 (a positive rescaling of the squared-error gradient). Batch variance is
the population variance (divide by n). Statistics start at c = v = 0.

Order of updates, and the one departure from Algorithm 1 as printed. Algorithm 1 updates c and v
with the current minibatch and then uses both. For c that is harmless: sample i enters c with
weight (1-α)/n, which rescales its update by exactly 1 - (1-α)/n (Eq. 9 removes the rest). For v
it is not: a divisor that depends on the current samples makes E[s ∇ log Q] a non-linear function
of them, and exact enumeration on a tiny model shows the expected update then misses every
positive multiple of the gradient by 0.3-10% per parameter tensor. So here c is updated before
use, as printed, and the normaliser max(1, sqrt(v)) uses v from the earlier minibatches, v being
updated afterwards. Then the expected inference update of every layer is exactly a positive
multiple of the ELBO gradient, as §2.3 intends; `python -m bench check nvil` tests it.

A baseline from the model itself (option `visible_baseline`, preset "visible-baseline"; not in
the paper). On documents the spread of the first signal within a minibatch is almost all document
length (results/README.md: the VN divisor reaches 830-960 nats, and the unigram log-likelihood of
a document correlates -0.999 with its length), which the baseline network, a tanh MLP of the
centred counts, learns slowly. The option also subtracts log P(x | h^1 = 0), the likelihood of x
under the model with its first latent layer off (for documents: a unigram model with the visible
biases as word scores), from the first signal: a function of x and θ alone, independent of the
sample, so the expected update is unchanged (E_Q[∇φ log Q] = 0), and it tracks the length
exactly. The baseline network then fits what is left.

Parameter groups: "model" (θ, learning rate 1), "inference" (φ, rate `inference_lr_scale` = 1/5,
§4.1), "baseline" (ψ, rate `baseline_lr_scale`; only with the IDB). Each baseline network has one
hidden layer of 100 tanh units (§4.1) and sees the centred data (layer 1) or h^{j-1}.

Runs. Every tensor leads with the run dimension R (algorithms/base.py). The variance-reduction
switches, the smoothing and the learning-rate scales are per-run data, so all eight combinations
of Figure 1 train as one computation: every run has baseline networks, and a run without the IDB
subtracts 0 times its baseline and gives it zero rate (they stay at their initial values, unused).
`local_signals` and `baseline_hidden` shape the computation and must agree between stacked runs.

Shapes: x (R, B, D); h[j] (R, B, H_j); signals (R, S, B) for S signals; running statistics
(R, S); option columns (R, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from algorithms.base import Algorithm, StepResult
from models.exact import exact_elbo
from models.layers import linear, uniform_linear_init


@dataclass(frozen=True)
class NVILOptions:
    constant_baseline: bool = True       # c, §2.3.1
    input_dependent_baseline: bool = True  # C_ψ(x), §2.3.1
    variance_normalisation: bool = True  # divide by max(1, sqrt(v)), §2.3.2
    local_signals: bool = True           # one signal per layer, Eq. 12, §2.3.3
    smoothing: float = 0.8               # α of Algorithm 1
    baseline_hidden: int = 100           # tanh units in each baseline network, §4.1
    inference_lr_scale: float = 0.2      # "five times smaller than for the model", §4.1
    baseline_lr_scale: float = 1.0       # not stated in the paper; the model's rate
    # Not in the paper (off by default): also subtract log P(x | h^1 = 0), the model's own
    # likelihood of x with its latents off, from the first signal (see the module docstring).
    visible_baseline: bool = False

    def __post_init__(self):
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.baseline_hidden < 1:
            raise ValueError("baseline_hidden must be positive")


def _figure1_preset(baseline: bool, idb: bool, vn: bool) -> dict:
    return {"constant_baseline": baseline, "input_dependent_baseline": idb,
            "variance_normalisation": vn}


class InputDependentBaselines(nn.Module):
    """C_j(context) for R runs: one hidden layer of tanh units, a scalar output per example.
    Initialised per run from its generator as torch.nn.Linear initialises (uniform within
    ±1/sqrt(fan_in)), stored transposed: hidden_weight (R, C, hidden), output_weight (R, hidden, 1)."""

    def __init__(self, context_size: int, hidden: int, generators, dtype):
        super().__init__()
        hidden_w, hidden_b, out_w, out_b = zip(*(
            (*uniform_linear_init(g, context_size, hidden, dtype),
             *uniform_linear_init(g, hidden, 1, dtype)) for g in generators), strict=True)
        self.hidden_weight = nn.Parameter(torch.stack(hidden_w).transpose(1, 2).contiguous())
        self.hidden_bias = nn.Parameter(torch.stack(hidden_b))
        self.output_weight = nn.Parameter(torch.stack(out_w).transpose(1, 2).contiguous())
        self.output_bias = nn.Parameter(torch.stack(out_b))

    def forward(self, context: Tensor) -> Tensor:
        hidden = torch.tanh(linear(context, self.hidden_weight, self.hidden_bias))
        return linear(hidden, self.output_weight, self.output_bias).squeeze(-1)


class NVIL(Algorithm):
    name = "nvil"
    Options = NVILOptions
    paper_learning_rates = {"mnist": 3e-4, "synthetic": 3e-4}  # §4.1; synthetic as MNIST
    check_steps = 4000
    # The eight variance-reduction combinations of Figure 1 and the global-signal ablation of §4.2.
    presets = {
        "": {},
        "baseline+idb+vn": _figure1_preset(True, True, True),
        "baseline+idb": _figure1_preset(True, True, False),
        "baseline+vn": _figure1_preset(True, False, True),
        "idb+vn": _figure1_preset(False, True, True),
        "baseline": _figure1_preset(True, False, False),
        "idb": _figure1_preset(False, True, False),
        "vn": _figure1_preset(False, False, True),
        "none": _figure1_preset(False, False, False),
        "global-signal": {"local_signals": False},
        "visible-baseline": {"visible_baseline": True},
    }
    scaled_groups = frozenset({"inference"})
    structural_options = ("local_signals", "baseline_hidden")

    def __init__(self, model, inference, options, generators=None):
        super().__init__(model, inference, options, generators)
        first = self.options[0]
        self.num_signals = len(model.latent_sizes) if first.local_signals else 1
        dtype = model.prior.bias.dtype
        # Signal j's baseline sees what layer j of Q is conditioned on: x, then h^1, h^2, ...
        contexts = (model.num_features,) + tuple(model.latent_sizes[:-1])
        self.baselines = nn.ModuleList(
            InputDependentBaselines(contexts[j], first.baseline_hidden, self.generators, dtype)
            for j in range(self.num_signals))
        runs = self.num_runs
        self.register_buffer("signal_mean", torch.zeros(runs, self.num_signals, dtype=dtype))
        self.register_buffer("signal_var", torch.zeros(runs, self.num_signals, dtype=dtype))
        for name, option in (("use_mean", "constant_baseline"), ("use_baseline",
                             "input_dependent_baseline"), ("use_var", "variance_normalisation"),
                             ("use_visible", "visible_baseline")):
            self.register_buffer(name, self.option_column(option, dtype), persistent=False)
        self.any_baseline = any(o.input_dependent_baseline for o in self.options)
        self.any_visible_baseline = any(o.visible_baseline for o in self.options)
        self.register_buffer("normalises", self.use_var > 0, persistent=False)
        # c <- c + (1 - α)(mean - c) is α c + (1 - α) mean; 0 for runs that keep no statistics.
        self.register_buffer("statistics_rate", torch.tensor(
            [(1 - o.smoothing) * (o.constant_baseline or o.variance_normalisation)
             for o in self.options], dtype=dtype).view(-1, 1), persistent=False)

    def parameter_groups(self):
        return {"model": list(self.model.parameters()),
                "inference": list(self.inference.parameters()),
                "baseline": list(self.baselines.parameters())}

    def learning_rate_scales(self, options):
        scales = {"model": 1.0, "inference": options.inference_lr_scale}
        if options.input_dependent_baseline:
            scales["baseline"] = options.baseline_lr_scale
        return scales

    def noise(self, x):
        return {"q": self.inference.noise(*x.shape[1:-1])}

    def learning_signals(self, log_p: list[Tensor], log_q: list[Tensor]) -> list[Tensor]:
        """l^j = sum_{k >= j-1} log P terms - sum_{k >= j} log Q terms (Eq. 12), j = 1..n.

        `log_p[k]` is the model's term for layer k (k = 0 the data), `log_q[k]` is Q's term for
        latent layer k+1; reversed cumulative sums give every local signal in one pass."""
        if self.num_signals == 1:  # the global signal l = log P(x, h) - log Q(h | x), Eq. 7
            return [sum(log_p) - sum(log_q)]
        log_p_tail = torch.stack(log_p).flip(0).cumsum(0).flip(0)  # [k] = sum_{k' >= k} log_p
        log_q_tail = torch.stack(log_q).flip(0).cumsum(0).flip(0)
        signals = log_p_tail[:-1] - log_q_tail
        return list(signals[: self.num_signals])

    def step(self, x: Tensor, noise) -> StepResult:
        h, log_q = self.inference.sample(x, noise["q"])
        log_p = self.model.log_prob_terms(x, h)
        with torch.no_grad():
            signals = torch.stack(self.learning_signals([t.detach() for t in log_p],
                                                        [t.detach() for t in log_q]), 1)  # (R, S, B)
        residual = signals
        if self.any_baseline:
            contexts = [self.inference.centre(x)] + h[:-1]
            baseline = torch.stack([self.baselines[j](contexts[j])
                                    for j in range(self.num_signals)], 1)               # (R, S, B)
            residual = signals - self.use_baseline.unsqueeze(-1) * baseline.detach()
        if self.any_visible_baseline:
            with torch.no_grad():
                latents_off = torch.zeros_like(h[0])
                visible = self.model.visible.log_prob(x, latents_off)                   # (R, B)
                offset = torch.zeros_like(residual)
                offset[:, 0] = self.use_visible * visible
                residual = residual - offset
        with torch.no_grad():
            # The normaliser comes from earlier minibatches only: a divisor that depended on
            # this minibatch's samples would make the expected update stop being a positive
            # multiple of the gradient (tests/test_algorithms.py shows it by enumeration).
            scale = torch.where(self.normalises, self.signal_var.sqrt().clamp_min(1.0), 1.0)
            batch_var, batch_mean = torch.var_mean(residual, -1, correction=0)
            self.signal_mean.add_(self.statistics_rate * (batch_mean - self.signal_mean))
            self.signal_var.add_(self.statistics_rate * (batch_var - self.signal_var))
            centred = residual - (self.use_mean * self.signal_mean).unsqueeze(-1)
            normalised = centred / scale.unsqueeze(-1)                                  # (R, S, B)
        if self.options[0].local_signals:  # layer j of Q is driven by l^j
            inference_loss = -(normalised * torch.stack(log_q, 1)).sum()
        else:  # every layer by l^1
            inference_loss = -(normalised[:, 0] * sum(log_q)).sum()
        losses = {"model": -sum(log_p).sum(), "inference": inference_loss}
        bound = signals[:, 0].mean(-1)
        # signal_scale: the divisor of the first signal, max(1, sqrt v) with VN, else 1.
        metrics = {"bound": bound, "signal_mean": self.signal_mean[:, 0].clone(),
                   "signal_scale": scale[:, 0]}
        if self.any_baseline:
            losses["baseline"] = -(self.use_baseline.unsqueeze(-1) * normalised * baseline).sum()
            metrics["baseline_residual_rms"] = residual[:, 0].pow(2).mean(-1).sqrt()
        return StepResult(losses, metrics)

    def exact_objectives(self, x: Tensor) -> dict[str, Tensor]:
        # θ and φ both ascend the variational bound (Eq. 3 and 4); ψ fits its own regression and is
        # not checked against the bound.
        bound = exact_elbo(self.model, self.inference, x).sum(-1)
        return {"model": bound, "inference": bound}
