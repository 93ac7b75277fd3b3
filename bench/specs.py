"""Run specs: one frozen dataclass whose defaults are the paper's protocol (§4.1).

    minibatches of 20, one sample from the inference network per example, fixed learning rates
    (3e-4 for NVIL on MNIST, 1e-4 for wake-sleep, 3e-5 on 20 Newsgroups and 1e-3 on RCV1 for the
    document models), the inference network at one fifth of the model's rate (set by the
    algorithm), the validation bound (10-sample ELBO) evaluated at a fixed interval and the best
    parameters kept (early stopping).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from bench.errors import UserError, unknown_name

OPTIMIZERS = ("adam", "sgd")
#: validation and test bounds a spec may name ("": the estimator's `validation_bound`)
EVAL_BOUNDS = ("", "elbo", "iw", "ais")
DEVICES = ("cpu", "cuda")
SELECTIONS = ("bound", "perplexity")  # what picks the kept parameters (RunSpec.selection)

def paper_learning_rate(dataset: str, algorithm: str) -> float:
    """The paper's rate of the model parameters: what the estimator declares for the dataset
    (`Algorithm.paper_learning_rates`)."""
    import algorithms  # here, not above: building the CLI parser must not import torch

    cls, _ = algorithms.parse_name(algorithm)
    return cls.paper_learning_rate(dataset)


@dataclass(frozen=True)
class RunSpec:
    algorithm: str = "nvil"
    model: str = "sbn:200"
    dataset: str = "mnist"
    split: str | None = None            # the dataset's default split ('paper' for MNIST)
    inference: str = "factorial"        # or 'autoregressive' (Table 2)
    # Std of the initial weights. The paper does not give its initialisation; 0.1 learns several
    # times faster early on than 0.01 on MNIST (README, "Choices the paper leaves open").
    init_scale: float = 0.1
    updates: int = 100_000             # the cap: at most this many updates
    # Early stopping (§4.1 keeps the best validation parameters): also stop once the validation
    # bound has not improved for this many updates (None: train for all `updates`).
    patience: int | None = None
    seed: int = 0
    batch_size: int = 20
    learning_rate: float | None = None  # None: the paper's rate the algorithm declares for the dataset
    # Plain SGD on the summed minibatch gradient (Algorithm 1 sums over the minibatch) at the
    # paper's rates: in 20,000-update runs it matched or beat Adam at the same rates (README).
    optimizer: str = "sgd"
    eval_interval: int = 5_000
    eval_samples: int = 10              # K of the validation/test ELBO, §4.1
    eval_examples: int | None = None    # evaluate on the first N validation rows (None: all)
    test_examples: int | None = None    # report the test bound on the first N test rows (smoke runs)
    test_iw_samples: int = 0            # also report the iw bound with this K at the end (0: no)
    # Also report each of `test_sweep_bounds` at each K of `test_sweep` at the end, on the first
    # `test_sweep_examples` test rows (None: those of the test bound): estimates against K.
    test_sweep: tuple[int, ...] = ()
    test_sweep_bounds: tuple[str, ...] = ("iw",)
    test_sweep_examples: int | None = None
    # The bound of validation (early stopping) and of the test metric: "elbo" (K = eval_samples,
    # the paper's), "iw", or "ais" (eval_samples chains of ais_steps distributions, needing no
    # inference network); "" is the estimator's own choice (`Algorithm.validation_bound`: the
    # ELBO, or AIS for an estimator that trains no inference network).
    eval_bound: str = ""
    # Which validation score picks the parameters kept (and the patience counts from): "bound"
    # (the summed validation bound, §4.1) or "perplexity" (document models: the per-document
    # perplexity a table reports, which weights short documents as the bound does not).
    selection: str = "bound"
    ais_steps: int = 100                # AIS steps T (beta increments, T - 1 transitions) of the run
    test_ais_chains: int = 0            # also report the AIS bound with this many chains (0: no)
    test_ais_examples: int | None = None  # ... on the first N test rows (None: test_examples')
    test_reconstruction: bool = False   # also report the reconstruction error of the test rows
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)  # algorithm options (--set)

    def __post_init__(self):
        # Lists (from TOML, JSON records, --set) and tuples are the same sweep.
        object.__setattr__(self, "test_sweep", tuple(int(k) for k in self.test_sweep))
        object.__setattr__(self, "test_sweep_bounds", tuple(self.test_sweep_bounds))
        if any(k < 1 for k in self.test_sweep):
            raise UserError(f"test_sweep holds numbers of samples K >= 1, got {list(self.test_sweep)}")
        unknown = []
        if self.test_sweep:  # evaluation imports torch: only then (not at CLI parse time)
            from bench.evaluation import BOUNDS
            unknown = [b for b in self.test_sweep_bounds if b not in BOUNDS or b.endswith("exact")]
        if unknown:
            raise UserError(f"test_sweep_bounds: unknown or unsampled bound(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(b for b in BOUNDS if not b.endswith('exact'))}")
        if self.optimizer not in OPTIMIZERS:
            raise unknown_name("optimizer", self.optimizer, OPTIMIZERS)
        if self.device.split(":")[0] not in DEVICES:
            raise unknown_name("device", self.device, DEVICES)
        if self.eval_bound not in EVAL_BOUNDS:
            raise unknown_name("eval_bound", self.eval_bound, [b for b in EVAL_BOUNDS if b],
                               "validation bounds (empty: the estimator's)")
        if self.selection not in SELECTIONS:
            raise unknown_name("selection", self.selection, SELECTIONS)
        if self.test_ais_chains < 0:
            raise UserError(f"test_ais_chains must be 0 (none) or more, got {self.test_ais_chains}")
        for name in ("updates", "batch_size", "eval_interval", "eval_samples", "ais_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.patience is not None and self.patience < self.eval_interval:
            raise UserError(f"patience ({self.patience} updates) must be at least eval_interval "
                            f"({self.eval_interval}): the bound is only measured that often")
        # The optimizers apply the rate in float32: a larger one cannot even be represented.
        if self.learning_rate is not None and not 0 < self.learning_rate < 3.4e38:
            raise UserError(f"learning_rate must be a positive float32 number, got "
                            f"{self.learning_rate}")

    @property
    def resolved_eval_bound(self) -> str:
        """The validation and test bound: `eval_bound`, or the estimator's own choice."""
        if self.eval_bound:
            return self.eval_bound
        import algorithms

        return algorithms.parse_name(self.algorithm)[0].validation_bound

    @property
    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return paper_learning_rate(self.dataset, self.algorithm)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed by this spec (not the budget: the cap
        on updates and the patience may change, and the run goes on or stops by the new ones)."""
        identity = self.to_dict()
        identity.pop("updates")
        identity.pop("patience")
        if identity["selection"] == "bound":  # as before the field existed: old checkpoints resume
            identity.pop("selection")
        return identity

    def run_name(self) -> str:
        parts = [self.dataset, self.model, self.algorithm]
        if self.inference != "factorial":
            parts.append(self.inference)
        parts.append(f"s{self.seed}")
        return re.sub(r"[^A-Za-z0-9.+-]+", "_", "-".join(parts))


SPEC_FIELDS = {f.name: f for f in dataclasses.fields(RunSpec)}


def spec_from_assignments(base: RunSpec, assignments: dict[str, str]) -> RunSpec:
    """Apply `--set key=value`: RunSpec fields by name, anything else is an algorithm option
    (validated by the algorithm, which lists its valid options)."""
    changes: dict[str, Any] = {}
    options = dict(base.options)
    for key, value in assignments.items():
        if key in SPEC_FIELDS and key != "options":
            changes[key] = _coerce_field(key, value)
        else:
            options[key] = value
    return dataclasses.replace(base, options=options, **changes)


def _coerce_field(key: str, value: str):
    annotation = str(SPEC_FIELDS[key].type)
    if value.lower() in ("none", "null") and "None" in annotation:
        return None
    try:
        if annotation.startswith("int"):
            return int(value)
        if annotation.startswith("float"):
            return float(value)
    except ValueError:
        raise UserError(f"--set {key}={value!r}: expected {annotation}") from None
    return value
