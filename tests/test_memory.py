"""bench/memory.py: with freed memory kept, large temporaries stop being faulted in again."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]

# Scores 20 random MNIST-shaped rows with the importance-sampled bound (K=1000) of a three-layer
# SBN, the general evaluation path whose chunks allocate tens of MiB of temporaries, three times,
# and prints the page faults of the last two calls (the heap settles in the first).
PROBE = """
import json, resource, sys, torch
from bench.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
from bench.evaluation import evaluate
import numpy as np
import datasets
from datasets._data import column_mean
from bench.specs import RunSpec
from bench.training import build
# 200 random binary rows of MNIST's shape (MNIST's mean pixel); the values do not matter, only the
# shape of the work.
rows = (np.random.default_rng(0).random((200, 784)) < 0.13).astype(np.uint8)
data = datasets.Data(name="random-binary", split="random", kind="binary", num_features=784,
                     train=rows, valid=rows[:20], test=rows[:20], train_mean=column_mean(rows))
algorithm = build(RunSpec(model="sbn:200-200-200", dataset="mnist"), data=data).algorithm
assert algorithm.model.num_runs == 1  # one spec: a lone run, which evaluate() scores
def score():
    evaluate(algorithm.model, algorithm.inference, data.test[:20], "iw", 1000, seed=1)
score()
# Faults of each later call; the fewest is reported: the heap may still grow in one call or
# another (the order in which large blocks are freed and merged varies), but a kept heap serves
# a whole call from memory it already has, which a heap given back to the kernel never does.
calls = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    score()
    calls.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": min(calls), "calls": calls}))
"""


def page_faults(mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPOSITORY,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_kept_memory_is_reused_without_page_faults():
    if not sys.platform.startswith("linux"):
        pytest.skip("mallopt is glibc's")
    kept = page_faults("keep")
    if not kept["kept"]:
        pytest.skip("this C library has no mallopt (not glibc)")
    # Kept, the heap serves a whole call from memory it already has: 0 faults measured on every
    # machine so far, for a call whose temporaries are hundreds of MiB (by default they are
    # faulted in again: 15,000-85,000 pages of 4 KiB a call measured here and on CI machines).
    # The default's count is not asserted: it depends on the machine's C library and kernel
    # (glibc's adaptive mmap and trim thresholds keep part of the memory, more on some machines).
    default = page_faults("default")
    assert kept["faults"] < 1_000, (kept, default)


def test_the_command_line_keeps_freed_memory():
    # main() sets it before any verb runs; `bench list` is the cheapest verb.
    from bench import cli

    source = Path(cli.__file__).read_text()
    assert "keep_freed_memory()" in source.split("def main", 1)[1]
