"""What both training stages share: one :class:`Run` per stage, one :class:`Session` per loop.

A :class:`Run` owns the device and process group, the output folder, the
metadata every checkpoint carries, checkpoint save and restore, and wrapping
modules for DDP. A :class:`Session` is the loop around the steps: Ctrl-C
handling (finish the step, checkpoint, stop), the progress bar and log lines,
``metrics.jsonl``, throughput, and the cadence of periodic work. Each trainer
keeps only its own step.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from vqtk.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from vqtk.recipe.schema import OptimizerSection, Recipe
from vqtk.registry import Registry, default_registry
from vqtk.train import distributed
from vqtk.train.environment import pick_device, seed_everything
from vqtk.train.fsdp import Replicated, Sharded, checkpoint_blocks
from vqtk.train.loggers import Loggers, TrackedMetrics, build_loggers, check_loggers
from vqtk.train.loop import StopFlag, Throughput, checkpoint_and_interrupt, due
from vqtk.train.metadata import run_metadata
from vqtk.train.metrics_log import MetricsLog, Progress

log = logging.getLogger("vqtk")


class Run:
    """One training stage's environment: device, processes, output folder, checkpoints.

    Args:
        recipe: the validated recipe.
        resolved: its resolved dict (stored in every checkpoint).
        out: the stage's output folder.
        stage: ``"1"`` or ``"2"`` (stored in the checkpoint metadata).
        device: the recipe's device name (``"auto"``, ``"cpu"``, ``"cuda:1"``...).
        seed: seeds every random number generator.
        registry: where components come from (default: the installed plugins).
        progress: show a progress bar on the main process.
    """

    def __init__(self, *, recipe: Recipe, resolved: dict, out: Path, stage: str, device: str, seed: int,
                 registry: Optional[Registry] = None, progress: bool = True):
        self.recipe, self.resolved, self.stage = recipe, resolved, stage
        self.out = Path(out)
        self.registry = registry or default_registry()
        self.progress = progress
        check_loggers(recipe.train.loggers)  # a missing tracker package stops the run before anything is built
        #: the experiment trackers (TensorBoard, W&B) of this stage; started with :meth:`metrics_log`
        self.loggers = Loggers()
        requested = pick_device(device)
        self.dist = distributed.current(requested.type)
        self.device = self.dist.device(requested)
        seed_everything(seed)
        #: the strategy of :meth:`parallel`, whose state a Ctrl-C checkpoint gathers first
        self.parallel_module: Optional[Replicated] = None

    @property
    def main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.dist.is_main

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    def metadata(self, **extra: str) -> dict[str, str]:
        """The string metadata of this stage's checkpoints (recipe, versions, provenance, ``extra``)."""
        return {**run_metadata(self.recipe, self.resolved, self.registry, stage=self.stage), **extra}

    def save(self, step: int, modules: dict[str, Any], train_state: Any, **extra_metadata: str) -> Path:
        """Write the checkpoint of ``step`` (main process only; see :func:`save_checkpoint`)."""
        path = save_checkpoint(self.checkpoints, step, modules, self.metadata(**extra_metadata), train_state)
        self.loggers.flush()
        log.debug("checkpoint %s", path)
        return path

    def latest(self, with_train_state: bool = False) -> Checkpoint:
        """This stage's newest complete checkpoint; a damaged one is an error, never a fresh start."""
        return load_checkpoint(self.out, with_train_state=with_train_state)

    def has_checkpoint(self) -> bool:
        return (self.checkpoints / "last").exists()

    def ddp(self, module: torch.nn.Module, *, find_unused_parameters: bool = False) -> torch.nn.Module:
        """``module`` wrapped for DistributedDataParallel when several processes run, else itself."""
        if not self.dist.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)

    def parallel(self, module: torch.nn.Module, inner: torch.nn.Module, *, blocks: Sequence[torch.nn.Module],
                 strategy: str, precision: str, checkpointing: bool, optimizer: OptimizerSection) -> Replicated:
        """``module`` trained over the processes by ``strategy``, with its optimizer over ``inner``'s parameters.

        "ddp": whole on each process (DDP when there are several); "fsdp": sharded by FSDP2,
        each of ``blocks`` (submodules of ``inner``, e.g. ``Prior.blocks()``) a unit of its own. ``checkpointing`` recomputes the
        activations of those blocks in the backward pass (either strategy). A single process
        has nothing to shard: "fsdp" then trains the module whole, which gives the same
        checkpoints. ``module`` may be on the CPU: it ends up on :attr:`device` (sharded, under
        FSDP, so that it need not fit one device). See :mod:`vqtk.train.fsdp`.
        """
        if strategy == "fsdp" and self.dist.enabled:
            self.parallel_module = Sharded(module, inner, blocks=blocks, precision=precision,
                                           checkpointing=checkpointing, optimizer=optimizer, main=self.main,
                                           device=self.device)
        else:
            if strategy == "fsdp":
                log.info("fsdp: one process, nothing to shard; training the module whole")
            module.to(self.device)
            if checkpointing:  # applied before DDP wraps the module
                checkpoint_blocks(blocks)
            self.parallel_module = Replicated(self.ddp(module, find_unused_parameters=True), inner,
                                              precision=precision, optimizer=optimizer)
        return self.parallel_module

    def session(self, *, total: int, start: int, label: str, metrics: MetricsLog) -> "Session":
        return Session(self, total=total, start=start, label=label, metrics=metrics)

    def metrics_log(self, *, resume_step: Optional[int]) -> MetricsLog:
        """``metrics.jsonl`` of this stage (written by the main process; resumed runs drop later lines).

        Starts the recipe's trackers too: every record also goes to them.
        """
        name = (self.recipe.name or self.out.name) + ("" if self.stage == "1" else " prior")
        self.loggers.replace(build_loggers(self.recipe.train.loggers, out=self.out, resume_step=resume_step,
                                           main=self.main, stage=self.stage, name=name, config=self.resolved))
        return TrackedMetrics(self.out / "metrics.jsonl", resume_step=resume_step, enabled=self.main,
                              loggers=self.loggers)

    def finish(self) -> Path:
        """Wait for every process; then the newest checkpoint exists for all of them."""
        self.loggers.close()
        self.dist.barrier()
        return self.latest().path


