"""The one training loop, for 1..R runs of one estimator on one model.

The runs of a `RunGroup` are one computation: their parameters are stacked in the model, the
inference network and the estimator (models/layers.py, algorithms/base.py), and one update is the
estimator's `step` over all of them, one backward pass through the sum of its per-group losses,
and one optimizer step over the stacks with per-run learning rates (bench/optim.py). Everything a
run owns stays its own:

    data order   a shuffled pass over the training set per epoch, a function of (seed, epoch)
    noise        drawn from the run's own generator (models/noise.py), in the request's order
    evaluation   the validation bound every `eval_interval` updates with its own seeded stream;
                 the best parameters so far are kept (early stopping, §4.1)
    checkpoint   the run's slice of every stacked tensor, its optimizer state, generator and
                 progress, written atomically at every evaluation
    status       a run whose training bound is not finite is frozen (its parameters, optimizer and
                 estimator state are left as they were) and recorded as "diverged"; the others go on

So a run follows, up to rounding, the trajectory it follows alone (tests/test_engine.py checks it
in float64 for every estimator and model family), and run again with the same specs and output
directories, the loop resumes every run from its checkpoint and ends with the same records as an
uninterrupted run. A lone run is a group of one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import algorithms
import datasets
from bench.errors import UserError
from bench.evaluation import Evaluation, evaluate_runs, rows_as_tensor, z2_seed
from bench.io import atomic_torch_save, atomic_write_text
from bench.layout import BEST, CHECKPOINT, CURVE  # the run directory's file names (re-exported)
from bench.optim import RunOptimizer
from bench.specs import RunSpec
from models import ModelSpec
from models.noise import draw as draw_noise


def estimator_options(spec: RunSpec):
    cls, preset = algorithms.parse_name(spec.algorithm)
    return cls, cls.resolve_options(preset, spec.options)


def stacking_key(spec: RunSpec) -> tuple:
    """Specs with equal keys can be stacked in one RunGroup: the same data, architecture,
    minibatch, device, optimizer, evaluation schedule, estimator class and structural options
    of that estimator; seed, budget, learning rate and the other options may differ."""
    cls, options = estimator_options(spec)
    ignored = {"seed", "updates", "learning_rate", "options", "algorithm"}
    fields = tuple((f.name, getattr(spec, f.name)) for f in dataclasses.fields(spec)
                   if f.name not in ignored)
    return fields + (("estimator", cls), ("structure", cls.batch_key(options)))


@dataclass
class Built:
    """Everything a list of stackable specs builds: data, model spec, and the estimator holding the
    stacked model and inference network of every run."""

    specs: list[RunSpec]
    data: datasets.Data
    model_spec: ModelSpec
    algorithm: algorithms.Algorithm
    device: torch.device

    @property
    def spec(self) -> RunSpec:  # the first run's (all share everything but seed, budget, options)
        return self.specs[0]


def build(specs: RunSpec | list[RunSpec], data: datasets.Data | None = None, data_dir=None,
          dtype=torch.float32) -> Built:
    """Data, stacked model, inference network and estimator for stackable specs; each run's
    parameters initialised from a generator seeded with its seed."""
    specs = [specs] if isinstance(specs, RunSpec) else list(specs)
    first = specs[0]
    model_spec = ModelSpec.parse(first.model, inference=first.inference, init_scale=first.init_scale)
    classes = [estimator_options(spec) for spec in specs]  # unknown names fail before any data
    if len(specs) > 1 and len({stacking_key(spec) for spec in specs}) > 1:
        raise ValueError("runs built together must share everything but seed, budget, learning "
                         "rate and per-run options")
    if data is None:
        data = datasets.load(first.dataset, first.split, data_dir=data_dir)
    if model_spec.data_kind != data.kind:
        suggestion = "doc-sbn or doc-fdarn" if data.kind == "counts" else "sbn, fdarn or nsbn"
        raise UserError(f"model {first.model} models {model_spec.data_kind} data but dataset "
                        f"{first.dataset} is {data.kind}: use {suggestion}")
    device = torch.device(first.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    generators = [torch.Generator().manual_seed(spec.seed) for spec in specs]
    model, inference = model_spec.build(data.num_features, data.train_mean, generators, dtype)
    cls = classes[0][0]
    algorithm = cls(model, inference, [options for _, options in classes], generators)
    return Built(specs, data, model_spec, algorithm.to(device), device)


# -- one run's slice of the stacked state ------------------------------------------------------

def run_state(module: torch.nn.Module, r: int) -> dict[str, torch.Tensor]:
    """Run r's slice of every tensor in the module's state_dict (a compact copy)."""
    return {name: value[r].detach().clone() for name, value in module.state_dict().items()}


@torch.no_grad()
def load_run_state(module: torch.nn.Module, r: int, state: dict[str, torch.Tensor]) -> None:
    own = module.state_dict()
    if set(own) != set(state):
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        raise UserError(f"saved parameters do not fit this run (missing {missing[:3]}, "
                        f"unexpected {extra[:3]}): they were written by another version")
    for name, value in state.items():
        own[name][r].copy_(value)


def load_best(built: Built, path: Path, r: int = 0) -> dict:
    """Load a run's best parameters (best.pt) into slice r of a built estimator."""
    try:
        saved = torch.load(path, map_location=built.device, weights_only=False)
    except Exception as error:
        raise UserError(f"cannot read {path} ({error}); train the run again") from None
    load_run_state(built.algorithm, r, saved["algorithm"])
    return saved


