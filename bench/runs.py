"""Train one run end to end and write its record: the function behind `train` and `run`."""

from __future__ import annotations

import time
from pathlib import Path

from algorithms import options_dict, source_info
from algorithms.registry import split
from bench.records import (
    RECORD,
    SCHEMA_VERSION,
    code_version,
    environment,
    metric_entry,
    read_record,
    write_record,
)
from bench.specs import RunSpec
from bench.training import BEST, CURVE, Trainer, build


def record_is_complete(out_dir: Path) -> bool:
    path = Path(out_dir) / RECORD
    if not path.exists():
        return False
    try:
        return read_record(path).get("status") in ("complete", "diverged")
    except Exception:
        return False


def train_run(spec: RunSpec, out_dir: Path, data=None, data_dir=None, progress: bool = True,
              log=print) -> dict:
    """Train (or resume) the run, evaluate the best parameters on the test set, write the record."""
    started = time.perf_counter()
    code = code_version()  # the code that trains, even if the checkout changes meanwhile
    built = build(spec, data, data_dir)
    trainer = Trainer(built, out_dir, progress=progress)
    trainer.train()
    return finish_run(trainer, code, started)


def finish_run(trainer: Trainer, code: dict, started: float) -> dict:
    """Evaluate a trained run's best parameters on the test set and write its record."""
    built, spec, state, out_dir = trainer.built, trainer.spec, trainer.state, trainer.out_dir
    metrics = []
    if state.status == "complete":
        trainer.restore_best()
        trainer.save_best()
        best_valid = trainer.evaluate_split("valid", limit=spec.eval_examples,
                                            seed_offset=state.best_update)
        metrics.append(metric_entry("valid", best_valid, state.best_update))
        test = trainer.evaluate_split("test", seed_offset=-1, limit=spec.test_examples)
        metrics.append(metric_entry("test", test, state.best_update))
        if spec.test_iw_samples:
            test_iw = trainer.evaluate_split("test", "iw", spec.test_iw_samples, seed_offset=-2,
                                             limit=spec.test_examples)
            metrics.append(metric_entry("test", test_iw, state.best_update))
    record = {
        "schema_version": SCHEMA_VERSION,
        "status": state.status,
        "run_name": spec.run_name(),
        "config": {
            "spec": spec.to_dict(),
            # module, class, file and source_sha256: the estimator's own code, which the suite's
            # commit (`code`) does not pin for an estimator of another package.
            "algorithm": {"name": built.algorithm.name, "preset": split(spec.algorithm)[1],
                          "options": options_dict(built.algorithm.options),
                          **source_info(type(built.algorithm))},
            "model": {"spec": built.model_spec.name, "family": built.model_spec.family,
                      "layers": list(built.model_spec.layers), "inference": spec.inference},
            "dataset": {"name": built.data.name, "split": built.data.split, "kind": built.data.kind,
                        "sizes": {s: int(getattr(built.data, s).shape[0])
                                  for s in ("train", "valid", "test")},
                        "provenance": built.data.provenance},
            "optimizers": {g: {"name": spec.optimizer, "learning_rate": rate}
                           for g, rate in trainer.learning_rates.items()},
            "batch_size": spec.batch_size,
            # How updates were computed: "fused" or "autograd", and how many runs shared one
            # batched computation (their throughput figures are each run's own rate within it).
            "engine": {"name": trainer.engine, "runs_in_batch": trainer.runs_in_batch},
            "train_samples_per_example": 1,
        },
        "seed": spec.seed,
        "updates": state.update,
        "epochs": state.update * spec.batch_size / built.data.train.shape[0],
        "best_update": state.best_update,
        "wall_time_s": time.perf_counter() - started,
        "train_time_s": state.train_seconds,
        "eval_time_s": state.eval_seconds,
        "throughput": {
            "updates_per_s": state.update / state.train_seconds if state.train_seconds else None,
            "examples_per_s": (state.update * spec.batch_size / state.train_seconds
                               if state.train_seconds else None),
        },
        "metrics": metrics,
        "code": code,
        "environment": environment(built.device),
        "curve": CURVE,
        "best_parameters": BEST if state.status == "complete" else None,
    }
    write_record(out_dir, record)
    return record


def write_failed_record(spec: RunSpec, out_dir: Path, error: BaseException) -> dict:
    """A record for a run that could not train (missing data, bad option...), so that a table shows
    the cell as failed instead of leaving it out."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "status": "failed",
        "run_name": spec.run_name(),
        "error": f"{type(error).__name__}: {error}",
        "config": {"spec": spec.to_dict()},
        "seed": spec.seed,
        "updates": 0,
        "metrics": [],
        "code": code_version(),
        "environment": environment("cpu"),
    }
    write_record(out_dir, record)
    return record
