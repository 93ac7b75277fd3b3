"""SGD steps taken in the backward pass (models.layers.sgd_in_backward): the closed-form
backwards of the linear and linear-logistic layers queue p <- p - lr_r g for the registered
parameters instead of returning g. The update must be exactly plain SGD's, per run, for a
parameter reached once or several times, and nothing may change when the backward pass fails."""

from __future__ import annotations

import pytest
import torch

from models.layers import LogisticLayer, _Affine, linear, sgd_in_backward

RUNS, BATCH, CONTEXT, UNITS = 3, 5, 4, 6


def problem():
    generator = torch.Generator().manual_seed(0)
    layer = LogisticLayer(UNITS, CONTEXT, init_scale=0.5,
                          generators=[torch.Generator().manual_seed(r) for r in range(RUNS)],
                          dtype=torch.float64)
    context = torch.randn(RUNS, BATCH, CONTEXT, generator=generator, dtype=torch.float64)
    value = (torch.rand(RUNS, BATCH, UNITS, generator=generator, dtype=torch.float64) < 0.5)
    signal = torch.randn(RUNS, BATCH, generator=generator, dtype=torch.float64)
    rates = torch.tensor([0.1, 0.0, 0.3], dtype=torch.float64)
    return layer, context, value.double(), signal, rates


def loss_of(layer, context, value, signal):
    """A score-function surrogate through _LogisticLogProb, plus the same weights reached a
    second time through linear (_Affine), so each parameter gets two contributions."""
    score = (signal * layer.log_prob(value, context)).sum()
    logits = linear(context, layer.weight, layer.bias)
    return score + torch.tanh(logits).pow(2).sum()


def plain_sgd(layer, loss, rates):
    weight, bias = torch.autograd.grad(loss, [layer.weight, layer.bias])
    with torch.no_grad():
        return (layer.weight - rates.view(-1, 1, 1) * weight, layer.bias - rates.view(-1, 1) * bias)


def test_the_steps_are_plain_sgd_per_run():
    layer, context, value, signal, rates = problem()
    expected = plain_sgd(layer, loss_of(layer, context, value, signal), rates)
    negative = {layer.weight: -rates.view(-1, 1, 1), layer.bias: -rates.view(-1, 1)}
    with sgd_in_backward(negative):
        loss_of(layer, context, value, signal).backward()
    assert layer.weight.grad is None and layer.bias.grad is None  # no gradient tensor was made
    torch.testing.assert_close(layer.weight.detach(), expected[0], rtol=0, atol=1e-14)
    torch.testing.assert_close(layer.bias.detach(), expected[1], rtol=0, atol=1e-14)
    # the run with rate 0 did not move
    assert torch.equal(layer.weight[1].detach(), expected[0][1])


def test_unregistered_parameters_get_their_gradients():
    layer, context, value, signal, rates = problem()
    with sgd_in_backward({layer.bias: -rates.view(-1, 1)}):
        loss_of(layer, context, value, signal).backward()
    assert layer.weight.grad is not None and layer.bias.grad is None


def test_a_failed_backward_applies_nothing():
    layer, context, value, signal, rates = problem()
    before = layer.weight.detach().clone()
    with pytest.raises(RuntimeError, match="on purpose"):
        with sgd_in_backward({layer.weight: -rates.view(-1, 1, 1)}):
            loss = loss_of(layer, context, value, signal)
            loss.backward(retain_graph=True)  # queues steps ...
            raise RuntimeError("on purpose")  # ... that must be dropped
    assert torch.equal(layer.weight.detach(), before)
    # and the queue is empty for the next block
    with sgd_in_backward({}):
        pass
    assert torch.equal(layer.weight.detach(), before)


def test_blocks_do_not_nest():
    with sgd_in_backward({}):
        with pytest.raises(RuntimeError, match="do not nest"):
            with sgd_in_backward({}):
                pass


def test_the_closed_form_linear_is_differentiable():
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True)
              for shape in ((RUNS, BATCH, CONTEXT), (RUNS, CONTEXT, UNITS), (RUNS, UNITS))]
    assert torch.autograd.gradcheck(_Affine.apply, inputs)
    assert torch.autograd.gradgradcheck(_Affine.apply, inputs)
