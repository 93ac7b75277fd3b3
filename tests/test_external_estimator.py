"""An estimator of another package joins the suite without editing it: a tiny package with an entry
point in group `nvil_bench.algorithms` is installed into a temporary directory, and `bench list`,
`train`, `run` (a suite file naming `module:Class`) and `check` use it, by entry point and by
`module:Class`, in subprocesses. Records carry the external module's file and sha256."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
MODULE = "reinforce_estimator"

ESTIMATOR = '''\
"""REINFORCE (Williams 1992): the score-function estimator without variance reduction, an
estimator outside nvil-bench for its tests.

    model:      Δθ = sum_i ∇θ log P(x_i, h_i)
    inference:  Δφ = sum_i l_i ∇φ log Q(h_i | x_i),   l_i = log P(x_i, h_i) - log Q(h_i | x_i)

E[l ∇φ log Q] = ∇φ ELBO, since E[∇φ log Q] = 0. Shapes: x (R, B, D), h[j] (R, B, H_j).
"""

from dataclasses import dataclass

import torch

from algorithms.base import Algorithm, StepResult
from models.exact import exact_elbo


@dataclass(frozen=True)
class ReinforceOptions:
    inference_lr_scale: float = 0.2


class Reinforce(Algorithm):
    name = "ext-reinforce"
    Options = ReinforceOptions
    presets = {"": {}, "same-rate": {"inference_lr_scale": 1.0}}
    paper_learning_rates = {"synthetic": 2e-4}
    check_steps = 300

    def parameter_groups(self):
        return {"model": list(self.model.parameters()),
                "inference": list(self.inference.parameters())}

    def learning_rate_scales(self, options):
        return {"model": 1.0, "inference": options.inference_lr_scale}

    def noise(self, x):
        return {"q": self.inference.noise(*x.shape[1:-1])}

    def step(self, x, noise):
        with torch.no_grad():
            h, _ = self.inference.sample(x, noise["q"])
        log_p = self.model.log_joint(x, h)
        log_q = self.inference.log_prob(x, h)
        signal = (log_p - log_q).detach()  # the learning signal must not carry gradient
        return StepResult(losses={"model": -log_p.sum(), "inference": -(signal * log_q).sum()},
                          metrics={"bound": signal.mean(-1)})

    def exact_objectives(self, x):
        bound = exact_elbo(self.model, self.inference, x).sum(-1)
        return {"model": bound, "inference": bound}
'''

PYPROJECT = f'''\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "reinforce-estimator"
version = "0.1.0"

[project.entry-points."nvil_bench.algorithms"]
ext-reinforce = "{MODULE}:Reinforce"

[tool.setuptools]
py-modules = ["{MODULE}"]
'''

SUITE = f'''\
[suite]
title = "External estimator"
description = "REINFORCE from another package, named by module:Class."
reference = "tests/test_external_estimator.py"
default_budget = "smoke"

[defaults]
dataset = "synthetic"
model = "sbn:10"

[[cells]]
algorithm = "{MODULE}:Reinforce:same-rate"

[table]
metric = "nll"
rows = "model"
columns = "algorithm"

[budgets.smoke]
updates = 10
eval_interval = 5
eval_examples = 50
test_examples = 50
'''


def git_status() -> str | None:
    try:
        done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                              cwd=REPOSITORY, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A scratch root, a directory holding the bare module, and the directory the package is
    installed into."""
    if shutil.which("pip") is None and subprocess.run(
            [sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        pytest.skip("pip is not available to install the external package")
    root = tmp_path_factory.mktemp("external")
    source, site = root / "pkg", root / "site"
    source.mkdir()
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / f"{MODULE}.py").write_text(ESTIMATOR)
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--disable-pip-version-check", "--target", str(site),
         str(source)], capture_output=True, text=True, timeout=300, cwd=root)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # The bare module alone, for module:Class: no metadata (pip leaves an egg-info in `source`).
    bare = root / "bare"
    bare.mkdir()
    (bare / f"{MODULE}.py").write_text(ESTIMATOR)
    return root, bare, site


