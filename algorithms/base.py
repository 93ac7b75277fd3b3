"""The contract every training algorithm fulfils, so that the harness never special-cases one.

An algorithm is an `nn.Module` built from a model P, an inference network Q and an options
dataclass. It owns whatever auxiliary state it needs (baseline networks, running statistics), as
parameters or buffers, so a checkpoint of the algorithm module holds everything.

    parameter_groups() -> {group: [parameters]}    e.g. "model", "inference", "baseline"
    learning_rate_scales() -> {group: float}       each group's rate relative to the base rate
    step(x, generator) -> StepResult               one minibatch

`StepResult.losses[group]` is the surrogate loss to minimise for that group: its gradient with
respect to the group's parameters is the algorithm's (negated) update direction, and it has NO
gradient with respect to any other group's parameters. The harness therefore backpropagates the sum
of the losses once and steps one optimizer per group; a test checks the no-cross-gradient rule for
every registered algorithm. Losses are sums over the minibatch, as Algorithm 1 accumulates them;
metrics are detached per-example means.

For the bias check (`python -m bench check`), an algorithm also says what it estimates:

    exact_objectives(x) -> {group: scalar}   computed by exact enumeration on a tiny model; the
        expected value of -grad(losses[group]) must equal grad(objective) w.r.t. that group,
    scaled_groups -> groups where a positive rescaling per parameter tensor is allowed
        (variance normalisation rescales the inference network's update),
    check_steps -> how many steps the check averages by default.

For the harness, an algorithm also declares its paper's learning rates by dataset
(`paper_learning_rates`, merged with the base's document-dataset rates). Names resolve to classes
in `algorithms/registry.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bench.errors import UserError, unknown_name


@dataclass
class StepResult:
    losses: dict[str, Tensor]
    metrics: dict[str, float] = field(default_factory=dict)


class Algorithm(nn.Module):
    name: ClassVar[str]
    Options: ClassVar[type]
    #: named option sets (paper ablations); the empty name is the default configuration
    presets: ClassVar[dict[str, dict[str, Any]]] = {"": {}}
    scaled_groups: ClassVar[frozenset[str]] = frozenset()
    #: the paper's learning rate of the model parameters by dataset name, used when a spec sets
    #: none. Entries merge along the class hierarchy (`paper_learning_rate`), so an estimator
    #: declares only its own; the base holds the document datasets' rates, which §4.1 uses for
    #: every algorithm, and a dataset named nowhere gets `default_learning_rate`.
    paper_learning_rates: ClassVar[dict[str, float]] = {"20news": 3e-5, "rcv1": 1e-3}
    default_learning_rate: ClassVar[float] = 3e-4
    #: steps the bias check (`python -m bench check`) averages unless told otherwise
    check_steps: ClassVar[int] = 2000

    def __init__(self, model: nn.Module, inference: nn.Module, options):
        super().__init__()
        self.model = model
        self.inference = inference
        self.options = options

    # -- the contract -------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        raise NotImplementedError

    def learning_rate_scales(self) -> dict[str, float]:
        return {group: 1.0 for group in self.parameter_groups()}

    def step(self, x: Tensor, generator: torch.Generator | None = None) -> StepResult:
        raise NotImplementedError

    def exact_objectives(self, x: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError(f"{self.name} does not declare exact objectives for the bias check")

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
