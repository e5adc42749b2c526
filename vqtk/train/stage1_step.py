"""Stage 1's optimizer step: the tokenizer's update, then the discriminator's on the same reconstructions.

:class:`Stage1Step` owns what optimisation needs (optimizers, gradient
scalers, the moving-average copy, DDP wrappers, the parts that hear the step)
and nothing about files or the loop.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from vqtk.build import LossEntry
from vqtk.errors import VqtkError
from vqtk.interfaces import Discriminator, LossInputs, QuantizerOutput, step_aware_parts
from vqtk.model import VQGAN, VQGANOutput
from vqtk.recipe.schema import TrainSection
from vqtk.train.environment import autocast, grad_scaler
from vqtk.train.loop import make_optimizer
from vqtk.train.run import Run

#: one micro-batch's (images, detached reconstruction, quantizer record), kept for the discriminator step
Kept = tuple[torch.Tensor, torch.Tensor, QuantizerOutput]


class _TupleOutputs(torch.nn.Module):
    """The VQGAN with plain tuple outputs, so DDP can trace which parameters the loss used."""

    def __init__(self, model: VQGAN):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        out = self.model(x)
        q = out.quantizer
        return out.reconstruction, q.quantized, q.indices, q.loss, q.metrics


class Stage1Step:
    """One optimizer step of the tokenizer (over ``grad_accum`` micro-batches), then of the discriminator.

    Args:
        model: the tokenizer, on its device.
        discriminator: the discriminator (on its device), or None.
        losses: the recipe's losses, non-adversarial first.
        cfg: the recipe's ``[train]``.
        run: the stage's run (device, processes, DDP wrapping).
    """

    def __init__(self, *, model: VQGAN, discriminator: Optional[Discriminator], losses: list[LossEntry],
                 cfg: TrainSection, run: Run):
        self.model, self.disc, self.losses, self.cfg = model, discriminator, losses, cfg
        self.device, self.dist = run.device, run.dist
        # discriminator-side terms: adversarial losses first, so their logits are there to share
        self.d_losses = sorted((e for e in losses if type(e.loss).terms()[1]), key=lambda e: not e.loss.adversarial)
        if self.d_losses and discriminator is None:
            names = ", ".join(f"loss.{e.name}" for e in self.d_losses)
            raise VqtkError(f"model.discriminator: the recipe has losses that need a discriminator ({names}) "
                            "but no [model.discriminator]")
        self.opt_g = make_optimizer(model.parameters(), cfg.optimizer)
        self.opt_d = make_optimizer(discriminator.parameters(), cfg.disc_optimizer) if discriminator else None
        self.scaler_g = grad_scaler(self.device, cfg.precision)
        self.scaler_d = grad_scaler(self.device, cfg.precision)
        self.ema = None
        if cfg.ema_decay is not None:
            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        if cfg.compile:
            # Losses may differentiate through a compiled module more than once per step (the
            # adaptive GAN weight takes grad of the decoder's last layer with retain_graph=True);
            # AOTAutograd's donated buffers forbid that ("backward function was compiled with
            # non-empty donated buffers"), so they are off for the process while compiling.
            torch._functorch.config.donated_buffer = False
            # in place, so parameter names (and checkpoints) stay those of the plain modules
            for module in (model.encoder, model.decoder, discriminator):
                if module is not None:
                    module.compile()
        # every component that follows the training clock (the EMA copy's parts too)
        self.step_parts = step_aware_parts(model, discriminator, *(e.loss for e in losses),
                                           *([self.ema.module] if self.ema is not None else []))
        # a recipe may leave parameters out of the loss (a codebook no loss term reads, a
        # projection a quantizer skips): let DDP find them instead of hanging
        self.g_model = run.ddp(_TupleOutputs(model), find_unused_parameters=True) if self.dist.enabled else model
        self.d_model = run.ddp(discriminator) if discriminator is not None else None
        self.nonfinite_steps = 0
        self.consecutive_nonfinite = 0

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

    def __call__(self, batches: list[torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One optimizer step: the generator's (over ``grad_accum`` micro-batches), then the discriminator's.

        Every :class:`~vqtk.interfaces.StepAware` part hears the step first. A step whose
        generator loss is not finite on any process is skipped (no update), counted in
        ``nonfinite_steps``, and reported in the logs as ``skipped``.
        """
        for part in self.step_parts:
            part.on_step(step, self.cfg.steps)
        logs: dict[str, torch.Tensor] = {}
        kept = self.generator_step(batches, step, logs)
        if kept and self.opt_d is not None and self.d_losses:
            self.discriminator_step(kept, step, logs)
        return logs

    def generator_step(self, batches: list[torch.Tensor], step: int, logs: dict[str, torch.Tensor]) -> list[Kept]:
        """The tokenizer's update; returns what the discriminator step needs (empty when skipped)."""
        accum = len(batches)
        self.model.train()
        if self.disc is not None:
            self.disc.train()
            self.disc.requires_grad_(False)  # generator pass: gradients flow through D, never into it
        self.opt_g.zero_grad(set_to_none=True)
        kept: list[Kept] = []
        finite = torch.ones((), device=self.device)
        for i, x in enumerate(batches):
            with self._micro(self.g_model, i, accum):
                with autocast(self.device, self.cfg.precision):
                    out = self._forward(x)
                    inputs = LossInputs(real=x, reconstruction=out.reconstruction, quantizer=out.quantizer,
                                        step=step, discriminator=self.disc,
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
            self._skip(step, logs)
            return []
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
        return kept

    def _skip(self, step: int, logs: dict[str, torch.Tensor]) -> None:
        """A non-finite step: no update; too many in a row stop the run (the last checkpoint is intact)."""
        self.opt_g.zero_grad(set_to_none=True)
        self.nonfinite_steps += 1
        self.consecutive_nonfinite += 1
        logs["skipped"] = torch.ones(())
        if self.consecutive_nonfinite >= self.cfg.max_nonfinite_steps:
            raise VqtkError(
                f"training diverged: {self.consecutive_nonfinite} consecutive steps with a non-finite loss "
                f"(up to step {step + 1}; train.max_nonfinite_steps = {self.cfg.max_nonfinite_steps}); "
                "the last checkpoint is intact"
            )

    def discriminator_step(self, kept: list[Kept], step: int, logs: dict[str, torch.Tensor]) -> None:
        """The discriminator's update on the generator step's (detached) reconstructions.

        All discriminator-side terms of a micro-batch share one :class:`LossInputs`, so the
        discriminator runs once on the real and once on the fake images whoever reads the logits.
        """
        accum = len(kept)
        real_grad = any(e.loss.needs_real_gradients for e in self.d_losses)
        self.disc.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        for i, (x, rec, q) in enumerate(kept):
            inputs = LossInputs(real=x, reconstruction=rec, quantizer=q, step=step,
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
