"""Stage 2: train a prior over a frozen tokenizer's codes, then sample images.

The :class:`~vqtk.train.run.Run` owns what both stages share; this module holds
stage 2's own parts (the tokenizer, the code cache, the prior) and its step.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

import torch

from vqtk.build import (
    build_data,
    build_prior,
    build_vqgan,
    check_data_fits,
    check_prior_fits,
    prior_facts,
    provided_values,
    recipe_sampling_options,
)
from vqtk.errors import VqtkError
from vqtk.interfaces import Prior, SamplingOptions, step_aware_parts
from vqtk.io.checkpoint import MODEL_FILE, load_checkpoint, load_state_strict
from vqtk.io.files import file_sha256
from vqtk.io.images import plot_curves, save_png, tile
from vqtk.model import VQGAN
from vqtk.pretrained import recipe_of
from vqtk.recipe import dump_toml
from vqtk.recipe.schema import Recipe
from vqtk.registry import Registry
from vqtk.train.code_cache import cache_dir_for, cache_key, load_or_encode
from vqtk.train.environment import rng_state, set_rng_state
from vqtk.train.metadata import layout_metadata
from vqtk.train.run import Run
from vqtk.train.schedule import learning_rate

log = logging.getLogger("vqtk")


def load_tokenizer(path, registry: Registry, device: torch.device) -> tuple[VQGAN, Recipe, Path]:
    """The frozen tokenizer of a stage-1 checkpoint, its recipe and its checkpoint folder."""
    ckpt = load_checkpoint(path)
    recipe = recipe_of(ckpt, registry)
    model = build_vqgan(recipe, registry)
    load_state_strict(model, ckpt.tokenizer_state(), str(ckpt.path))
    model.to(device).eval().requires_grad_(False)
    return model, recipe, ckpt.path


class _PriorLoss(torch.nn.Module):
    """``prior.loss`` as a module's forward, which is what DDP synchronises."""

    def __init__(self, prior: Prior):
        super().__init__()
        self.prior = prior

    def forward(self, indices: torch.Tensor, labels: Optional[torch.Tensor]):
        out = self.prior.loss(indices, labels)
        return out.loss, out.metrics


