"""Train one run end to end and write its record: the function behind `train` and `run`."""

from __future__ import annotations

import time
from pathlib import Path

from algorithms import options_dict, source_info
from algorithms.registry import split
from bench import locks
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
from bench.training import BEST, CURVE, Run, RunGroup, build


def record_is_complete(out_dir: Path, updates: int | None = None) -> bool:
    """Whether the run's record is final: diverged, or complete and, with `updates` (the budget
    asked for now), trained to it or stopped by patience. A record of a smaller budget (a run
    directory carried on to a larger one) is not: training extends it from its checkpoint."""
    path = Path(out_dir) / RECORD
    if not path.exists():
        return False
    try:
        record = read_record(path)
    except Exception:
        return False
    if record.get("status") == "diverged":
        return True
    if record.get("status") != "complete":
        return False
    return (updates is None or record.get("stop_reason") == "patience"
            or int(record.get("updates", 0)) >= updates)


def train_run(spec: RunSpec, out_dir: Path, data=None, data_dir=None, progress: bool = True,
              log=print) -> dict:
    """Train (or resume) one run, evaluate its best parameters on the test set, write its record."""
    return train_group([spec], [out_dir], data, data_dir, progress)[0]


def train_group(specs: list[RunSpec], out_dirs, data=None, data_dir=None, progress: bool = True
                ) -> list[dict]:
    """Train (or resume) stackable runs as one computation and write each run's record."""
    started = time.perf_counter()
    code = code_version()  # the code that trains, even if the checkout changes meanwhile
    # One process per run directory: another one training the same run is a RunLocked error
    # naming it, before anything here is read or written.
    with locks.locked(out_dirs):
        group = RunGroup(build(specs, data, data_dir), out_dirs, progress=progress)
        group.train()
        return finish_runs(group, code, started)


def finish_runs(group: RunGroup, code: dict, started: float) -> list[dict]:
    """Evaluate every complete run's best parameters (valid, test, and the iw bound if asked), all
    runs in one computation, and write each run's record."""
    complete = [run for run in group.runs if run.state.status == "complete"]
    metrics: dict[int, list] = {run.index: [] for run in group.runs}
    if complete:
        group.restore_best(complete)
        spec = group.specs[0]
        best = [run.state.best_update for run in complete]
        evaluations = [("valid", group.evaluate("valid", complete, seed_offsets=best,
                                                limit=spec.eval_examples)),
                       ("test", group.evaluate("test", complete, seed_offsets=[-1] * len(complete),
                                               limit=spec.test_examples))]
        if spec.test_iw_samples:
            evaluations.append(("test", group.evaluate(
                "test", complete, "iw", spec.test_iw_samples, seed_offsets=[-2] * len(complete),
                limit=spec.test_examples)))
        # (a run tested with AIS already has it at eval_samples chains on the test rows)
        same_as_test = (spec.resolved_eval_bound == "ais" and spec.test_ais_chains ==
                        spec.eval_samples and spec.test_ais_examples in (None, spec.test_examples))
        if spec.test_ais_chains and not same_as_test:
            evaluations.append(("test", group.evaluate(
                "test", complete, "ais", spec.test_ais_chains, seed_offsets=[-50_000] * len(complete),
                limit=spec.test_ais_examples or spec.test_examples)))
        sweep_rows = spec.test_sweep_examples or spec.test_examples
        for b, bound in enumerate(spec.test_sweep_bounds):
            for i, k in enumerate(spec.test_sweep):
                evaluations.append(("test", group.evaluate(
                    "test", complete, bound, k, limit=sweep_rows,
                    seed_offsets=[-3 - i - 100 * b] * len(complete))))
        reconstructions = {}
        if spec.test_reconstruction:
            errors = group.reconstruction("test", limit=spec.test_examples)
            reconstructions = {run.index: [{"split": "test", **errors[run.index],
                                            "update": run.state.best_update}] for run in complete}
        for run in complete:
            group.save_best(run)
            metrics[run.index] = [metric_entry(part, by_run[run.index], run.state.best_update)
                                  for part, by_run in evaluations]
    return [write_run_record(group, run, metrics[run.index], code, started,
                             reconstructions.get(run.index) if complete else None)
            for run in group.runs]


def write_run_record(group: RunGroup, run: Run, metrics: list, code: dict, started: float,
                     reconstruction: list | None = None) -> dict:
    built, spec, state = group.built, run.spec, run.state
    algorithm = group.algorithm
    evaluations = algorithm.evaluations_per_example(run.options)
    record = {
        "schema_version": SCHEMA_VERSION,
        "status": state.status,
        "run_name": spec.run_name(),
        "config": {
            "spec": spec.to_dict(),
            # the bound of validation and of the test metric (the spec's, or the estimator's)
            "eval_bound": spec.resolved_eval_bound,
            # module, class, file and source_sha256: the estimator's own code, which the suite's
            # commit (`code`) does not pin for an estimator of another package.
            "algorithm": {"name": algorithm.name, "preset": split(spec.algorithm)[1],
                          "options": options_dict(run.options), **source_info(type(algorithm))},
            "model": {"spec": built.model_spec.name, "family": built.model_spec.family,
                      "layers": list(built.model_spec.layers), "inference": spec.inference},
            "dataset": {"name": built.data.name, "split": built.data.split, "kind": built.data.kind,
                        "sizes": {s: int(getattr(built.data, s).shape[0])
                                  for s in ("train", "valid", "test")},
                        "provenance": built.data.provenance},
            "optimizers": {g: {"name": spec.optimizer, "learning_rate": rate}
                           for g, rate in run.learning_rates.items()},
            "batch_size": spec.batch_size,
            # How many runs shared one stacked computation (their throughput figures are each
            # run's own rate within it).
            "engine": {"name": "stacked", "runs_in_batch": group.num_runs},
            "train_samples_per_example": 1,
            "model_evaluations_per_example": evaluations,
            "model_evaluations_per_update": evaluations * spec.batch_size,
        },
        "seed": spec.seed,
        "updates": state.update,
        "stop_reason": state.stop_reason,
        "epochs": state.update * spec.batch_size / built.data.train.shape[0],
        "best_update": state.best_update,
        # Every process's wall time for this run (training, evaluation, checkpoints, the final
        # evaluation), summed over interruptions.
        "wall_time_s": run.wall_base + (time.perf_counter() - started),
        "train_time_s": state.train_seconds,
        "eval_time_s": state.eval_seconds,
        "throughput": {
            "updates_per_s": state.update / state.train_seconds if state.train_seconds else None,
            "examples_per_s": (state.update * spec.batch_size / state.train_seconds
                               if state.train_seconds else None),
            "model_evaluations_per_s": (state.update * spec.batch_size * evaluations
                                        / state.train_seconds if state.train_seconds else None),
        },
        "metrics": metrics,
        **({"reconstruction": reconstruction} if reconstruction else {}),
        "code": code,
        "environment": environment(built.device),
        "curve": CURVE,
        "best_parameters": BEST if state.status == "complete" else None,
    }
    write_record(run.out_dir, record)
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
