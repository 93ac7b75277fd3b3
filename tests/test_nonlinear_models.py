"""The nonlinear SBN family (models/mlp.py, `nsbn:` specs): the architecture of REBAR/ARM/DisARM,
the MLP conditionals against a plain-torch reference, normalisation by enumeration, stacked runs
equal to lone runs, exact enumeration of an update through the MLP layers (the bias check, with
deliberately wrong layers it must catch), SGD in the backward pass, and a few training updates
end to end.

Everything is float64 on tiny models (`nsbn:3/4-4`: 3 latent units, MLPs of 4-4 hidden units)
except the architecture test, which builds the papers' nsbn:200 over 784 pixels.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import models.mlp
from algorithms import build
from bench.check import draw_step, run_bias_check, tiny_problem
from bench.errors import UserError
from bench.optim import RunOptimizer
from bench.runs import train_run
from bench.specs import RunSpec
from models import FAMILIES, LogisticLayer, ModelSpec, exact_elbo, exact_log_likelihood
from models.layers import bernoulli_log_prob
from models.mlp import MLPLogisticLayer, parse_activation
from models.noise import draw as draw_noise

TINY = "nsbn:3/4-4"


pytestmark = pytest.mark.usefixtures("single_thread")


def all_binary(num_units: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=num_units)), dtype=torch.float64)


def reference_logits(layer: MLPLogisticLayer, context: torch.Tensor, run: int) -> torch.Tensor:
    """a = W_out act(... act(W_1 c + b_1) ...) + b_out for one run, written out in plain torch
    from the stored (transposed) parameters; context (N, C) -> (N, H)."""
    out = context
    for weight, bias in zip(layer.hidden_weights, layer.hidden_biases, strict=True):
        pre = out @ weight[run] + bias[run]
        out = torch.tanh(pre) if layer.activation == "tanh" else F.leaky_relu(
            pre, parse_activation(layer.activation)[1])
    return out @ layer.output.weight[run] + layer.output.bias[run]


def randomise(*modules, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype))


# --------------------------------------------------------------------------------------------
# specs


def test_spec_defaults_are_two_hidden_layers_of_200_tanh_units():
    spec = ModelSpec.parse("nsbn:200")
    assert (spec.family, spec.layers, spec.hidden, spec.activation) == ("nsbn", (200,), (200, 200),
                                                                       "tanh")
    assert spec.name == "nsbn:200" and spec.num_latents == 200 and spec.data_kind == "binary"
    assert FAMILIES["nsbn"] == ("bernoulli", False, False, "binary")


@pytest.mark.parametrize("text, hidden, activation, name", [
    ("nsbn:200/200-200/tanh", (200, 200), "tanh", "nsbn:200"),
    ("nsbn:200/lrelu0.3", (200, 200), "lrelu0.3", "nsbn:200/lrelu0.3"),
    ("nsbn:3/4-4", (4, 4), "tanh", "nsbn:3/4-4"),
    ("nsbn:2-3/5/lrelu0.2", (5,), "lrelu0.2", "nsbn:2-3/5/lrelu0.2"),
])
def test_spec_hidden_sizes_and_activation_round_trip(text, hidden, activation, name):
    spec = ModelSpec.parse(text, inference="autoregressive")
    assert spec.hidden == hidden and spec.activation == activation and spec.name == name
    assert ModelSpec.parse(spec.name, inference="autoregressive") == spec
    assert spec.replace(init_scale=0.5).hidden == hidden


@pytest.mark.parametrize("text", ["nsbn", "nsbn:", "nsbn:3/", "nsbn:3/0", "nsbn:3/4-a",
                                  "nsbn:3/4/5", "nsbn:3/tanh/tanh", "nsbn:3/4/tanh/x",
                                  "sbn:3/4", "fdarn:3/tanh"])
def test_malformed_nonlinear_specs_raise_one_line_user_errors(text):
    with pytest.raises(UserError, match="malformed") as info:
        ModelSpec.parse(text)
    assert repr(text) in str(info.value) and "nsbn:200" in str(info.value)


def test_unknown_activation_and_family_list_the_valid_ones():
    with pytest.raises(UserError, match="lrelu0.3") as info:
        ModelSpec.parse("nsbn:3/relu")
    assert "tanh" in str(info.value)
    with pytest.raises(UserError, match="nsbn"):
        ModelSpec.parse("msbn:3")
    with pytest.raises(UserError, match="no deterministic layers"):
        ModelSpec("sbn", (3,), hidden=(4,)).validate()


# --------------------------------------------------------------------------------------------
# the architecture


def test_nsbn200_is_the_papers_architecture():
    mean = torch.full((784,), 0.25)
    spec = ModelSpec.parse("nsbn:200", init_scale=0.1)
    model, q_net = spec.build(784, feature_mean=mean, generators=[torch.Generator().manual_seed(0)])
    assert type(model.prior) is LogisticLayer and not model.prior.autoregressive
    assert model.prior.size == 200 and torch.all(model.prior.bias == 0)
    assert len(model.conditionals) == 0 and len(q_net.layers) == 1
    visible, encoder = model.visible, q_net.layers[0]
    assert isinstance(visible, MLPLogisticLayer) and isinstance(encoder, MLPLogisticLayer)
    # stored transposed, (R, fan_in, fan_out): 200 -> 200 -> 200 -> 784 and 784 -> 200 -> 200 -> 200
    assert [tuple(w.shape) for w in visible.hidden_weights] == [(1, 200, 200), (1, 200, 200)]
    assert tuple(visible.output.weight.shape) == (1, 200, 784)
    assert [tuple(w.shape) for w in encoder.hidden_weights] == [(1, 784, 200), (1, 200, 200)]
    assert tuple(encoder.output.weight.shape) == (1, 200, 200)
    # Glorot-uniform weights, zero biases; the visible output bias at the data's marginals
    for layer in (visible, encoder):
        for weight in [*layer.hidden_weights, layer.output.weight]:
            bound = math.sqrt(6.0 / (weight.shape[1] + weight.shape[2]))
            assert weight.abs().max() <= bound and weight.abs().max() > 0.99 * bound
            assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
        assert all(torch.all(b == 0) for b in layer.hidden_biases)
    assert torch.all(encoder.output.bias == 0)
    assert torch.allclose(visible.bias, torch.logit(torch.tensor(0.25)).expand(1, 784))
    assert not hasattr(visible, "weight")  # the head's W_out must not pass for W of the context


@pytest.mark.parametrize("activation", ["tanh", "lrelu0.3", "lrelu0.2"])
def test_logits_are_the_mlp_of_the_context(activation):
    layer = MLPLogisticLayer(5, 4, hidden=(3, 6), activation=activation,
                             generators=[None, None], dtype=torch.float64)
    randomise(layer)
    context = torch.randn(2, 7, 4, dtype=torch.float64)
    logits = layer.context_logits(context)
    for r in range(2):
        assert torch.allclose(logits[r], reference_logits(layer, context[r], r), atol=1e-13)
    value = (torch.rand(2, 7, 5) < 0.5).double()
    expected = (value * logits - F.softplus(logits)).sum(-1)
    assert torch.allclose(layer.log_prob(value, context), expected, atol=1e-12)
    # the activation is what it says: leaky ReLU keeps slope s below zero
    if activation != "tanh":
        slope = float(activation[5:])
        pre = torch.tensor([-2.0, 3.0], dtype=torch.float64)
        assert layer._act(pre).tolist() == pytest.approx([-2.0 * slope, 3.0])


class Scores(torch.nn.Module):
    """log p(v | c) of a layer as a module of its parameters, by one of two routes."""

    def __init__(self, layer, route):
        super().__init__()
        self.layer, self.route = layer, route

    def forward(self, context, value):
        if self.route == "log_prob":
            return self.layer.log_prob(value, context)
        return bernoulli_log_prob(self.layer.context_logits(context), value)


@pytest.mark.parametrize("route, twice", [("logits", True), ("log_prob", False)])
def test_second_derivatives_come_from_the_logits_not_the_closed_form_score(route, twice):
    """Estimators that differentiate twice (create_graph=True) score context_logits themselves:
    the trunk's products differentiate twice, the head's closed-form score does not."""
    layer = MLPLogisticLayer(3, 2, hidden=(4, 3), generators=[None, None], dtype=torch.float64)
    randomise(layer, seed=4)
    context = torch.randn(2, 5, 2, dtype=torch.float64)   # every run's own: the closed-form path
    value = (torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    module = Scores(layer, route)
    names = [name for name, _ in module.named_parameters()]
    inputs = [p.detach().clone().requires_grad_() for p in module.parameters()]

    def scores(*values):
        return torch.func.functional_call(module, dict(zip(names, values, strict=True)),
                                          (context, value))

    assert torch.autograd.gradcheck(scores, inputs)
    assert torch.autograd.gradgradcheck(scores, inputs, raise_exception=False) is twice


# --------------------------------------------------------------------------------------------
# shapes, broadcasting and stacked runs


def test_shapes_for_stacked_runs_and_samples():
    runs, batch, samples = 3, 4, 5
    model, q_net = ModelSpec.parse(TINY).build(
        6, generators=[torch.Generator().manual_seed(s) for s in range(runs)], dtype=torch.float64)
    x = (torch.rand(1, batch, 6) < 0.5).double()  # the data shared by every run
    noise = draw_noise({"q": q_net.noise(samples, batch)}, [None] * runs, torch.float64)["q"]
    h, log_q = q_net.sample(x, noise)
    assert h[0].shape == (runs, samples, batch, 3) and log_q[0].shape == (runs, samples, batch)
    terms = model.log_prob_terms(x, h)
    assert [t.shape for t in terms] == [(runs, samples, batch)] * 2
    # sample_with_log_prob's log Q is the log-probability of its own sample
    assert torch.allclose(log_q[0], q_net.log_prob(x, h), atol=1e-12)
    # the sample is [u < sigmoid(a)] with a from one trunk pass per example
    logits = q_net.layers[0].context_logits(q_net.centre(x))  # (R, B, H)
    assert torch.equal(h[0], (noise[0] < torch.sigmoid(logits).unsqueeze(1)).double())
    fantasy_noise = draw_noise({"f": model.noise(batch)}, [None] * runs, torch.float64)["f"]
    fx, fh = model.sample(fantasy_noise)
    assert fx.shape == (runs, batch, 6) and fh[0].shape == (runs, batch, 3)
    assert set(fx.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("inference", ["factorial", "autoregressive"])
def test_each_stacked_run_equals_the_same_run_built_alone(inference):
    spec = ModelSpec.parse("nsbn:2-3/4-3", inference=inference)
    seeds = [5, 6, 7]
    model, q_net = spec.build(5, generators=[torch.Generator().manual_seed(s) for s in seeds],
                              dtype=torch.float64)
    x = (torch.rand(1, 4, 5, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    h = [(torch.rand(len(seeds), 2, 4, size) < 0.5).double() for size in model.latent_sizes]
    p_terms, q_terms = model.log_prob_terms(x, h), q_net.log_prob_terms(x, h)
    for r, seed in enumerate(seeds):
        lone_p, lone_q = spec.build(5, generators=[torch.Generator().manual_seed(seed)],
                                    dtype=torch.float64)
        for (name, stacked), lone in zip(itertools.chain(model.named_parameters(),
                                                         q_net.named_parameters()),
                                         itertools.chain(lone_p.parameters(), lone_q.parameters()),
                                         strict=True):
            assert torch.equal(stacked[r:r + 1], lone), name
        h_r = [t[r:r + 1] for t in h]
        for a, b in zip(lone_p.log_prob_terms(x, h_r), p_terms, strict=True):
            assert torch.allclose(a, b[r:r + 1], atol=1e-12)
        for a, b in zip(lone_q.log_prob_terms(x, h_r), q_terms, strict=True):
            assert torch.allclose(a, b[r:r + 1], atol=1e-12)
    assert not torch.allclose(p_terms[0][0], p_terms[0][1])  # the runs really differ


@pytest.mark.parametrize("autoregressive", [False, True])
def test_log_prob_sums_to_one_over_every_binary_value(autoregressive):
    layer = MLPLogisticLayer(4, 3, autoregressive=autoregressive, hidden=(5, 2),
                             generators=[None, None], dtype=torch.float64)
    randomise(layer, seed=3)  # nonzero within-layer weights U too
    values = all_binary(4).view(1, 16, 1, 4)
    context = torch.randn(2, 6, 3, dtype=torch.float64)  # (R, B, C) against (1, M, 1, H)
    total = torch.logsumexp(layer.log_prob(values, context), 1)      # (R, B)
    assert torch.allclose(total, torch.zeros_like(total), atol=1e-12)


def test_visible_mlp_is_a_distribution_over_x_and_the_elbo_bounds_it():
    model, q_net, x = tiny_problem(TINY, num_features=4, batch_size=6, seed=0)
    xs = all_binary(4).unsqueeze(0)                                   # every x, (1, 16, 4)
    marginal = exact_log_likelihood(model, xs)
    assert torch.logsumexp(marginal, -1).item() == pytest.approx(0.0, abs=1e-12)
    elbo, log_likelihood = exact_elbo(model, q_net, x), exact_log_likelihood(model, x)
    assert torch.all(elbo <= log_likelihood + 1e-12)
    assert torch.all(log_likelihood - elbo > 1e-6)  # a random Q is not the posterior


def test_exact_gradients_are_finite_and_reach_every_parameter():
    model, q_net, x = tiny_problem(TINY, num_features=4, batch_size=3, seed=1,
                                   inference="autoregressive")
    params = list(model.parameters()) + list(q_net.parameters())
    grads = torch.autograd.grad(exact_elbo(model, q_net, x).sum(), params)
    for p, g in zip(params, grads, strict=True):
        assert torch.isfinite(g).all() and g.abs().sum() > 0, tuple(p.shape)


# --------------------------------------------------------------------------------------------
# estimators on the nonlinear family: exact enumeration of one update, and its power


def assert_exact(report, groups=("model", "inference")) -> None:
    assert report.exact_skipped is None and report.exact
    assert {t.group for t in report.exact} >= set(groups)
    assert not report.exact_biased, "\n".join(report.lines())
    assert max(t.relative_error for t in report.exact) < 1e-10


@pytest.mark.parametrize("algorithm, model, inference", [
    ("nvil", TINY, "factorial"),
    ("nvil", "nsbn:3", "factorial"),  # the default MLPs of 200-200 tanh units
    ("nvil:none", "nsbn:3/3/lrelu0.3", "autoregressive"),
    ("nvil:global-signal", "nsbn:2-2/3", "factorial"),
    ("wake-sleep", TINY, "factorial"),
    ("wake-sleep", "nsbn:2-1/2", "autoregressive"),
    ("arm", TINY, "factorial"),
    ("disarm", "nsbn:2-2/3", "factorial"),
])
def test_bias_check_enumerates_updates_through_the_mlp_layers(algorithm, model, inference):
    report = run_bias_check(algorithm, model, steps=20, warmup=5, inference=inference)
    assert_exact(report)
    names = {t.name for t in report.exact}
    assert "inference.layers.0.hidden_weights.0" in names
    assert "model.visible.hidden_weights.0" in names


class DetachedTrunk(MLPLogisticLayer):
    """Wrong: Q's score reaches the head but not the deterministic layers below it."""

    def sample_with_log_prob(self, context, noise):
        return self.output.sample_with_log_prob(self.features(context).detach(), noise)


