"""The contract every estimator fulfils, so that the harness never special-cases one.

An estimator is an `nn.Module` built from a model P, an inference network Q (both holding R runs
of one architecture, models/layers.py) and one options dataclass per run. It owns whatever
auxiliary state it needs (baseline networks, running statistics) as parameters or buffers whose
first dimension is the run, so that a run's checkpoint is the slice [r] of every tensor in the
estimator's state_dict. It is written once, over tensors with leading run (and sample) dimensions;
a lone run is R = 1.

    parameter_groups() -> {group: [parameters]}         e.g. "model", "inference", "baseline"
                                                        (default: "model" and "inference")
    learning_rate_scales(options) -> {group: float}     one run's rate of each group relative to
                                                        its base rate (a group left out: rate 0;
                                                        default: 1, the inference network at
                                                        options.inference_lr_scale)
    noise(x) -> {name: [Noise]}                         the random numbers one update needs
    step(x, noise) -> StepResult                        one update of every run
    posterior_noise(x), posterior_latents(x, noise)     latents inferred for x (default: Q's
                                                        sample), for reconstructions

Shapes: x is (R, B, D), one minibatch per run; `noise` is the request of `noise(x)` filled by the
harness from each run's own generator (models/noise.py), every tensor (R, *shape). The estimator
draws no random numbers itself, which is what lets a run batched with others follow the
trajectory it follows alone, and lets the bias check enumerate every sample.

`StepResult.losses[group]` is a surrogate loss, summed over runs and examples (Algorithm 1 sums
over the minibatch): its gradient with respect to run r's slice of the group's parameters is run
r's (negated) update direction, and it has NO gradient with respect to any other group's
parameters. The harness backpropagates the sum of the losses once and steps one optimizer per
group with per-run learning rates. `metrics` are detached per-run tensors (R,); "bound" (the
training bound per run, mean over the minibatch) is required: a run whose bound is not finite is
not updated, its estimator state (buffers) is restored, and it is recorded as diverged.

Options that differ between runs are per-run data: `option_column(name)` gives an (R, 1) tensor of
one option over the runs, so runs with different presets share one computation. Options that
change the shapes of the estimator's parameters are listed in `structural_options`; only runs
that agree on them can be stacked (None: every option must agree).

Cost: `evaluations_per_example(options)` is the number of model evaluations (log P(x, h) or an
ancestral pass through P) per example in one update; records carry it, and throughput is reported
per update and per model evaluation.

For the bias check (`python -m bench check`), an estimator says what its expected update is:

    exact_objectives(x) -> {group: (R,)}   computed by exact enumeration on a tiny model; the
        expected value of -grad(losses[group]) must equal grad(objective) w.r.t. that group,
    claimed_update(x) -> {group: [tensors]}   by default the gradients of exact_objectives; an
        estimator biased by design, or unbiased for another objective, overrides it,
    scaled_groups -> groups where a positive rescaling per parameter tensor is allowed
        (variance normalisation rescales the inference network's update),
    check_steps -> how many steps the Monte Carlo check averages by default,
    check_model -> the tiny model it uses by default (sbn:2-3),
    latent_kinds -> the kinds of latent units it handles (binary, gaussian; default both),
    validation_bound -> the bound runs are validated and tested with by default ("elbo"; "ais"
        for an estimator that trains no inference network).

The check computes the exact expected update by enumerating every value the Bernoulli noise of
one update can take (models/noise.py, `enumerating`), and for normal noise the nodes of a
Gauss-Hermite rule with their weights (models/quadrature.py), and compares.

For the harness, an estimator also declares its paper's learning rates by dataset
(`paper_learning_rates`, merged with the base's document-dataset rates). Names resolve to classes
in `algorithms/registry.py`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bench.errors import UserError, unknown_name
from models.noise import Noise


@dataclass
class StepResult:
    losses: dict[str, Tensor]
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Algorithm(nn.Module):
    name: ClassVar[str]
    Options: ClassVar[type]
    #: named option sets (paper ablations); the empty name is the default configuration
    presets: ClassVar[dict[str, dict[str, Any]]] = {"": {}}
    scaled_groups: ClassVar[frozenset[str]] = frozenset()
    #: options runs must share to be stacked (they shape parameters); None: all options
    structural_options: ClassVar[tuple[str, ...] | None] = None
    #: the paper's learning rate of the model parameters by dataset name, used when a spec sets
    #: none. Entries merge along the class hierarchy (`paper_learning_rate`), so an estimator
    #: declares only its own; the base holds the document datasets' rates, which §4.1 uses for
    #: every algorithm, and a dataset named nowhere gets `default_learning_rate`.
    paper_learning_rates: ClassVar[dict[str, float]] = {"20news": 3e-5, "rcv1": 1e-3}
    default_learning_rate: ClassVar[float] = 3e-4
    #: steps the bias check (`python -m bench check`) averages unless told otherwise
    check_steps: ClassVar[int] = 2000
    #: the tiny model the bias check uses unless told otherwise: an estimator drawing K samples
    #: per example may name a smaller one, so that one update's binary draws stay enumerable
    check_model: ClassVar[str] = "sbn:2-3"
    #: why the exact check cannot enumerate this estimator's noise (uniforms used continuously,
    #: as a relaxation does); empty: it can. Saves building thousands of copies to find out.
    not_enumerable: ClassVar[str] = ""
    #: the kinds of latent units the estimator handles ("binary": Bernoulli layers, "gaussian":
    #: models/gaussian.py); a model with any other kind is refused with a one-line error
    latent_kinds: ClassVar[frozenset[str]] = frozenset({"binary", "gaussian"})
    #: the bound the harness validates and tests with when a spec names none (bench/specs.py,
    #: `eval_bound`): "elbo" needs a trained inference network; an estimator that trains none
    #: says "ais" (annealed importance sampling, models/ais.py), which needs no Q
    validation_bound: ClassVar[str] = "elbo"

    def __init__(self, model: nn.Module, inference: nn.Module, options, generators=None):
        super().__init__()
        kinds = set(getattr(model, "latent_kinds", ())) | set(getattr(inference, "latent_kinds", ()))
        if not kinds <= self.latent_kinds:
            raise UserError(f"{self.name} handles {' and '.join(sorted(self.latent_kinds))} latent "
                            f"units, not {' and '.join(sorted(kinds - self.latent_kinds))}: choose "
                            f"a model of the right kind, or an estimator that `python -m bench "
                            f"list` shows for it")
        self.model = model
        self.inference = inference
        runs = model.num_runs
        if not isinstance(options, (list, tuple)):
            options = [options] * runs
        if len(options) != runs:
            raise ValueError(f"{len(options)} options for {runs} runs")
        keys = {self.batch_key(o) for o in options}
        if len(keys) > 1:
            raise ValueError(f"runs stacked in one {self.name} must agree on "
                             f"{self.structural_options or 'every option'}")
        self.options = tuple(options)
        self.generators = list(generators) if generators is not None else [None] * runs

    @property
    def num_runs(self) -> int:
        return len(self.options)

    @classmethod
    def batch_key(cls, options) -> tuple:
        """Runs whose options give equal keys can be stacked in one estimator."""
        names = (cls.structural_options if cls.structural_options is not None
                 else [f.name for f in dataclasses.fields(options)])
        # repr: an option may hold an unhashable value (a list of layer sizes, say)
        return tuple(repr(getattr(options, name)) for name in names)

    def option_column(self, name: str, dtype=None) -> Tensor:
        """One option of every run as an (R, 1) tensor on the model's device."""
        reference = next(iter(self.model.parameters()))
        return torch.tensor([float(getattr(o, name)) for o in self.options],
                            dtype=dtype or reference.dtype, device=reference.device).view(-1, 1)

    # -- the contract -------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """By default the model's and the inference network's parameters; an estimator with
        parameters of its own (baselines, control variates) adds its groups."""
        return {"model": list(self.model.parameters()),
                "inference": list(self.inference.parameters())}

    def learning_rate_scales(self, options) -> dict[str, float]:
        """By default the model at rate 1, the inference network at the options'
        `inference_lr_scale` (1 if they have none), any other group at 1."""
        scales = {group: 1.0 for group in self.parameter_groups()}
        scales["inference"] = float(getattr(options, "inference_lr_scale", 1.0))
        return scales

    def evaluations_per_example(self, options) -> float:
        return 1.0

    def noise(self, x: Tensor) -> dict[str, list[Noise]]:
        raise NotImplementedError

    def step(self, x: Tensor, noise: dict[str, list[Tensor]]) -> StepResult:
        raise NotImplementedError

    def posterior_noise(self, x: Tensor) -> dict[str, list[Noise]]:
        """The noise `posterior_latents` needs (default: one sample of Q per example)."""
        return {"q": self.inference.noise(x.shape[-2])}

    def posterior_latents(self, x: Tensor, noise) -> list[Tensor]:
        """Latents inferred for x (R, B, D), h[j] (R, B, H_j), from the noise of
        `posterior_noise`: what reconstructions are made from (bench/reconstruction.py). By
        default a sample of Q; an estimator that infers otherwise (MCMC) says how."""
        return self.inference.sample(x, noise["q"])[0]

    def exact_objectives(self, x: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError(f"{self.name} does not declare exact objectives for the bias check")

    def claimed_update(self, x: Tensor) -> dict[str, list[Tensor]]:
        """The exact expected value of -grad(losses[group]) for every run, per parameter tensor
        of each checked group: by default the gradients of `exact_objectives`."""
        return self.group_gradients(self.exact_objectives(x))

    def group_gradients(self, objectives: dict[str, Tensor]) -> dict[str, list[Tensor]]:
        """{group: the gradient of objectives[group] (summed over runs) with respect to each of
        that group's parameters}, zeros where a parameter does not enter: the form of every
        claim, whether of exact objectives or of surrogates with constants held fixed."""
        groups = self.parameter_groups()
        return {g: [torch.zeros_like(p) if grad is None else grad for p, grad in zip(
                    groups[g], torch.autograd.grad(objectives[g].sum(), groups[g],
                                                   retain_graph=True, allow_unused=True),
                    strict=True)]
                for g in objectives}

    @classmethod
    def paper_learning_rate(cls, dataset: str) -> float:
        rates: dict[str, float] = {}
        for klass in reversed(cls.__mro__):
            rates.update(vars(klass).get("paper_learning_rates", {}))
        return rates.get(dataset, cls.default_learning_rate)

    # -- options ------------------------------------------------------------------------------
    @classmethod
    def resolve_options(cls, preset: str = "", overrides: dict[str, Any] | None = None):
        """The options of a preset with overrides applied; unknown names raise a `UserError`."""
        if preset not in cls.presets:
            raise unknown_name("preset", preset, [name for name in cls.presets if name],
                               f"presets of {cls.name}")
        values = dict(cls.presets[preset])
        values.update(overrides or {})
        valid = {f.name: f for f in dataclasses.fields(cls.Options)}
        for key in values:
            if key not in valid:
                raise unknown_name("option", key, valid, f"options of {cls.name}")
        try:
            return cls.Options(**{key: coerce(value, valid[key].type, key)
                                  for key, value in values.items()})
        except (TypeError, ValueError) as error:
            raise UserError(f"bad options for {cls.name}: {error}") from None


def coerce(value: Any, annotation, key: str) -> Any:
    """Turn a `--set key=value` string into the option's declared type (bool, int, float, str)."""
    if not isinstance(value, str):
        return value
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    try:
        if kind == "bool":
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        raise UserError(f"option {key}={value!r} is not a valid {kind}") from None
    return value


def options_dict(options) -> dict[str, Any]:
    return dataclasses.asdict(options)


def log_sum_exp_of_others(log_weight: Tensor) -> Tensor:
    """log sum_{j≠k} w_j for every sample k, (R, K, B), from log w (R, K, B): the leave-one-out
    sums of multi-sample estimators. A logsumexp over the K - 1 others (a (K, K) mask per
    example), not log(sum_j w_j - w_k), which loses every digit when w_k dominates; -inf for K = 1
    (no other sample)."""
    runs, K, batch = log_weight.shape
    left_out = torch.eye(K, dtype=torch.bool, device=log_weight.device).view(1, K, K, 1)
    others = log_weight.unsqueeze(1).expand(runs, K, K, batch).masked_fill(left_out, -math.inf)
    return torch.logsumexp(others, 2)


class SamplesFromQ:
    """For estimators that draw K = `options.num_samples` samples from Q per example (listed
    before `Algorithm` in the bases; `num_samples` structural): `self.num_samples`, the noise
    "q" (one uniform per latent unit of each sample, (R, K, B, H_j)), K model evaluations per
    example, and `sample_from_q`, the start of such a step. Binary latents only: their claims (the
    K-sample bound and its relatives, models/exact.py) enumerate binary samples."""

    latent_kinds = frozenset({"binary"})

    def __init__(self, model, inference, options, generators=None):
        super().__init__(model, inference, options, generators)
        self.num_samples = self.options[0].num_samples

    def evaluations_per_example(self, options) -> float:
        return float(options.num_samples)

    def noise(self, x):
        return {"q": self.inference.noise(self.num_samples, x.shape[-2])}

    def sample_from_q(self, x: Tensor, noise) -> tuple[list[Tensor], Tensor, Tensor]:
        """h ~ Q(h | x) from the noise, h[j] (R, K, B, H_j), with log Q(h | x) and log P(x, h),
        both (R, K, B) and differentiable (to φ and θ)."""
        h, log_q = self.inference.sample(x, noise["q"])
        return h, sum(log_q), self.model.log_joint(x, h)
