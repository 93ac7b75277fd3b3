"""Throughput benchmarks (pytest-benchmark) of the steps `python -m bench perf` measures.

One test per step: one training update of every registered algorithm on every architecture of
bench.perf.benchmarks.ARCHITECTURES (sbn:200, sbn:200-200-200, fdarn:200, sbn:200 with an
autoregressive inference network, doc-sbn:50, doc-fdarn:50) at minibatch 20
(bench.perf.benchmarks.make_training_update, exactly training's update), the importance-sampled
bound with K=5000 on sbn:200, and each architecture's plain-PyTorch NVIL yardstick itself. Random
data of MNIST's and 20 Newsgroups' shapes: nothing is read from disk.

pytest-benchmark times each step and, under `tox -e perf`, compares it with a stored baseline
(bench/perf/baseline.json), flagging a step more than 20% slower. Absolute times on a shared
machine also move with the other jobs, so every test also measures its architecture's yardstick
just before and just after its step, in the same way (median time of single calls), and stores in
`benchmark.extra_info` the step's examples/s as a ratio to the yardstick's (ratio_to_yardstick):
that ratio is what to compare across machines and loads. When the baseline holds one too, the
relative change is stored beside it (ratio_change: -0.25 is a quarter slower, relative to the
yardstick, than in the baseline).

These are measurements, not unit tests: without --benchmark-enable (the default run has
--benchmark-disable in pyproject's addopts) every test here is skipped before anything is built.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

import algorithms
from bench.perf import benchmarks

pytestmark = pytest.mark.skipif(
    "not config.getoption('benchmark_enable')",
    reason="throughput benchmark: runs only with --benchmark-enable (tox -e perf)")

DEVICE = "cpu"
# One torch thread, as `bench run` trains on these machines: at minibatch 20 an update is
# overhead-bound, and a single thread's timings move far less with other jobs and with the number
# of cores than several threads', which wait for each other. That keeps a baseline comparable.
THREADS = 1
WARMUP_SECONDS = 0.2
YARDSTICK_SECONDS = 0.5  # the yardstick's measurement before and after each step
EVALUATION_EXAMPLES = 2  # rows per call of the iw bound


@pytest.fixture(scope="session", autouse=True)
def torch_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield THREADS
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def random_data():
    return {kind: benchmarks.random_data(kind) for kind in ("binary", "counts")}


class Yardsticks(dict):
    """Each architecture's plain-PyTorch NVIL update, built on first use and warmed up."""

    def __init__(self, random_data):
        super().__init__()
        self.random_data = random_data

    def __missing__(self, name: str) -> benchmarks.Benchmark:
        (arch,) = [a for a in benchmarks.ARCHITECTURES if a.name == name]
        yardstick = benchmarks.yardstick_benchmark(arch, DEVICE, self.random_data[arch.data_kind])
        benchmarks.measure(yardstick.step, WARMUP_SECONDS)
        self[name] = yardstick
        return yardstick


@pytest.fixture(scope="session")
def yardsticks(random_data):
    return Yardsticks(random_data)


# Baselines written before every architecture had its own yardstick measured against this one.
EARLIER_YARDSTICK = "yardstick: plain-PyTorch nvil sbn:200"


@pytest.fixture(scope="session")
def baseline_ratios(request) -> dict[str, tuple[str, float]]:
    """(yardstick, ratio to it) of each test in the baseline given to --benchmark-compare, when it
    is a file."""
    compare = request.config.getoption("benchmark_compare")
    if not isinstance(compare, str) or not Path(compare).is_file():
        return {}
    stored = json.loads(Path(compare).read_text())
    return {entry["fullname"]: (entry["extra_info"].get("yardstick", EARLIER_YARDSTICK),
                                entry["extra_info"]["ratio_to_yardstick"])
            for entry in stored["benchmarks"]
            if "ratio_to_yardstick" in entry.get("extra_info", {})}