@dataclass
class TrainState:
    update: int = 0
    epoch: int = 0
    position: int = 0                 # rows of the current epoch's order already used
    train_seconds: float = 0.0        # time in training steps only (throughput)
    eval_seconds: float = 0.0
    # Wall-clock seconds of every process that trained this run, up to its last checkpoint (a
    # resumed run's record adds the time of the processes before).
    wall_seconds: float = 0.0
    best_bound: float = -math.inf
    best_perplexity: float = math.inf  # with selection "perplexity": the best so far
    best_update: int = 0
    status: str = "running"
    # Why training stopped: "budget" (the cap on updates), "patience" (no better validation bound
    # for `patience` updates), "diverged"; "" while it goes on.
    stop_reason: str = ""
    curve: list[dict] = field(default_factory=list)


class Run:
    """One run's own bookkeeping within a group: its spec, directory, data order, noise stream,
    learning rates, progress and best parameters."""

    def __init__(self, spec: RunSpec, out_dir: Path, index: int, options, algorithm, device,
                 num_rows: int):
        self.spec = spec
        self.out_dir = Path(out_dir)
        self.index = index
        self.options = options
        base_rate = spec.resolved_learning_rate
        self.learning_rates = {g: base_rate * scale
                               for g, scale in algorithm.learning_rate_scales(options).items()}
        self.generator = torch.Generator(device=device).manual_seed(spec.seed)
        self.state = TrainState()
        self.num_rows = num_rows
        self.order = self.epoch_order(0)
        self.best_parameters: dict | None = None
        self.wall_base = 0.0  # wall seconds of the processes before this one (from the checkpoint)

    def wall_seconds(self, started: float) -> float:
        """This run's wall seconds so far: earlier processes' and this one's since `started`."""
        return self.wall_base + (time.perf_counter() - started)

    def epoch_order(self, epoch: int) -> np.ndarray:
        # A function of (seed, epoch) alone, so a resumed run sees the same minibatches.
        return np.random.default_rng([self.spec.seed, epoch]).permutation(self.num_rows)

    def next_rows(self) -> np.ndarray:
        state, size = self.state, self.spec.batch_size
        if state.position + size > self.order.shape[0]:
            state.epoch += 1
            state.position = 0
            self.order = self.epoch_order(state.epoch)
        index = self.order[state.position:state.position + size]
        state.position += size
        return index

    def wants_update(self) -> bool:
        return (self.state.update < self.spec.updates and self.state.status == "running"
                and not self.out_of_patience())

    def out_of_patience(self) -> bool:
        """Whether the validation bound has not improved for the spec's patience."""
        patience = self.spec.patience
        return patience is not None and self.state.update - self.state.best_update >= patience

    def due_for_evaluation(self) -> bool:
        update = self.state.update
        return update % self.spec.eval_interval == 0 or update == self.spec.updates

    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT


