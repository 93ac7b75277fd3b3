"""models/ais.py against exact log p(x): enumeration for binary latents, numerical integration
(models/exact.py) for Gaussian ones.

With many steps AIS must reach the exact value within its own spread (the delta-method standard
error of log (1/S) sum_s w_s), and the mean over chains of log w must stay below it (Jensen); a
kernel that does not leave f_beta invariant (no Metropolis correction, a wrong acceptance ratio)
fails the same check. On data simulated from the model the forward and reverse chains sandwich
the exact value, and their gap shrinks as the steps grow. T = 1 is importance sampling from the
prior, exactly. Stacked runs get the numbers they get alone; the bound "ais" of bench/evaluation.py
and `bench eval --bound ais --steps N` record their steps.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import models.ais as ais_module
from bench.check import tiny_model, tiny_problem
from bench.errors import UserError
from bench.evaluation import BOUNDS, QUANTITY, evaluate, evaluate_runs, log_likelihood_bound
from models.ais import AISOptions, ais, bidirectional_ais, schedule, simulate
from models.exact import exact_log_likelihood, gaussian_exact_log_likelihood
from models.noise import draw as draw_noise

pytestmark = pytest.mark.usefixtures("single_thread")

#: |AIS - exact| within this many standard errors (10 examples per model: Bonferroni at ~1e-4)
Z = 4.5


def generator(seed: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed)]


def exact(model, x) -> torch.Tensor:
    with torch.no_grad():
        return exact_log_likelihood(model, x)[0]


def agrees(result, truth: torch.Tensor) -> bool:
    """AIS within Z standard errors of the truth on every example, and the chains' mean log
    weight not above it (beyond Z standard errors of that mean)."""
    estimate, error = result.log_likelihood[0], result.standard_error[0]
    weights = result.log_weights[0]
    mean_log_weight = weights.mean(0)
    mean_error = weights.std(0) / math.sqrt(weights.shape[0])
    close = ((estimate - truth).abs() <= Z * error + 1e-3).all()
    jensen = (mean_log_weight <= truth + Z * mean_error + 1e-3).all()
    return bool(close and jensen)


# -- the schedule and the T = 1 identity ---------------------------------------------------------

def test_schedules_run_from_zero_to_one_and_rise():
    for kind in ("sigmoid", "linear"):
        betas = schedule(50, kind)
        assert betas.shape == (51,) and betas[0] == 0 and betas[-1] == 1
        assert (betas.diff() > 0).all()
    sigmoid = schedule(50)
    # small steps at both ends, symmetric about the middle
    assert sigmoid[1] < 1 / 50 and 1 - sigmoid[-2] < 1 / 50
    assert torch.allclose(sigmoid + sigmoid.flip(0), torch.ones(51, dtype=torch.float64))
    with pytest.raises(UserError, match="at least 1 step"):
        schedule(0)
    with pytest.raises(UserError, match="valid AIS schedules: linear, sigmoid"):
        schedule(5, "cosine")
    with pytest.raises(UserError, match="valid AIS binary kernels"):
        AISOptions(binary_kernel="hmc")


@pytest.mark.parametrize("spec", ["sbn:2-3", "gauss:1-1", "gauss:2b-1"])
def test_one_step_is_importance_sampling_from_the_prior(spec):
    """T = 1: no transition, log w = log p(x | h) for h drawn ancestrally from the prior with the
    run's generator, the prior's layer first."""
    model, _, x = tiny_problem(spec, num_features=5, batch_size=6, seed=1)
    result = ais(model, x, chains=7, steps=1, generators=generator(3))
    layers = [model.prior] + list(reversed(model.conditionals))
    noise = draw_noise({"prior": [layer.noise(7, 6) for layer in layers]}, generator(3),
                       torch.float64)["prior"]
    with torch.no_grad():
        h = [model.prior.sample(None, noise[0])]
        for layer, layer_noise in zip(reversed(model.conditionals), noise[1:], strict=True):
            h.insert(0, layer.sample(h[0], layer_noise))
        expected = model.visible.log_prob(x, h[0])
    assert result.log_weights.shape == (1, 7, 6)
    torch.testing.assert_close(result.log_weights, expected, rtol=0, atol=1e-12)
    assert all(a is None for a in result.acceptance)


# -- exactness -----------------------------------------------------------------------------------

EXACTNESS = [
    ("sbn:2-3", AISOptions()),                       # DMALA flips
    ("sbn:2-3", AISOptions(binary_kernel="mh")),     # blind flips
    ("sbn:2-3", AISOptions(binary_kernel="gibbs")),
    ("fdarn:3", AISOptions()),                       # autoregressive prior
    ("nsbn:3/4-4", AISOptions()),                    # MLP conditionals
    ("doc-sbn:3", AISOptions()),                     # multinomial visibles
    ("gauss:1", AISOptions()),                       # HMC
    ("gauss:2", AISOptions()),
    ("gauss:1-1", AISOptions()),
    ("gauss:1-1", AISOptions(leapfrog_steps=1, adapt="online")),   # MALA
    ("gauss:2b-1", AISOptions()),                    # binary layer above a Gaussian one
    ("gauss:1/3", AISOptions(schedule="linear")),    # MLP Gaussian conditional
]
EXACTNESS_IDS = ["sbn-dmala", "sbn-mh", "sbn-gibbs", "fdarn", "nsbn", "doc-sbn", "gauss1-hmc", "gauss2-hmc",
                 "gauss11-hmc", "gauss11-mala-online", "mixed", "gauss-mlp-linear"]


@pytest.mark.parametrize("spec, options", EXACTNESS, ids=EXACTNESS_IDS)
def test_ais_with_many_steps_reaches_the_exact_log_likelihood(spec, options):
    model, _, x = tiny_problem(spec, num_features=5, batch_size=10, seed=0)
    truth = exact(model, x)
    result = ais(model, x, chains=100, steps=200, generators=generator(5), options=options)
    assert result.log_weights.shape == (1, 100, 10)
    assert agrees(result, truth), (result.log_likelihood[0] - truth, result.standard_error[0])
    for kind, acceptance in zip(model.latent_kinds, result.acceptance, strict=True):
        if kind == "gaussian" or options.binary_kernel != "gibbs":
            assert 0.2 < float(acceptance) < 1.0        # the tuned kernels do move
    # few steps: a looser, lower bound on average
    rough = ais(model, x, chains=100, steps=2, generators=generator(6), options=options)
    assert rough.log_weights.mean(1)[0].mean() < result.log_weights.mean(1)[0].mean()


def always_accept(log_ratio, uniform):
    return torch.ones_like(uniform, dtype=torch.bool)


def half_ratio(log_ratio, uniform):
    return torch.log(uniform) < 0.5 * log_ratio


@pytest.mark.parametrize("spec, options, broken, steps", [
    ("gauss:1", AISOptions(adapt="none", step_size=1.0), always_accept, 200),
    ("gauss:2", AISOptions(adapt="none", step_size=1.0, leapfrog_steps=1), always_accept, 200),
    ("gauss:1-1", AISOptions(), half_ratio, 100),
    ("sbn:2-3", AISOptions(), always_accept, 100),
    ("sbn:2-3", AISOptions(), half_ratio, 100),
    ("sbn:2-3", AISOptions(binary_kernel="mh"), always_accept, 200),
    ("gauss:2b-1", AISOptions(binary_kernel="mh"), half_ratio, 100),
], ids=["hmc-no-correction", "mala-no-correction", "hmc-wrong-ratio", "dmala-no-correction",
        "dmala-wrong-ratio", "mh-no-correction", "mixed-mh-wrong-ratio"])
def test_a_broken_kernel_is_caught(monkeypatch, spec, options, broken, steps):
    """The check above, with the Metropolis test replaced by one that always accepts (HMC with a
    large fixed step, or flips, without correction) or accepts by half the log ratio (a wrong
    target): 100 to 200 steps (6 seeds of each were all caught at these settings)."""
    model, _, x = tiny_problem(spec, num_features=5, batch_size=10, seed=0)
    truth = exact(model, x)
    monkeypatch.setattr(ais_module, "_metropolis", broken)
    result = ais(model, x, chains=100, steps=steps, generators=generator(5), options=options)
    assert not agrees(result, truth)


# -- the exact Gaussian integral -----------------------------------------------------------------

@pytest.mark.parametrize("spec", ["gauss:1", "gauss:1-1", "gauss:2b-1"])
def test_gaussian_integration_is_converged_and_matches_prior_sampling(spec):
    model, _, x = tiny_problem(spec, num_features=5, batch_size=6, seed=2)
    with torch.no_grad():
        fine = exact_log_likelihood(model, x)[0]
        coarse = gaussian_exact_log_likelihood(model, x, points=201)[0]
        # p(x) = E_{h ~ p(h)} p(x | h): bounded weights, so plain Monte Carlo is reliable
        result = ais(model, x, chains=200_000, steps=1, generators=generator(8))
    assert (fine - coarse).abs().max() < 1e-9
    estimate, error = result.log_likelihood[0], result.standard_error[0]
    assert ((estimate - fine).abs() < Z * error).all()


def test_exact_needs_few_gaussian_units():
    model, _, x = tiny_problem("gauss:3", num_features=4, batch_size=2, seed=0)
    with pytest.raises(UserError, match="at most 2 Gaussian"):
        exact_log_likelihood(model, x)
    with pytest.raises(UserError, match="use --bound ais"):
        evaluate(model, None, x[0].numpy(), "exact", dtype=torch.float64)


# -- the bidirectional gap ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["sbn:2-3", "gauss:2"])
def test_bidirectional_bounds_sandwich_the_truth_and_close_with_more_steps(spec):
    """On 20 examples simulated from a model of 40 pixels (a posterior far from the prior)."""
    model, _, _ = tiny_problem(spec, num_features=40, batch_size=1, seed=0)
    x, h = simulate(model, 20, generator(9))
    assert x.shape == (1, 20, 40) and h[0].shape == (1, 20, model.latent_sizes[0])
    truth = exact(model, x)
    gaps = []
    for steps in (1, 3, 100):
        result = bidirectional_ais(model, x, h, chains=50, steps=steps, generators=generator(10))
        assert result.forward.log_weights.shape == result.reverse.log_weights.shape == (1, 50, 20)
        gaps.append(float(result.gap.mean()))
    lower_error = result.forward.standard_error[0].square().mean().sqrt() / math.sqrt(20)
    upper_error = result.reverse.standard_error[0].square().mean().sqrt() / math.sqrt(20)
    assert float((result.lower[0] - truth).mean()) < 4 * lower_error
    assert float((result.upper[0] - truth).mean()) > -4 * upper_error
    assert gaps[0] > gaps[1] > gaps[2] and gaps[0] > 0.3 and abs(gaps[2]) < 0.1, gaps


# -- runs, streams, chunks -------------------------------------------------------------------------

def stacked(spec, runs=3, num_features=5, seed=20):
    torch.manual_seed(seed)
    model, _ = tiny_model(spec, num_features, runs)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 1.0)
    return model


def lone(model, r, spec, num_features=5):
    single, _ = tiny_model(spec, num_features, 1)
    with torch.no_grad():
        state = model.state_dict()
        for name, value in single.state_dict().items():
            value.copy_(state[name][r:r + 1])
    return single


@pytest.mark.parametrize("spec", ["sbn:2-3", "gauss:1-1", "gauss:2b-1"])
def test_each_stacked_run_gets_the_numbers_it_gets_alone_and_the_global_stream_is_left_alone(
        monkeypatch, spec):
    monkeypatch.setattr(ais_module, "_ELEMENTS_PER_CHUNK", 3 * 4 * 5)  # 3 chains a chunk
    model = stacked(spec)
    x = torch.as_tensor(np.random.default_rng(1).random((1, 4, 5)) < 0.4, dtype=torch.float64)
    seeds = [3, 11, 7]
    state = torch.get_rng_state()
    together = ais(model, x, 8, 20, [torch.Generator().manual_seed(s) for s in seeds])
    again = ais(model, x, 8, 20, [torch.Generator().manual_seed(s) for s in seeds])
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(together.log_weights, again.log_weights)
    assert together.log_weights.shape == (3, 8, 4)
    for r, seed in enumerate(seeds):
        alone = ais(lone(model, r, spec), x, 8, 20, generator(seed))
        torch.testing.assert_close(together.log_weights[r:r + 1], alone.log_weights, rtol=0,
                                   atol=1e-10)
    assert all(p.requires_grad for p in model.parameters())   # given back as they were


# -- the evaluation path and the verb ----------------------------------------------------------

def test_the_ais_bound_of_the_evaluation_path_needs_no_inference_network():
    model, _, x = tiny_problem("gauss:1-1", num_features=5, batch_size=8, seed=3)
    rows = x[0].numpy()
    assert "ais" in BOUNDS and QUANTITY["ais"] == "p"
    result = evaluate(model, None, rows, "ais", num_samples=50, steps=100, seed=4,
                      dtype=torch.float64)
    summary = result.summary()
    assert summary["bound"] == "ais" and summary["k"] == 50 and summary["ais_steps"] == 100
    assert "hmc(L=5)" in summary["ais_kernel"] and "sigmoid(4)" in summary["ais_kernel"]
    assert summary["quantity"] == "p"
    truth = evaluate(model, None, rows, "exact", dtype=torch.float64)
    assert abs(result.mean - truth.mean) < 0.05
    same = log_likelihood_bound(model, None, x, "ais", 50, generator(4), steps=100)
    np.testing.assert_allclose(same[0].numpy(), result.per_example, rtol=0, atol=1e-12)
    for bad in ({"steps": 0}, {"num_samples": 0}):
        with pytest.raises(UserError, match="at least 1"):
            evaluate(model, None, rows, "ais", **{"num_samples": 5, "steps": 5, **bad},
                     dtype=torch.float64)
    # the other bounds keep their numbers whatever `steps` says
    model, q_net, x = tiny_problem("sbn:2-3", num_features=5, batch_size=8, seed=3)
    a = evaluate_runs(model, q_net, x[0].numpy(), "iw", 20, seeds=[1], dtype=torch.float64)
    b = evaluate_runs(model, q_net, x[0].numpy(), "iw", 20, seeds=[1], dtype=torch.float64,
                      steps=7)
    assert np.array_equal(a[0].per_example, b[0].per_example) and "ais_steps" not in a[0].summary()


def eval_verb(*args) -> int:
    from bench.cli import build_parser
    from bench.errors import UserError

    parsed = build_parser().parse_args(["eval", *args, "--no-progress"])
    try:
        return parsed.func(parsed)
    except UserError as error:
        print(f"error: {error}")
        return 2


def test_bench_eval_adds_one_ais_metric_per_number_of_steps(tmp_path, capsys):
    from bench.records import read_record
    from bench.runs import train_run
    from bench.specs import RunSpec

    spec = RunSpec(dataset="synthetic", model="sbn:4-8", updates=40, eval_interval=40,
                   eval_examples=50, test_examples=50)
    train_run(spec, tmp_path, progress=False)
    threads = torch.get_num_threads()
    for steps in ("20", "40", "20"):
        assert eval_verb(str(tmp_path), "--bound", "ais", "--steps", steps, "--k", "4") == 0
    assert eval_verb(str(tmp_path), "--bound", "exact") == 0
    torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "test ais (K=4, 20 steps, model p): NLL" in out
    record = read_record(tmp_path)
    annealed = [m for m in record["metrics"] if m["bound"] == "ais"]
    assert sorted(m["ais_steps"] for m in annealed) == [20, 40]
    assert all(m["k"] == 4 and m["num_examples"] == 50 and m["ais_kernel"] for m in annealed)
    exact_nll = [m for m in record["metrics"] if m["bound"] == "exact"][0]["nll"]
    for m in annealed:   # a bound, and a close one on this 12-unit model
        assert exact_nll - 0.5 < m["nll"] < exact_nll + 2.0
    json.dumps(record)
    for args, message in ((["--bound", "ais", "--steps", "0"], "--steps must be at least 1"),
                          (["--bound", "ais", "--k", "0"], "--k (the number of AIS chains)"),
                          (["--bound", "iw", "--steps", "5"], "goes with --bound ais")):
        assert eval_verb(str(tmp_path), *args) == 2
        line = capsys.readouterr().out.strip()
        assert message in line and "\n" not in line
    assert read_record(tmp_path)["metrics"] == record["metrics"]
