"""What `python -m bench perf` and `tests/perf` measure, and how.

Measured:
    update      one full training update of each registered algorithm (default preset) on sbn:200,
                sbn:200-200-200, fdarn:200 (784 pixels, MNIST's shape) and doc-sbn:50 (a 2,000-word
                vocabulary, 20 Newsgroups' size), at minibatch 20, exactly as Trainer.train does it:
                next minibatch, algorithm.step, one backward pass through the summed per-group
                losses, one optimizer step per parameter group. Model, inference network, algorithm,
                optimizers and data order come from bench.training.build and Trainer itself.
    evaluation  the importance-sampled bound with K=5000 on sbn:200 with 784 pixels, through
                bench.evaluation.evaluate exactly as `python -m bench eval RUN --k 5000` calls it
                (its own seeded stream, its batches), on a few examples per call; the time for the
                10,000 MNIST test images is projected from its examples/s. The eval command scores
                100 examples per call, but the bound's cost per example does not depend on that:
                its chunks hold samples x examples rows (bench/evaluation.py).
    ceiling     the matrix products alone of the fused NVIL update of sbn:200, for 1 and for 16 runs
                (MatrixProducts): the most any update doing those products could reach.
    yardstick   the NVIL update for sbn:200 written in plain PyTorch (bench/perf/yardstick.py).

Why ratios: absolute speed on a shared machine says as much about the other jobs as about the code.
Every figure is therefore also given as a ratio of examples/s to the yardstick's examples/s,
measured in the same process, on the same device and threads, interleaved with the candidates:
Y C1 Y C2 ... Cn Y, repeated. Each candidate measurement is divided by the mean of the two
yardstick measurements on either side of it, so a load change during the run moves both, and the
reported figures are medians over the repeats (rates and ratios alike), with the range of the
ratios as a sign of how noisy the run was. A ratio above 1 is faster than the yardstick.
For the evaluation the ratio compares unlike work (scoring an example with 5000 samples against
training on it); it serves to normalise its speed for the machine, not to compare the two.

Also recorded: process CPU time over wall time. On an idle machine it is about the number of
threads actually busy; well below that, the process waited for a CPU (the machine was loaded).

Data: random binary rows of MNIST's shape and random word counts over 2,000 words (Poisson lengths
around 100 words), made here: no dataset is read. The cost of an update does not depend on the
values of the data, only on its shape.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

import algorithms
import datasets
from bench.evaluation import evaluate, rows_as_tensor
from bench.perf.yardstick import YardstickNVIL
from bench.specs import RunSpec
from bench.training import Trainer, build
from datasets._data import column_mean
from models import ModelSpec

MODELS = ("sbn:200", "sbn:200-200-200", "fdarn:200", "doc-sbn:50")
BATCH_SIZE = 20
MNIST_PIXELS = 784
VOCABULARY_WORDS = 2000
MEAN_DOCUMENT_WORDS = 100
IW_SAMPLES = 5000
EVALUATION_MODEL = "sbn:200"
MNIST_TEST_IMAGES = 10_000
TRAINING_ROWS = 2000  # rows of random data per dataset: 100 minibatches an epoch
DATA_NOTE = (f"random binary data of MNIST shape ({MNIST_PIXELS} pixels) and random word counts "
             f"over a {VOCABULARY_WORDS:,}-word vocabulary; no dataset is read")
# The dataset name only picks the paper's learning rate (bench.specs); the rows are random.
DATASET_FOR_KIND = {"binary": "mnist", "counts": "20news"}


# -- data ------------------------------------------------------------------------------------------

def random_data(kind: str, rows: int = TRAINING_ROWS, seed: int = 0) -> datasets.Data:
    """A Data record of random rows: binary of MNIST's shape, or word counts over 2,000 words."""
    rng = np.random.default_rng(seed)
    if kind == "binary":
        train = (rng.random((rows, MNIST_PIXELS)) < 0.13).astype(np.uint8)  # MNIST's mean pixel
        num_features, vocab = MNIST_PIXELS, None
    elif kind == "counts":
        lengths = np.maximum(1, rng.poisson(MEAN_DOCUMENT_WORDS, size=rows))
        words = rng.integers(0, VOCABULARY_WORDS, size=int(lengths.sum()))
        documents = np.repeat(np.arange(rows), lengths)
        train = sp.csr_matrix((np.ones(words.size, dtype=np.float32), (documents, words)),
                              shape=(rows, VOCABULARY_WORDS))
        train.sum_duplicates()  # a word drawn twice in a document counts 2
        num_features, vocab = VOCABULARY_WORDS, tuple(f"word{i}" for i in range(VOCABULARY_WORDS))
    else:
        raise ValueError(f"unknown data kind {kind!r}")
    held_out = train[: max(1, rows // 10)]
    return datasets.Data(name=f"random-{kind}", split="random", kind=kind,
                         num_features=num_features, train=train, valid=held_out, test=held_out,
                         train_mean=column_mean(train), vocab=vocab,
                         provenance={"note": DATA_NOTE, "seed": seed})


def data_kind(model: str) -> str:
    return ModelSpec.parse(model).data_kind


# -- the steps being measured ----------------------------------------------------------------------

@dataclass
class Benchmark:
    """A callable doing one unit of work (one update, or one bound on `examples_per_call` rows)."""

    name: str
    kind: str                  # 'update', 'evaluation', 'ceiling' or 'yardstick'
    step: Callable[[], object]
    examples_per_call: int
    algorithm: str | None = None
    model: str | None = None
    details: dict = field(default_factory=dict)


class TrainerUpdate:
    """One update exactly as Trainer.train does it (`Trainer.update`), without the progress bar,
    validation and checkpoints, which are not part of an update. Nothing is written: only
    Trainer.train writes to its output directory."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def __call__(self) -> None:
        trainer = self.trainer
        if not trainer.update():
            raise RuntimeError(f"{trainer.spec.algorithm} on {trainer.spec.model} diverged after "
                               f"{trainer.state.update} updates while being measured")


def training_spec(algorithm: str, model: str, device: str = "cpu", seed: int = 0) -> RunSpec:
    return RunSpec(algorithm=algorithm, model=model, dataset=DATASET_FOR_KIND[data_kind(model)],
                   batch_size=BATCH_SIZE, device=device, seed=seed)


def trainer_for(spec: RunSpec, data: datasets.Data, own_engine: bool = True) -> Trainer:
    # Trainer.__init__ only remembers its output directory; nothing is written unless train() runs.
    return Trainer(build(spec, data=data), out_dir=Path("unused-by-benchmarks"), progress=False,
                   own_engine=own_engine)


def update_benchmark(algorithm: str, model: str, device: str = "cpu",
                     data: datasets.Data | None = None, engine: str = "auto") -> Benchmark:
    """One training update of `algorithm` (default preset) on `model`, at minibatch 20."""
    spec = dataclasses.replace(training_spec(algorithm, model, device), engine=engine)
    data = data if data is not None else random_data(data_kind(model))
    trainer = trainer_for(spec, data)
    suffix = "" if engine == "auto" else f" (engine={engine})"
    return Benchmark(f"update {algorithm} {model}{suffix}", "update", TrainerUpdate(trainer),
                     BATCH_SIZE, algorithm, model,
                     {"batch_size": BATCH_SIZE, "optimizer": spec.optimizer,
                      "learning_rate": spec.resolved_learning_rate, "engine": trainer.engine})


# Many runs in one batched computation (bench/batched.py): seeds of the default NVIL, and the
# mixture a suite batches (Figure 1's eight variance-reduction combinations beside wake-sleep).
BATCHED_RUNS = 16
BATCHED_MIXES = {
    "nvil": ["nvil"] * BATCHED_RUNS,
    "figure1+wake-sleep": [f"nvil:{p}" for p in ("baseline+idb+vn", "baseline+idb", "baseline+vn",
                                                 "idb+vn", "baseline", "idb", "vn", "none")]
                          + ["wake-sleep"] * 8,
}


class GroupUpdate:
    """One update of every run of a RunGroup, exactly as `bench run` does it."""

    def __init__(self, group):
        self.group = group

    def __call__(self) -> None:
        self.group.update()
        diverged = [t.spec.run_name() for t in self.group.trainers if t.state.status != "running"]
        if diverged:
            raise RuntimeError(f"runs diverged while being measured: {', '.join(diverged)}")


def batched_update_benchmark(mix: str, model: str = "sbn:200", device: str = "cpu",
                             data: datasets.Data | None = None) -> Benchmark:
    """One update of 16 runs (seeds 0..15) trained as one batched computation; examples/s counts
    every run's minibatch."""
    from algorithms.fused import run_order_key
    from bench.batched import RunGroup

    data = data if data is not None else random_data(data_kind(model))
    trainers = [trainer_for(training_spec(name, model, device, seed), data, own_engine=False)
                for seed, name in enumerate(BATCHED_MIXES[mix])]
    trainers.sort(key=lambda t: run_order_key(t.algorithm))
    group = RunGroup(trainers)
    return Benchmark(f"update {len(trainers)} runs batched: {mix} {model}", "update",
                     GroupUpdate(group), BATCH_SIZE * len(trainers), mix, model,
                     {"batch_size": BATCH_SIZE, "runs": len(trainers), "engine": "fused",
                      "algorithms": sorted(set(BATCHED_MIXES[mix]))})


class MatrixProducts:
    """Only the seven matrix products of one fused NVIL update of sbn:200 (input-dependent baseline,
    the default preset) for every run of `engine`, with the engine's own stacks, layouts and
    calls: four forward products (inference network, decoder, the baseline's two layers) and the
    three weight updates of size (C, H). Nothing else of the update runs. Its ratio to the
    yardstick is therefore a ceiling: the most any engine doing these products this way could
    reach if everything else took no time."""

    # Small enough that the updates leave the weights unchanged in float32, and not zero, so that
    # no library can skip the product.
    RATE = 1e-30

    def __init__(self, engine, x: torch.Tensor):
        generator = torch.Generator(device=x.device).manual_seed(0)
        self.engine = engine
        self.context = x - engine.input_mean                       # (R, B, D)
        runs, batch = x.shape[:2]
        hidden_units = engine.baselines[0][0].shape[-1]

        def random(*shape):
            return torch.rand(shape, generator=generator, dtype=x.dtype, device=x.device)

        self.h = (random(runs, batch, engine.latent_sizes[0]) < 0.5).to(x.dtype)
        self.visible_delta = random(runs, batch, x.shape[-1])
        self.inference_delta = random(runs, batch, engine.latent_sizes[0])
        self.hidden_delta = random(runs, batch, hidden_units)

    def __call__(self) -> None:
        from algorithms.fused import _logits

        engine = self.engine
        hidden_w, hidden_b, out_w, out_b = engine.baselines[0]
        _logits(*engine.inference[0], self.context)
        _logits(*engine.visible, self.h)
        _logits(out_w, out_b, _logits(hidden_w, hidden_b, self.context))
        for weight_t, context, delta in ((engine.visible[0], self.h, self.visible_delta),
                                         (engine.inference[0][0], self.context, self.inference_delta),
                                         (hidden_w, self.context, self.hidden_delta)):
            weight_t.baddbmm_(context.transpose(1, 2), delta, alpha=self.RATE)


def matrix_products_benchmark(runs: int, device: str = "cpu",
                              data: datasets.Data | None = None) -> Benchmark:
    """The ceiling for `runs` NVIL runs of sbn:200 at minibatch 20 (MatrixProducts)."""
    from algorithms.fused import FusedSGD

    data = data if data is not None else random_data("binary")
    trainers = [trainer_for(training_spec("nvil", "sbn:200", device, seed), data, own_engine=False)
                for seed in range(runs)]
    engine = FusedSGD([t.algorithm for t in trainers], [t.learning_rates for t in trainers])
    x = torch.stack([t._next_batch() for t in trainers])
    label = "1 run" if runs == 1 else f"{runs} runs"
    return Benchmark(f"ceiling: matrix products only, {label} nvil sbn:200", "ceiling",
                     MatrixProducts(engine, x), BATCH_SIZE * runs, "nvil", "sbn:200",
                     {"batch_size": BATCH_SIZE, "runs": runs, "engine": "fused"})


def evaluation_benchmark(examples: int, device: str = "cpu",
                         data: datasets.Data | None = None) -> Benchmark:
    """The importance-sampled bound with K=5000 on `examples` rows of MNIST's shape, sbn:200, as
    the eval command computes it (bench.evaluation.evaluate)."""
    data = data if data is not None else random_data("binary")
    spec = RunSpec(model=EVALUATION_MODEL, dataset=DATASET_FOR_KIND["binary"], device=device)
    built = build(spec, data=data)
    model, inference = built.algorithm.model, built.algorithm.inference
    rows = data.test[:examples]

    def bound():
        return evaluate(model, inference, rows, "iw", IW_SAMPLES, seed=spec.seed,
                        device=built.device)

    return Benchmark(f"iw bound K={IW_SAMPLES} {EVALUATION_MODEL}", "evaluation", bound,
                     rows.shape[0], None, EVALUATION_MODEL,
                     {"bound": "iw", "k": IW_SAMPLES, "examples_per_call": rows.shape[0]})


def yardstick_benchmark(device: str = "cpu", data: datasets.Data | None = None) -> Benchmark:
    """The plain-PyTorch NVIL update for sbn:200 at minibatch 20, on shuffled minibatches."""
    data = data if data is not None else random_data("binary")
    torch_device = torch.device(device)
    rows = rows_as_tensor(data.train, torch.float32, torch_device)
    mean = torch.as_tensor(data.train_mean, dtype=torch.float32, device=torch_device)
    with torch_device:  # its layers are created on the device
        yardstick = YardstickNVIL(num_features=rows.shape[1], latents=200, feature_mean=mean)
    generator = torch.Generator(device=torch_device).manual_seed(0)
    state = {"order": torch.randperm(rows.shape[0], generator=generator, device=torch_device),
             "position": 0}

    def update():
        # A careful user's minibatch: a fresh permutation every epoch, 20 rows at a time.
        if state["position"] + BATCH_SIZE > rows.shape[0]:
            state["order"] = torch.randperm(rows.shape[0], generator=generator, device=torch_device)
            state["position"] = 0
        index = state["order"][state["position"]:state["position"] + BATCH_SIZE]
        state["position"] += BATCH_SIZE
        return yardstick.step(rows[index])

    return Benchmark("yardstick: plain-PyTorch nvil sbn:200", "yardstick", update, BATCH_SIZE,
                     "nvil", "sbn:200", {"batch_size": BATCH_SIZE, "optimizer": "sgd",
                                         "source": "bench/perf/yardstick.py"})


def all_benchmarks(device: str = "cpu", evaluation_examples: int = 5) -> list[Benchmark]:
    """Every registered algorithm on every benchmark model, then the iw bound; not the yardstick."""
    data = {kind: random_data(kind) for kind in ("binary", "counts")}
    found = [update_benchmark(name, model, device, data[data_kind(model)])
             for name in algorithms.REGISTRY for model in MODELS]
    # The readable path the fused engine replaces, for comparison.
    found.append(update_benchmark("nvil", "sbn:200", device, data["binary"], engine="autograd"))
    found += [batched_update_benchmark(mix, "sbn:200", device, data["binary"])
              for mix in BATCHED_MIXES]
    # What the matrix products alone allow, for one run and for a batch of runs.
    found += [matrix_products_benchmark(runs, device, data["binary"])
              for runs in (1, BATCHED_RUNS)]
    found.append(evaluation_benchmark(evaluation_examples, device, data["binary"]))
    return found


# -- timing ----------------------------------------------------------------------------------------

def synchronizer(device: str) -> Callable[[], None]:
    """Waits for queued GPU work, so that a measurement ends when the work does."""
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        return lambda: torch.cuda.synchronize(torch_device)
    return lambda: None


@dataclass(frozen=True)
class Measurement:
    calls: int
    wall_seconds: float
    cpu_seconds: float      # process CPU time (all threads) during the measurement

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.wall_seconds


def measure(step: Callable[[], object], seconds: float,
            synchronize: Callable[[], None] = lambda: None, min_calls: int = 1) -> Measurement:
    """Call `step` until `seconds` of wall time have passed (at least `min_calls` times)."""
    synchronize()
    cpu_started, started = time.process_time(), time.perf_counter()
    calls = 0
    while True:
        step()
        calls += 1
        synchronize()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and calls >= min_calls:
            return Measurement(calls, elapsed, time.process_time() - cpu_started)


def median_seconds_per_call(step: Callable[[], object], seconds: float,
                            synchronize: Callable[[], None] = lambda: None,
                            min_calls: int = 5) -> float:
    """The median time of single calls over about `seconds` (what pytest-benchmark reports)."""
    times = []
    started = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - started < seconds:
        call_started = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - call_started)
    return statistics.median(times)


@dataclass
class Interleaved:
    """Raw measurements of one run: the yardstick's in order, and per candidate its measurements,
    each with the mean yardstick examples/s of the two yardstick measurements around it."""

    yardstick: list[Measurement]
    candidates: dict[str, list[tuple[Measurement, float]]]


def run_interleaved(yardstick: Benchmark, candidates: list[Benchmark], repeats: int,
                    seconds: float, warmup_seconds: float, synchronize=lambda: None,
                    report: Callable[[str], None] | None = None) -> Interleaved:
    """Y C1 Y C2 ... Cn Y, `repeats` times, after one untimed warm-up measurement of each."""
    for benchmark in [yardstick, *candidates]:
        measure(benchmark.step, warmup_seconds, synchronize)
    yardstick_runs: list[Measurement] = []
    candidate_runs: dict[str, list[tuple[Measurement, float]]] = {c.name: [] for c in candidates}

    def yardstick_rate() -> float:
        run = measure(yardstick.step, seconds, synchronize)
        yardstick_runs.append(run)
        return run.calls_per_s * yardstick.examples_per_call

    for repeat in range(repeats):
        if report is not None:
            report(f"repeat {repeat + 1}/{repeats}: yardstick and {len(candidates)} benchmarks, "
                   f"{seconds:g} s each")
        before = yardstick_rate()
        for candidate in candidates:
            run = measure(candidate.step, seconds, synchronize)
            after = yardstick_rate()
            candidate_runs[candidate.name].append((run, (before + after) / 2))
            before = after
    return Interleaved(yardstick_runs, candidate_runs)


def summarise(benchmark: Benchmark, runs: list[Measurement],
              yardstick_examples_per_s: list[float] | None) -> dict:
    """Medians of one benchmark's measurements; its ratio to the yardstick beside each of them
    (None: this is the yardstick, whose ratio is 1 by definition and whose range is its spread)."""
    examples_per_s = [run.calls_per_s * benchmark.examples_per_call for run in runs]
    median_examples = statistics.median(examples_per_s)
    if yardstick_examples_per_s is None:
        ratios = [value / median_examples for value in examples_per_s]
        ratio = 1.0
    else:
        pairs = zip(examples_per_s, yardstick_examples_per_s, strict=True)
        ratios = [value / reference for value, reference in pairs]
        ratio = statistics.median(ratios)
    calls_per_s = statistics.median(run.calls_per_s for run in runs)
    entry = {
        "name": benchmark.name,
        "kind": benchmark.kind,
        "algorithm": benchmark.algorithm,
        "model": benchmark.model,
        "updates_per_s": None if benchmark.kind == "evaluation" else calls_per_s,
        "examples_per_s": median_examples,
        "ratio_to_yardstick": ratio,
        "ratio_range": [min(ratios), max(ratios)],
        "cpu_per_wall": sum(r.cpu_seconds for r in runs) / sum(r.wall_seconds for r in runs),
        "measurements": len(runs),
        "calls": sum(run.calls for run in runs),
        **benchmark.details,
    }
    if benchmark.kind == "evaluation":
        entry["calls_per_s"] = calls_per_s
        entry["mnist_test_images"] = MNIST_TEST_IMAGES
        entry["projected_mnist_test_seconds"] = MNIST_TEST_IMAGES / median_examples
    return entry


def summarise_run(yardstick: Benchmark, candidates: list[Benchmark], raw: Interleaved) -> dict:
    """The yardstick's entry and every candidate's, in the candidates' order."""
    entries = []
    for candidate in candidates:
        pairs = raw.candidates[candidate.name]
        entries.append(summarise(candidate, [run for run, _ in pairs],
                                 [reference for _, reference in pairs]))
    return {"yardstick": summarise(yardstick, raw.yardstick, None), "benchmarks": entries}
