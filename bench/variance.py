"""Gradient variance along one training trajectory (`python -m bench variance SUITE_OR_RUN`).

One reference estimator (`along`, by default NVIL) trains a model on the engine exactly as
`bench train` would (same data order, same noise, same parameters at every update). At
checkpoints along that trajectory, every compared estimator estimates the gradient of the SAME
parameters on the SAME minibatch, many times:

    x_t          B training rows, fixed per checkpoint t (a function of the seed and t), the same
                 for every estimator
    g_e,m        -grad losses[group] of estimator e with noise replicate m = 1..M: the update
                 direction per parameter of the `model` and `inference` groups (the groups every
                 estimator shares; an estimator's own groups are not compared)
    noise        replicate m is drawn from a generator seeded by (seed, t, m), the same seed for
                 every estimator: estimators whose noise requests agree in shape and order see
                 the same uniforms (common random numbers); the others see independent draws

The M replicates are M runs stacked in one estimator (the engine's run dimension), each slice
holding the same parameters, so one `step` gives all M estimates. Per group, over its P
parameter elements (g_bar = mean over m, s^2 = the unbiased variance over m):

    variance     (1/P) sum_p s_p^2                         the mean per-parameter variance
    snr          (1/P') sum_p |g_bar_p| / s_p              over the P' elements with s_p > 0
                 (the per-parameter signal-to-noise ratio of Rainforth et al. 2018)
    mean_norm    ||g_bar||

On a tiny model (latent units x samples per example at most MAX_EXACT_BITS, so that log P(x),
the ELBO and the K-sample bound are enumerable; not the sleep phase's objective, which also sums
over every image) each estimator's mean is also compared with the exact gradient of what it estimates
(`exact_objectives`: the ELBO, the K-sample bound, or, for RWS, log P(x) and its Q objectives):

    bias         ||g_bar - g_exact|| / ||g_exact||,   bias_se = sqrt(sum_p s_p^2 / M) / ||g_exact||
    cosine       cos(g_bar, g_exact)

A bias well above bias_se is the estimator's own (RWS's, for finite K). Where an estimator may
rescale a group's update (`scaled_groups`: NVIL's variance normalisation divides the inference
update by a running standard deviation) the exact gradient is first scaled by the least-squares
factor `scale`, so that the bias is one of direction.

Estimators with state of their own (baselines, control variates, running statistics) are
measured with that state trained along the same trajectory: a shadow copy of each such estimator
follows the reference's model and inference parameters at every update, on the reference's
minibatch with its own noise stream, and steps only its own groups (at its own learning rates)
and buffers. An estimator without such state needs no shadow.

Long work shows progress, and after every checkpoint the reference run, the shadows and the rows
measured so far are saved (STATE): run the same command again to continue.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import algorithms
from bench.errors import UserError
from bench.io import atomic_torch_save
from bench.optim import RunOptimizer
from bench.specs import RunSpec
from bench.training import Built, RunGroup, build, load_run_state, run_state
from models.noise import draw as draw_noise

SHARED_GROUPS = ("model", "inference")
#: the exact gradient is enumerated where latent units x samples per example is at most this
#: (2^12 configurations, or K-tuples of configurations, per example)
MAX_EXACT_BITS = 12
STATE = "variance_state.pt"


@dataclass(frozen=True)
class VarianceSettings:
    updates: int                    # the reference trajectory's length
    checkpoints: int = 8            # measured at update 0 and this many log-spaced updates
    replicates: int = 64            # M gradient estimates per estimator and checkpoint

    def __post_init__(self):
        if self.updates < 1:
            raise UserError(f"--updates must be at least 1, got {self.updates}")
        if self.checkpoints < 1:
            raise UserError(f"--checkpoints must be at least 1, got {self.checkpoints}")
        if self.replicates < 2:
            raise UserError(f"--replicates must be at least 2 (a variance needs two), "
                            f"got {self.replicates}")

    def schedule(self) -> list[int]:
        """Update 0 and `checkpoints` updates log-spaced up to `updates` (distinct integers)."""
        spaced = np.geomspace(1, self.updates, self.checkpoints) if self.checkpoints > 1 else [
            self.updates]
        return sorted({0, *(int(round(u)) for u in spaced)})


def gradient_statistics(grads: torch.Tensor, exact: torch.Tensor | None = None,
                        scaled: bool = False) -> dict:
    """Statistics of M estimates (M, P) of one group's update direction (float64). With
    `scaled` (a group the estimator may rescale, as variance normalisation does) the exact
    gradient is first multiplied by the least-squares factor k = <g_bar, g_exact> / ||g_exact||^2
    (reported as `scale`), so that the bias measures the direction, not the step size."""
    grads = grads.to(torch.float64)
    mean = grads.mean(0)
    variance = grads.var(0, unbiased=True)
    spread = variance.sqrt()
    positive = spread > 0
    stats = {"parameters": grads.shape[1], "replicates": grads.shape[0],
             "variance": float(variance.mean()),
             "snr": float((mean[positive].abs() / spread[positive]).mean()) if positive.any()
             else math.nan,
             "mean_norm": float(mean.norm())}
    if exact is not None:
        exact = exact.to(torch.float64)
        length = float(mean.norm()) * float(exact.norm())
        stats["cosine"] = float(mean @ exact) / length if length > 0 else math.nan
        factor = 1.0
        if scaled and float(exact @ exact) > 0:
            factor = float(mean @ exact) / float(exact @ exact)
            stats["scale"] = factor
        exact = exact * factor
        scale = float(exact.norm())
        if scale > 0:
            stats["bias"] = float((mean - exact).norm()) / scale
            stats["bias_se"] = math.sqrt(float(variance.sum()) / grads.shape[0]) / scale
    return stats


def _flat(tensors: list[torch.Tensor | None], like: list[torch.Tensor]) -> torch.Tensor:
    """Per-run gradients (R, ...) of a group's parameters as one (R, P) matrix; None is zero."""
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(p.shape[0], -1)
                      for g, p in zip(tensors, like, strict=True)], 1)