class Stage2Trainer:
    """Trains ``[prior]`` with ``[prior_train]`` on codes of the tokenizer at ``tokenizer_path``."""

    def __init__(self, recipe: Recipe, resolved: dict, out_dir: Path, tokenizer_path, *, resume: bool = False,
                 registry: Optional[Registry] = None, progress: bool = True):
        if recipe.prior is None or recipe.prior_train is None:
            raise VqtkError("prior: this recipe has no [prior] / [prior_train] tables (stage 2)")
        self.cfg = recipe.prior_train
        self.run_env = Run(recipe=recipe, resolved=resolved, out=out_dir, stage="2", device=recipe.train.device,
                           seed=self.cfg.seed, registry=registry, progress=progress)
        self.recipe, self.registry = recipe, self.run_env.registry
        self.out, self.dist, self.device = self.run_env.out, self.run_env.dist, self.run_env.device
        self.tokenizer, tok_recipe, self.tokenizer_folder = load_tokenizer(tokenizer_path, self.registry, self.device)
        self.data = build_data(recipe, self.registry)
        check_data_fits(self.tokenizer, self.data.resolution, self.data.channels)
        self.grid = self.tokenizer.latent_grid(self.data.resolution, self.data.resolution)
        self.prior = build_prior(recipe, self.tokenizer, self.data.resolution, self.registry)
        # the stored recipe names what the tokenizer provided, so sampling needs no data source
        facts = provided_values(recipe.prior, "prior", prior_facts(recipe, self.tokenizer, self.data.resolution))
        self.resolved = self.run_env.resolved = {**resolved, "prior": {**resolved["prior"], **facts}}
        check_prior_fits(self.prior, self.tokenizer, self.grid, tok_recipe.model.quantizer.type,
                         prior_type=recipe.prior.type, large_grid=self.cfg.large_grid)
        if self.prior.num_classes and not self.data.num_classes:
            raise VqtkError(f"prior.num_classes: {self.prior.num_classes} classes, but the data has no labels")
        # "ddp" or "fsdp" (vqtk.train.fsdp) puts the prior on the device: the loss to call, the
        # optimizer, what checkpoints hold
        self.loss_model = self.run_env.parallel(
            _PriorLoss(self.prior), self.prior, blocks=self.prior.blocks(), strategy=self.cfg.strategy,
            precision=self.cfg.precision, checkpointing=self.cfg.activation_checkpointing, optimizer=self.cfg.optimizer)
        self.opt = self.loss_model.optimizer
        self.step_parts = step_aware_parts(self.prior)
        self.step, self.epoch, self.position = 0, 0, 0
        self.resume = resume

    def _tensors(self) -> dict[str, torch.nn.Module]:
        return {"prior": self.loss_model.model_state(), "model": self.tokenizer}

    def save(self) -> Path:
        state = {"step": self.step, "opt": self.loss_model.optimizer_state(), "rng": rng_state(),
                 "stream": {"epoch": self.epoch, "position": self.position}}
        return self.run_env.save(self.step, self._tensors(), state, tokenizer=str(self.tokenizer_folder),
                                 **layout_metadata(self.tokenizer.quantizer.layout))

    def _restore(self) -> None:
        ckpt = self.run_env.latest(with_train_state=True)
        self.loss_model.load_model(ckpt.state_dict("prior"), str(ckpt.path))
        st = ckpt.train_state
        self.loss_model.load_optimizer(st["opt"])
        self.step = int(st["step"])
        self.epoch, self.position = int(st["stream"]["epoch"]), int(st["stream"]["position"])
        set_rng_state(st["rng"])
        log.info("stage 2 resumed from %s at step %d", ckpt.path, self.step)

    def _codes(self):
        digest = file_sha256(self.tokenizer_folder / MODEL_FILE)
        data_toml = dump_toml({"data": self.resolved.get("data", {})})
        key = cache_key(digest, data_toml, self.cfg.encode_passes, self.cfg.seed)
        if self.dist.enabled and not self.dist.is_main:
            self.dist.barrier()  # rank 0 encodes and writes the cache first
        result = load_or_encode(self.tokenizer, self.data.train_set(), cache_dir=cache_dir_for(self.tokenizer_folder),
                              key=key, batch_size=max(self.recipe.train.batch_size, 8),
                              passes=self.cfg.encode_passes, seed=self.cfg.seed, device=self.device)
        if self.dist.enabled and self.dist.is_main:
            self.dist.barrier()
        return result

    def _batches(self, n: int):
        """Index batches of this process; each global batch is split over the processes."""
        b, world, rank = self.cfg.batch_size, self.dist.world_size, self.dist.rank
        while True:
            g = torch.Generator().manual_seed(self.cfg.seed * 7_919 + self.epoch)
            order = torch.randperm(n, generator=g)
            while self.position + b * world <= n:
                idx = order[self.position + rank * b : self.position + (rank + 1) * b]
                self.position += b * world
                yield idx
            self.epoch, self.position = self.epoch + 1, 0

    def options(self) -> SamplingOptions:
        return recipe_sampling_options(self.recipe)

    @torch.no_grad()
    def write_samples(self, tag: str, grid: Optional[tuple[int, int]] = None) -> Path:
        self.prior.eval()
        with torch.random.fork_rng(devices=[]):
            g = torch.Generator(device="cpu").manual_seed(self.cfg.seed + 1)
            labels = None
            if self.prior.num_classes:
                labels = torch.arange(self.cfg.num_samples, device=self.device) % self.prior.num_classes
            idx = self.loss_model.plain().sample(self.cfg.num_samples, grid_size=grid, labels=labels,
                                                 options=self.options(), generator=g)
            images = self.tokenizer.decode_indices(idx.to(self.device)).float()
        self.prior.train()
        path = save_png(tile(images.cpu()), self.out / "samples" / f"{tag}.png")
        self.run_env.loggers.image(self.step, "images/samples" if grid is None else "images/samples_large", path)
        return path

    def run(self) -> Path:
        main = self.run_env.main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        if self.resume and self.run_env.has_checkpoint():
            self._restore()
            if self.step >= self.cfg.steps:
                log.info("stage 2 already complete at step %d", self.step)
                return self.run_env.latest().path
        codes, labels = self._codes()
        if codes.shape[0] < self.cfg.batch_size * self.dist.world_size:
            raise VqtkError(f"prior_train.batch_size: {self.cfg.batch_size} x {self.dist.world_size} processes "
                            f"exceeds the {codes.shape[0]} encoded grids")
        codes = codes.to(self.device)
        labels = labels.to(self.device) if labels is not None else None
        self.metrics = self.run_env.metrics_log(resume_step=self.step if self.step else None)
        stream = self._batches(codes.shape[0])
        if main:
            log.info("stage 2: %s prior, %d code grids of %s, %d steps of %d x %d processes", self.recipe.prior.type,
                     codes.shape[0], tuple(codes.shape[1:]), self.cfg.steps, self.cfg.batch_size, self.dist.world_size)
        self.prior.train()
        with self.run_env.session(total=self.cfg.steps, start=self.step, label="stage 2", metrics=self.metrics) as loop:
            while self.step < self.cfg.steps:
                idx = next(stream).to(self.device)
                loss, parts, lr = self.train_step(codes[idx], labels[idx] if labels is not None else None)
                self.step += 1
                loop.count(idx.numel() * math.prod(codes.shape[1:]))
                if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                    self._log(loop, loss, parts, lr)
                if loop.due(self.step, self.cfg.sample_every) or loop.due(self.step, self.cfg.checkpoint_every):
                    self.loss_model.gather()  # fsdp: every process gathers the weights for the main one
                if loop.due(self.step, self.cfg.sample_every) and main:
                    self.write_samples(f"step_{self.step:06d}")
                if loop.due(self.step, self.cfg.checkpoint_every) and main:
                    self.save()
                loop.stop_if_asked(self.step, self.save)
        return self._finish()

    def train_step(self, codes: torch.Tensor, labels: Optional[torch.Tensor]):
        """One optimizer step of the prior on a batch of code grids; ``(loss, metrics, lr)``."""
        for part in self.step_parts:
            part.on_step(self.step, self.cfg.steps)
        lr = learning_rate(self.cfg.optimizer, self.step, self.cfg.steps)
        for group in self.opt.param_groups:
            group["lr"] = lr
        loss, parts = self.loss_model(codes, labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optimizer.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.prior.parameters(), self.cfg.optimizer.grad_clip)
        self.opt.step()
        return loss, parts, lr

    def _log(self, loop, loss_t: torch.Tensor, parts: dict[str, torch.Tensor], lr: float) -> None:
        values = self.dist.mean({"loss": loss_t.detach(), **{k: v.detach() for k, v in parts.items()}})
        loss = float(values.pop("loss"))
        if not math.isfinite(loss):
            raise VqtkError(f"stage 2 diverged at step {self.step}: loss {loss}; the last checkpoint is intact")
        record = {"step": self.step, "loss": loss, "bits_per_token": loss / math.log(2), "lr": lr,
                  "tokens_per_s": loop.rate(), "epoch": self.epoch, **{k: float(v) for k, v in values.items()}}
        loop.report(self.step, record, {"loss": f"{loss:.4f}", "bits/tok": f"{record['bits_per_token']:.3f}",
                                        "tok/s": f"{record['tokens_per_s']:.0f}"})

    def _finish(self) -> Path:
        self.loss_model.gather()
        if self.run_env.main:
            path = self.save()
            grid_png = self.write_samples("final")
            log.info("samples: %s", grid_png)
            if self.cfg.large_grid is not None:
                large = self.write_samples("final_large", tuple(self.cfg.large_grid))
                f = self.tokenizer.downsample_factor
                log.info("larger-than-training samples (%dx%d px): %s", self.cfg.large_grid[0] * f,
                         self.cfg.large_grid[1] * f, large)
            plot_curves({"loss": self.metrics.series(["loss"]).get("loss", [])}, self.out / "loss_curve.png",
                        title="stage 2 prior loss (nats/token, log scale)")
            log.info("stage 2 done: checkpoint %s", path)
        return self.run_env.finish()
