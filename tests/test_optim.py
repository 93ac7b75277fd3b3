"""bench/optim.py against torch.optim: the stacked Adam and SGD of R runs, each with its own
learning rate, follow what torch.optim does to each run alone (float64, to rounding); a run held
back by `ok` keeps its parameters and moments, and its step count."""

from __future__ import annotations

import pytest
import torch

from bench.optim import RunOptimizer

RUNS = 3
SHAPES = [(RUNS, 4, 5), (RUNS, 5), (RUNS, 1), (RUNS, 2, 3, 2)]


def stacked_problem(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    params = [torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_()
              for shape in SHAPES]
    targets = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in SHAPES]
    return params, targets


def loss_of(params, targets, run=None) -> torch.Tensor:
    """A sum over runs of a per-run loss, non-quadratic so the moments differ between steps."""
    pick = (lambda t: t) if run is None else (lambda t: t[run])
    return sum((torch.cosh(pick(p) - pick(t)) * (1 + pick(t) ** 2)).sum()
               for p, t in zip(params, targets, strict=True))


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_stacked_runs_follow_torch_optim_run_by_run(kind):
    params, targets = stacked_problem()
    rates = {"model": torch.tensor([1e-2, 3e-3, 5e-2], dtype=torch.float64),
             "other": torch.tensor([2e-2, 1e-3, 0.0], dtype=torch.float64)}
    groups = {"model": params[:2], "other": params[2:]}
    optimizer = RunOptimizer(kind, groups, rates)
    alone = []
    for run in range(RUNS):
        mine = [p.detach()[run].clone().requires_grad_() for p in params]
        make = torch.optim.Adam if kind == "adam" else torch.optim.SGD
        alone.append((mine, make([{"params": mine[:2], "lr": float(rates["model"][run])},
                                  {"params": mine[2:], "lr": float(rates["other"][run])}])))
    # update 3: run 1 is held back (as a diverged or inactive run is)
    for update in range(6):
        ok = None if update != 3 else torch.tensor([True, False, True])
        optimizer.backward(loss_of(params, targets), ok)
        for run, (mine, reference) in enumerate(alone):
            if ok is not None and not ok[run]:
                continue
            reference.zero_grad()
            loss_of(mine, [t[run] for t in targets]).backward()
            reference.step()
    for run, (mine, _) in enumerate(alone):
        for stacked, single in zip(params, mine, strict=True):
            torch.testing.assert_close(stacked.detach()[run], single.detach(), rtol=1e-12,
                                       atol=1e-14)
    if kind == "adam":
        assert optimizer.steps.tolist() == [6.0, 5.0, 6.0]


def test_a_wrong_bias_correction_is_caught():
    """The comparison above can fail: Adam without its second-moment correction drifts away."""
    params, targets = stacked_problem(1)
    rate = torch.tensor([1e-2] * RUNS, dtype=torch.float64)
    optimizer = RunOptimizer("adam", {"model": params}, {"model": rate})
    optimizer.betas = (0.9, 0.99)  # not what the torch reference below uses
    mine = [p.detach()[0].clone().requires_grad_() for p in params]
    reference = torch.optim.Adam(mine, lr=1e-2)
    for _ in range(3):
        optimizer.backward(loss_of(params, targets))
        reference.zero_grad()
        loss_of(mine, [t[0] for t in targets]).backward()
        reference.step()
    with pytest.raises(AssertionError):
        torch.testing.assert_close(params[0].detach()[0], mine[0].detach(), rtol=1e-12,
                                   atol=1e-14)