def _own_groups(algorithm: algorithms.Algorithm, options) -> dict[str, list]:
    """The estimator's groups beyond the shared ones that it trains (nonzero rate)."""
    scales = algorithm.learning_rate_scales(options)
    return {g: params for g, params in algorithm.parameter_groups().items()
            if g not in SHARED_GROUPS and scales.get(g, 0.0) and params}


def _has_own_state(algorithm: algorithms.Algorithm) -> bool:
    """Whether the estimator trains groups or keeps state beyond the model and inference
    network (then it needs a shadow to be measured fairly)."""
    return bool(_own_groups(algorithm, algorithm.options[0])) or any(
        not name.startswith(("model.", "inference.")) for name in algorithm.state_dict())


class Trajectory(RunGroup):
    """The reference run: trained exactly as `bench train` trains it, but never validated (the
    variance verb measures no bound) and never writing checkpoint.pt (its checkpoint goes into
    the verb's own state, with the shadows', so that the two cannot disagree)."""

    def validate(self, runs) -> None:
        pass

    def save_checkpoint(self, run) -> None:
        pass


class Shadow:
    """An estimator with state of its own, kept trained along the reference trajectory."""

    def __init__(self, built: Built):
        self.built = built
        self.algorithm = built.algorithm
        spec = built.spec
        options = self.algorithm.options[0]
        self.groups = _own_groups(self.algorithm, options)
        scales = self.algorithm.learning_rate_scales(options)
        reference = self.algorithm.model.prior.bias
        rates = {g: torch.tensor([spec.resolved_learning_rate * scales[g]], dtype=reference.dtype,
                                 device=reference.device) for g in self.groups}
        self.optimizer = RunOptimizer(spec.optimizer, self.groups, rates) if self.groups else None
        self.generator = torch.Generator(device=built.device).manual_seed(spec.seed)
        self.shared = [p for g in SHARED_GROUPS for p in self.algorithm.parameter_groups()[g]]

    @torch.no_grad()
    def follow(self, reference: algorithms.Algorithm) -> None:
        """Take the reference's current model and inference parameters."""
        source = [p for g in SHARED_GROUPS for p in reference.parameter_groups()[g]]
        for mine, theirs in zip(self.shared, source, strict=True):
            mine.copy_(theirs)

    def update(self, x: torch.Tensor) -> None:
        """One update of the shadow's own groups and buffers on minibatch x (1, B, D)."""
        noise = draw_noise(self.algorithm.noise(x), [self.generator], x.dtype, x.device)
        kept = {name: b.clone() for name, b in self.algorithm.named_buffers()}
        result = self.algorithm.step(x, noise)
        if not bool(torch.isfinite(result.metrics["bound"]).all()):
            with torch.no_grad():  # a non-finite update leaves the shadow as it was
                for name, b in self.algorithm.named_buffers():
                    b.copy_(kept[name])
            return
        if self.optimizer is not None:
            self.optimizer.backward(sum(result.losses[g] for g in self.groups))
        for p in self.shared:
            p.grad = None

    def save(self) -> dict:
        saved = {"algorithm": run_state(self.algorithm, 0),
                 "generator": self.generator.get_state()}
        if self.optimizer is not None:
            saved["optimizer"] = self.optimizer.run_state(0)
        return saved

    def load(self, saved: dict) -> None:
        load_run_state(self.algorithm, 0, saved["algorithm"])
        self.generator.set_state(saved["generator"])
        if self.optimizer is not None:
            self.optimizer.load_run_state(0, saved["optimizer"])


