"""A/B of bench/memory.py: the importance-sampled bound with and without freed memory kept.

    python -m bench.perf.keep_memory_ab [--k 1000] [--examples 20] [--rounds 3] [--threads 2]

Each round runs two fresh processes, one per setting, each scoring the same random rows of
MNIST's shape on sbn:200-200-200 and fdarn:200 (random weights) after one untimed call, and
prints examples/s with the user time, system time and page faults of the timed call. The settings
alternate, so a change in the machine's speed shows in both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

PROBE = """
import json, resource, sys, time, torch
from bench.memory import keep_freed_memory
if sys.argv[1] == "kept":
    keep_freed_memory()
k, examples, threads = map(int, sys.argv[2:5])
torch.set_num_threads(threads)
from bench.evaluation import evaluate
from bench.perf.benchmarks import random_data
from bench.specs import RunSpec
from bench.training import build
data = random_data("binary", rows=max(200, examples))
result = {}
for model in ("sbn:200-200-200", "fdarn:200"):
    algorithm = build(RunSpec(model=model, dataset="mnist"), data=data).algorithm
    def score():
        evaluate(algorithm.model, algorithm.inference, data.test[:examples], "iw", k, seed=1)
    score()
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    score()
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    result[model] = {"examples_per_s": examples / seconds,
                     "user_s": after.ru_utime - before.ru_utime,
                     "system_s": after.ru_stime - before.ru_stime,
                     "page_faults": after.ru_minflt - before.ru_minflt}
print(json.dumps(result))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for round_ in range(args.rounds):
        for setting in ("default", "kept"):
            output = subprocess.run(
                [sys.executable, "-c", PROBE, setting, str(args.k), str(args.examples),
                 str(args.threads)], capture_output=True, text=True, check=True).stdout
            for model, entry in json.loads(output).items():
                print(f"round {round_ + 1} {setting:7s} {model:16s} "
                      f"{entry['examples_per_s']:7.1f} examples/s  user {entry['user_s']:.2f} s  "
                      f"system {entry['system_s']:.2f} s  page faults {entry['page_faults']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
