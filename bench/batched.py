"""Many runs trained as one batched computation in one process.

The cells of a suite that share a model architecture, dataset and minibatch size (seeds, the eight
variance-reduction combinations of Figure 1, NVIL beside wake-sleep) are stacked into one fused
engine (algorithms/fused.py): each update is one batched matrix product per layer for all of them.
Everything else stays per run, through each run's own `Trainer`: its data order, its random stream
(the engine draws each run's noise from that run's generator), its running statistics, its
validation curve, early stopping, checkpoints, divergence and record. A run therefore follows the
trajectory it would follow alone, up to floating-point rounding (tests/test_batched.py), and an
interrupted group resumes from the runs' own checkpoints. A run that diverges is frozen and
recorded as diverged while the others go on.

Runs the fused engine cannot train (fDARN, autoregressive inference, document models, Adam) are
trained one after the other with autograd, as `bench train` would.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from algorithms.fused import FusedSGD, run_order_key
from algorithms.nvil import NVIL
from bench.records import code_version
from bench.runs import finish_run
from bench.specs import RunSpec
from bench.training import Trainer, build, make_progress


def batch_key(spec: RunSpec) -> tuple:
    """Specs with equal keys may share an engine (the engine's own constraints are checked once
    the runs are built, by `compatible_groups`)."""
    return (spec.dataset, spec.split, spec.model, spec.inference, spec.batch_size, spec.device,
            spec.optimizer, spec.engine)


def compatible_groups(algorithms: list, max_runs: int) -> list[list[int]]:
    """Indices of runs that can share a FusedSGD, at most `max_runs` per group, each group in the
    engine's run order. NVIL runs must agree on local signals and the baseline network's width;
    wake-sleep runs join any group of their architecture."""
    def architecture(algorithm):
        return algorithm.model.latent_sizes, algorithm.model.num_features

    by_key: dict[tuple, list[int]] = {}
    for index, algorithm in enumerate(algorithms):  # NVIL first: wake-sleep joins their groups
        if isinstance(algorithm, NVIL):
            options = algorithm.options
            key = (architecture(algorithm), options.local_signals, options.baseline_hidden)
            by_key.setdefault(key, []).append(index)
    for index, algorithm in enumerate(algorithms):
        if not isinstance(algorithm, NVIL):
            key = next((k for k in by_key if k[0] == architecture(algorithm)),
                       (architecture(algorithm),))
            by_key.setdefault(key, []).append(index)
    groups = []
    for members in by_key.values():
        members.sort(key=lambda i: run_order_key(algorithms[i]))
        chunks = [members[i:i + max_runs] for i in range(0, len(members), max_runs)]
        groups += [sorted(chunk, key=lambda i: run_order_key(algorithms[i])) for chunk in chunks]
    return groups


def train_runs_together(specs: list[RunSpec], out_dirs: list[Path], data=None, data_dir=None,
                        max_runs: int = 16, progress: bool = True, log=print) -> list[dict]:
    """Train (or resume) every run, batching those the fused engine can share, and write each
    run's record. Returns the records in the order of `specs`."""
    code = code_version()
    started = time.perf_counter()
    trainers = [Trainer(build(spec, data, data_dir), Path(out_dir), progress=False,
                        own_engine=False)
                for spec, out_dir in zip(specs, out_dirs, strict=True)]
    fused = [i for i, trainer in enumerate(trainers) if trainer.engine == "fused"]
    records: dict[int, dict] = {}
    for index, trainer in enumerate(trainers):
        if trainer.engine != "fused":  # a run alone, with autograd (it has no engine to share)
            trainer.progress = progress
            trainer.train()
            records[index] = finish_run(trainer, code, started)
    for group in compatible_groups([trainers[i].algorithm for i in fused], max_runs):
        members = [fused[i] for i in group]
        _train_group([trainers[i] for i in members], progress, log)
        for i in members:
            records[i] = finish_run(trainers[i], code, started)
    return [records[i] for i in range(len(trainers))]


class RunGroup:
    """Runs sharing one FusedSGD; `update()` is one update of every run that still wants one."""

    def __init__(self, trainers: list[Trainer]):
        self.trainers = trainers
        for trainer in trainers:
            trainer.runs_in_batch = len(trainers)
        self.engine = FusedSGD([t.algorithm for t in trainers], [t.learning_rates for t in trainers])
        self.generators = [t.generator for t in trainers]
        first = trainers[0]
        self.batch = torch.zeros(len(trainers), first.spec.batch_size,
                                 first.built.data.num_features, device=first.built.device)

    def update(self) -> bool:
        """Returns False when no run wants another update. Each run's own state advances as its
        Trainer's would; a run with a non-finite bound is marked diverged and left unchanged."""
        active = [t.wants_update() for t in self.trainers]
        if not any(active):
            return False
        started = time.perf_counter()
        for r, trainer in enumerate(self.trainers):
            if active[r]:
                self.batch[r] = trainer._next_batch()
        bounds = self.engine.step(self.batch, self.generators, active).tolist()
        elapsed = time.perf_counter() - started
        for r, trainer in enumerate(self.trainers):
            if not active[r]:
                continue
            if not math.isfinite(bounds[r]):
                trainer.state.status = "diverged"
                continue
            trainer.state.update += 1
            trainer.state.train_seconds += elapsed
            trainer.after_update()
        return True


def _train_group(trainers: list[Trainer], progress: bool, log) -> None:
    for trainer in trainers:
        trainer.begin()
    group = RunGroup(trainers)
    if len(trainers) > 1:
        log(f"training {len(trainers)} runs as one batched computation: "
            + ", ".join(t.spec.run_name() for t in trainers))
    remaining = max(t.spec.updates - t.state.update for t in trainers)
    bar = make_progress(max(0, remaining), 0, progress, f"{len(trainers)} runs")
    try:
        while group.update():
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    for trainer in trainers:
        trainer.end()