class RunGroup:
    """R runs trained as one computation; `train()` is the loop, `update()` one update of every
    run that still wants one."""

    def __init__(self, built: Built, out_dirs, progress: bool = True):
        self.built = built
        self.algorithm = built.algorithm
        self.progress = progress
        self.specs = built.specs
        if len(out_dirs) != len(self.specs):
            raise ValueError("one output directory per run")
        self.train_rows = self._training_rows()
        num_rows = self.train_rows.shape[0]
        self.runs = [Run(spec, out_dir, r, options, self.algorithm, built.device, num_rows)
                     for r, (spec, out_dir, options)
                     in enumerate(zip(self.specs, out_dirs, self.algorithm.options, strict=True))]
        groups = self.algorithm.parameter_groups()
        reference = self.algorithm.model.prior.bias
        rates = {g: torch.tensor([run.learning_rates.get(g, 0.0) for run in self.runs],
                                 dtype=reference.dtype, device=reference.device) for g in groups}
        self.optimizer = RunOptimizer(self.specs[0].optimizer, groups, rates)
        # The estimator's own state (running statistics): restored for runs that do not move.
        persistent = set(self.algorithm.state_dict())
        self.buffers = [b for name, b in self.algorithm.named_buffers()
                        if name in persistent and b.dim() and b.shape[0] == len(self.runs)]
        self.batch = torch.zeros(len(self.runs), self.specs[0].batch_size,
                                 built.data.num_features, device=built.device, dtype=reference.dtype)
        for run in self.runs:
            run.best_parameters = run_state(self.algorithm, run.index)
        # Each run's training metrics (StepResult.metrics) summed since its last evaluation,
        # where their means go into its curve as train_NAME: the training bound, and whatever
        # else the estimator reports. Zero at every checkpoint, so a resumed run's curve is the
        # uninterrupted one's.
        self.metric_names: list[str] = []
        self.metric_sums: torch.Tensor | None = None   # (metrics, R), float64
        self.metric_counts = torch.zeros(len(self.runs), dtype=torch.float64)
        self.started = time.perf_counter()

    @property
    def num_runs(self) -> int:
        return len(self.runs)

    def _training_rows(self):
        rows = self.built.data.train
        if hasattr(rows, "toarray"):
            return rows.tocsr()  # documents stay sparse; minibatches are made dense
        return rows_as_tensor(rows, torch.float32, self.built.device)

    def _rows(self, index: np.ndarray) -> torch.Tensor:
        if isinstance(self.train_rows, torch.Tensor):
            # index_select: about 30% faster than advanced indexing for 20 rows of MNIST
            return self.train_rows.index_select(0, torch.from_numpy(index).to(self.train_rows.device))
        return rows_as_tensor(self.train_rows[index], torch.float32, self.built.device)

    # -- one update ----------------------------------------------------------------------------
    def update(self) -> bool:
        """One update of every run that wants one; False when none does. A run whose training
        bound is not finite is left unchanged and marked diverged."""
        active = [run.wants_update() for run in self.runs]
        if not any(active):
            return False
        started = time.perf_counter()
        moving = [run for run, wanted in zip(self.runs, active, strict=True) if wanted]
        # One gather for every run's minibatch (each from its own data order).
        rows = self._rows(np.concatenate([run.next_rows() for run in moving]))
        rows = rows.view(len(moving), *self.batch.shape[1:])
        if len(moving) == self.num_runs:
            self.batch.copy_(rows)
        else:
            self.batch[[run.index for run in moving]] = rows.to(self.batch.dtype)
        x = self.batch
        request = self.algorithm.noise(x)
        generators = [run.generator if wanted else None for run, wanted in zip(self.runs, active,
                                                                                strict=True)]
        noise = draw_noise(request, generators, x.dtype, x.device, active=active)
        kept = [b.clone() for b in self.buffers]
        result = self.algorithm.step(x, noise)
        finite = torch.isfinite(result.metrics["bound"].detach())
        finite_list = finite.tolist()  # the update's one synchronisation
        ok = (None if all(active) and all(finite_list)
              else finite & torch.tensor(active, device=finite.device))
        self.optimizer.backward(sum(result.losses.values()), ok)
        self._accumulate(result.metrics, ok)
        if ok is not None:  # runs that did not move keep their estimator state too
            with torch.no_grad():
                for buffer, old in zip(self.buffers, kept, strict=True):
                    keep = (~ok).view(-1, *([1] * (buffer.dim() - 1)))
                    buffer.copy_(torch.where(keep, old, buffer))
        elapsed = time.perf_counter() - started
        for run, wanted, is_finite in zip(self.runs, active, finite_list, strict=True):
            if not wanted:
                continue
            if not is_finite:
                run.state.status = "diverged"
                continue
            run.state.update += 1
            run.state.train_seconds += elapsed
        due = [run for run, wanted, is_finite in zip(self.runs, active, finite_list, strict=True)
               if wanted and is_finite and run.due_for_evaluation()]
        if due:
            self.validate(due)
            for run in due:
                self.save_checkpoint(run)
        return True

    @torch.no_grad()
    def _accumulate(self, metrics: dict[str, torch.Tensor], ok: torch.Tensor | None) -> None:
        """Add this update's metrics, one (metrics, R) stack: two operations an update."""
        values = torch.stack([value.detach() for value in metrics.values()])
        if ok is not None:  # where(), not a product: a diverged run's metric may be NaN
            values = torch.where(ok, values, 0.0)
        if self.metric_sums is None:
            self.metric_names = list(metrics)
            self.metric_sums = torch.zeros(values.shape, dtype=torch.float64, device=values.device)
        self.metric_sums += values
        self.metric_counts += 1.0 if ok is None else ok.cpu().to(torch.float64)

    def _training_metrics(self, run: Run) -> dict[str, float]:
        """Run's mean training metrics since its last evaluation (then reset to none)."""
        count = float(self.metric_counts[run.index])
        if self.metric_sums is None or not count:
            return {}
        totals = self.metric_sums[:, run.index]
        means = {f"train_{name}": total / count
                 for name, total in zip(self.metric_names, totals.tolist(), strict=True)}
        totals.zero_()
        self.metric_counts[run.index] = 0.0
        return means

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, split: str, runs: list[Run], bound: str = "",
                 num_samples: int | None = None, seed_offsets: list[int] | None = None,
                 limit: int | None = None) -> dict[int, Evaluation]:
        """The bound of the current parameters on a split, for the given runs (every run of the
        group is scored in one computation; each given run with its own seeded stream); by
        default the spec's validation bound (`RunSpec.resolved_eval_bound`)."""
        data = self.built.data
        rows = getattr(data, split)
        if limit is not None:
            rows = rows[:limit]
        offsets = dict(zip([run.index for run in runs], seed_offsets or [0] * len(runs),
                           strict=True))
        seeds = [run.spec.seed * 1_000_003 + offsets.get(run.index, 0) for run in self.runs]
        model, inference = self.algorithm.model, self.algorithm.inference
        bound = bound or self.specs[0].resolved_eval_bound
        extra = {"steps": self.specs[0].ais_steps} if bound == "ais" else {}
        evaluations = evaluate_runs(model, inference, rows, bound,
                                    num_samples or self.specs[0].eval_samples, seeds=seeds,
                                    device=self.built.device, dtype=self.batch.dtype,
                                    counts=data.kind == "counts",
                                    z2_seeds=[z2_seed(run.spec.seed) for run in self.runs],
                                    **extra)
        return {run.index: evaluations[run.index] for run in runs}

    def reconstruction(self, split: str, limit: int | None = None) -> list[dict]:
        """Every run's reconstruction error of a split's rows (bench/reconstruction.py), each
        run with its own seeded stream."""
        from bench.reconstruction import reconstruction_errors

        rows = getattr(self.built.data, split)
        rows = rows[:limit] if limit is not None else rows
        seeds = [run.spec.seed * 1_000_003 - 60_000 for run in self.runs]
        return reconstruction_errors(self.algorithm, rows, seeds, self.built.device,
                                     self.batch.dtype)

    def validate(self, runs: list[Run]) -> None:
        started = time.perf_counter()
        evaluations = self.evaluate("valid", runs, seed_offsets=[run.state.update for run in runs],
                                    limit=self.specs[0].eval_examples)
        seconds = time.perf_counter() - started
        for run in runs:
            state, evaluation = run.state, evaluations[run.index]
            state.eval_seconds += seconds
            point = {"update": state.update, "epoch": state.epoch, "valid_bound": evaluation.mean}
            if evaluation.perplexity is not None:
                point["valid_perplexity"] = evaluation.perplexity
            point.update(self._training_metrics(run))
            state.curve.append(point)
            if not math.isfinite(evaluation.mean):
                state.status = "diverged"
                continue
            if run.spec.selection == "perplexity":
                if evaluation.perplexity is None:
                    raise UserError(f"selection = perplexity needs a document dataset; "
                                    f"{run.spec.dataset} has no perplexity (use selection = bound)")
                improved = evaluation.perplexity < state.best_perplexity
            else:
                improved = evaluation.mean > state.best_bound
            if improved:
                state.best_bound = evaluation.mean
                state.best_perplexity = evaluation.perplexity or math.inf
                state.best_update = state.update
                run.best_parameters = run_state(self.algorithm, run.index)

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint(self, run: Run) -> dict:
        """Everything run needs to resume: its slice of the state, optimizer, generator and
        progress (what checkpoint.pt holds)."""
        run.state.wall_seconds = run.wall_seconds(self.started)
        return {
            "identity": run.spec.identity(),
            "algorithm": run_state(self.algorithm, run.index),
            "optimizer": self.optimizer.run_state(run.index),
            "generator": run.generator.get_state(),
            "state": dict(run.state.__dict__),
            "best_parameters": run.best_parameters,
        }

    def save_checkpoint(self, run: Run) -> None:
        atomic_torch_save(self.checkpoint(run), run.checkpoint_path())

    def try_resume(self, run: Run) -> bool:
        path = run.checkpoint_path()
        if not path.exists():
            return False
        try:
            checkpoint = torch.load(path, map_location=self.built.device, weights_only=False)
        except Exception as error:  # a checkpoint we cannot read is reported, never overwritten
            raise UserError(f"cannot read checkpoint {path} ({error}); move it away or delete it "
                            f"to start this run again") from None
        if checkpoint.get("identity") != run.spec.identity() or "optimizer" not in checkpoint:
            raise UserError(f"{run.out_dir} holds a run with a different configuration or from "
                            f"another version; use another --out directory, or delete {path} to "
                            f"start again")
        self.load_checkpoint(run, checkpoint)
        return True

    def load_checkpoint(self, run: Run, checkpoint: dict) -> None:
        """Put run back where `checkpoint(run)` left it."""
        load_run_state(self.algorithm, run.index, checkpoint["algorithm"])
        self.optimizer.load_run_state(run.index, checkpoint["optimizer"])
        generator_state = checkpoint["generator"]
        run.generator.set_state(generator_state.cpu() if self.built.device.type == "cpu"
                                else generator_state)
        run.state = TrainState(**checkpoint["state"])
        run.wall_base = run.state.wall_seconds
        run.best_parameters = checkpoint["best_parameters"]
        run.order = run.epoch_order(run.state.epoch)

    # -- the loop ------------------------------------------------------------------------------
    def begin(self) -> None:
        """Resume every run from its checkpoint, or measure its curve's starting point."""
        fresh = []
        for run in self.runs:
            run.out_dir.mkdir(parents=True, exist_ok=True)
            resumed = self.try_resume(run)
            if (run.state.status == "complete" and run.state.update < run.spec.updates
                    and not run.out_of_patience()):
                run.state.status = "running"  # a larger budget extends a finished run
                run.state.stop_reason = ""
            if not resumed:
                fresh.append(run)
        if fresh:
            self.validate(fresh)

    def train(self, log=None) -> list[TrainState]:
        """Run every run to its budget (or divergence); resumes from checkpoints if present."""
        self.begin()
        remaining = max(run.spec.updates - run.state.update for run in self.runs)
        bar = make_progress(max(0, remaining), 0, self.progress, self.description())
        try:
            while self.update():
                if bar is not None:
                    bar.update(1)
                    if self.num_runs == 1 and self.runs[0].state.curve:
                        last = self.runs[0].state
                        bar.set_postfix(valid=f"{last.curve[-1]['valid_bound']:.2f}",
                                        best=f"{last.best_bound:.2f}", refresh=False)
        finally:
            if bar is not None:
                bar.close()
        return self.end()

    def description(self) -> str:
        if self.num_runs == 1:
            return self.runs[0].spec.run_name()
        return f"{self.num_runs} runs of {self.algorithm.name}"

    def end(self) -> list[TrainState]:
        for run in self.runs:
            if run.state.status == "running":
                run.state.status = "complete"
                run.state.stop_reason = ("patience" if run.out_of_patience()
                                         and run.state.update < run.spec.updates else "budget")
            elif run.state.status == "diverged":
                run.state.stop_reason = "diverged"
            self.save_checkpoint(run)
            write_curve(run)
        return [run.state for run in self.runs]

    def restore_best(self, runs: list[Run]) -> None:
        for run in runs:
            load_run_state(self.algorithm, run.index, run.best_parameters)

    def save_best(self, run: Run) -> None:
        atomic_torch_save({"spec": run.spec.to_dict(), "algorithm": run.best_parameters},
                          run.out_dir / BEST)


def write_curve(run: Run) -> None:
    """curve.csv: update, epoch, the validation bound (and perplexity), then the means of the
    training metrics over the updates since the previous row (train_bound, ...; empty in the
    first row, before any update)."""
    keys = list(dict.fromkeys(key for point in run.state.curve for key in point))
    lines = [",".join(keys)]
    lines += [",".join(repr(point[key]) if key in point else "" for key in keys)
              for point in run.state.curve]
    atomic_write_text(run.out_dir / CURVE, "\n".join(lines) + "\n")


def make_progress(total: int, initial: int, enabled: bool, description: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit="upd", dynamic_ncols=True,
                mininterval=0.5, leave=False)