class SamplesFromTheWrongActivation(MLPLogisticLayer):
    """Wrong: samples from an MLP without its nonlinearity, while log Q is the right one's."""

    def sample_with_log_prob(self, context, noise):
        kept = self.activation_kind, self.negative_slope
        self.activation_kind, self.negative_slope = "lrelu", 1.0   # the identity
        try:
            value = self.output.sample(self.features(context), noise)
        finally:
            self.activation_kind, self.negative_slope = kept
        return value, self.log_prob(value, context)


def test_bias_check_catches_a_score_that_skips_the_deterministic_layers(monkeypatch):
    monkeypatch.setattr(models.mlp, "MLPLogisticLayer", DetachedTrunk)
    report = run_bias_check("nvil", TINY, steps=20, warmup=5)
    biased = {t.name for t in report.exact if t.biased}
    assert report.exact_biased
    assert biased == {f"inference.layers.0.hidden_{kind}.{i}"
                      for kind in ("weights", "biases") for i in (0, 1)}


def test_bias_check_catches_samples_from_another_distribution_than_log_q(monkeypatch):
    monkeypatch.setattr(models.mlp, "MLPLogisticLayer", SamplesFromTheWrongActivation)
    report = run_bias_check("nvil", TINY, steps=20, warmup=5)
    # the sampling distribution weighs both phases' updates: both groups are off
    assert {t.group for t in report.exact if t.biased} == {"model", "inference"}


