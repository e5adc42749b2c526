"""Stage 1: train the tokenizer (encoder, quantizer, decoder) against its discriminator."""

from __future__ import annotations

import contextlib
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
from vqtk.errors import VqtkError
from vqtk.interfaces import LossInputs, step_aware_parts
from vqtk.recipe import dump_toml
from vqtk.recipe.schema import Recipe
from vqtk.registry import Registry, default_registry
from vqtk.io.checkpoint import (
    component_state,
    load_checkpoint,
    load_component_state,
    load_state_strict,
    save_checkpoint,
)
from vqtk.train.data_stream import BatchStream, StreamState
from vqtk.interfaces import QuantizerOutput
from vqtk.model import VQGAN, VQGANOutput
from vqtk.train import distributed
from vqtk.train.environment import (
    autocast,
    grad_scaler,
    pick_device,
    rng_state,
    seed_everything,
    set_rng_state,
)
from vqtk.io.images import plot_curves, save_grid
from vqtk.train.loop import StopFlag, Throughput, checkpoint_and_interrupt, due, make_optimizer
from vqtk.train.metadata import run_metadata
from vqtk.train.metrics_log import MetricsLog, Progress
from vqtk.train.schedule import learning_rate

log = logging.getLogger("vqtk")


def psnr(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Mean PSNR in dB of images in ``[-1, 1]``, measured on the ``[0, 1]`` scale."""
    mse = ((real.float() - fake.float().clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean()


class _TupleOutputs(torch.nn.Module):
    """The VQGAN with plain tuple outputs, so DDP can trace which parameters the loss used."""

    def __init__(self, model: VQGAN):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        out = self.model(x)
        q = out.quantizer
        return out.reconstruction, q.quantized, q.indices, q.loss, q.metrics


class Stage1Trainer:
    """Trains a VQGAN as a recipe describes, writing everything under ``out_dir``."""

    def __init__(self, recipe: Recipe, resolved: dict, out_dir: Path, *, resume: bool = False,
                 registry: Optional[Registry] = None, progress: bool = True):
        self.recipe = recipe
        self.resolved = resolved
        self.out = Path(out_dir)
        self.registry = registry or default_registry()
        self.cfg = recipe.train
        self.progress_enabled = progress
        requested = pick_device(self.cfg.device)
        self.dist = distributed.current(requested.type)
        self.device = self.dist.device(requested)
        seed_everything(self.cfg.seed)

        self.model = build_vqgan(recipe, self.registry).to(self.device)
        self.disc = build_discriminator(recipe, self.registry)
        self.losses = build_losses(recipe, self.registry)
        self.data = build_data(recipe, self.registry)
        check_data_fits(self.model, self.data.resolution, self.data.channels)
        # one image through every part before any training, on copies: a first forward may
        # initialise state (k-means codebooks, ActNorm) that must come from real batches
        with torch.random.fork_rng(devices=[]):
            probe_shapes(copy.deepcopy(self.model), copy.deepcopy(self.disc), self.data.resolution,
                         component_origins(recipe, self.registry))
        # discriminator-side terms: adversarial losses first, so their logits are there to share
        self.d_losses = sorted((e for e in self.losses if type(e.loss).terms()[1]),
                               key=lambda e: not e.loss.adversarial)
        if self.d_losses and self.disc is None:
            names = ", ".join(f"loss.{e.name}" for e in self.d_losses)
            raise VqtkError(f"model.discriminator: the recipe has losses that need a discriminator ({names}) "
                            "but no [model.discriminator]")
        if self.disc is not None:
            self.disc.to(self.device)
        for e in self.losses:
            e.loss.to(self.device)

        if self.cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
            if self.disc is not None:
                self.disc.to(memory_format=torch.channels_last)
        self.opt_g = make_optimizer(self.model.parameters(), self.cfg.optimizer)
        self.opt_d = make_optimizer(self.disc.parameters(), self.cfg.disc_optimizer) if self.disc else None
        self.scaler_g = grad_scaler(self.device, self.cfg.precision)
        self.scaler_d = grad_scaler(self.device, self.cfg.precision)
        self.ema = None
        if self.cfg.ema_decay is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.cfg.ema_decay),
                                     use_buffers=True)
        if self.cfg.compile:
            # in place, so parameter names (and checkpoints) stay those of the plain modules
            for module in (self.model.encoder, self.model.decoder, self.disc):
                if module is not None:
                    module.compile()
        # every component that follows the training clock (the EMA copy's parts too)
        self.step_parts = step_aware_parts(self.model, self.disc, *(e.loss for e in self.losses),
                                           *([self.ema.module] if self.ema is not None else []))
        self.g_model, self.d_model = self.model, self.disc
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # a recipe may leave parameters out of the loss (a codebook no loss term reads, a
            # projection a quantizer skips): let DDP find them instead of hanging
            self.g_model = DDP(_TupleOutputs(self.model), device_ids=ids, find_unused_parameters=True)
            if self.disc is not None:
                self.d_model = DDP(self.disc, device_ids=ids)
        from vqtk.train.codebook_health import CodebookHealth

        q = self.model.quantizer
        self.health = CodebookHealth(codebook_size=q.codebook_size, num_codebooks=q.num_codebooks,
                                     window=self.cfg.health_window, min_usage=self.cfg.min_usage,
                                     restart_dead_codes=self.cfg.restart_dead_codes,
                                     reservoir_size=self.cfg.restart_reservoir, device=self.device,
                                     seed=self.cfg.seed)
        self.health.attach(q, step=lambda: self.step)
        self.nonfinite_steps = 0
        self.consecutive_nonfinite = 0
        self.step = 0
        self.stream_state = StreamState()
        self.resume_path = self._find_resume() if resume else None

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
    def eval_model(self) -> VQGAN:
        """The weights evaluation and pictures use: the moving average when kept."""
        return self.ema.module if self.ema is not None else self.model

    def _metadata(self) -> dict[str, str]:
        return run_metadata(self.recipe, self.resolved, self.registry, stage="1")

    def _train_state(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "opt_g": self.opt_g.state_dict(),
            "rng": rng_state(),
            "stream": {"epoch": self.stream.state.epoch, "position": self.stream.state.position},
            "nonfinite_steps": self.nonfinite_steps,
            "codebook_health": self.health.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
        }
        if self.opt_d is not None:
            state["opt_d"] = self.opt_d.state_dict()
        return state

    def save(self) -> Path:
        path = save_checkpoint(self.out / "checkpoints", self.step, {**self._modules(), **self._loss_states()},
                               self._metadata(), self._train_state())
        log.debug("checkpoint %s", path)
        return path

    def _find_resume(self) -> Path:
        """The checkpoint to resume; a damaged one is an error, never a silent fresh start."""
        return load_checkpoint(self.out, with_train_state=False).path

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
        self.nonfinite_steps = int(st.get("nonfinite_steps", 0))
        if "codebook_health" in st:
            self.health.load_state_dict(st["codebook_health"])
        if st.get("scaler_g"):
            self.scaler_g.load_state_dict(st["scaler_g"])
            self.scaler_d.load_state_dict(st["scaler_d"])
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

    def _generator_terms(self, inputs: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logs: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self.device)
        for entry in self.losses:
            if entry.loss.adversarial:
                if inputs.reconstruction_loss is None:
                    inputs.reconstruction_loss = total
            term = entry.loss.generator_loss(inputs)
            if term is None:  # a discriminator-side regulariser
                continue
            total = total + entry.weight * term.value
            logs[f"loss/{entry.name}"] = term.value.detach()
            for k, v in term.logs.items():
                logs[f"{entry.name}/{k}"] = v.detach() if torch.is_tensor(v) else torch.tensor(float(v))
        logs["loss/total"] = total.detach()
        return total, logs

    def _forward(self, x: torch.Tensor) -> VQGANOutput:
        if not self.dist.enabled:
            return self.model(x)
        rec, quantized, indices, loss, metrics = self.g_model(x)
        return VQGANOutput(reconstruction=rec, quantizer=QuantizerOutput(
            quantized=quantized, indices=indices, loss=loss, metrics=metrics))

    def _micro(self, module, index: int, count: int):
        """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
        if self.dist.enabled and index < count - 1:
            return module.no_sync()
        return contextlib.nullcontext()

    def train_step(self, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimizer step of the generator (over ``grad_accum`` micro-batches), then the discriminator.

        A step whose generator loss is not finite on any process is skipped (no update),
        counted in ``nonfinite_steps``, and reported in the logs as ``skipped``.
        """
        accum = len(batches)
        logs: dict[str, torch.Tensor] = {}
        for part in self.step_parts:
            part.on_step(self.step, self.cfg.steps)
        self.model.train()
        if self.disc is not None:
            self.disc.train()
            self.disc.requires_grad_(False)  # generator pass: gradients flow through D, never into it
        self.opt_g.zero_grad(set_to_none=True)
        kept = []
        finite = torch.ones((), device=self.device)
        for i, x in enumerate(batches):
            with self._micro(self.g_model, i, accum):
                with autocast(self.device, self.cfg.precision):
                    out = self._forward(x)
                    inputs = LossInputs(real=x, reconstruction=out.reconstruction, quantizer=out.quantizer,
                                        step=self.step, discriminator=self.disc,
                                        last_layer=self.model.decoder.last_layer)
                    total, term_logs = self._generator_terms(inputs)
                finite = finite * torch.isfinite(total.detach()).float()
                self.scaler_g.scale(total / accum).backward()
            for k, v in {**term_logs, **{f"quantizer/{k}": v for k, v in out.quantizer.metrics.items()}}.items():
                logs[k] = logs.get(k, 0) + v.detach().float() / accum
            kept.append((x, out.reconstruction.detach(), out.quantizer))
        if self.dist.enabled:  # every process must agree to skip, or their weights drift apart
            finite = self.dist.mean({"f": finite})["f"].floor()
        if not bool(finite):
            self.opt_g.zero_grad(set_to_none=True)
            self.nonfinite_steps += 1
            self.consecutive_nonfinite += 1
            logs["skipped"] = torch.ones(())
            if self.consecutive_nonfinite >= self.cfg.max_nonfinite_steps:
                raise VqtkError(
                    f"training diverged: {self.consecutive_nonfinite} consecutive steps with a non-finite loss "
                    f"(up to step {self.step + 1}; train.max_nonfinite_steps = {self.cfg.max_nonfinite_steps}); "
                    "the last checkpoint is intact"
                )
            return logs
        self.consecutive_nonfinite = 0
        if self.cfg.optimizer.grad_clip > 0:
            self.scaler_g.unscale_(self.opt_g)
            logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optimizer.grad_clip)
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        if self.dist.enabled:
            # dead-code restarts and k-means init change the codebook from each process's own
            # batch: keep rank 0's, so every process quantizes with the same codes
            self.dist.broadcast_parameters(self.model.quantizer)
        if self.ema is not None:
            self.ema.update_parameters(self.model)

        if self.opt_d is not None and self.d_losses:
            self._discriminator_step(kept, logs)
        return logs

    def _discriminator_step(self, kept: list, logs: dict[str, torch.Tensor]) -> None:
        """One optimizer step of the discriminator on the generator step's (detached) reconstructions.

        All discriminator-side terms of a micro-batch share one :class:`LossInputs`, so the
        discriminator runs once on the real and once on the fake images whoever reads the logits.
        """
        accum = len(kept)
        real_grad = any(e.loss.needs_real_gradients for e in self.d_losses)
        self.disc.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        for i, (x, rec, q) in enumerate(kept):
            inputs = LossInputs(real=x, reconstruction=rec, quantizer=q, step=self.step,
                                discriminator=self.d_model, phase="discriminator", real_requires_grad=real_grad)
            with self._micro(self.d_model, i, accum):
                with autocast(self.device, self.cfg.precision):
                    d_total = torch.zeros((), device=self.device)
                    for entry in self.d_losses:
                        term = entry.loss.discriminator_loss(inputs)
                        if term is None:
                            continue
                        # an adversarial loss's recipe weight scales its generator term only (taming's
                        # disc_weight): the discriminator minimises its own objective unweighted; a
                        # regulariser's (LeCam) discriminator term is scaled by its recipe weight
                        weight = 1.0 if entry.loss.adversarial else entry.weight
                        d_total = d_total + weight * term.value
                        scalars = {f"loss_d/{entry.name}": term.value,
                                   **{f"{entry.name}/{k}": v for k, v in term.logs.items()}}
                        for key, v in scalars.items():
                            v = v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))
                            logs[key] = logs.get(key, 0) + v / accum
                if d_total.requires_grad:
                    self.scaler_d.scale(d_total / accum).backward()
        if self.cfg.disc_optimizer.grad_clip > 0:
            self.scaler_d.unscale_(self.opt_d)
            logs["grad_norm_d"] = torch.nn.utils.clip_grad_norm_(self.disc.parameters(),
                                                                 self.cfg.disc_optimizer.grad_clip)
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()

    # -- evaluation and pictures --------------------------------------------------

    def evaluate(self, write_images: bool, tag: str) -> dict[str, float]:
        """Held-out scores (and a reconstruction grid); leaves every RNG as it found it."""
        with torch.no_grad(), torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            return self._evaluate(write_images, tag)

    def _evaluate(self, write_images: bool, tag: str) -> dict[str, float]:
        eval_set = self.data.eval_set()
        n = min(len(eval_set), self.cfg.eval_batches * self.cfg.batch_size)
        if n == 0:
            return {}
        model = self.eval_model
        model.eval()
        scores: dict[str, float] = {}
        for start in range(0, n, self.cfg.batch_size):
            items = [eval_set[i] for i in range(start, min(n, start + self.cfg.batch_size))]
            x = torch.stack([it[0] if isinstance(it, tuple) else it for it in items]).to(self.device)
            with autocast(self.device, self.cfg.precision):
                out = model(x)
            rec = out.reconstruction.float()
            part = {"eval/psnr": psnr(x, rec)}
            inputs = LossInputs(real=x, reconstruction=rec, quantizer=out.quantizer, step=self.step)
            for entry in self.losses:
                if not entry.loss.adversarial:
                    term = entry.loss.generator_loss(inputs)
                    if term is not None:
                        part[f"eval/{entry.name}"] = term.value
            part["eval/usage"] = out.quantizer.metrics["usage"]
            for k, v in part.items():
                scores[k] = scores.get(k, 0.0) + float(v) * len(items) / n
        if write_images:
            # a grid spread over the whole eval set, so every held-out photo shows up
            picks = torch.linspace(0, len(eval_set) - 1, min(8, len(eval_set))).round().long().tolist()
            items = [eval_set[i] for i in picks]
            x = torch.stack([it[0] if isinstance(it, tuple) else it for it in items]).to(self.device)
            with autocast(self.device, self.cfg.precision):
                rec = model(x).reconstruction.float()
            save_grid([x.cpu(), rec.cpu()], self.out / "images" / f"recon_{tag}.png")
        model.train()
        return scores

    def _plot(self) -> None:
        series = self.metrics.series()
        keep = {k: v for k, v in series.items() if k.startswith("loss/") or k == "eval/psnr"}
        losses = {k: v for k, v in keep.items() if k.startswith("loss/")}
        plot_curves(losses, self.out / "loss_curve.png", title="stage 1 losses (log scale)")
        if "eval/psnr" in keep:
            plot_curves({"eval/psnr": keep["eval/psnr"]}, self.out / "psnr_curve.png", title="held-out PSNR (dB)")

    # -- the loop ------------------------------------------------------------------

    def run(self) -> Path:
        main = self.dist.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        if self.resume_path is not None:
            self._restore()
            if self.step >= self.cfg.steps:
                log.info("stage 1 already complete at step %d", self.step)
                return load_checkpoint(self.out).path
        elif main:
            (self.out / "recipe.toml").write_text(dump_toml(self.resolved))
        self.metrics = MetricsLog(self.out / "metrics.jsonl", resume_step=self.step if self.resume_path else None,
                                  enabled=main)
        train_set = self.data.train_set()
        self.stream = BatchStream(train_set, batch_size=self.cfg.batch_size, seed=self.cfg.seed,
                                  num_workers=self.cfg.num_workers, state=self.stream_state,
                                  rank=self.dist.rank, world_size=self.dist.world_size)
        if main:
            log.info("data: %s", self.data.describe())
            log.info("device %s, precision %s, %d steps of %d x %d images x %d processes", self.device,
                     self.cfg.precision, self.cfg.steps, self.cfg.batch_size, self.cfg.grad_accum,
                     self.dist.world_size)
        if self.step == 0 and main:
            scores = self.evaluate(write_images=True, tag="start")
            self.metrics.write({"step": 0, **scores})
            if scores:
                log.info("held-out before training: " + ", ".join(f"{k[5:]} {v:.4g}" for k, v in scores.items()))
        batches = iter(self.stream)
        progress = Progress(self.cfg.steps, self.step, "stage 1", self.progress_enabled and main)
        throughput = Throughput()
        memory_format = torch.channels_last if self.cfg.channels_last else torch.contiguous_format
        with StopFlag() as stop:
            try:
                while self.step < self.cfg.steps:
                    lrs = self._set_lr()
                    micro = [next(batches) for _ in range(self.cfg.grad_accum)]
                    micro = [(b[0] if isinstance(b, (list, tuple)) else b).to(
                        self.device, non_blocking=True, memory_format=memory_format) for b in micro]
                    logs = self.train_step(micro)
                    self.step += 1
                    throughput.add(sum(m.shape[0] for m in micro) * self.dist.world_size)
                    if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                        logs = self.dist.mean(logs)
                        health = self.health.check(step=self.step)  # every rank: may use collectives
                        rate = throughput.take()
                        record = {"step": self.step, **{k: float(v) for k, v in logs.items()}, **lrs,
                                  "images_per_s": rate, "epoch": self.stream.state.epoch,
                                  "nonfinite_steps": self.nonfinite_steps, **health}
                        self.metrics.write(record)
                        post = {"loss": f"{record.get('loss/total', float('nan')):.4f}",
                                "usage": f"{record.get('quantizer/usage', float('nan')):.2f}",
                                "img/s": f"{rate:.1f}"}
                        if main:
                            progress.update(self.step, post)
                            progress.line(self.step, post)
                    if due(self.step, self.cfg.image_every, self.cfg.steps) and main:
                        scores = self.evaluate(write_images=True, tag=f"step_{self.step:06d}")
                        self.metrics.write({"step": self.step, **scores})
                        self._plot()
                    if due(self.step, self.cfg.checkpoint_every, self.cfg.steps) and main:
                        self.save()
                    if stop.agreed(self.dist):
                        checkpoint_and_interrupt(self.save, self.step, main)
            finally:
                progress.close()
        if self.nonfinite_steps and main:
            log.warning("%d steps were skipped for a non-finite loss", self.nonfinite_steps)
        path = self.out / "checkpoints"
        if main:
            path = self.save()  # first: whatever happens while evaluating, the training is kept
            scores = self.evaluate(write_images=True, tag="final")
            self.metrics.write({"step": self.step, **scores})
            self._plot()
            if scores:
                log.info("held-out after training: " + ", ".join(f"{k[5:]} {v:.4g}" for k, v in scores.items()))
            log.info("stage 1 done: checkpoint %s, images in %s", path, self.out / "images")
        self.dist.barrier()  # the final checkpoint exists for every process from here on
        return path if main else load_checkpoint(self.out).path
