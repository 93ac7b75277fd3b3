"""Explicit noise: what random numbers an update needs, and drawing them run by run.

An estimator does not draw random numbers. It says what it needs as a request, a dict of lists of
`Noise` leaves, and the harness fills the request from each run's own generator, run after run,
in the request's order. That is what makes a run batched with others follow the trajectory it
follows alone, makes antithetic pairs possible, and lets the bias check replace the noise by every
configuration it can take (exact enumeration).

    kind "uniform"     U(0, 1), shape `shape`            (Bernoulli layers: h = [u < sigmoid(a)])
    kind "normal"      N(0, 1), shape `shape`            (continuous layers)
    kind "antithetic"  u ~ U(0, 1) of shape `shape`, returned as the pair (u, 1 - u) stacked on a
                       new dimension after the run dimension: (R, 2, *shape)

`shape` is the shape for one run. Where it differs between runs (a document's sampled words depend
on its length) it may be a list of one shape per run: each run draws its own number of values and
the rest of the (R, *max shape) tensor is filled with 0.5 (callers mask it).

Exact enumeration. Inside `enumerating()`, the layers record the log-probability of every binary
outcome they draw (`record_outcome`), so that a caller who feeds noise of zeros and ones (u = 0
gives h = 1, u = 1 gives h = 0, whatever the probability) learns the probability of the
configuration it forced. bench/check.py uses this to compute an estimator's exact expected update.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

KINDS = ("uniform", "normal", "antithetic")
#: values one element of each kind takes under exact enumeration (None: not enumerable): a
#: uniform forces a Bernoulli outcome by 0 or 1; an antithetic pair takes one of the three
#: intervals of `antithetic_bernoulli`
ENUMERATED_VALUES = {"uniform": 2, "antithetic": 3, "normal": None}


@dataclass(frozen=True)
class Noise:
    kind: str
    shape: tuple | list  # one run's shape, or a list of R shapes

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown noise kind {self.kind!r}; valid: {', '.join(KINDS)}")


def uniform(*shape) -> Noise:
    return Noise("uniform", tuple(shape))


def antithetic(*shape) -> Noise:
    return Noise("antithetic", tuple(shape))


def _run_shapes(leaf: Noise, runs: int) -> list[tuple]:
    if isinstance(leaf.shape, list):
        if len(leaf.shape) != runs:
            raise ValueError(f"noise with {len(leaf.shape)} per-run shapes for {runs} runs")
        return [tuple(s) for s in leaf.shape]
    return [tuple(leaf.shape)] * runs


def _draw_leaf(leaf: Noise, generators, dtype, device, active) -> Tensor:
    runs = len(generators)
    shapes = _run_shapes(leaf, runs)
    full = tuple(max(sizes) for sizes in zip(*shapes, strict=True))
    sample = torch.randn if leaf.kind == "normal" else torch.rand
    if all(active) and all(shape == full for shape in shapes):
        out = torch.empty((runs, *full), dtype=dtype, device=device)
        for r, generator in enumerate(generators):
            sample(full, generator=generator, dtype=dtype, device=device, out=out[r])
    else:
        out = torch.full((runs, *full), 0.5, dtype=dtype, device=device)
        for r, (generator, shape) in enumerate(zip(generators, shapes, strict=True)):
            if active[r]:
                out[r][tuple(slice(0, n) for n in shape)] = sample(
                    shape, generator=generator, dtype=dtype, device=device)
    if leaf.kind == "antithetic":
        return torch.stack([out, 1 - out], 1)
    return out


def draw(request: dict[str, list[Noise]], generators, dtype=torch.float32, device="cpu",
         active=None) -> dict[str, list[Tensor]]:
    """Fill a request from one generator per run; leaves are drawn in the request's order (dict
    order, then list order), each run's values from that run's generator. Runs marked inactive
    draw nothing (their generators do not advance; their values are 0.5)."""
    active = [True] * len(generators) if active is None else list(active)
    return {name: [_draw_leaf(leaf, generators, dtype, device, active) for leaf in leaves]
            for name, leaves in request.items()}


# -- exact enumeration -------------------------------------------------------------------------

_LEDGER: list[Tensor | None] | None = None


@contextlib.contextmanager
def enumerating():
    """Within the block, layers add the log-probability of each binary outcome they draw to the
    returned ledger: `ledger[0]` is the sum over all draws, per run (R,)."""
    global _LEDGER
    previous, _LEDGER = _LEDGER, [None]
    try:
        yield _LEDGER
    finally:
        _LEDGER = previous


def record_outcome(log_prob: Tensor) -> None:
    """Called by the layers with the log-probability (R, ...) of the outcome they drew."""
    if _LEDGER is None:
        return
    total = log_prob.reshape(log_prob.shape[0], -1).sum(-1)
    _LEDGER[0] = total if _LEDGER[0] is None else _LEDGER[0] + total


def recording() -> bool:
    """Whether an `enumerating()` block is active (the layers then call `record_outcome`)."""
    return _LEDGER is not None


def antithetic_bernoulli(pair: Tensor, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """An antithetic pair of Bernoulli samples of the same units from one "antithetic" leaf:
    pair (R, 2, *shape) holds (u, 1 - u), logits a (R, *shape); returns (u, b, b~) with

        b = [u < sigmoid(a)],    b~ = [1 - u < sigmoid(a)]     (each marginally Bernoulli(sigmoid a))

    No gradient flows through any of them.

    Exact enumeration. Given a, the pair (b_j, b~_j) of unit j is constant on each of the three
    intervals of [0, 1] cut at min(p, 1 - p) and max(p, 1 - p), p = sigmoid(a_j). Within
    `enumerating()` the caller (bench/check.py) fills pair[:, 0] with interval codes 0, 1, 2 instead
    of uniforms; u becomes the midpoint of that interval and the interval's length is recorded as
    the configuration's probability. That is exact for every estimator whose update is affine in
    each u_j given the outcomes (ARM's (u - 1/2) factor; DisARM uses no u at all): the mean of an
    affine function over an interval is its value at the midpoint."""
    with torch.no_grad():
        probability = torch.sigmoid(logits)
        if recording():
            low = torch.minimum(probability, 1 - probability)
            high = torch.maximum(probability, 1 - probability)
            code = pair[:, 0]
            u = torch.where(code == 0, low / 2, torch.where(code == 1, (low + high) / 2,
                                                            (high + 1) / 2))
            length = torch.where(code == 0, low, torch.where(code == 1, high - low, 1 - high))
            record_outcome(torch.log(length))
            complement = 1 - u
        else:
            u, complement = pair[:, 0], pair[:, 1]
        sample = (u < probability).to(logits.dtype)
        antithetic = (complement < probability).to(logits.dtype)
    return u, sample, antithetic
