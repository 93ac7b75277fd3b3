"""Bias check: does an estimator's update equal, in expectation, the update it claims?

On a tiny model in float64 (default `sbn:2-3` over 5 binary pixels: every sum over h, and over x
for the sleep phase, is enumerated exactly), each estimator claims an exact expected update per
parameter group (`claimed_update`: by default the gradient of its `exact_objectives`). Two checks
compare it with what the estimator does:

Exact enumeration (the first check; no sampling error). The noise of one update is explicit
(models/noise.py), and a Bernoulli unit is h = [u < sigmoid(a)], so setting every uniform to 0 or
1 forces every configuration of the update's binary draws. All 2^n configurations of a minibatch
run at once as 2^n stacked copies of the estimator, the layers report each configuration's
probability (`enumerating`), and the expected update is the probability-weighted sum of the
copies' updates:

    E[-grad loss_g] = sum_m P(m) (-grad loss_g | noise m)         compared with the claim c_g

per parameter tensor, with k = 1, or, for `scaled_groups`, k the least-squares positive factor
(variance normalisation rescales the update; it may not turn it). A bias is a relative error
|E - k c| / |c| above 1e-8, or a fitted k that is not positive. The running statistics enter as
they stand after `warmup` updates. Antithetic pairs (models/noise.py, `antithetic_bernoulli`) are
enumerated by the three intervals of u on which the pair's outcomes are constant, each at its
midpoint with its length as probability (exact for updates affine in u given the outcomes). Where
the noise holds Gaussians, or uniforms used other than as one Bernoulli draw each (words of a
document, relaxations), or has too many values, this check is skipped and says so.

Monte Carlo z-test (the second check, for every estimator):

    m = mean over N updates of grad loss_g,  z = (m - k e) / se(m)  per parameter element

A bias is max |z| above the Bonferroni threshold for a family-wise false-alarm rate `alpha`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import torch

import algorithms
from models import ModelSpec
from models.noise import ENUMERATED_VALUES, enumerating
from models.noise import draw as draw_noise
from models.quadrature import (
    MIN_QUADRATURE_NODES,
    QUADRATURE_NODES,
    gauss_hermite,
    log_weight_of_points,
)

#: at most this many noise configurations of one update are enumerated (2^16: 16 binary draws)
MAX_ENUMERATED_CONFIGURATIONS = 2 ** 16
MAX_ENUMERATED_BITS = 16
EXACT_TOLERANCE = 1e-8
#: the tolerance where the expectation is a Gauss-Hermite sum over normal noise: the rule's own
#: error on the tiny problems reaches 1e-6 (models/quadrature.py), far below any bias that matters
QUADRATURE_TOLERANCE = 1e-5
#: the spread of the tiny problems' Gaussian log sigma parameters (tiny_problem)
LOG_SCALE_SPREAD = 0.3


@dataclass
class TensorCheck:
    group: str
    name: str
    numel: int
    max_abs_z: float
    scale: float
    relative_error: float


@dataclass
class ExactCheck:
    group: str
    name: str
    numel: int
    scale: float
    relative_error: float
    tolerance: float = EXACT_TOLERANCE

    @property
    def biased(self) -> bool:
        return self.relative_error > self.tolerance or not self.scale > 0


@dataclass
class CheckReport:
    algorithm: str
    model: str
    steps: int
    batch_size: int
    threshold: float
    tensors: list[TensorCheck] = field(default_factory=list)
    exact: list[ExactCheck] = field(default_factory=list)
    exact_batch_size: int = 0
    exact_configurations: int = 0
    exact_skipped: str | None = None

    @property
    def z_biased(self) -> bool:
        return any(t.max_abs_z > self.threshold or not t.scale > 0 for t in self.tensors)

    @property
    def exact_biased(self) -> bool:
        return any(t.biased for t in self.exact)

    @property
    def biased(self) -> bool:
        return self.z_biased or self.exact_biased

    def lines(self) -> list[str]:
        out = [f"bias check: {self.algorithm} on {self.model}"]
        if self.exact_skipped:
            out.append(f"exact enumeration: skipped ({self.exact_skipped})")
        elif not self.exact_configurations:
            out.append("exact enumeration: not run")
        else:
            tolerance = self.exact[0].tolerance if self.exact else EXACT_TOLERANCE
            out.append(f"exact enumeration: {self.exact_configurations} noise configurations of a "
                       f"minibatch of {self.exact_batch_size}, relative error threshold "
                       f"{tolerance:g}" + (" (Gauss-Hermite quadrature of its normal noise)"
                                           if tolerance != EXACT_TOLERANCE else ""))
            out.append(f"  {'group':<10} {'tensor':<42} {'numel':>5} {'scale':>7} {'rel.err':>9}")
            for t in self.exact:
                flag = "  BIAS" if t.biased else ""
                out.append(f"  {t.group:<10} {t.name:<42} {t.numel:>5} {t.scale:>7.3f} "
                           f"{t.relative_error:>9.2e}{flag}")
        out.append(f"Monte Carlo z-test: {self.steps} steps of {self.batch_size} examples, "
                   f"|z| threshold {self.threshold:.2f}")
        out.append(f"  {'group':<10} {'tensor':<42} {'numel':>5} {'max|z|':>7} "
                   f"{'scale':>7} {'rel.err':>8}")
        for t in self.tensors:
            flag = "  BIAS" if (t.max_abs_z > self.threshold or not t.scale > 0) else ""
            out.append(f"  {t.group:<10} {t.name:<42} {t.numel:>5} {t.max_abs_z:>7.2f} "
                       f"{t.scale:>7.3f} {t.relative_error:>8.4f}{flag}")
        out.append("result: BIASED" if self.biased else "result: no bias found")
        return out


def tiny_model(model: str = "sbn:2-3", num_features: int = 5, runs: int = 1,
               inference: str = "factorial"):
    """A float64 model of `runs` runs (all zeros) and its inference network."""
    spec = ModelSpec.parse(model, inference=inference, init_scale=1.0)
    return spec.build(num_features, generators=[None] * runs, dtype=torch.float64)


def tiny_problem(model: str = "sbn:2-3", num_features: int = 5, batch_size: int = 10,
                 seed: int = 0, inference: str = "factorial"):
    """A float64 model (one run) with O(1) random parameters (Gaussian log sigmas N(0, 0.3^2)),
    its inference network, and a minibatch x (1, B, D) drawn from the model itself (so the posterior is far from factorial and
    gradients are non-trivial)."""
    torch.manual_seed(seed)
    p_model, q_net = tiny_model(model, num_features, 1, inference)
    with torch.no_grad():
        for name, parameter in (list(p_model.named_parameters())
                                + list(q_net.named_parameters())):
            # Gaussian layers' log sigma parameters at a third of that spread: sigmas of e^±3
            # would make the integrands of the quadrature (models/quadrature.py) near-kinked at
            # the nodes' scale, and its 32-node sums inexact beyond the check's tolerance.
            parameter.normal_(0.0, LOG_SCALE_SPREAD if "scale" in name.rsplit(".", 1)[-1] else 1.0)
        lengths = torch.full((1, batch_size), 6.0, dtype=torch.float64)
        noise = draw_noise({"x": p_model.noise(batch_size, lengths=lengths)}, [None],
                           torch.float64)["x"]
        x, _ = p_model.sample(noise, lengths)
    return p_model, q_net, x


def _build(algorithm: str, model, inference, overrides, algorithm_class, generators=None):
    if algorithm_class is None:
        return algorithms.build(algorithm, model, inference, overrides, generators)
    preset = algorithms.registry.split(algorithm)[1]  # the preset the report names
    return algorithm_class(model, inference, algorithm_class.resolve_options(preset, overrides),
                           generators)


def draw_step(method, x: torch.Tensor, generator):
    """One step of a lone run with noise from `generator`."""
    noise = draw_noise(method.noise(x), [generator], x.dtype, x.device)
    return method.step(x, noise)


def _enumerated_values(request) -> list[tuple[str, str, int, int]] | None:
    """(name, kind, elements, values per element) of every leaf of a noise request, or None if
    it holds noise that enumeration cannot cover. Normal noise is covered by Gauss-Hermite
    quadrature (models/quadrature.py): up to QUADRATURE_NODES values per element."""
    leaves = []
    for name, group in request.items():
        for leaf in group:
            values = ENUMERATED_VALUES[leaf.kind] if leaf.kind != "normal" else 0
            if values is None:
                return None
            shapes = leaf.shape if isinstance(leaf.shape, list) else [leaf.shape]
            leaves.append((name, leaf.kind, math.prod(shapes[0]), values))
    # Normal noise: as many Gauss-Hermite nodes per element (up to QUADRATURE_NODES) as the
    # enumeration's budget allows after the discrete noise; never fewer than MIN_QUADRATURE_NODES
    # (the configurations then exceed the budget, and the check takes a smaller minibatch).
    normals = sum(n for _, kind, n, _ in leaves if kind == "normal")
    if normals:
        discrete = math.prod(values ** n for _, kind, n, values in leaves if kind != "normal")
        nodes = QUADRATURE_NODES
        while (nodes > MIN_QUADRATURE_NODES
               and discrete * nodes ** normals > MAX_ENUMERATED_CONFIGURATIONS):
            nodes -= 1
        leaves = [(name, kind, n, nodes if kind == "normal" else values)
                  for name, kind, n, values in leaves]
    return leaves


def enumeration_size(request) -> int | None:
    """The number of configurations one update's noise takes under exact enumeration (uniforms 2
    each, antithetic pairs 3 each, normals up to QUADRATURE_NODES each), or None if it holds noise that
    cannot be enumerated."""
    leaves = _enumerated_values(request)
    return None if leaves is None else math.prod(values ** n for _, _, n, values in leaves)


def exact_expected_update(method, spec_text: str, num_features: int, inference: str, x, build,
                          checked_groups):
    """E[-grad loss_g] for each of the checked groups, by enumerating every configuration of one
    update's noise (binary draws; the intervals of antithetic pairs; the Gauss-Hermite nodes of
    normal noise, each configuration weighted by its quadrature weight): (expected {group:
    [tensors]}, number of configurations), or (None, reason) when it cannot be enumerated."""
    if method.not_enumerable:
        return None, method.not_enumerable
    request = method.noise(x)
    leaves = _enumerated_values(request)
    if leaves is None:
        return None, "its noise is not all uniforms or antithetic pairs"
    count = math.prod(values ** n for _, _, n, values in leaves)
    if count > MAX_ENUMERATED_CONFIGURATIONS:
        return None, (f"{count} noise configurations per update, at most "
                      f"{MAX_ENUMERATED_CONFIGURATIONS} enumerable")
    model, q_net = tiny_model(spec_text, num_features, count, inference)
    copies = build(model, q_net)
    # Every copy starts from the lone run's state (parameters and running statistics).
    with torch.no_grad():
        for name, value in copies.state_dict().items():
            value.copy_(method.state_dict()[name].expand_as(value))
    # Configuration m's digits in mixed radix: one digit per noise element, base 2 or 3.
    codes = torch.arange(count).unsqueeze(-1)
    noise, stride = {name: [] for name in request}, 1
    quadrature_log_weight = torch.zeros(count, dtype=torch.float64)
    for (name, kind, elements, values), leaf in zip(
            leaves, [leaf for group in request.values() for leaf in group], strict=True):
        strides = stride * values ** torch.arange(elements)
        digits = ((codes // strides) % values).to(torch.float64).reshape(count, *leaf.shape)
        stride *= values ** elements
        if kind == "uniform":
            noise[name].append(1.0 - digits)  # u = 0 forces h = 1, u = 1 forces h = 0
        elif kind == "normal":
            nodes, _ = gauss_hermite(values)
            noise[name].append(nodes[digits.long()])
            quadrature_log_weight += log_weight_of_points(digits.long(), values)
        else:  # interval codes, read by models.noise.antithetic_bernoulli
            noise[name].append(torch.stack([digits, digits], 1))
    with enumerating() as ledger:
        result = copies.step(x.expand(count, *x.shape[1:]), noise)
    gaussian = any(kind == "normal" for _, kind, _, _ in leaves)
    if ledger[0] is None and not gaussian:
        return None, "its layers drew no Bernoulli samples"
    probability = (quadrature_log_weight + (0.0 if ledger[0] is None else ledger[0])).exp()
    total = float(probability.sum())
    if abs(total - 1.0) > 1e-9:
        return None, (f"its noise is not all consumed by Bernoulli draws (the enumerated "
                      f"configurations have total probability {total:.6g})")
    groups = copies.parameter_groups()
    expected = {}
    for g in checked_groups:
        if g not in result.losses:
            expected[g] = [torch.zeros_like(p[0]) for p in groups[g]]
            continue
        grads = torch.autograd.grad(result.losses[g], groups[g], retain_graph=True,
                                    allow_unused=True)
        weights = probability.detach()
        expected[g] = [torch.zeros_like(p[0]) if grad is None
                       else -(weights.view(-1, *([1] * (grad.dim() - 1))) * grad).sum(0)
                       for p, grad in zip(groups[g], grads, strict=True)]
    return expected, count


def fitted_scale(estimate: torch.Tensor, target: torch.Tensor, scaled: bool) -> float:
    if not scaled:
        return 1.0
    denominator = (target * target).sum().item()
    return (estimate * target).sum().item() / denominator if denominator > 0 else 1.0


def run_bias_check(algorithm: str, model: str = "sbn:2-3", steps: int = 4000,
                   batch_size: int = 10, seed: int = 0, overrides: dict | None = None,
                   alpha: float = 1e-3, warmup: int = 50, inference: str = "factorial",
                   algorithm_class=None, num_features: int = 5, exact: bool = True) -> CheckReport:
    """Both checks of the module docstring; `algorithm_class` replaces the registered class (the
    preset in `algorithm` still applies)."""
    report = CheckReport(algorithm, model, steps, batch_size, 0.0)
    if exact:
        _exact_check(report, algorithm, model, seed, overrides, warmup, inference,
                     algorithm_class, num_features)
    p_model, q_net, x = tiny_problem(model, num_features, batch_size, seed, inference)
    method = _build(algorithm, p_model, q_net, overrides, algorithm_class)
    groups = method.parameter_groups()
    claimed = method.claimed_update(x)
    exact_update = {g: [-t[0] for t in tensors] for g, tensors in claimed.items()}

    generator = torch.Generator().manual_seed(seed + 1)
    for _ in range(warmup):  # let running statistics settle; changes nothing in expectation
        draw_step(method, x, generator)
    sums = {g: [torch.zeros_like(p[0]) for p in groups[g]] for g in claimed}
    squares = {g: [torch.zeros_like(p[0]) for p in groups[g]] for g in claimed}
    for _ in range(steps):
        losses = draw_step(method, x, generator).losses
        for g in claimed:
            if g not in losses:
                continue
            grads = torch.autograd.grad(losses[g], groups[g], retain_graph=True, allow_unused=True)
            for i, grad in enumerate(grads):
                if grad is not None:
                    sums[g][i] += grad[0]
                    squares[g][i] += grad[0] * grad[0]

    names = {id(p): n for n, p in method.named_parameters()}
    total_elements = sum(p.numel() for g in claimed for p in groups[g])
    report.threshold = NormalDist().inv_cdf(1 - alpha / (2 * total_elements))
    for g in claimed:
        for i, parameter in enumerate(groups[g]):
            mean = sums[g][i] / steps
            variance = (squares[g][i] / steps - mean * mean).clamp_min(0) * steps / (steps - 1)
            standard_error = (variance / steps).sqrt()
            target = exact_update[g][i]
            scale = fitted_scale(mean, target, g in method.scaled_groups)
            residual = mean - scale * target
            # A floor on the standard error so exactly deterministic elements compare by value.
            floor = 1e-9 * (1.0 + target.abs())
            z = residual.abs() / torch.maximum(standard_error, floor)
            relative = (residual.norm() / target.norm().clamp_min(1e-12)).item()
            report.tensors.append(TensorCheck(g, names[id(parameter)], parameter[0].numel(),
                                              float(z.max()), scale, relative))
    return report


def _exact_check(report: CheckReport, algorithm, model, seed, overrides, warmup, inference,
                 algorithm_class, num_features) -> None:
    # The smallest minibatch that still couples examples (2) where its noise stays enumerable.
    for batch_size in (2, 1):
        p_model, q_net, x = tiny_problem(model, num_features, batch_size, seed, inference)
        method = _build(algorithm, p_model, q_net, overrides, algorithm_class)
        size = enumeration_size(method.noise(x))
        if size is None or size <= MAX_ENUMERATED_CONFIGURATIONS or batch_size == 1:
            break
    generator = torch.Generator().manual_seed(seed + 2)
    for _ in range(warmup):  # running statistics as they stand in training
        draw_step(method, x, generator)
    claimed = method.claimed_update(x)
    expected, count = exact_expected_update(
        method, model, num_features, inference, x,
        lambda m, q: _build(algorithm, m, q, overrides, algorithm_class), list(claimed))
    if expected is None:
        report.exact_skipped = count
        return
    report.exact_batch_size, report.exact_configurations = batch_size, count
    gaussian = any(leaf.kind == "normal" for leaves in method.noise(x).values() for leaf in leaves)
    tolerance = QUADRATURE_TOLERANCE if gaussian else EXACT_TOLERANCE
    groups = method.parameter_groups()
    names = {id(p): n for n, p in method.named_parameters()}
    for g, targets in claimed.items():
        for parameter, estimate, target in zip(groups[g], expected[g], targets, strict=True):
            target = target[0]
            scale = fitted_scale(estimate, target, g in method.scaled_groups)
            relative = ((estimate - scale * target).norm() / target.norm().clamp_min(1e-300)).item()
            report.exact.append(ExactCheck(g, names[id(parameter)], target.numel(), scale,
                                           relative, tolerance))


def default_steps_for(algorithm: str) -> int:
    """The steps the algorithm declares for its check (`Algorithm.check_steps`)."""
    return algorithms.parse_name(algorithm)[0].check_steps


__all__ = ["run_bias_check", "CheckReport", "tiny_problem", "default_steps_for"]