class Session:
    """The loop around a stage's steps: Ctrl-C, progress, metrics, throughput, cadence.

    Use as a context manager around the loop; inside it, after each step:
    :meth:`count` the items processed, :meth:`report` a log record when
    :meth:`due` says so, and call :meth:`stop_if_asked` last.
    """

    def __init__(self, run: Run, *, total: int, start: int, label: str, metrics: MetricsLog):
        self.run, self.total, self.metrics = run, total, metrics
        self.progress = Progress(total, start, label, run.progress and run.main)
        self.throughput = Throughput()
        self._stop = StopFlag()

    def __enter__(self) -> "Session":
        self._stop.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.close()
        if exc[0] is not None:  # the loop stopped (Ctrl-C, an error): the trackers keep what they got
            self.run.loggers.close()
        self._stop.__exit__(*exc)

    def due(self, step: int, every: int) -> bool:
        """Whether periodic work of cadence ``every`` runs after ``step`` (always after the last step)."""
        return due(step, every, self.total)

    def count(self, items: int) -> None:
        """``items`` processed by this process in the step just done (all processes are counted)."""
        self.throughput.add(items * self.run.dist.world_size)

    def rate(self) -> float:
        """Items per second since the last call."""
        return self.throughput.take()

    def report(self, step: int, record: dict[str, Any], postfix: dict[str, str]) -> None:
        """Write ``record`` to ``metrics.jsonl`` and show ``postfix`` (main process only)."""
        self.metrics.write(record)
        if self.run.main:
            self.progress.update(step, postfix)
            self.progress.line(step, postfix)

    def stop_if_asked(self, step: int, save: Callable[[], Path]) -> None:
        """After a Ctrl-C on any process: save (main process) and leave the loop as an interrupt."""
        if self._stop.agreed(self.run.dist):
            if self.run.parallel_module is not None:
                self.run.parallel_module.gather()  # FSDP: every process takes part before the main one saves
            checkpoint_and_interrupt(save, step, self.run.main)
