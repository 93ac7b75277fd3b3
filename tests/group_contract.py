"""A check several estimators' tests share: each surrogate loss of a step trains its own
parameter group and reaches no other."""

from __future__ import annotations

import torch


def assert_losses_train_only_their_groups(losses: dict[str, torch.Tensor],
                                          groups: dict[str, list[torch.Tensor]]) -> None:
    """Every loss is a finite scalar whose gradient is nonzero somewhere in its own group and
    exactly zero (or absent) in every other group."""
    for g, loss in losses.items():
        assert loss.dim() == 0 and loss.requires_grad and bool(torch.isfinite(loss)), g
        own = torch.autograd.grad(loss, groups[g], retain_graph=True, allow_unused=True)
        assert any(grad is not None and grad.abs().sum() > 0 for grad in own), g
        for other, params in groups.items():
            if other != g:
                cross = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                assert all(grad is None or bool((grad == 0).all()) for grad in cross), \
                    f"loss {g} reaches group {other}"
