"""The training loop shared by every algorithm.

One update: a minibatch (a shuffled pass over the training set, `batch_size` rows at a time), the
algorithm's `step`, one backward pass through the sum of its per-group surrogate losses, and one
optimizer step per parameter group at that group's learning rate. Every `eval_interval` updates the
validation bound is measured with its own seeded stream; the best parameters so far are kept
(early stopping, §4.1) and a checkpoint is written atomically. Run again with the same spec and
output directory, the loop resumes from the checkpoint and ends with the same record as an
uninterrupted run: the training stream, data order, optimizer state and the algorithm's running
statistics are all part of the checkpoint.

A non-finite loss or validation bound stops the run with status "diverged".

Two engines compute an update, chosen by the spec's `engine` ("auto" by default):
    autograd  the algorithm module's `step`, one backward pass and the optimizers: any algorithm,
              model and optimizer; the readable reference.
    fused     algorithms/fused.py: closed-form gradients with SGD fused into the matrix products,
              for NVIL and wake-sleep on SBNs with factorial inference networks. Same random
              numbers, same trajectory up to rounding; several times faster at minibatch 20.
"auto" takes the fused engine where it applies and autograd elsewhere. Many runs can also share
one fused engine (bench/batched.py): `Trainer` then leaves the update to it and keeps the rest of
its run's bookkeeping (data order, evaluation, early stopping, checkpoints) as for a lone run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import algorithms
import datasets
from algorithms.fused import FusedSGD, unsupported_reason
from bench.errors import UserError
from bench.evaluation import Evaluation, evaluate, rows_as_tensor
from bench.io import atomic_torch_save, atomic_write_text
from bench.layout import BEST, CHECKPOINT, CURVE  # the run directory's file names (re-exported)
from bench.specs import RunSpec
from models import ModelSpec


@dataclass
class Built:
    """Everything a spec builds: data, model spec, and the algorithm holding model and inference."""

    spec: RunSpec
    data: datasets.Data
    model_spec: ModelSpec
    algorithm: algorithms.Algorithm
    device: torch.device


def build(spec: RunSpec, data: datasets.Data | None = None, data_dir=None) -> Built:
    """Data, model, inference network and algorithm for a spec; parameters initialised from the seed."""
    model_spec = ModelSpec.parse(spec.model, inference=spec.inference, init_scale=spec.init_scale)
    algorithms.parse_name(spec.algorithm)  # unknown names fail before any data is loaded
    if data is None:
        data = datasets.load(spec.dataset, spec.split, data_dir=data_dir)
    if model_spec.data_kind != data.kind:
        suggestion = "doc-sbn or doc-fdarn" if data.kind == "counts" else "sbn or fdarn"
        raise UserError(f"model {spec.model} models {model_spec.data_kind} data but dataset "
                        f"{spec.dataset} is {data.kind}: use {suggestion}")
    device = torch.device(spec.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    torch.manual_seed(spec.seed)
    model, inference = model_spec.build(data.num_features, data.train_mean)
    algorithm = algorithms.build(spec.algorithm, model, inference, spec.options)
    return Built(spec, data, model_spec, algorithm.to(device), device)


@dataclass
class TrainState:
    update: int = 0
    epoch: int = 0
    position: int = 0                 # rows of the current epoch's order already used
    train_seconds: float = 0.0        # time in training steps only (throughput)
    eval_seconds: float = 0.0
    best_bound: float = -math.inf
    best_update: int = 0
    status: str = "running"
    curve: list[dict] = field(default_factory=list)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A compact copy of a module's state: with the fused engine parameters are views into stacks
    shared by several runs, and deepcopy or torch.save of a view would copy the whole stack."""
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def choose_engine(spec: RunSpec, algorithm) -> str:
    reason = unsupported_reason(algorithm, spec.optimizer)
    if spec.engine == "fused" and reason is not None:
        raise UserError(f"engine=fused cannot train this run: {reason}; use engine=auto or autograd")
    return "fused" if spec.engine != "autograd" and reason is None else "autograd"