def test_stacked_presets_give_each_runs_own_losses_and_gradients():
    spec, presets, seeds = TINY, ["nvil", "nvil:none"], [0, 1]
    lone = []
    for preset, seed in zip(presets, seeds, strict=True):
        model, q_net, x = tiny_problem(spec, num_features=4, batch_size=5, seed=seed)
        lone.append((build(preset, model, q_net).double(), x))
    stacked_p, stacked_q = ModelSpec.parse(spec).build(4, generators=[None, None],
                                                       dtype=torch.float64)
    options = [m.options[0] for m, _ in lone]
    stacked = type(lone[0][0])(stacked_p, stacked_q, options).double()
    with torch.no_grad():
        for name, value in stacked.state_dict().items():
            value.copy_(torch.cat([m.state_dict()[name] for m, _ in lone]))
    x = torch.cat([x for _, x in lone])
    generators = [torch.Generator().manual_seed(10 + s) for s in seeds]
    noise = draw_noise(stacked.noise(x), generators, torch.float64)
    losses = stacked.step(x, noise).losses
    groups = stacked.parameter_groups()
    for r, (method, x_r) in enumerate(lone):
        own = method.step(x_r, {k: [t[r:r + 1] for t in v] for k, v in noise.items()}).losses
        for g in ("model", "inference"):
            grads = torch.autograd.grad(losses[g], groups[g], retain_graph=True)
            own_grads = torch.autograd.grad(own[g], method.parameter_groups()[g],
                                            retain_graph=True)
            for a, b in zip(grads, own_grads, strict=True):
                assert torch.allclose(a[r:r + 1], b, atol=1e-10), g