def bench(root: Path, path: Path, *arguments: str) -> subprocess.CompletedProcess:
    """`python -m bench ...` in a fresh process, run from a scratch directory, with `path` (the
    installed site, or the bare source) and the suite on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(path), str(REPOSITORY)])
    env["BENCH_DATA"] = str(root / "data")
    env.setdefault("BENCH_DATA_MIRROR", str(REPOSITORY / ".." / "shared" / "data"))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # tiny models: one thread is as fast, and kinder to a busy machine
    return subprocess.run([sys.executable, "-m", "bench", *arguments], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def check_record(run_dir: Path, module_file: Path, preset: str = "") -> dict:
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "complete"
    algorithm = record["config"]["algorithm"]
    assert algorithm["name"] == "ext-reinforce" and algorithm["preset"] == preset
    assert algorithm["module"] == MODULE and algorithm["class"] == "Reinforce"
    assert Path(algorithm["file"]).resolve() == module_file.resolve()
    assert algorithm["source_sha256"] == hashlib.sha256(ESTIMATOR.encode()).hexdigest()
    assert record["config"]["optimizers"]["model"]["learning_rate"] == 2e-4  # its own rate
    return record


def test_external_estimator_joins_without_editing_the_suite(package):
    root, bare, site = package
    before = git_status()

    listed = bench(root, site, "list")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.split()[:1] == ["ext-reinforce"])
    assert "REINFORCE" in line and "reinforce-estimator 0.1.0" in line
    assert "same-rate" in listed.stdout

    train = ["--model", "sbn:10", "--dataset", "synthetic", "--updates", "20",
             "--set", "eval_interval=10", "--set", "eval_examples=100", "--set",
             "test_examples=100", "--no-progress"]
    by_entry_point = bench(root, site, "train", "--algorithm", "ext-reinforce", *train,
                           "--out", str(root / "run"))
    assert by_entry_point.returncode == 0, by_entry_point.stdout + by_entry_point.stderr
    check_record(root / "run", site / f"{MODULE}.py")

    # By module:Class from the bare module: no entry point, no installation.
    by_class = bench(root, bare, "train", "--algorithm", f"{MODULE}:Reinforce:same-rate",
                     *train, "--out", str(root / "run-by-class"))
    assert by_class.returncode == 0, by_class.stdout + by_class.stderr
    record = check_record(root / "run-by-class", bare / f"{MODULE}.py", preset="same-rate")
    assert record["config"]["algorithm"]["options"] == {"inference_lr_scale": 1.0}

    (root / "external.toml").write_text(SUITE)
    suite = bench(root, bare, "run", str(root / "external.toml"), "--runs-dir",
                  str(root / "runs"), "--results-dir", str(root / "results"), "--no-progress")
    assert suite.returncode == 0, suite.stdout + suite.stderr
    [record_path] = (root / "runs").rglob("record.json")
    check_record(record_path.parent, bare / f"{MODULE}.py", preset="same-rate")

    check = bench(root, site, "check", "ext-reinforce", "--steps", "50")
    assert check.returncode in (0, 1), check.stdout + check.stderr  # 1: a bias, not a crash
    assert check.stdout.startswith("bias check: ext-reinforce on sbn:2-3")
    # exact enumeration has no sampling error: the unbiased estimator passes it
    exact = check.stdout.split("Monte Carlo z-test")[0]
    assert "exact enumeration: 1024 noise configurations" in exact and "BIAS" not in exact
    assert "result: " in check.stdout

    # Benchmarked like the suite's own: one update of it on sbn:200 against sbn:200's yardstick.
    perf = bench(root, site, "perf", "--quick", "--repeats", "1", "--threads", "1", "--json",
                 "--no-progress", "--only", "update ext-reinforce sbn:200", "--out",
                 str(root / "perf"))
    assert perf.returncode == 0, perf.stdout + perf.stderr
    rows = [row for row in json.loads(perf.stdout)["benchmarks"]
            if row["name"] == "update ext-reinforce sbn:200"]
    assert len(rows) == 1 and rows[0]["ratio_to_yardstick"] > 0

    assert git_status() == before  # nothing in the suite's checkout was written


def test_external_estimator_that_fails_to_load_is_one_line(package, tmp_path):
    root, _, site = package
    broken = tmp_path / "broken"
    shutil.copytree(site, broken)
    (broken / f"{MODULE}.py").write_text("raise RuntimeError('the estimator is broken')\n")
    listed = bench(root, broken, "list")
    assert listed.returncode == 1
    line = next(line for line in listed.stdout.splitlines() if line.split()[:1] == ["ext-reinforce"])
    assert "entry point 'ext-reinforce'" in line and "reinforce-estimator 0.1.0" in line
    assert "failed to load: RuntimeError: the estimator is broken" in line
