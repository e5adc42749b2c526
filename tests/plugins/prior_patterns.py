"""The priors' toy problem: tiny sizes, two code patterns, a training loop and a pattern share
(a plain module: the test_priors_* files import it by name)."""

from __future__ import annotations

import torch

from vqtk.interfaces import Prior

K = 8  # codebook size
GRID = (4, 4)
TINY = dict(codebook_size=K, grid_size=GRID, dim=32, heads=2)

# two patterns of constant rows: the first visible code tells which, and where
# it sits tells the rest, so a prior must model the joint (not just marginals)
ROW_VALUES = torch.arange(4)[:, None].expand(4, 4)
PATTERNS = torch.stack([ROW_VALUES, ROW_VALUES + 4])  # (2, 4, 4)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fit(prior: Prior, *, steps: int, lr: float, batch: int, conditional: bool = False,
        patterns: torch.Tensor = PATTERNS, labels_for=None) -> list[float]:
    """Adam on batches of ``patterns`` (labels = pattern index when ``conditional``, or
    ``labels_for(index)``); returns the losses."""
    if conditional:
        labels_for = labels_for or (lambda which: which)
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    losses = []
    prior.train()
    for _ in range(steps):
        which = torch.randint(0, 2, (batch,))
        out = prior.loss(patterns[which], labels=labels_for(which) if labels_for else None)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sched.step()
        losses.append(out.loss.item())
    return losses


def pattern_share(samples: torch.Tensor, patterns: torch.Tensor = PATTERNS) -> torch.Tensor:
    """Fraction of sampled grids equal to each of the two ``patterns``: ``(2,)``."""
    equal = (samples[:, None] == patterns[None]).flatten(2).all(-1)
    return equal.float().mean(0)