def compared_spec(reference: RunSpec, algorithm: str, learning_rate: float | None = None,
                  options: dict | None = None) -> RunSpec:
    return dataclasses.replace(reference, algorithm=algorithm, learning_rate=learning_rate,
                               options=dict(options or {}))


class Measurer:
    """M stacked replicates of one estimator: loads a state into every slice and returns the
    statistics of its M update directions on one minibatch (and, on a tiny model, the exact
    gradient of its objective from a single copy, one example at a time)."""

    def __init__(self, spec: RunSpec, data, replicates: int):
        self.spec = spec
        specs = [dataclasses.replace(spec, seed=m) for m in range(replicates)]
        self.built = build(specs, data=data)
        self.algorithm = self.built.algorithm
        self.replicates = replicates
        options = self.algorithm.options[0]
        samples = max(1, math.ceil(self.algorithm.evaluations_per_example(options)))
        self.single = (build(spec, data=data).algorithm
                       if sum(self.algorithm.model.latent_sizes) * samples <= MAX_EXACT_BITS
                       else None)

    @staticmethod
    def check(spec: RunSpec) -> None:
        """Raise the estimator's UserError if it refuses the spec's networks (built once on one
        input feature), before any data is loaded."""
        from models import ModelSpec

        cls, preset = algorithms.parse_name(spec.algorithm)
        networks = ModelSpec.parse(spec.model, inference=spec.inference).build(1)
        cls(*networks, cls.resolve_options(preset, spec.options))

    def exact_gradients(self, state: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The exact gradient (P,) of the estimator's objective per shared group, summed over the
        minibatch; {} where it cannot be enumerated."""
        if self.single is None:
            return {}
        load_run_state(self.single, 0, state)
        groups = self.single.parameter_groups()
        totals: dict[str, torch.Tensor] = {}
        try:
            for i in range(x.shape[1]):
                objectives = self.single.exact_objectives(x[:, i:i + 1])
                for g in SHARED_GROUPS:
                    if g in objectives:
                        grads = torch.autograd.grad(objectives[g].sum(), groups[g],
                                                    retain_graph=True, allow_unused=True)
                        flat = _flat(list(grads), groups[g])[0].detach()
                        totals[g] = flat if g not in totals else totals[g] + flat
        except ValueError:  # e.g. the sleep objective, which also sums over every image x
            self.single = None
            return {}
        return totals

    def measure(self, state: dict, x: torch.Tensor, seeds: list[int]) -> dict[str, dict]:
        algorithm = self.algorithm
        for r in range(self.replicates):
            load_run_state(algorithm, r, state)
        stacked = x.expand(self.replicates, *x.shape[1:]).contiguous()
        generators = [torch.Generator(device=self.built.device).manual_seed(s) for s in seeds]
        noise = draw_noise(algorithm.noise(stacked), generators, stacked.dtype, stacked.device)
        result = algorithm.step(stacked, noise)
        groups = algorithm.parameter_groups()
        bound = float(result.metrics["bound"].detach().mean())
        exact = self.exact_gradients(state, x)
        out = {}
        for g in SHARED_GROUPS:
            grads = torch.autograd.grad(result.losses[g], groups[g], retain_graph=True,
                                        allow_unused=True)
            estimates = -_flat(list(grads), groups[g]).detach()
            if not bool(torch.isfinite(estimates).all()):
                out[g] = {"parameters": estimates.shape[1], "replicates": self.replicates,
                          "variance": math.nan, "snr": math.nan, "mean_norm": math.nan,
                          "bound": bound}
                continue
            out[g] = {**gradient_statistics(estimates, exact.get(g), g in algorithm.scaled_groups),
                      "bound": bound}
        for p in algorithm.parameters():
            p.grad = None
        return out


def minibatch_rows(seed: int, update: int, num_rows: int, batch_size: int) -> np.ndarray:
    """The rows every estimator is measured on at one checkpoint."""
    return np.random.default_rng([seed, 7919, update]).choice(num_rows, batch_size, replace=False)


def replicate_seeds(seed: int, update: int, replicates: int) -> list[int]:
    """One seed per replicate, the same for every estimator (common random numbers)."""
    base = int(np.random.default_rng([seed, 104729, update]).integers(2 ** 40))
    return [base + m for m in range(replicates)]


def trajectory_variance(reference: RunSpec, compared: list[RunSpec], settings: VarianceSettings,
                        state_path: Path, data=None, data_dir=None, progress: bool = True
                        ) -> list[dict]:
    """Rows (bench/reporting/variance.py FIELDS) of every compared estimator at every checkpoint
    of the reference's trajectory. Resumes from `state_path` when it holds the same
    configuration."""
    reference = dataclasses.replace(reference, updates=settings.updates,
                                    eval_interval=settings.updates + 1)
    identity = {"reference": reference.identity(), "settings": dataclasses.asdict(settings),
                "compared": [spec.identity() for spec in compared]}
    built = build(reference, data=data, data_dir=data_dir)
    data = built.data
    trajectory = Trajectory(built, [state_path.parent], progress=False)
    shadows: dict[int, Shadow] = {}
    for index, spec in enumerate(compared):
        if _is_reference(spec, reference):
            continue  # the reference itself: its own state is the run's
        shadow_built = build(spec, data=data)
        if _has_own_state(shadow_built.algorithm):
            shadows[index] = Shadow(shadow_built)
    rows: list[dict] = []
    done: set[int] = set()
    if state_path.exists():
        try:
            saved = torch.load(state_path, map_location=built.device, weights_only=False)
        except Exception as error:
            raise UserError(f"cannot read {state_path} ({error}); move it away or delete it to "
                            f"measure again") from None
        if saved.get("identity") != identity:
            raise UserError(f"{state_path} holds a measurement with another configuration; "
                            f"use another --out, or delete it to measure again")
        trajectory.load_checkpoint(trajectory.runs[0], saved["trajectory"])
        for index, shadow in shadows.items():
            shadow.load(saved["shadows"][index])
        rows, done = saved["rows"], set(saved["done"])
        if set(settings.schedule()) <= done:
            return rows
    measurers = {i: Measurer(spec, data, settings.replicates) for i, spec in enumerate(compared)}
    schedule = settings.schedule()
    from tqdm import tqdm

    bar = tqdm(total=settings.updates, initial=trajectory.runs[0].state.update,
               desc=f"variance along {reference.algorithm} on {reference.model}", unit="upd",
               disable=not progress, dynamic_ncols=True, leave=False)
    try:
        while True:
            update = trajectory.runs[0].state.update
            if update in schedule and update not in done:
                index = minibatch_rows(reference.seed, update, trajectory.train_rows.shape[0],
                                       reference.batch_size)
                x = trajectory._rows(index).unsqueeze(0).to(trajectory.batch.dtype)
                seeds = replicate_seeds(reference.seed, update, settings.replicates)
                for i, spec in enumerate(compared):
                    if i in shadows:
                        shadows[i].follow(trajectory.algorithm)
                        state = run_state(shadows[i].algorithm, 0)
                    elif _is_reference(spec, reference):
                        state = run_state(trajectory.algorithm, 0)
                    else:
                        state = _shared_state(measurers[i].algorithm, trajectory.algorithm)
                    for group, stats in measurers[i].measure(state, x, seeds).items():
                        rows.append({"model": reference.model, "dataset": reference.dataset,
                                     "along": reference.algorithm, "estimator": label(spec),
                                     "update": update, "group": group, **stats})
                done.add(update)
                atomic_torch_save({"identity": identity, "trajectory": trajectory.checkpoint(trajectory.runs[0]),
                                   "shadows": {i: s.save() for i, s in shadows.items()},
                                   "rows": rows, "done": sorted(done)}, state_path)
            if update >= settings.updates:
                break
            for shadow in shadows.values():
                shadow.follow(trajectory.algorithm)
            if not trajectory.update():
                break  # diverged: the rows so far are what there is
            for shadow in shadows.values():
                shadow.update(trajectory.batch)
            bar.update(1)
    finally:
        bar.close()
    return rows


def _is_reference(spec: RunSpec, reference: RunSpec) -> bool:
    """Whether a compared spec is the reference estimator itself (its state is the run's)."""
    return (algorithms.parse_name(spec.algorithm) == algorithms.parse_name(reference.algorithm)
            and spec.options == reference.options
            and spec.learning_rate == reference.learning_rate)


def label(spec: RunSpec) -> str:
    """How a compared estimator is named in the rows: its name, and its options if any."""
    if not spec.options:
        return spec.algorithm
    return spec.algorithm + "[" + ",".join(f"{k}={v}" for k, v in sorted(spec.options.items())) + "]"


def _shared_state(target: algorithms.Algorithm, reference: algorithms.Algorithm) -> dict:
    """A state for an estimator without state of its own: its initial state (slice 0) with the
    reference's model and inference parameters."""
    state = run_state(target, 0)
    source = run_state(reference, 0)
    for name in state:
        if name.startswith(("model.", "inference.")):
            state[name] = source[name]
    return state

