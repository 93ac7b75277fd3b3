"""Result records: one JSON file per run, the only input of tables and figures.

Schema (version 1):
    schema_version, status ('complete' | 'diverged' | 'failed'), run_name
    config: the resolved RunSpec, the algorithm's resolved options and its code (module, class,
            source file, source_sha256), the model spec, the dataset's split and provenance, the
            optimizer and learning rate of every parameter group
    updates, epochs, best_update, wall_time_s, train_time_s, eval_time_s
    throughput: updates_per_s and examples_per_s over training steps only
    metrics: a list of {split, bound ('elbo' | 'iw' | 'exact'), k, mean, nll[, perplexity],
             num_examples, update}: every number says which bound and how many samples produced it
    code: git commit and dirty flag; environment: python, torch, numpy, device, threads, platform
    curve: the file name of the validation curve (CSV beside the record)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from bench.errors import UserError
from bench.io import atomic_write_json
from bench.layout import RECORD  # the record's file name (re-exported)

SCHEMA_VERSION = 2
REPOSITORY = Path(__file__).resolve().parent.parent


def code_version() -> dict:
    """The git commit of the suite and whether the working tree has uncommitted changes outside
    results/ (which a run itself writes: reports and copied records are not code)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPOSITORY, capture_output=True, text=True,
                              timeout=10)
    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def environment(device) -> dict:
    import numpy

    device = torch.device(device)
    described = str(device)
    if device.type == "cuda" and torch.cuda.is_available():
        described = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        described = f"cpu ({platform.processor() or platform.machine()})"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "device": described, "threads": torch.get_num_threads(),
            "platform": platform.platform(), "cpu_count": os.cpu_count()}


def metric_entry(split: str, evaluation, update: int | None) -> dict:
    entry = {"split": split, **evaluation.summary(), "update": update}
    return entry


def write_record(out_dir: Path, record: dict) -> Path:
    path = Path(out_dir) / RECORD
    atomic_write_json(path, record)
    return path


def read_record(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / RECORD
    if not path.exists():
        raise UserError(f"no record at {path}: train the run first (python -m bench train ...)")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"record {path} is not valid JSON ({error}); it was not written by this "
                        f"suite or was damaged: retrain the run or restore the file") from None
    if record.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"record {path} has schema version {record.get('schema_version')}; this "
                        f"suite reads version {SCHEMA_VERSION}")
    return record


def find_metric(record: dict, split: str, bound: str, k: int | None = None) -> dict | None:
    for entry in record.get("metrics", []):
        if entry["split"] == split and entry["bound"] == bound and (k is None or entry["k"] == k):
            return entry
    return None


def spec_of_record(record: dict, run_dir: Path):
    """The RunSpec a record was trained with; a record of another version is a UserError."""
    from bench.specs import RunSpec

    try:
        return RunSpec(**record["config"]["spec"])
    except (TypeError, KeyError) as error:
        raise UserError(f"{run_dir} was trained by another version of the suite ({error}); "
                        f"train it again") from None
