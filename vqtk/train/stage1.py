"""Stage 1: train the tokenizer (encoder, quantizer, decoder) against its discriminator.

The :class:`~vqtk.train.run.Run` owns what both stages share (device, processes,
folder, checkpoints, the loop's Ctrl-C, progress and metrics);
:class:`~vqtk.train.stage1_step.Stage1Step` the optimizer step (generator half,
then discriminator half); :class:`~vqtk.train.stage1_eval.HeldOut` the held-out
scores and pictures. This module builds stage 1's parts, saves and restores
them, and runs the loop.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Optional

import torch

from vqtk.build import (
    build_data,
    build_discriminator,
    build_losses,
    build_vqgan,
    check_data_fits,
    component_origins,
    probe_shapes,
)
from vqtk.io.checkpoint import component_state, load_checkpoint, load_component_state, load_state_strict
from vqtk.measure import split_batch
from vqtk.model import VQGAN
from vqtk.recipe import dump_toml
from vqtk.recipe.schema import Recipe
from vqtk.registry import Registry
from vqtk.train.codebook_health import CodebookHealth
from vqtk.train.data_stream import BatchStream, StreamState
from vqtk.train.environment import rng_state, set_rng_state
from vqtk.train.metadata import layout_metadata
from vqtk.train.run import Run
from vqtk.train.schedule import learning_rate
from vqtk.train.stage1_eval import HeldOut
from vqtk.train.stage1_step import Stage1Step

log = logging.getLogger("vqtk")

class Stage1Trainer:
    """Trains a VQGAN as a recipe describes, writing everything under ``out_dir``."""

    def __init__(self, recipe: Recipe, resolved: dict, out_dir: Path, *, resume: bool = False,
                 registry: Optional[Registry] = None, progress: bool = True):
        self.cfg = cfg = recipe.train
        self.run_env = Run(recipe=recipe, resolved=resolved, out=out_dir, stage="1", device=cfg.device,
                           seed=cfg.seed, registry=registry, progress=progress)
        self.recipe, self.resolved, self.registry = recipe, resolved, self.run_env.registry
        self.out, self.dist, self.device = self.run_env.out, self.run_env.dist, self.run_env.device
        self._build_parts()
        self.held_out = HeldOut(data=self.data, losses=self.losses, batch_size=cfg.batch_size,
                                batches=cfg.eval_batches, device=self.device, precision=cfg.precision, out=self.out,
                                loggers=self.run_env.loggers)
        q = self.model.quantizer
        self.health = CodebookHealth(codebook_size=q.codebook_size, num_codebooks=q.num_codebooks,
                                     window=cfg.health_window, min_usage=cfg.min_usage,
                                     restart_dead_codes=cfg.restart_dead_codes,
                                     reservoir_size=cfg.restart_reservoir, device=self.device, seed=cfg.seed)
        self.health.attach(q, step=lambda: self.step)
        self.step = 0
        self.stream_state = StreamState()
        # the checkpoint to resume: a damaged one is an error, never a silent fresh start
        self.resume_path = self.run_env.latest().path if resume else None

    def _build_parts(self) -> None:
        """Model, discriminator, losses and data from the recipe, checked, placed and wrapped."""
        recipe, registry, cfg = self.recipe, self.registry, self.cfg
        self.model = build_vqgan(recipe, registry).to(self.device)
        self.disc = build_discriminator(recipe, registry)
        self.losses = build_losses(recipe, registry)
        self.data = build_data(recipe, registry)
        check_data_fits(self.model, self.data.resolution, self.data.channels)
        # one image through every part before any training, on copies: a first forward may
        # initialise state (k-means codebooks, ActNorm) that must come from real batches
        with torch.random.fork_rng(devices=[]):
            probe_shapes(copy.deepcopy(self.model), copy.deepcopy(self.disc), self.data.resolution,
                         component_origins(recipe, registry))
        for module in (self.disc, *(e.loss for e in self.losses)):
            if module is not None:
                module.to(self.device)
        if cfg.channels_last:
            for module in (self.model, self.disc):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        self.step_fn = Stage1Step(model=self.model, discriminator=self.disc, losses=self.losses, cfg=cfg,
                                  run=self.run_env)
        self.opt_g, self.opt_d, self.ema = self.step_fn.opt_g, self.step_fn.opt_d, self.step_fn.ema

    # -- state -------------------------------------------------------------------

    def _modules(self) -> dict[str, torch.nn.Module]:
        mods: dict[str, torch.nn.Module] = {"model": self.model}
        if self.disc is not None:
            mods["discriminator"] = self.disc
        if self.ema is not None:
            mods["ema"] = self.ema
        return mods

    def _loss_states(self) -> dict[str, dict]:
        """The losses' own state (buffers, extra state) by checkpoint prefix; stateless losses left out."""
        states = {f"loss.{e.name}": component_state(e.loss) for e in self.losses}
        return {prefix: state for prefix, state in states.items() if state}

    @property
    def nonfinite_steps(self) -> int:
        """Steps skipped for a non-finite loss so far (restored on resume)."""
        return self.step_fn.nonfinite_steps

    def train_step(self, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimizer step at :attr:`step` (see :class:`~vqtk.train.stage1_step.Stage1Step`)."""
        return self.step_fn(batches, self.step)

    @property
    def eval_model(self) -> VQGAN:
        """The weights evaluation and pictures use: the moving average when kept."""
        return self.ema.module if self.ema is not None else self.model

    def _train_state(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "opt_g": self.opt_g.state_dict(),
            "rng": rng_state(),
            "stream": {"epoch": self.stream.state.epoch, "position": self.stream.state.position},
            "nonfinite_steps": self.nonfinite_steps,
            "codebook_health": self.health.state_dict(),
            "scaler_g": self.step_fn.scaler_g.state_dict(),
            "scaler_d": self.step_fn.scaler_d.state_dict(),
        }
        if self.opt_d is not None:
            state["opt_d"] = self.opt_d.state_dict()
        return state

    def save(self) -> Path:
        return self.run_env.save(self.step, {**self._modules(), **self._loss_states()}, self._train_state(),
                                 **layout_metadata(self.model.quantizer.layout))

    def _restore(self) -> None:
        ckpt = load_checkpoint(self.resume_path, with_train_state=True)
        for prefix, module in self._modules().items():
            load_state_strict(module, ckpt.state_dict(prefix), f"{ckpt.path} ({prefix})")
        for entry in self.losses:
            prefix = f"loss.{entry.name}"
            if prefix in ckpt.modules:
                load_component_state(entry.loss, ckpt.state_dict(prefix), f"{ckpt.path} ({prefix})")
            elif component_state(entry.loss):
                log.warning("%s: no saved state for loss.%s (a checkpoint from before vqtk 0.2); it starts fresh",
                            ckpt.path, entry.name)
        st = ckpt.train_state
        self.opt_g.load_state_dict(st["opt_g"])
        if self.opt_d is not None:
            self.opt_d.load_state_dict(st["opt_d"])
        self.step = int(st["step"])
        self.stream_state = StreamState(**st["stream"])
        self.step_fn.nonfinite_steps = int(st.get("nonfinite_steps", 0))
        if "codebook_health" in st:
            self.health.load_state_dict(st["codebook_health"])
        if st.get("scaler_g"):
            self.step_fn.scaler_g.load_state_dict(st["scaler_g"])
            self.step_fn.scaler_d.load_state_dict(st["scaler_d"])
        set_rng_state(st["rng"])
        log.info("resumed from %s at step %d", ckpt.path, self.step)

    # -- one step ----------------------------------------------------------------

    def _set_lr(self) -> dict[str, float]:
        lrs = {}
        for name, opt, cfg in (("lr", self.opt_g, self.cfg.optimizer), ("lr_d", self.opt_d, self.cfg.disc_optimizer)):
            if opt is None:
                continue
            lr = learning_rate(cfg, self.step, self.cfg.steps)
            for group in opt.param_groups:
                group["lr"] = lr
            lrs[name] = lr
        return lrs

    # -- evaluation ----------------------------------------------------------------

    def evaluate(self, write_images: bool, tag: str) -> dict[str, float]:
        """Held-out scores (and a reconstruction grid) of :attr:`eval_model`; leaves every RNG as it found it."""
        return self.held_out(self.eval_model, step=self.step, write_images=write_images, tag=tag)

    def _evaluate_and_log(self, tag: str) -> dict[str, float]:
        scores = self.evaluate(write_images=True, tag=tag)
        self.metrics.write({"step": self.step, **scores})
        return scores

    # -- the loop ------------------------------------------------------------------

    def _start(self) -> bool:
        """Restore or start the run folder; False when a resumed run is already complete."""
        if self.run_env.main:
            self.out.mkdir(parents=True, exist_ok=True)
        if self.resume_path is not None:
            self._restore()
            if self.step >= self.cfg.steps:
                log.info("stage 1 already complete at step %d", self.step)
                return False
        elif self.run_env.main:
            (self.out / "recipe.toml").write_text(dump_toml(self.resolved))
        self.metrics = self.run_env.metrics_log(resume_step=self.step if self.resume_path else None)
        self.stream = BatchStream(self.data.train_set(), batch_size=self.cfg.batch_size, seed=self.cfg.seed,
                                  num_workers=self.cfg.num_workers, state=self.stream_state,
                                  rank=self.dist.rank, world_size=self.dist.world_size)
        return True

    def run(self) -> Path:
        main, cfg = self.run_env.main, self.cfg
        if not self._start():
            return load_checkpoint(self.out).path
        if main:
            log.info("data: %s", self.data.describe())
            log.info("device %s, precision %s, %d steps of %d x %d images x %d processes", self.device,
                     cfg.precision, cfg.steps, cfg.batch_size, cfg.grad_accum, self.dist.world_size)
        if self.step == 0 and main:
            scores = self._evaluate_and_log("start")
            if scores:
                log.info("held-out before training: " + ", ".join(f"{k[5:]} {v:.4g}" for k, v in scores.items()))
        batches = iter(self.stream)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        with self.run_env.session(total=cfg.steps, start=self.step, label="stage 1", metrics=self.metrics) as loop:
            while self.step < cfg.steps:
                lrs = self._set_lr()
                micro = [split_batch(next(batches))[0].to(self.device, non_blocking=True, memory_format=memory_format)
                         for _ in range(cfg.grad_accum)]
                self.health.set_epoch(self.stream.state.epoch)  # a new epoch closes the last one's code histogram
                logs = self.train_step(micro)
                self.step += 1
                loop.count(sum(m.shape[0] for m in micro))
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log(loop, logs, lrs)
                if loop.due(self.step, cfg.image_every) and main:
                    self._evaluate_and_log(f"step_{self.step:06d}")
                    self.held_out.plot(self.metrics)
                if loop.due(self.step, cfg.checkpoint_every) and main:
                    self.save()
                loop.stop_if_asked(self.step, self.save)
        return self._finish()

    def _log(self, loop, logs: dict[str, torch.Tensor], lrs: dict[str, float]) -> None:
        logs = self.dist.mean(logs)
        health = self.health.check(step=self.step)  # every rank: may use collectives
        rate = loop.rate()
        record = {"step": self.step, **{k: float(v) for k, v in logs.items()}, **lrs, "images_per_s": rate,
                  "epoch": self.stream.state.epoch, "nonfinite_steps": self.nonfinite_steps, **health}
        loop.report(self.step, record, {"loss": f"{record.get('loss/total', float('nan')):.4f}",
                                        "usage": f"{record.get('quantizer/usage', float('nan')):.2f}",
                                        "img/s": f"{rate:.1f}"})

    def _finish(self) -> Path:
        if self.run_env.main:
            if self.nonfinite_steps:
                log.warning("%d steps were skipped for a non-finite loss", self.nonfinite_steps)
            path = self.save()  # first: whatever happens while evaluating, the training is kept
            scores = self._evaluate_and_log("final")
            self.held_out.plot(self.metrics)
            if scores:
                log.info("held-out after training: " + ", ".join(f"{k[5:]} {v:.4g}" for k, v in scores.items()))
            log.info("stage 1 done: checkpoint %s, images in %s", path, self.out / "images")
        return self.run_env.finish()  # the final checkpoint exists for every process from here on