@pytest.mark.parametrize("algorithm", ["nvil", "wake-sleep"])
@pytest.mark.parametrize("inference", ["factorial", "autoregressive"])
def test_estimator_contract_on_the_nonlinear_family(algorithm, inference):
    model, q_net, x = tiny_problem("nsbn:2-3/4-4", num_features=5, batch_size=6, seed=0,
                                   inference=inference)
    method = build(algorithm, model, q_net).double()
    groups = method.parameter_groups()
    grouped = [id(p) for params in groups.values() for p in params]
    assert len(grouped) == len(set(grouped)) == len(list(method.parameters()))
    result = draw_step(method, x, torch.Generator().manual_seed(0))
    assert torch.isfinite(result.metrics["bound"]).all()
    for g, loss in result.losses.items():
        assert torch.isfinite(loss)
        for other, params in groups.items():
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            if other == g:
                assert all(torch.isfinite(d).all() for d in grads if d is not None)
                assert any(d is not None and d.abs().sum() > 0 for d in grads), g
            else:
                assert all(d is None or torch.all(d == 0) for d in grads), (g, other)


def test_sgd_in_the_backward_pass_steps_the_mlp_layers_as_plain_sgd():
    def method_and_noise():
        model, q_net, x = tiny_problem(TINY, num_features=4, batch_size=5, seed=2)
        method = build("nvil", model, q_net).double()
        return method, x, draw_noise(method.noise(x), [torch.Generator().manual_seed(3)],
                                     torch.float64)

    plain, x, noise = method_and_noise()
    groups = plain.parameter_groups()
    losses = plain.step(x, noise).losses
    params = [p for g in groups for p in groups[g]]
    grads = torch.autograd.grad(sum(losses.values()), params)
    rate = 0.01
    expected = [(p - rate * g).detach() for p, g in zip(params, grads, strict=True)]

    fused, x, noise = method_and_noise()
    groups = fused.parameter_groups()
    optimizer = RunOptimizer("sgd", groups, {g: torch.tensor([rate]) for g in groups})
    optimizer.backward(sum(fused.step(x, noise).losses.values()))
    for (name, p), e in zip([(n, p) for n, p in fused.named_parameters()], expected, strict=True):
        assert torch.allclose(p, e, atol=1e-13), name


# --------------------------------------------------------------------------------------------
# training end to end


@pytest.mark.parametrize("algorithm", ["nvil", "wake-sleep"])
def test_training_a_few_updates_end_to_end(tmp_path, algorithm):
    spec = RunSpec(algorithm=algorithm, dataset="synthetic", model="nsbn:4/8-8", updates=20,
                   eval_interval=10, eval_examples=100, test_examples=100)
    record = train_run(spec, tmp_path, progress=False)
    assert record["status"] == "complete" and record["updates"] == 20
    assert record["config"]["model"]["spec"] == "nsbn:4/8-8"
    assert all(math.isfinite(m["nll"]) for m in record["metrics"])
    curve = (tmp_path / "curve.csv").read_text().splitlines()
    assert len(curve) == 1 + 3  # updates 0, 10, 20
