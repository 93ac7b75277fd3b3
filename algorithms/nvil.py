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

Parameter groups: "model" (θ, learning rate 1), "inference" (φ, rate `inference_lr_scale` = 1/5,
§4.1), "baseline" (ψ, rate `baseline_lr_scale`; only with the IDB). Each baseline network has one
hidden layer of 100 tanh units (§4.1) and sees the centred data (layer 1) or h^{j-1}.

Shapes: x (B, D); h[j] (B, H_j); every signal (B,); running statistics (num_signals,).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from algorithms.base import Algorithm, StepResult
from models.exact import exact_elbo


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

    def __post_init__(self):
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.baseline_hidden < 1:
            raise ValueError("baseline_hidden must be positive")


def _figure1_preset(baseline: bool, idb: bool, vn: bool) -> dict:
    return {"constant_baseline": baseline, "input_dependent_baseline": idb,
            "variance_normalisation": vn}


class InputDependentBaseline(nn.Module):
    """C_j(context): one hidden layer of tanh units, scalar output per example."""

    def __init__(self, context_size: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(context_size, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, context: Tensor) -> Tensor:
        return self.net(context).squeeze(-1)


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
    }
    scaled_groups = frozenset({"inference"})

    def __init__(self, model, inference, options: NVILOptions):
        super().__init__(model, inference, options)
        num_layers = len(model.latent_sizes)
        self.num_signals = num_layers if options.local_signals else 1
        if options.input_dependent_baseline:
            # Signal j's baseline sees what layer j of Q is conditioned on: x, then h^1, h^2, ...
            contexts = (model.num_features,) + tuple(model.latent_sizes[:-1])
            self.baselines = nn.ModuleList(
                InputDependentBaseline(contexts[j], options.baseline_hidden)
                for j in range(self.num_signals))
        else:
            self.baselines = None
        dtype = model.prior.bias.dtype
        self.register_buffer("signal_mean", torch.zeros(self.num_signals, dtype=dtype))
        self.register_buffer("signal_var", torch.zeros(self.num_signals, dtype=dtype))

    def parameter_groups(self):
        groups = {"model": list(self.model.parameters()),
                  "inference": list(self.inference.parameters())}
        if self.baselines is not None:
            groups["baseline"] = list(self.baselines.parameters())
        return groups

    def learning_rate_scales(self):
        return {"model": 1.0, "inference": self.options.inference_lr_scale,
                "baseline": self.options.baseline_lr_scale}

    def learning_signals(self, log_p: list[Tensor], log_q: list[Tensor]) -> list[Tensor]:
        """l^j = sum_{k >= j-1} log P terms - sum_{k >= j} log Q terms (Eq. 12), j = 1..n.

        `log_p[k]` is the model's term for layer k (k = 0 the data), `log_q[k]` is Q's term for
        latent layer k+1; reversed cumulative sums give every local signal in one pass."""
        log_p_tail = torch.stack(log_p).flip(0).cumsum(0).flip(0)  # [k] = sum_{k' >= k} log_p
        log_q_tail = torch.stack(log_q).flip(0).cumsum(0).flip(0)
        signals = log_p_tail[:-1] - log_q_tail
        return list(signals[: self.num_signals])

    def step(self, x: Tensor, generator=None) -> StepResult:
        options = self.options
        h, log_q = self.inference.sample(x, generator=generator)
        log_p = self.model.log_prob_terms(x, h)
        with torch.no_grad():
            signals = self.learning_signals([t.detach() for t in log_p], [t.detach() for t in log_q])
        baseline_contexts = [self.inference.centre(x)] + h[:-1]

        inference_loss = x.new_zeros(())
        baseline_loss = x.new_zeros(())
        normalised = []
        for j, signal in enumerate(signals):
            residual = signal
            if self.baselines is not None:
                baseline_value = self.baselines[j](baseline_contexts[j])
                residual = signal - baseline_value.detach()
            with torch.no_grad():
                # The normaliser comes from earlier minibatches only: a divisor that depended on
                # this minibatch's samples would make the expected update stop being a positive
                # multiple of the gradient (tests/test_algorithms.py shows it by enumeration).
                scale = (self.signal_var[j].sqrt().clamp_min(1.0)
                         if options.variance_normalisation else 1.0)
                self._update_statistics(j, residual)
                centred = residual - self.signal_mean[j] if options.constant_baseline else residual
                normalised_signal = centred / scale
            normalised.append(normalised_signal)
            if j == 0:
                first_residual = residual
            # With a global signal every layer of Q is driven by l^1; with local signals layer j by l^j.
            layers = range(len(log_q)) if not options.local_signals else [j]
            for k in layers:
                inference_loss = inference_loss - (normalised_signal * log_q[k]).sum()
            if self.baselines is not None:
                baseline_loss = baseline_loss - (normalised_signal * baseline_value).sum()

        losses = {"model": -sum(log_p).sum(), "inference": inference_loss}
        if self.baselines is not None:
            losses["baseline"] = baseline_loss
        bound = signals[0]
        metrics = {
            "bound": bound.mean().item(),
            "signal_mean": self.signal_mean[0].item(),
            "signal_std": self.signal_var[0].sqrt().item(),
            "normalised_signal_std": normalised[0].std(unbiased=False).item() if bound.numel() > 1 else 0.0,
        }
        if self.baselines is not None:
            metrics["baseline_residual_rms"] = first_residual.pow(2).mean().sqrt().item()
        return StepResult(losses, metrics)

    def _update_statistics(self, j: int, residual: Tensor) -> None:
        if not (self.options.constant_baseline or self.options.variance_normalisation):
            return
        alpha = self.options.smoothing
        batch_mean = residual.mean()
        batch_var = residual.var(unbiased=False) if residual.numel() > 1 else residual.new_zeros(())
        self.signal_mean[j] = alpha * self.signal_mean[j] + (1 - alpha) * batch_mean
        self.signal_var[j] = alpha * self.signal_var[j] + (1 - alpha) * batch_var

    def exact_objectives(self, x: Tensor) -> dict[str, Tensor]:
        # θ and φ both ascend the variational bound (Eq. 3 and 4); ψ fits its own regression and is
        # not checked against the bound.
        bound = exact_elbo(self.model, self.inference, x).sum()
        return {"model": bound, "inference": bound}
