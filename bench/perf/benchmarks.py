"""What `python -m bench perf` and `tests/perf` measure, and how.

Architectures (model family and inference network): sbn:200, sbn:200-200-200, fdarn:200 and
sbn:200 with an autoregressive inference network (Table 2), on 784 pixels (MNIST's shape);
doc-sbn:50 and doc-fdarn:50 on a 2,000-word vocabulary (20 Newsgroups' size); gauss:200, one
layer of 200 Gaussian latents under Bernoulli pixels (the estimators for continuous latents: NVIL,
REINFORCE, the VAE, short-run inference). Each architecture
has its own yardstick (below), and every figure is a ratio to its architecture's yardstick.

Measured:
    update      one full training update of each registered algorithm (default preset) on every
                architecture at minibatch 20, exactly as training does it, and one update of 16
                runs of each registered algorithm trained together on every architecture (its
                presets that stack with its default cycled over 16 seeds: for NVIL Figure 1's
                eight variance-reduction combinations; batched_runs).
    evaluation  the importance-sampled bound with K=5000 on sbn:200 with 784 pixels, through
                bench.evaluation.evaluate exactly as `python -m bench eval RUN --k 5000` calls it
                (its own seeded stream, its batches), on a few examples per call; the time for the
                10,000 MNIST test images is projected from its examples/s. The eval command scores
                100 examples per call, but the bound's cost per example does not depend on that:
                its chunks hold samples x examples rows (bench/evaluation.py).
    ceiling     the matrix products alone of one NVIL update of the architecture (MatrixProducts),
                for 1 and for 16 runs: the most any update doing those products could reach.
    yardstick   the NVIL update of the architecture written in plain PyTorch, one run
                (bench/perf/yardstick.py).

The training engine is reached ONLY through the section marked "THE TRAINING ENGINE" below
(make_training_update and make_bound_evaluation): everything else here (yardsticks, ceilings,
data, timing) is plain PyTorch and knows nothing of it.

Why ratios: absolute speed on a shared machine says as much about the other jobs as about the code.
Every figure is therefore also given as a ratio of examples/s to its yardstick's examples/s,
measured in the same process, on the same device and threads, interleaved with the candidates of
that yardstick: Y C1 Y C2 ... Cn Y for each yardstick in turn, repeated. Each candidate measurement
is divided by the mean of the two yardstick measurements on either side of it, so a load change
during the run moves both, and the reported figures are medians over the repeats (rates and ratios
alike), with the range of the ratios as a sign of how noisy the run was. A ratio above 1 is faster
than the yardstick. For the evaluation the ratio compares unlike work (scoring an example with 5000
samples against training on it); it serves to normalise its speed for the machine, not to compare
the two. The same holds for wake-sleep against an NVIL yardstick.

Also recorded: process CPU time over wall time. On an idle machine it is about the number of
threads actually busy; well below that, the process waited for a CPU (the machine was loaded).

Data: random binary rows of MNIST's shape and random word counts over 2,000 words (Poisson lengths
around 100 words), made here: no dataset is read. The cost of an update does not depend on the
values of the data, only on its shape.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

import algorithms
import datasets
from bench.errors import UserError
from bench.perf.yardstick import YARDSTICKS
from bench.specs import RunSpec
from datasets._data import column_mean
from models import FAMILIES, ModelSpec

BATCH_SIZE = 20
MNIST_PIXELS = 784
VOCABULARY_WORDS = 2000
MEAN_DOCUMENT_WORDS = 100
IW_SAMPLES = 5000
BASELINE_HIDDEN = 100  # tanh units of NVIL's input-dependent baselines (§4.1)
MNIST_TEST_IMAGES = 10_000
TRAINING_ROWS = 2000  # rows of random data per dataset: 100 minibatches an epoch
DATA_NOTE = (f"random binary data of MNIST shape ({MNIST_PIXELS} pixels) and random word counts "
             f"over a {VOCABULARY_WORDS:,}-word vocabulary; no dataset is read")
# The dataset name only picks the paper's learning rate (bench.specs); the rows are random.
DATASET_FOR_KIND = {"binary": "mnist", "counts": "20news"}


@dataclass(frozen=True)
class Architecture:
    """A model (family and layer sizes, as users write it), its inference network, and the
    optimizer its runs and its yardstick use (None: the paper's rate the estimator declares)."""

    model: str
    inference: str = "factorial"
    optimizer: str = "sgd"
    learning_rate: float | None = None

    @property
    def name(self) -> str:
        return self.model if self.inference == "factorial" else \
            f"{self.model} (inference={self.inference})"

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.parse(self.model, inference=self.inference)

    @property
    def data_kind(self) -> str:
        return self.spec.data_kind


ARCHITECTURES = (Architecture("sbn:200"), Architecture("sbn:200-200-200"),
                 Architecture("fdarn:200"), Architecture("sbn:200", "autoregressive"),
                 Architecture("doc-sbn:50"), Architecture("doc-fdarn:50"),
                 # Under SGD at the paper's SBN rate the score-function updates of Gaussian
                 # latents diverge within a few updates: the short-run suite's Adam at 1e-3.
                 Architecture("gauss:200", optimizer="adam", learning_rate=1e-3))
MODELS = tuple(dict.fromkeys(a.model for a in ARCHITECTURES))
EVALUATION_ARCHITECTURE = ARCHITECTURES[0]
EVALUATION_MODEL = EVALUATION_ARCHITECTURE.model


def architecture(value: str | Architecture) -> Architecture:
    """The architecture a name means: the benchmarked one of that name (with its optimizer),
    else the model with a factorial inference network under the suite's default optimizer."""
    if isinstance(value, Architecture):
        return value
    return next((a for a in ARCHITECTURES if a.name == value), Architecture(value))


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


def data_kind(model: str | Architecture) -> str:
    return architecture(model).data_kind


def num_features(kind: str) -> int:
    return MNIST_PIXELS if kind == "binary" else VOCABULARY_WORDS


def dense_rows(rows, device: torch.device) -> torch.Tensor:
    """Rows (numpy or scipy.sparse) as a dense float32 tensor on `device`."""
    array = rows.toarray() if hasattr(rows, "toarray") else np.asarray(rows)
    return torch.as_tensor(array, dtype=torch.float32, device=device)


# -- the steps being measured ----------------------------------------------------------------------

@dataclass
class Benchmark:
    """A callable doing one unit of work (one update, or one bound on `examples_per_call` rows),
    and the name of the yardstick it is measured against."""

    name: str
    kind: str                  # 'update', 'evaluation', 'ceiling' or 'yardstick'
    step: Callable[[], object]
    examples_per_call: int
    algorithm: str | None = None
    model: str | None = None
    yardstick: str = EVALUATION_ARCHITECTURE.name
    details: dict = field(default_factory=dict)


def training_spec(algorithm: str, model: str | Architecture, device: str = "cpu",
                  seed: int = 0) -> RunSpec:
    arch = architecture(model)
    return RunSpec(algorithm=algorithm, model=arch.model, inference=arch.inference,
                   dataset=DATASET_FOR_KIND[arch.data_kind], batch_size=BATCH_SIZE,
                   optimizer=arch.optimizer, learning_rate=arch.learning_rate,
                   device=device, seed=seed)


# ==================================================================================================
# THE TRAINING ENGINE. Every call the benchmarks make into the training and evaluation code is in
# this section, in two functions: make_training_update (one update of R runs) and
# make_bound_evaluation (the importance-sampled bound of one run's model). A new engine is
# measured by re-pointing these two; nothing else in bench/perf needs to change.
# ==================================================================================================

@dataclass
class TrainingUpdate:
    """What make_training_update returns."""

    step: Callable[[], None]   # one update of every run; raises if a run diverged
    engine: str                # what computes the update, for the tables
    runs: int
    handles: list = field(default_factory=list)  # the RunGroups doing it (for tests)
    evaluations_per_example: float = 1.0         # model evaluations per example, mean over runs
    compile_seconds: float | None = None         # torch.compile's first three updates


def make_training_update(specs: list[RunSpec], data: datasets.Data,
                         compiled: bool = False) -> TrainingUpdate:
    """One update of every run in `specs` (which share model, dataset, minibatch size and device)
    on `data`, exactly as training does it: each run's next minibatch from its own data order, its
    own random stream, its learning rates. Runs that can share a computation are one RunGroup
    (bench/training.py), as `bench run` groups them (by estimator and structural options); the
    groups update one after the other. No run evaluates or writes anything while measured.
    `compiled`: each estimator's step (sampling, scores, learning signals and surrogate losses;
    not the backward pass and the optimizer step) through torch.compile, compiled by three
    warm-up updates whose time is returned as `compile_seconds`."""
    from bench.batched import stacked_groups
    from bench.training import RunGroup, build

    never = 10 ** 15  # no validation, hence no checkpoint, while measured
    specs = [replace(spec, updates=never, eval_interval=never) for spec in specs]
    groups = [RunGroup(build([specs[i] for i in members], data=data),
                      [Path("unused-by-benchmarks")] * len(members), progress=False)
              for members in stacked_groups(specs, max_runs=len(specs))]

    def update() -> None:
        for group in groups:
            group.update()
            for run in group.runs:
                if run.state.status != "running":
                    raise RuntimeError(f"{run.spec.run_name()} diverged after "
                                       f"{run.state.update} updates while being measured")

    engine = "stacked" + "".join(f" x{group.num_runs}" for group in groups if group.num_runs > 1)
    evaluations = [group.algorithm.evaluations_per_example(run.options)
                   for group in groups for run in group.runs]
    compile_seconds = None
    if compiled:
        for group in groups:
            group.algorithm.step = torch.compile(group.algorithm.step)
        started = time.perf_counter()
        for _ in range(3):
            update()
        compile_seconds = time.perf_counter() - started
        engine += " (torch.compile)"
    return TrainingUpdate(update, engine, len(specs), groups, statistics.fmean(evaluations),
                          compile_seconds)


def make_bound_evaluation(spec: RunSpec, data: datasets.Data, bound: str, samples: int,
                          examples: int) -> Callable[[], object]:
    """The bound with `samples` samples on the first `examples` test rows of `data`, for the model
    `spec` builds, as `python -m bench eval` computes it (bench.evaluation.evaluate)."""
    from bench.evaluation import evaluate
    from bench.training import build

    built = build(spec, data=data)
    model, inference = built.algorithm.model, built.algorithm.inference
    rows = data.test[:examples]

    def evaluation():
        return evaluate(model, inference, rows, bound, samples, seed=spec.seed,
                        device=built.device, counts=data.kind == "counts")

    return evaluation

# ==================================================================================================
# End of THE TRAINING ENGINE.
# ==================================================================================================


# Benchmark names, known before anything is built (so that --only builds only what it measures).
def update_name(algorithm: str, model: str | Architecture) -> str:
    return f"update {algorithm} {architecture(model).name}"


def batched_name(algorithm: str, model: str | Architecture, runs: int = 16) -> str:
    return f"update {runs} runs batched: {algorithm} {architecture(model).name}"


def ceiling_name(runs: int, model: str | Architecture) -> str:
    label = "1 run" if runs == 1 else f"{runs} runs"
    return f"ceiling: matrix products only, {label} nvil {architecture(model).name}"


EVALUATION_NAME = f"iw bound K={IW_SAMPLES} {EVALUATION_MODEL}"


def update_benchmark(algorithm: str, model: str | Architecture, device: str = "cpu",
                     data: datasets.Data | None = None, compiled: bool = False) -> Benchmark:
    """One training update of `algorithm` (default preset) on `model`, at minibatch 20
    (`compiled`: the estimator's step through torch.compile, make_training_update)."""
    arch = architecture(model)
    spec = training_spec(algorithm, arch, device)
    data = data if data is not None else random_data(arch.data_kind)
    update = make_training_update([spec], data, compiled)
    details = {"compile_seconds": update.compile_seconds} if compiled else {}
    return Benchmark(compiled_name(algorithm, arch) if compiled else update_name(algorithm, arch),
                     "update", update.step, BATCH_SIZE, algorithm, arch.model, arch.name,
                     {"inference": arch.inference, "batch_size": BATCH_SIZE,
                      "optimizer": spec.optimizer, "learning_rate": spec.resolved_learning_rate,
                      "engine": update.engine, **details,
                      "model_evaluations_per_example": update.evaluations_per_example})


# torch.compile of NVIL's step on sbn:200 (an experiment beside the gated benchmarks: how much of
# the one-run gap to the products ceiling a compiler closes; the compile time is in its details).
COMPILED = ("nvil", EVALUATION_ARCHITECTURE)


def compiled_name(algorithm: str, model: str | Architecture) -> str:
    return f"{update_name(algorithm, model)} (torch.compile)"


def compiled_update_benchmark(algorithm: str = COMPILED[0], model: str | Architecture = COMPILED[1],
                              device: str = "cpu", data: datasets.Data | None = None) -> Benchmark:
    """One training update as update_benchmark's, the estimator's step compiled."""
    return update_benchmark(algorithm, model, device, data, compiled=True)


# Many runs in one batched computation, for every registered estimator on every architecture:
# the estimator's distinct presets that stack with its default (for NVIL, Figure 1's eight
# variance-reduction combinations), cycled over 16 runs of different seeds, as a suite batches
# them; its default alone if it has no such presets.
BATCHED_RUNS = 16


def batched_runs(name: str) -> list[str]:
    """The 16 algorithm names (NAME or NAME:PRESET) of the batched benchmark of an estimator."""
    cls = algorithms.REGISTRY[name]
    default = cls.batch_key(cls.resolve_options())
    texts, seen = [], set()
    for preset in cls.presets:
        options = cls.resolve_options(preset)
        if cls.batch_key(options) == default and repr(options) not in seen:
            seen.add(repr(options))
            texts.append(f"{name}:{preset}" if preset else name)
    texts = texts or [name]
    return [texts[i % len(texts)] for i in range(BATCHED_RUNS)]


def batched_update_benchmark(algorithm: str, model: str | Architecture = "sbn:200",
                             device: str = "cpu", data: datasets.Data | None = None) -> Benchmark:
    """One update of 16 runs (seeds 0..15, batched_runs) of a registered estimator trained
    together; examples/s counts every run's minibatch."""
    arch = architecture(model)
    data = data if data is not None else random_data(arch.data_kind)
    names = batched_runs(algorithm)
    specs = [training_spec(name, arch, device, seed) for seed, name in enumerate(names)]
    update = make_training_update(specs, data)
    return Benchmark(batched_name(algorithm, arch, update.runs), "update",
                     update.step, BATCH_SIZE * update.runs, algorithm, arch.model, arch.name,
                     {"inference": arch.inference, "batch_size": BATCH_SIZE, "runs": update.runs,
                      "engine": update.engine, "algorithms": sorted(set(names)),
                      "model_evaluations_per_example": update.evaluations_per_example,
                      # the products its runs stream (the gate compares against both)
                      "products_ceiling": ceiling_name(update.runs, arch)})


# -- the ceilings: the matrix products of one update alone -----------------------------------------

def update_products(model: str | Architecture) -> list[tuple[str, int, int]]:
    """(weight, context size, output size) of every weight matrix one NVIL update of the
    architecture multiplies by (default preset: an input-dependent baseline per learning signal,
    local signals): Q's layers and, for an autoregressive Q, their within-layer weights; the
    log sigma heads of a Gaussian Q; the visible layer, the conditionals and, for fDARN, the
    prior's within-layer weights; each
    baseline's hidden and output layers."""
    arch = architecture(model)
    spec = arch.spec
    _, autoregressive_prior, _, _ = FAMILIES[spec.family]
    latents = tuple(reversed(spec.layers))  # bottom-up: latents[0] feeds the data
    features = num_features(spec.data_kind)
    contexts = (features, *latents[:-1])
    products = [(f"Q layer {i + 1}", c, h) for i, (c, h) in enumerate(zip(contexts, latents, strict=True))]
    if arch.inference == "autoregressive":
        products += [(f"Q layer {i + 1} within", h, h) for i, h in enumerate(latents)]
    gaussian = tuple(reversed(spec.latent_kinds))
    products += [(f"Q layer {i + 1} log scale", c, h)
                 for i, (c, h, kind) in enumerate(zip(contexts, latents, gaussian, strict=True))
                 if kind == "gaussian"]
    products.append(("P visible", latents[0], features))
    products += [(f"P layer {i + 1}", above, below)
                 for i, (below, above) in enumerate(zip(latents[:-1], latents[1:], strict=True))]
    if autoregressive_prior:
        products.append(("P prior within", latents[-1], latents[-1]))
    for j, context in enumerate(contexts):
        products += [(f"baseline {j + 1} hidden", context, BASELINE_HIDDEN),
                     (f"baseline {j + 1} output", BASELINE_HIDDEN, 1)]
    return products


class MatrixProducts:
    """Only the matrix products of one NVIL update of an architecture, for `runs` runs: for every
    weight matrix W (C, H) of the update (update_products) its forward product, logits = context W
    + b on the minibatch, and its weight update, W += rate * context^T delta, with weights
    stored (C, H) as a fast engine keeps them. One run uses 2-D products (addmm), several runs
    batched products over a leading run dimension (baddbmm). Nothing else of the update runs: no
    sampling, no element-wise work, no autograd. Its ratio to the yardstick is therefore a
    ceiling: the most any update doing these products could reach if everything else took no
    time. (Backpropagation through the baseline's tanh is a (B, 1) x (1, 100) outer product,
    element-wise work, and is left out.) Plain PyTorch: no engine of the suite is involved."""

    # Small enough that the updates leave the weights unchanged in float32, and not zero, so that
    # no library can skip the product.
    RATE = 1e-30

    def __init__(self, products: list[tuple[str, int, int]], runs: int, batch: int = BATCH_SIZE,
                 device: str | torch.device = "cpu", seed: int = 0):
        generator = torch.Generator(device=device).manual_seed(seed)
        lead = () if runs == 1 else (runs,)

        def random(*shape):
            return torch.rand(*lead, *shape, generator=generator, device=device)

        self.runs = runs
        self.products = products
        # Binary contexts, as the latent samples are; the data's context is as dense.
        self.weights = [(random(c, h) - 0.5) * 0.02 for _, c, h in products]
        self.biases = [random(1, h) for _, _, h in products]
        self.contexts = [(random(batch, c) < 0.5).float() for _, c, _ in products]
        self.deltas = [random(batch, h) - 0.5 for _, _, h in products]

    def __call__(self) -> None:
        if self.runs == 1:
            for weight, bias, context in zip(self.weights, self.biases, self.contexts, strict=True):
                torch.addmm(bias, context, weight)
            for weight, context, delta in zip(self.weights, self.contexts, self.deltas, strict=True):
                weight.addmm_(context.t(), delta, alpha=self.RATE)
        else:
            for weight, bias, context in zip(self.weights, self.biases, self.contexts, strict=True):
                torch.baddbmm(bias, context, weight)
            for weight, context, delta in zip(self.weights, self.contexts, self.deltas, strict=True):
                weight.baddbmm_(context.transpose(1, 2), delta, alpha=self.RATE)


def matrix_products_benchmark(runs: int, model: str | Architecture = "sbn:200",
                              device: str = "cpu", data: datasets.Data | None = None) -> Benchmark:
    """The ceiling for `runs` NVIL runs of the architecture at minibatch 20 (MatrixProducts).
    `data` is not used (the products' cost depends only on shapes); it is accepted for symmetry."""
    arch = architecture(model)
    products = update_products(arch)
    return Benchmark(ceiling_name(runs, arch), "ceiling",
                     MatrixProducts(products, runs, BATCH_SIZE, device), BATCH_SIZE * runs,
                     "nvil", arch.model, arch.name,
                     {"inference": arch.inference, "batch_size": BATCH_SIZE, "runs": runs,
                      "products": len(products),
                      "mflop_per_update": round(4 * BATCH_SIZE * runs
                                                * sum(c * h for _, c, h in products) / 1e6, 2)})


def evaluation_benchmark(examples: int, device: str = "cpu",
                         data: datasets.Data | None = None) -> Benchmark:
    """The importance-sampled bound with K=5000 on `examples` rows of MNIST's shape, sbn:200, as
    the eval command computes it."""
    data = data if data is not None else random_data("binary")
    spec = RunSpec(model=EVALUATION_MODEL, dataset=DATASET_FOR_KIND["binary"], device=device)
    rows = min(examples, data.test.shape[0])
    bound = make_bound_evaluation(spec, data, "iw", IW_SAMPLES, rows)
    return Benchmark(EVALUATION_NAME, "evaluation", bound,
                     rows, None, EVALUATION_MODEL, EVALUATION_ARCHITECTURE.name,
                     {"bound": "iw", "k": IW_SAMPLES, "examples_per_call": rows})


# -- the yardsticks --------------------------------------------------------------------------------

def yardstick_benchmark(model: str | Architecture = "sbn:200", device: str = "cpu",
                        data: datasets.Data | None = None) -> Benchmark:
    """The plain-PyTorch NVIL update of the architecture at minibatch 20, on shuffled
    minibatches (bench/perf/yardstick.py)."""
    arch = architecture(model)
    spec = arch.spec
    data = data if data is not None else random_data(spec.data_kind)
    torch_device = torch.device(device)
    rows = dense_rows(data.train, torch_device)  # a careful user's documents: dense, once
    mean = torch.as_tensor(data.train_mean, dtype=torch.float32, device=torch_device)
    cls = YARDSTICKS[(spec.family, arch.inference)]
    learning_rate = training_spec("nvil", arch).resolved_learning_rate
    with torch_device:  # its layers are created on the device
        yardstick = cls(num_features=rows.shape[1], latents=tuple(reversed(spec.layers)),
                        feature_mean=mean, learning_rate=learning_rate,
                        optimizer=arch.optimizer)
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

    return Benchmark(f"yardstick: plain-PyTorch nvil {arch.name}", "yardstick", update,
                     BATCH_SIZE, "nvil", arch.model, arch.name,
                     {"inference": arch.inference, "batch_size": BATCH_SIZE, "optimizer": arch.optimizer,
                      "source": f"bench/perf/yardstick.py ({cls.__name__})"})


def yardsticks_for(candidates: list[Benchmark], device: str = "cpu",
                   data: dict | None = None) -> list[Benchmark]:
    """The yardstick of every architecture the candidates name, in their order."""
    names = list(dict.fromkeys(c.yardstick for c in candidates))
    by_name = {a.name: a for a in ARCHITECTURES}
    data = data or {}
    return [yardstick_benchmark(by_name[name], device, data.get(by_name[name].data_kind))
            for name in names]


@functools.cache
def supports(algorithm: str, model: str | Architecture) -> bool:
    """Whether the estimator accepts the architecture's networks (one that needs factorial
    inference networks refuses an autoregressive one): built once on one input feature."""
    arch = architecture(model)
    cls, preset = algorithms.parse_name(algorithm)
    networks = arch.spec.build(1)
    try:
        cls(*networks, cls.resolve_options(preset))
    except UserError:
        return False
    return True


def benchmark_factories(device: str = "cpu", evaluation_examples: int = 5,
                        data: dict | None = None) -> dict[str, Callable[[], Benchmark]]:
    """Name -> a function building that benchmark, for every benchmark of all_benchmarks, in its
    order: every registered estimator on every architecture it accepts."""
    data = data if data is not None else {kind: random_data(kind) for kind in ("binary", "counts")}
    found: dict[str, Callable[[], Benchmark]] = {}
    pairs = [(arch, name) for arch in ARCHITECTURES for name in algorithms.REGISTRY
             if supports(name, arch)]
    for arch, name in pairs:
        found[update_name(name, arch)] = (
            lambda n=name, a=arch: update_benchmark(n, a, device, data[a.data_kind]))
    for arch, name in pairs:
        found[batched_name(name, arch, BATCHED_RUNS)] = (
            lambda n=name, a=arch: batched_update_benchmark(n, a, device, data[a.data_kind]))
    found[compiled_name(*COMPILED)] = lambda: compiled_update_benchmark(device=device,
                                                                      data=data["binary"])
    # What the matrix products alone allow, for one run and for a batch of runs.
    for arch in ARCHITECTURES:
        for runs in (1, BATCHED_RUNS):
            found[ceiling_name(runs, arch)] = (
                lambda r=runs, a=arch: matrix_products_benchmark(r, a, device))
    found[EVALUATION_NAME] = lambda: evaluation_benchmark(evaluation_examples, device,
                                                          data["binary"])
    return found


def all_benchmarks(device: str = "cpu", evaluation_examples: int = 5,
                   data: dict | None = None, only: list[str] | None = None) -> list[Benchmark]:
    """Every registered algorithm on every architecture, 16 runs together, the ceilings, then the
    iw bound; not the yardsticks (yardsticks_for). With `only`, just the benchmarks whose name
    contains one of its strings (and only those are built)."""
    factories = benchmark_factories(device, evaluation_examples, data)
    return [build() for name, build in factories.items()
            if not only or any(text in name for text in only)]


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
    """Raw measurements of one run: each yardstick's in order, and per candidate its measurements,
    each with the mean yardstick examples/s of the two measurements of its yardstick around it."""

    yardsticks: dict[str, list[Measurement]]
    candidates: dict[str, list[tuple[Measurement, float]]]


def run_interleaved(yardsticks: list[Benchmark], candidates: list[Benchmark], repeats: int,
                    seconds: float, warmup_seconds: float, synchronize=lambda: None,
                    report: Callable[[str], None] | None = None) -> Interleaved:
    """For each yardstick Y and its candidates C1..Cn: Y C1 Y C2 ... Cn Y; all of that `repeats`
    times, after one untimed warm-up measurement of each benchmark."""
    by_name = {y.yardstick: y for y in yardsticks}
    missing = {c.yardstick for c in candidates} - set(by_name)
    if missing:
        raise ValueError(f"no yardstick given for {', '.join(sorted(missing))}")
    groups = [(y, [c for c in candidates if c.yardstick == y.yardstick]) for y in yardsticks]
    for benchmark in [*yardsticks, *candidates]:
        measure(benchmark.step, warmup_seconds, synchronize)
    yardstick_runs: dict[str, list[Measurement]] = {y.name: [] for y in yardsticks}
    candidate_runs: dict[str, list[tuple[Measurement, float]]] = {c.name: [] for c in candidates}

    def yardstick_rate(yardstick: Benchmark) -> float:
        run = measure(yardstick.step, seconds, synchronize)
        yardstick_runs[yardstick.name].append(run)
        return run.calls_per_s * yardstick.examples_per_call

    for repeat in range(repeats):
        if report is not None:
            report(f"repeat {repeat + 1}/{repeats}: {len(yardsticks)} yardsticks and "
                   f"{len(candidates)} benchmarks, {seconds:g} s each")
        for yardstick, members in groups:
            if not members:
                continue
            before = yardstick_rate(yardstick)
            for candidate in members:
                run = measure(candidate.step, seconds, synchronize)
                after = yardstick_rate(yardstick)
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
        "yardstick": benchmark.yardstick,
        "updates_per_s": None if benchmark.kind == "evaluation" else calls_per_s,
        "examples_per_s": median_examples,
        "ratio_to_yardstick": ratio,
        "ratio_range": [min(ratios), max(ratios)],
        "cpu_per_wall": sum(r.cpu_seconds for r in runs) / sum(r.wall_seconds for r in runs),
        "measurements": len(runs),
        "calls": sum(run.calls for run in runs),
        **benchmark.details,
    }
    if "model_evaluations_per_example" in benchmark.details:  # an estimator's cost differs
        entry["model_evaluations_per_s"] = (median_examples
                                            * benchmark.details["model_evaluations_per_example"])
    if benchmark.kind == "evaluation":
        entry["calls_per_s"] = calls_per_s
        entry["mnist_test_images"] = MNIST_TEST_IMAGES
        entry["projected_mnist_test_seconds"] = MNIST_TEST_IMAGES / median_examples
    return entry


def summarise_run(yardsticks: list[Benchmark], candidates: list[Benchmark],
                  raw: Interleaved) -> dict:
    """Every yardstick's entry that was measured, and every candidate's, in the candidates'
    order."""
    entries = []
    for candidate in candidates:
        pairs = raw.candidates[candidate.name]
        entries.append(summarise(candidate, [run for run, _ in pairs],
                                 [reference for _, reference in pairs]))
    measured = [summarise(y, raw.yardsticks[y.name], None) for y in yardsticks
                if raw.yardsticks[y.name]]
    return {"yardsticks": measured, "benchmarks": entries}