class Trainer:
    def __init__(self, built: Built, out_dir: Path, progress: bool = True,
                 own_engine: bool = True):
        self.built = built
        self.spec = built.spec
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.algorithm = built.algorithm
        groups = self.algorithm.parameter_groups()
        scales = self.algorithm.learning_rate_scales()
        base_rate = self.spec.resolved_learning_rate
        self.learning_rates = {g: base_rate * scales[g] for g in groups}
        self.optimizers = {g: make_optimizer(self.spec.optimizer, params, self.learning_rates[g])
                           for g, params in groups.items()}
        self.generator = torch.Generator(device=built.device).manual_seed(self.spec.seed)
        self.state = TrainState()
        self.train_rows = self._training_rows()
        self.order = self._epoch_order(0)
        self.parameters = [p for group in self.algorithm.parameter_groups().values() for p in group]
        self.engine = choose_engine(self.spec, self.algorithm)
        self.runs_in_batch = 1
        # With own_engine=False a shared engine (bench/batched.py) stacks this run's parameters.
        self.fused = (FusedSGD([self.algorithm], [self.learning_rates])
                      if self.engine == "fused" and own_engine else None)
        self.best_parameters = snapshot(self.algorithm)

    def _training_rows(self):
        rows = self.built.data.train
        if hasattr(rows, "toarray"):
            return rows.tocsr()  # documents stay sparse; minibatches are made dense
        return rows_as_tensor(rows, torch.float32, self.built.device)

    # -- data order ----------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> np.ndarray:
        # A function of (seed, epoch) alone, so a resumed run sees the same minibatches.
        return np.random.default_rng([self.spec.seed, epoch]).permutation(self.train_rows.shape[0])

    def _next_batch(self) -> torch.Tensor:
        state, size = self.state, self.spec.batch_size
        if state.position + size > self.order.shape[0]:
            state.epoch += 1
            state.position = 0
            self.order = self._epoch_order(state.epoch)
        index = self.order[state.position:state.position + size]
        state.position += size
        if isinstance(self.train_rows, torch.Tensor):
            # index_select: about 30% faster than advanced indexing for 20 rows of MNIST
            return self.train_rows.index_select(0, torch.from_numpy(index).to(self.train_rows.device))
        return rows_as_tensor(self.train_rows[index], torch.float32, self.built.device)

    def update(self) -> bool:
        """One update: the next minibatch, the algorithm's step, one backward pass through the sum
        of its per-group losses, one optimizer step per group (or the same by the fused engine).
        Returns False, changing nothing, when the loss or the training bound is not finite (the
        run has diverged)."""
        if self.fused is not None:
            bound = self.fused.step(self._next_batch().unsqueeze(0), [self.generator])
            if not math.isfinite(bound.item()):
                return False
            self.state.update += 1
            return True
        result = self.algorithm.step(self._next_batch(), self.generator)
        loss = sum(result.losses.values())
        if not torch.isfinite(loss) or not math.isfinite(result.metrics.get("bound", 0.0)):
            return False
        for parameter in self.parameters:
            parameter.grad = None
        loss.backward()
        for optimizer in self.optimizers.values():
            optimizer.step()
        self.state.update += 1
        return True

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    def save_checkpoint(self) -> None:
        atomic_torch_save({
            "identity": self.spec.identity(),
            "algorithm": snapshot(self.algorithm),
            "optimizers": {g: opt.state_dict() for g, opt in self.optimizers.items()},
            "generator": self.generator.get_state(),
            "state": self.state.__dict__,
            "best_parameters": self.best_parameters,
        }, self.checkpoint_path())

    def try_resume(self) -> bool:
        path = self.checkpoint_path()
        if not path.exists():
            return False
        try:
            checkpoint = torch.load(path, map_location=self.built.device, weights_only=False)
        except Exception as error:  # a checkpoint we cannot read is reported, never overwritten
            raise UserError(f"cannot read checkpoint {path} ({error}); move it away or delete it "
                            f"to start this run again") from None
        if checkpoint["identity"] != self.spec.identity():
            raise UserError(f"{self.out_dir} holds a run with a different configuration; use another "
                            f"--out directory, or delete {path} to start again")
        self.algorithm.load_state_dict(checkpoint["algorithm"])
        for group, optimizer in self.optimizers.items():
            optimizer.load_state_dict(checkpoint["optimizers"][group])
        self.generator.set_state(checkpoint["generator"].cpu() if self.built.device.type == "cpu"
                                 else checkpoint["generator"])
        self.state = TrainState(**checkpoint["state"])
        self.best_parameters = checkpoint["best_parameters"]
        self.order = self._epoch_order(self.state.epoch)
        return True

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate_split(self, split: str, bound: str = "elbo", num_samples: int | None = None,
                       seed_offset: int = 0, limit: int | None = None) -> Evaluation:
        data = self.built.data
        rows = getattr(data, split)
        if limit is not None:
            rows = rows[:limit]
        model, inference = self.algorithm.model, self.algorithm.inference
        return evaluate(model, inference, rows, bound, num_samples or self.spec.eval_samples,
                        seed=self.spec.seed * 1_000_003 + seed_offset, device=self.built.device,
                        counts=data.kind == "counts")

    def _validate(self) -> float:
        started = time.perf_counter()
        evaluation = self.evaluate_split("valid", seed_offset=self.state.update,
                                         limit=self.spec.eval_examples)
        self.state.eval_seconds += time.perf_counter() - started
        bound = evaluation.mean
        point = {"update": self.state.update, "epoch": self.state.epoch, "valid_bound": bound}
        if evaluation.perplexity is not None:
            point["valid_perplexity"] = evaluation.perplexity
        self.state.curve.append(point)
        if not math.isfinite(bound):
            self.state.status = "diverged"
        elif bound > self.state.best_bound:
            self.state.best_bound = bound
            self.state.best_update = self.state.update
            self.best_parameters = snapshot(self.algorithm)
        return bound

    # -- the loop ------------------------------------------------------------------------------
    def train(self) -> TrainState:
        """Run until `spec.updates` updates (or divergence); resumes from a checkpoint if present."""
        self.begin()
        bar = make_progress(self.spec.updates, self.state.update, self.progress, self.spec.run_name())
        try:
            while self.wants_update():
                started = time.perf_counter()
                if not self.update():
                    self.state.status = "diverged"
                    break
                self.state.train_seconds += time.perf_counter() - started
                self.after_update(bar)
        finally:
            if bar is not None:
                bar.close()
        return self.end()

    def begin(self) -> None:
        """Resume from the checkpoint, or measure the curve's starting point."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.try_resume()
        if self.state.status == "complete" and self.state.update < self.spec.updates:
            self.state.status = "running"  # a larger budget extends a finished run
        if not resumed:
            self._validate()

    def wants_update(self) -> bool:
        return self.state.update < self.spec.updates and self.state.status == "running"

    def after_update(self, bar=None) -> None:
        """Progress, and at every eval interval the validation bound, early stopping and a
        checkpoint."""
        state, spec = self.state, self.spec
        if bar is not None:
            bar.update(1)
        if state.update % spec.eval_interval == 0 or state.update == spec.updates:
            bound = self._validate()
            if bar is not None:
                bar.set_postfix(valid=f"{bound:.2f}", best=f"{state.best_bound:.2f}", refresh=False)
            self.save_checkpoint()

    def end(self) -> TrainState:
        if self.state.status == "running":
            self.state.status = "complete"
        self.save_checkpoint()
        self.write_curve()
        return self.state

    def restore_best(self) -> None:
        self.algorithm.load_state_dict(self.best_parameters)

    def write_curve(self) -> None:
        keys = ["update", "epoch", "valid_bound"]
        if any("valid_perplexity" in point for point in self.state.curve):
            keys.append("valid_perplexity")
        lines = [",".join(keys)]
        lines += [",".join(repr(point.get(key, "")) for key in keys) for point in self.state.curve]
        atomic_write_text(self.out_dir / CURVE, "\n".join(lines) + "\n")

    def save_best(self) -> None:
        atomic_torch_save({"spec": self.spec.to_dict(), "algorithm": self.best_parameters},
                          self.out_dir / BEST)


def make_optimizer(name: str, params, learning_rate: float) -> torch.optim.Optimizer:
    # Gradient ascent on the bound = descent on the surrogate losses.
    # foreach: one call per group instead of one per tensor (the step is overhead-bound at batch 20).
    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate, foreach=True)
    return torch.optim.SGD(params, lr=learning_rate, foreach=True)


def make_progress(total: int, initial: int, enabled: bool, description: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit="upd", dynamic_ncols=True,
                mininterval=0.5, leave=False)
