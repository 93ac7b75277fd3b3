"""Many runs trained as one stacked computation in one process: the suite's side of RunGroup.

The cells of a suite that share an estimator, a model architecture, dataset, minibatch size and
evaluation schedule (seeds, the eight variance-reduction combinations of Figure 1, learning
rates) are stacked into one `RunGroup` (bench/training.py), at most `max_runs` at a time; runs of
different estimators are grouped by estimator. Everything else stays per run: data order, random
stream, running statistics, validation curve, early stopping, checkpoints, divergence and record.
"""

from __future__ import annotations

from pathlib import Path

from bench.runs import train_group
from bench.specs import RunSpec
from bench.training import stacking_key


def batch_key(spec: RunSpec) -> tuple:
    """Specs with equal keys are stacked in one computation."""
    return stacking_key(spec)


def stacked_groups(specs: list[RunSpec], max_runs: int) -> list[list[int]]:
    """Indices of the specs that share a computation, at most `max_runs` per group, in order of
    first appearance."""
    by_key: dict[tuple, list[int]] = {}
    for index, spec in enumerate(specs):
        by_key.setdefault(batch_key(spec), []).append(index)
    return [members[i:i + max_runs] for members in by_key.values()
            for i in range(0, len(members), max_runs)]


def train_runs_together(specs: list[RunSpec], out_dirs: list[Path], data=None, data_dir=None,
                        max_runs: int = 16, progress: bool = True, log=print) -> list[dict]:
    """Train (or resume) every run, stacking those that can share a computation, and write each
    run's record. Returns the records in the order of `specs`."""
    records: dict[int, dict] = {}
    for group in stacked_groups(specs, max_runs):
        if len(group) > 1:
            log(f"training {len(group)} runs as one stacked computation: "
                + ", ".join(Path(out_dirs[i]).name for i in group))
        trained = train_group([specs[i] for i in group], [Path(out_dirs[i]) for i in group],
                              data, data_dir, progress)
        records.update(zip(group, trained, strict=True))
    return [records[i] for i in range(len(specs))]
