"""Optimizers over stacked parameters: SGD and Adam with one learning rate per run and group.

Every parameter is a stack (R, ...) of R runs. A group's learning rates are an (R,) tensor, viewed
as (R, 1, ..., 1) against each of its parameters, so one `torch._foreach_*` call updates every
parameter of every group and run. A run's rate may be 0 for a group it does not use (NVIL without
the input-dependent baseline).

Runs that must not move this update (not active, or diverged) are passed as `ok` = False: their
parameters and optimizer state stay exactly as they were, whatever their gradients hold (NaN
included).

    sgd   p <- p - lr_r g
    adam  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  t_r <- t_r + 1
          p <- p - lr_r (m / (1 - b1^t_r)) / (sqrt(v / (1 - b2^t_r)) + eps)   (torch.optim.Adam's
          defaults b1 = 0.9, b2 = 0.999, eps = 1e-8; a step count per run)
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from models.layers import sgd_in_backward

KINDS = ("sgd", "adam")


def _per_run(values: Tensor, like: Tensor) -> Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


class RunOptimizer:
    def __init__(self, kind: str, groups: dict[str, list[nn.Parameter]], rates: dict[str, Tensor],
                 betas=(0.9, 0.999), eps: float = 1e-8):
        if kind not in KINDS:
            raise ValueError(f"unknown optimizer {kind!r}; valid: {', '.join(KINDS)}")
        self.kind = kind
        self.params = [p for group in groups for p in groups[group]]
        self.rates = [_per_run(rates[group].to(p.dtype), p)
                      for group in groups for p in groups[group]]
        self.negative_rates = [-rate for rate in self.rates]
        self.betas, self.eps = betas, eps
        self.num_runs = self.params[0].shape[0]
        if kind == "adam":
            self.exp_avg = [torch.zeros_like(p) for p in self.params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
            self.steps = torch.zeros(self.num_runs, dtype=torch.float64,
                                     device=self.params[0].device)

    def backward(self, loss: Tensor, ok: Tensor | None = None) -> None:
        """loss.backward() and then step(ok). With SGD and every run moving, the layers with a
        closed-form backward take their parameters' steps in the backward pass
        (models.layers.sgd_in_backward: the same update, without a gradient tensor)."""
        self.zero_grad()
        fused = (sgd_in_backward(dict(zip(self.params, self.negative_rates, strict=True)))
                 if self.kind == "sgd" and ok is None else contextlib.nullcontext())
        with fused:
            loss.backward()
        self.step(ok)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, ok: Tensor | None = None) -> None:
        """One update; `ok` (R,) bool marks the runs that move (None: all)."""
        index = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not index:
            return
        params = [self.params[i] for i in index]
        grads = [self.params[i].grad for i in index]
        rates = [(self.negative_rates if self.kind == "sgd" else self.rates)[i] for i in index]
        if ok is not None:  # where(), not a product: 0 * NaN is NaN
            grads = [torch.where(_per_run(ok, g), g, 0.0) for g in grads]
            rates = [torch.where(_per_run(ok, r), r, 0.0) for r in rates]
        if self.kind == "sgd":
            torch._foreach_addcmul_(params, grads, rates)
            return
        beta1, beta2 = self.betas
        moving = torch.ones_like(self.steps) if ok is None else ok.to(self.steps.dtype)
        self.steps += moving
        averages = [self.exp_avg[i] for i in index]
        squares = [self.exp_avg_sq[i] for i in index]
        if ok is not None:
            kept = [(a.clone(), s.clone()) for a, s in zip(averages, squares, strict=True)]
        torch._foreach_lerp_(averages, grads, 1 - beta1)
        torch._foreach_mul_(squares, beta2)
        torch._foreach_addcmul_(squares, grads, grads, value=1 - beta2)
        if ok is not None:  # runs that do not move keep their moments
            for (average, square), (old_average, old_square) in zip(
                    zip(averages, squares, strict=True), kept, strict=True):
                keep = _per_run(~ok, average)
                average.copy_(torch.where(keep, old_average, average))
                square.copy_(torch.where(keep, old_square, square))
        steps = self.steps.clamp_min(1)
        first = (1 - beta1 ** steps)
        second_root = (1 - beta2 ** steps).sqrt()
        # The bias corrections per run, cast and shaped once per (dtype, rank) of the parameters
        # rather than once per parameter: the step is then six foreach calls for every group.
        shaped: dict = {}

        def per_run(values: Tensor, param: Tensor) -> Tensor:
            key = (id(values), param.dtype, param.dim())
            if key not in shaped:
                shaped[key] = _per_run(values.to(param.dtype), param)
            return shaped[key]

        denominators = torch._foreach_sqrt(squares)
        torch._foreach_div_(denominators, [per_run(second_root, p) for p in params])
        torch._foreach_add_(denominators, self.eps)
        step_sizes = torch._foreach_div(rates, [per_run(first, p) for p in params])
        numerators = torch._foreach_mul(averages, step_sizes)
        torch._foreach_addcdiv_(params, numerators, denominators, value=-1.0)

    # -- one run's state, for its own checkpoint ------------------------------------------------
    def run_state(self, r: int) -> dict:
        if self.kind == "sgd":
            return {"kind": "sgd"}
        return {"kind": "adam", "steps": float(self.steps[r]),
                "exp_avg": [a[r].clone() for a in self.exp_avg],
                "exp_avg_sq": [s[r].clone() for s in self.exp_avg_sq]}

    @torch.no_grad()
    def load_run_state(self, r: int, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"checkpoint has optimizer {state.get('kind')}, run uses {self.kind}")
        if self.kind == "adam":
            self.steps[r] = state["steps"]
            for mine, saved in zip(self.exp_avg, state["exp_avg"], strict=True):
                mine[r].copy_(saved)
            for mine, saved in zip(self.exp_avg_sq, state["exp_avg_sq"], strict=True):
                mine[r].copy_(saved)