@pytest.fixture
def against_yardstick(benchmark, yardsticks, baseline_ratios, request):
    """Time a candidate's step against its yardstick (below); beside the baseline's ratio, if any
    and to the same yardstick, store the change of the ratio: unlike absolute times it hardly
    moves with other load."""
    def run(candidate: benchmarks.Benchmark) -> None:
        yardstick = yardsticks[candidate.yardstick]
        benchmark_against_yardstick(benchmark, candidate, yardstick)
        stored_yardstick, baseline = baseline_ratios.get(request.node.nodeid, (None, None))
        if baseline is not None and stored_yardstick == yardstick.name:
            benchmark.extra_info["baseline_ratio_to_yardstick"] = baseline
            benchmark.extra_info["ratio_change"] = (
                benchmark.extra_info["ratio_to_yardstick"] / baseline - 1)
    return run


def yardstick_examples_per_s(yardstick: benchmarks.Benchmark) -> float:
    seconds = benchmarks.median_seconds_per_call(yardstick.step, YARDSTICK_SECONDS)
    return yardstick.examples_per_call / seconds


def benchmark_against_yardstick(benchmark, candidate: benchmarks.Benchmark,
                                yardstick: benchmarks.Benchmark) -> None:
    """Time `candidate.step` with pytest-benchmark between two yardstick measurements, and store
    its throughput and its ratio to the yardstick in extra_info."""
    benchmarks.measure(candidate.step, WARMUP_SECONDS)
    before = yardstick_examples_per_s(yardstick)
    benchmark(candidate.step)
    after = yardstick_examples_per_s(yardstick)
    calls_per_s = 1 / benchmark.stats["median"]
    examples_per_s = calls_per_s * candidate.examples_per_call
    reference = statistics.fmean([before, after])
    benchmark.extra_info.update({
        "benchmark": candidate.name,
        "yardstick": yardstick.name,
        "updates_per_s": None if candidate.kind == "evaluation" else calls_per_s,
        "examples_per_s": examples_per_s,
        "yardstick_examples_per_s": reference,
        "yardstick_examples_per_s_before_after": [before, after],
        "ratio_to_yardstick": examples_per_s / reference,
        "statistic": "median time of one call",
        "threads": torch.get_num_threads(),
        "data": benchmarks.DATA_NOTE,
    })


ARCHITECTURE_IDS = [a.name.replace(" (inference=autoregressive)", "+autoregressive-q")
                    for a in benchmarks.ARCHITECTURES]


@pytest.mark.parametrize("model", benchmarks.ARCHITECTURES, ids=ARCHITECTURE_IDS)
@pytest.mark.parametrize("algorithm", list(algorithms.REGISTRY))
def test_update(benchmark, against_yardstick, random_data, algorithm, model):
    if not benchmarks.supports(algorithm, model):
        pytest.skip(f"{algorithm} does not accept {model.name}")
    candidate = benchmarks.update_benchmark(algorithm, model, DEVICE,
                                            random_data[model.data_kind])
    benchmark.group = f"update {model.name}"
    against_yardstick(candidate)


def test_iw_bound(benchmark, against_yardstick, random_data):
    candidate = benchmarks.evaluation_benchmark(EVALUATION_EXAMPLES, DEVICE, random_data["binary"])
    benchmark.group = "evaluation"
    against_yardstick(candidate)
    benchmark.extra_info["projected_mnist_test_seconds"] = (
        benchmarks.MNIST_TEST_IMAGES / benchmark.extra_info["examples_per_s"])


def test_yardstick(benchmark, against_yardstick, yardsticks):
    """The sbn:200 yardstick's own time: a slower yardstick against the baseline means a slower or
    busier machine, not slower code. Its ratio to its own neighbouring measurements shows the
    noise."""
    benchmark.group = "update sbn:200"
    against_yardstick(yardsticks["sbn:200"])


@pytest.mark.parametrize("model", benchmarks.ARCHITECTURES[1:], ids=ARCHITECTURE_IDS[1:])
def test_yardstick_of_family(benchmark, against_yardstick, yardsticks, model):
    """Every other architecture's yardstick, the same way."""
    benchmark.group = f"update {model.name}"
    against_yardstick(yardsticks[model.name])


@pytest.mark.parametrize("mix", sorted(algorithms.REGISTRY))
def test_batched_update(benchmark, against_yardstick, random_data, mix):
    """16 runs of sbn:200 as one batched computation; examples/s counts every run's minibatch."""
    candidate = benchmarks.batched_update_benchmark(mix, "sbn:200", DEVICE, random_data["binary"])
    benchmark.group = "update sbn:200"
    against_yardstick(candidate)
