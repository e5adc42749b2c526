"""Codebook health during training: windowed and per-epoch usage, dead codes, a low-usage warning, restarts.

A :class:`CodebookHealth` is fed every training step's code indices (and,
for restarts, the latents the quantizer received). It keeps, per code, the
last step that used it and how often the current data epoch used it, in
tensors on the training device, so feeding it never synchronises with the
host; :meth:`CodebookHealth.check`, called at log steps, reads them back and
returns metrics::

    health = CodebookHealth(codebook_size=q.codebook_size, num_codebooks=q.num_codebooks,
                            window=100, min_usage=0.05, restart_dead_codes=True, device=device)
    health.attach(model.quantizer, step=lambda: trainer.step)   # observes every training forward
    ...
    health.set_epoch(stream.state.epoch)                        # before each step
    ...
    record.update(health.check(step=trainer.step))              # at log steps

A code is *dead* when no step of the last ``window`` observed steps used it.
When :meth:`CodebookHealth.set_epoch` sees a new data epoch, the code
histogram of the epoch that ended is kept and the next check reports its
usage and perplexity (``codebook/epoch_usage``, ``codebook/epoch_perplexity``).
Under torch.distributed, :meth:`CodebookHealth.check` (called on every rank at
the same steps) merges the ranks' records, so usage is that of the global
batch, and every rank applies the same restarts (rank 0's latents).
Restarting needs the quantizer's cooperation: it subclasses
:class:`vqtk.interfaces.RestartableQuantizer` (``restart_codes(code_ids, vectors)``).

Why this module is long (~400 lines): it is one tracker whose parts share one
resumable state (``last_seen``, the epoch's histogram, the restart reservoir,
its generator) and one distributed protocol (the merges and the broadcast of
restarts); the index arithmetic itself is :mod:`vqtk.measure`'s.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from vqtk.interfaces import RestartableQuantizer
from vqtk.measure import code_ids, code_usage, perplexity

log = logging.getLogger("vqtk")

#: ``last_seen`` of a code never used.
NEVER = -(2**62)


def supports_restart(quantizer: Any) -> bool:
    """Whether ``quantizer`` declares :class:`~vqtk.interfaces.RestartableQuantizer` and this instance supports it."""
    return isinstance(quantizer, RestartableQuantizer) and quantizer.supports_restarts()


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _rank() -> int:
    return dist.get_rank() if _world_size() > 1 else 0


class CodebookHealth:
    """Tracks which codes the last ``window`` steps and each data epoch used; warns on low usage; restarts dead codes.

    Args:
        codebook_size: codes per codebook.
        num_codebooks: codebooks per position (indices ``(B, h, w, Q)`` when > 1; ``(B, h, w)``
            or a multi-scale ``(B, L)`` when 1: any token layout, see :mod:`vqtk.interfaces.layout`).
        window: the rolling window, in training steps.
        min_usage: warn (once each time usage falls below it) and raise the
            ``codebook/low_usage`` flag when the windowed usage of any codebook
            is below this fraction; 0 disables. Checked once the window is full.
        restart_dead_codes: at each :meth:`check` with a full window, set dead
            codes to recent latents from the reservoir (quantizers with
            ``restart_codes`` only; a warning otherwise).
        reservoir_size: recent latents kept for restarts; each observed batch
            adds up to ``reservoir_size // 8`` randomly chosen positions.
        device: where the counters live (the training device).
        seed: seed of the tracker's own generator (it never touches the global RNG).
    """

    def __init__(
        self,
        *,
        codebook_size: int,
        num_codebooks: int = 1,
        window: int = 100,
        min_usage: float = 0.0,
        restart_dead_codes: bool = False,
        reservoir_size: int = 1024,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ):
        if codebook_size <= 0 or num_codebooks <= 0 or window <= 0 or reservoir_size <= 0:
            raise ValueError("codebook_size, num_codebooks, window and reservoir_size must be > 0")
        if not 0.0 <= min_usage <= 1.0:
            raise ValueError(f"min_usage must be between 0 and 1, got {min_usage}")
        self.codebook_size = codebook_size
        self.num_codebooks = num_codebooks
        self.window = window
        self.min_usage = min_usage
        self.restart_dead_codes = restart_dead_codes
        self.reservoir_size = reservoir_size
        self.device = torch.device(device)
        self.last_seen = torch.full((num_codebooks, codebook_size), NEVER, dtype=torch.long, device=self.device)
        self.first_step: Optional[int] = None
        self.latest_step: Optional[int] = None
        self.reservoir: Optional[torch.Tensor] = None
        self.filled = 0
        self._next = 0
        self.low = False
        self.total_restarted = 0
        self._warned_unsupported = False
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(seed)
        self._quantizer: Optional[nn.Module] = None
        #: code counts of the current data epoch ``(Q, K)``; under torch.distributed each rank holds
        #: what it observed since the last check, and rank 0 also everything merged before
        self.epoch_counts = torch.zeros((num_codebooks, codebook_size), dtype=torch.long, device=self.device)
        self.epoch: Optional[int] = None
        self._ended: Optional[tuple[int, torch.Tensor]] = None  # (epoch, counts) not yet reported
        self._epoch_partial = False  # the counts miss the epoch's start: that epoch is not reported

    # -- feeding -----------------------------------------------------------------

    def observe(self, indices: torch.Tensor, *, step: int, latents: Optional[torch.Tensor] = None) -> None:
        """Record one batch: indices ``(B, h, w)``, ``(B, h, w, Q)`` or ``(B, L)`` used at ``step``.

        ``latents`` (``(B, dim, h, w)``, the quantizer's input) feed the restart
        reservoir. Several calls with the same step (gradient accumulation) are
        fine. Never synchronises with the host.
        """
        try:
            flat = code_ids(indices.to(self.device), self.codebook_size, self.num_codebooks)
        except ValueError as exc:
            raise ValueError(f"codebook health: {exc}") from None
        self.last_seen.view(-1).index_fill_(0, flat, int(step))
        # vqtk.measure.code_histogram's counts, added in place: its bincount reads the indices'
        # minimum back to the host on CUDA, index_add_ does not
        self.epoch_counts.view(-1).index_add_(0, flat, torch.ones_like(flat))
        self.first_step = step if self.first_step is None else min(self.first_step, step)
        self.latest_step = step if self.latest_step is None else max(self.latest_step, step)
        if latents is not None and self.restart_dead_codes:
            self._keep(latents)

    def set_epoch(self, epoch: int) -> None:
        """The data epoch of the batches observed from now on; a new epoch closes the running one.

        The closed epoch's histogram is reported by the next :meth:`check`. Call
        it before each step (the stage-1 trainer does, with its data stream's
        epoch); without calls, nothing per epoch is reported. Never
        synchronises with the host.
        """
        if self.epoch is not None and epoch != self.epoch:
            if not self._epoch_partial:
                self._ended = (self.epoch, self.epoch_counts)
            self.epoch_counts = torch.zeros_like(self.epoch_counts)
            self._epoch_partial = False
        self.epoch = epoch

    def _keep(self, latents: torch.Tensor) -> None:
        z = latents.detach().to(self.device, torch.float32)
        vectors = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]) if z.dim() == 4 else z.reshape(-1, z.shape[-1])
        if self.reservoir is None or self.reservoir.shape[1] != vectors.shape[1]:
            self.reservoir = torch.zeros(self.reservoir_size, vectors.shape[1], device=self.device)
            self.filled = self._next = 0
        k = min(vectors.shape[0], max(1, self.reservoir_size // 8))
        picks = torch.randperm(vectors.shape[0], generator=self._generator, device=self.device)[:k]
        slots = (self._next + torch.arange(k, device=self.device)) % self.reservoir_size
        self.reservoir.index_copy_(0, slots, vectors[picks])
        self._next = (self._next + k) % self.reservoir_size
        self.filled = min(self.reservoir_size, self.filled + k)

    def attach(self, quantizer: nn.Module, *, step: Callable[[], int]):
        """Observe every forward of ``quantizer`` in training mode (indices and input latents).

        ``step()`` gives the current training step. Returns the hook handle
        (``handle.remove()`` detaches). Eval-mode forwards are not observed.
        """
        self._quantizer = quantizer

        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            if module.training:
                self.observe(output.indices, step=step(), latents=inputs[0] if inputs else None)

        return quantizer.register_forward_hook(hook)

    # -- reading -------------------------------------------------------------------

    @property
    def window_full(self) -> bool:
        """Whether at least ``window`` steps have been observed since the first one."""
        if self.first_step is None or self.latest_step is None:
            return False
        return self.latest_step - self.first_step + 1 >= self.window

    def alive(self) -> torch.Tensor:
        """``(Q, K)`` bool: codes used within the last ``window`` observed steps."""
        if self.latest_step is None:
            return torch.zeros_like(self.last_seen, dtype=torch.bool)
        return self.last_seen > self.latest_step - self.window

    def usage(self) -> list[float]:
        """Fraction of each codebook's codes used in the window (host sync)."""
        return [float(u) for u in code_usage(self.alive()).cpu()]

    def dead_codes(self) -> list[torch.Tensor]:
        """Per codebook, the ids of codes unused in the window (host sync)."""
        alive = self.alive()
        return [(~alive[q]).nonzero().flatten() for q in range(self.num_codebooks)]

    def check(self, *, step: Optional[int] = None, quantizer: Optional[nn.Module] = None) -> dict[str, float]:
        """Metrics for the log (usage, dead codes, low-usage flag), after restarting dead codes if enabled.

        Keys: ``codebook/window_usage`` (mean over codebooks; per codebook as
        ``codebook/window_usage_q{q}`` when there are several),
        ``codebook/dead_codes`` (all codebooks), ``codebook/low_usage`` (1.0 while
        below ``min_usage``) and, when codes were restarted,
        ``codebook/restarted_codes``. Usage and dead codes are measured before
        any restart. After a data epoch ended (:meth:`set_epoch`), the first check
        also reports that whole epoch: ``codebook/epoch_usage`` (fraction of
        codes used at least once) and ``codebook/epoch_perplexity`` (means over
        codebooks; per codebook with a ``_q{q}`` suffix when there are
        several); the epoch is the one before the log record's ``epoch``.
        ``step`` only labels log messages (default: the latest observed).
        """
        if self.latest_step is None:
            return {}
        if _world_size() > 1:  # a code used on any rank is used
            dist.all_reduce(self.last_seen, op=dist.ReduceOp.MAX)
            self._merge_epoch_counts()
        step = self.latest_step if step is None else step
        usage = self.usage()
        dead = self.dead_codes()
        record: dict[str, float] = {
            "codebook/window_usage": sum(usage) / len(usage),
            "codebook/dead_codes": float(sum(int(d.numel()) for d in dead)),
        }
        if self.num_codebooks > 1:
            for q, u in enumerate(usage):
                record[f"codebook/window_usage_q{q}"] = u
        low = self.window_full and self.min_usage > 0 and min(usage) < self.min_usage
        if low and not self.low:
            worst = min(range(len(usage)), key=usage.__getitem__)
            which = f" (codebook {worst})" if self.num_codebooks > 1 else ""
            log.warning(
                "codebook usage %.1f%%%s over the last %d steps is below min_usage %.1f%% at step %d "
                "(%d dead codes)", 100 * usage[worst], which, self.window, 100 * self.min_usage, step,
                int(record["codebook/dead_codes"]),
            )
        elif self.low and not low:
            log.info("codebook usage back above min_usage %.1f%% at step %d", 100 * self.min_usage, step)
        self.low = low
        record["codebook/low_usage"] = 1.0 if low else 0.0
        if self._ended is not None:
            record.update(self._epoch_record(*self._ended, step=step))
            self._ended = None
        if self.restart_dead_codes and self.window_full and record["codebook/dead_codes"] > 0:
            restarted = self.restart(dead, quantizer=quantizer or self._quantizer, step=step)
            if restarted:
                record["codebook/restarted_codes"] = float(restarted)
        return record

    def _merge_epoch_counts(self) -> None:
        """Sum the ranks' running counts into rank 0's (every rank, at the same checks)."""
        dist.all_reduce(self.epoch_counts, op=dist.ReduceOp.SUM)
        if _rank() != 0:
            self.epoch_counts.zero_()

    def _epoch_record(self, epoch: int, counts: torch.Tensor, *, step: int) -> dict[str, float]:
        """Usage and perplexity of an ended epoch's histogram (summed over ranks; host sync)."""
        if _world_size() > 1:
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        counts = counts.cpu()
        if int(counts[0].sum()) == 0:
            return {}
        usage = code_usage(counts).tolist()
        ppl = perplexity(counts).tolist()
        record = {"codebook/epoch_usage": sum(usage) / len(usage), "codebook/epoch_perplexity": sum(ppl) / len(ppl)}
        if self.num_codebooks > 1:
            for q in range(self.num_codebooks):
                record[f"codebook/epoch_usage_q{q}"] = usage[q]
                record[f"codebook/epoch_perplexity_q{q}"] = ppl[q]
        log.info("epoch %d: %.1f%% of the codes used, perplexity %.1f (logged at step %d)", epoch,
                 100 * record["codebook/epoch_usage"], record["codebook/epoch_perplexity"], step)
        return record

    # -- restarts --------------------------------------------------------------------

    @torch.no_grad()
    def restart(self, dead: list[torch.Tensor], *, quantizer: Optional[nn.Module], step: int) -> int:
        """Set dead codes to distinct reservoir latents; returns how many codes were restarted.

        With fewer latents in the reservoir than dead codes, a random subset of
        the dead codes is restarted now and the rest at later checks. Restarted
        codes count as used at the latest step, so each gets a full window to
        attract latents before it can be called dead again.
        """
        if quantizer is None or not supports_restart(quantizer):
            if not self._warned_unsupported:
                name = type(quantizer).__name__ if quantizer is not None else "no quantizer attached"
                log.warning(
                    "codebook health: restart_dead_codes is on but %s does not support restarts "
                    "(vqtk.interfaces.RestartableQuantizer); dead codes are not restarted", name,
                )
                self._warned_unsupported = True
            return 0
        world = _world_size()
        if world == 1 and (self.reservoir is None or self.filled == 0):
            return 0
        total = 0
        for q, ids in enumerate(dead):
            if world == 1 and ids.numel() == 0:
                continue
            chosen, vectors = self._pick(ids, dim=int(quantizer.dim))
            if world > 1:  # every rank applies rank 0's choice
                chosen, vectors = self._broadcast(chosen, vectors)
            if chosen.numel() == 0:
                continue
            if self.num_codebooks > 1:
                quantizer.restart_codes(chosen, vectors, codebook=q)
            else:
                quantizer.restart_codes(chosen, vectors)
            self.last_seen[q].index_fill_(0, chosen, int(self.latest_step))
            total += int(chosen.numel())
        if total:
            self.total_restarted += total
            log.info("restarted %d dead codes at step %d", total, step)
        return total

    def _pick(self, ids: torch.Tensor, *, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``len(ids)`` dead codes and as many distinct reservoir latents."""
        width = self.reservoir.shape[1] if self.reservoir is not None else dim
        n = min(int(ids.numel()), self.filled)
        if n == 0:
            return ids[:0].to(self.device), torch.zeros(0, width, device=self.device)
        if n < ids.numel():
            ids = ids[torch.randperm(ids.numel(), generator=self._generator, device=self.device)[:n]]
        picks = torch.randperm(self.filled, generator=self._generator, device=self.device)[:n]
        return ids.to(self.device), self.reservoir[picks]

    def _broadcast(self, code_ids: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = torch.tensor([code_ids.numel(), vectors.shape[1]], device=self.device)
        dist.broadcast(count, src=0)
        n, width = (int(v) for v in count.cpu())
        if dist.get_rank() != 0:
            code_ids = torch.empty(n, dtype=torch.long, device=self.device)
            vectors = torch.empty(n, width, device=self.device)
        if n:
            code_ids, vectors = code_ids.contiguous(), vectors.contiguous()
            dist.broadcast(code_ids, src=0)
            dist.broadcast(vectors, src=0)
        return code_ids, vectors

    # -- resuming --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors, ints; fits a vqtk train state)."""
        return {
            "last_seen": self.last_seen.cpu(),
            "first_step": self.first_step,
            "latest_step": self.latest_step,
            "reservoir": None if self.reservoir is None else self.reservoir.cpu(),
            "filled": self.filled,
            "next": self._next,
            "low": self.low,
            "total_restarted": self.total_restarted,
            "generator": self._generator.get_state(),
            "epoch": self.epoch,
            "epoch_counts": self.epoch_counts.cpu(),
            "epoch_partial": self._epoch_partial,
            "ended_epoch": None if self._ended is None else self._ended[0],
            "ended_counts": None if self._ended is None else self._ended[1].cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        last_seen = state["last_seen"]
        if tuple(last_seen.shape) != tuple(self.last_seen.shape):
            raise ValueError(
                f"codebook health state is for {tuple(last_seen.shape)} codes, this tracker has "
                f"{tuple(self.last_seen.shape)}"
            )
        self.last_seen = last_seen.to(self.device, torch.long).clone()
        self.first_step = state["first_step"]
        self.latest_step = state["latest_step"]
        res = state["reservoir"]
        self.reservoir = None if res is None else res.to(self.device, torch.float32).clone()
        self.filled = int(state["filled"])
        self._next = int(state["next"])
        self.low = bool(state["low"])
        self.total_restarted = int(state["total_restarted"])
        self._generator.set_state(state["generator"])
        # every rank loads rank 0's state, whose counts include what was merged from all ranks:
        # the other ranks start from zero so that the sum over ranks stays the epoch's histogram
        keep = _rank() == 0
        counts = state.get("epoch_counts")
        self.epoch = state.get("epoch")
        self._epoch_partial = bool(state.get("epoch_partial", False)) or counts is None  # older state
        self.epoch_counts = torch.zeros_like(self.last_seen)
        if counts is not None and keep:
            self.epoch_counts.copy_(counts)
        ended = state.get("ended_counts")
        self._ended = None
        if ended is not None:
            self._ended = (int(state["ended_epoch"]),
                           ended.to(self.device, torch.long).clone() if keep else torch.zeros_like(self.last_seen))
