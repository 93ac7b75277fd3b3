"""Bias check: does an algorithm's update equal, in expectation, the exact gradient it claims?

On a tiny model in float64 (default `sbn:2-3` over 5 binary pixels: 5 latent units, so every sum
over h, and over x for the sleep phase, is enumerated exactly), for each parameter group g that the
algorithm declares in `exact_objectives`:

    exact    e = -∇_g objective_g(x)                    (autograd through exact enumeration)
    estimate m = mean over N steps of ∇_g loss_g         (the algorithm's own surrogate losses)
    z        = (m - k e) / se(m)                         per parameter element

with k = 1, or, for the groups the algorithm lists in `scaled_groups`, k the least-squares positive
factor per parameter tensor (variance normalisation rescales the update; it may not turn it).
A bias is reported when max |z| exceeds the Bonferroni threshold for a family-wise false-alarm
rate of `alpha` over all checked elements, or when a fitted k is not positive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist

import torch

import algorithms
from models import ModelSpec


@dataclass
class TensorCheck:
    group: str
    name: str
    numel: int
    max_abs_z: float
    scale: float
    relative_error: float


@dataclass
class CheckReport:
    algorithm: str
    model: str
    steps: int
    batch_size: int
    threshold: float
    tensors: list[TensorCheck] = field(default_factory=list)

    @property
    def biased(self) -> bool:
        return any(t.max_abs_z > self.threshold or not t.scale > 0 for t in self.tensors)

    def lines(self) -> list[str]:
        out = [f"bias check: {self.algorithm} on {self.model}, {self.steps} steps of "
               f"{self.batch_size} examples, |z| threshold {self.threshold:.2f}"]
        out.append(f"  {'group':<10} {'tensor':<42} {'numel':>5} {'max|z|':>7} "
                   f"{'scale':>7} {'rel.err':>8}")
        for t in self.tensors:
            flag = "  BIAS" if (t.max_abs_z > self.threshold or not t.scale > 0) else ""
            out.append(f"  {t.group:<10} {t.name:<42} {t.numel:>5} {t.max_abs_z:>7.2f} "
                       f"{t.scale:>7.3f} {t.relative_error:>8.4f}{flag}")
        out.append("result: BIASED" if self.biased else "result: no bias found")
        return out


def tiny_problem(model: str = "sbn:2-3", num_features: int = 5, batch_size: int = 10,
                 seed: int = 0, inference: str = "factorial"):
    """A float64 model with O(1) random parameters, its inference network, and a minibatch drawn
    from the model itself (so the posterior is far from factorial and gradients are non-trivial)."""
    torch.manual_seed(seed)
    spec = ModelSpec.parse(model, inference=inference, init_scale=1.0)
    p_model, q_net = spec.build(num_features)
    p_model, q_net = p_model.double(), q_net.double()
    with torch.no_grad():
        for parameter in list(p_model.parameters()) + list(q_net.parameters()):
            parameter.normal_(0.0, 1.0)
        lengths = torch.full((batch_size,), 6.0, dtype=torch.float64)
        x, _ = p_model.sample((batch_size,), lengths=lengths)
    return p_model, q_net, x


def run_bias_check(algorithm: str, model: str = "sbn:2-3", steps: int = 4000,
                   batch_size: int = 10, seed: int = 0, overrides: dict | None = None,
                   alpha: float = 1e-3, warmup: int = 50, inference: str = "factorial",
                   algorithm_class=None) -> CheckReport:
    p_model, q_net, x = tiny_problem(model, batch_size=batch_size, seed=seed, inference=inference)
    if algorithm_class is None:
        method = algorithms.build(algorithm, p_model, q_net, overrides)
    else:
        preset = algorithms.registry.split(algorithm)[1]  # the preset the report names
        method = algorithm_class(p_model, q_net, algorithm_class.resolve_options(preset, overrides))
    method = method.double()
    groups = method.parameter_groups()
    objectives = method.exact_objectives(x)
    exact = {g: torch.autograd.grad(-objectives[g], groups[g], retain_graph=True, allow_unused=True)
             for g in objectives}

    generator = torch.Generator().manual_seed(seed + 1)
    for _ in range(warmup):  # let running statistics settle; changes nothing in expectation
        method.step(x, generator)
    sums = {g: [torch.zeros_like(p) for p in groups[g]] for g in objectives}
    squares = {g: [torch.zeros_like(p) for p in groups[g]] for g in objectives}
    for _ in range(steps):
        losses = method.step(x, generator).losses
        for g in objectives:
            grads = torch.autograd.grad(losses[g], groups[g], retain_graph=True, allow_unused=True)
            for i, grad in enumerate(grads):
                if grad is not None:
                    sums[g][i] += grad
                    squares[g][i] += grad * grad

    names = {id(p): n for n, p in method.named_parameters()}
    total_elements = sum(p.numel() for g in objectives for p in groups[g])
    threshold = NormalDist().inv_cdf(1 - alpha / (2 * total_elements))
    report = CheckReport(algorithm, model, steps, batch_size, threshold)
    for g in objectives:
        for i, parameter in enumerate(groups[g]):
            mean = sums[g][i] / steps
            variance = (squares[g][i] / steps - mean * mean).clamp_min(0) * steps / (steps - 1)
            standard_error = (variance / steps).sqrt()
            target = exact[g][i] if exact[g][i] is not None else torch.zeros_like(mean)
            scale = 1.0
            if g in method.scaled_groups:
                denominator = (target * target).sum().item()
                scale = (mean * target).sum().item() / denominator if denominator > 0 else 1.0
            residual = mean - scale * target
            # A floor on the standard error so exactly deterministic elements compare by value.
            floor = 1e-9 * (1.0 + target.abs())
            z = residual.abs() / torch.maximum(standard_error, floor)
            relative = (residual.norm() / target.norm().clamp_min(1e-12)).item()
            report.tensors.append(TensorCheck(g, names[id(parameter)], parameter.numel(),
                                              float(z.max()), scale, relative))
    return report


def default_steps_for(algorithm: str) -> int:
    """The steps the algorithm declares for its check (`Algorithm.check_steps`)."""
    return algorithms.parse_name(algorithm)[0].check_steps


__all__ = ["run_bias_check", "CheckReport", "tiny_problem", "default_steps_for"]
