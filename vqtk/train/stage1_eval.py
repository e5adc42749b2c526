"""Stage 1's held-out scores and pictures during training: PSNR, the losses, usage, reconstruction grids, curves."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from vqtk.build import LossEntry
from vqtk.interfaces import DataSource, LossInputs
from vqtk.io.images import plot_curves, save_grid
from vqtk.measure import psnr, split_batch
from vqtk.model import VQGAN
from vqtk.train.environment import autocast
from vqtk.train.loggers import Logger
from vqtk.train.metrics_log import MetricsLog


class HeldOut:
    """Scores a tokenizer on the data source's evaluation set and draws what people look at.

    Args:
        data: the recipe's data source (its ``eval_set``).
        losses: the recipe's losses (non-adversarial generator terms are scored).
        batch_size: images per forward pass.
        batches: batches scored each time (0: no scores).
        device: where the model runs.
        precision: the training precision (autocast).
        out: the run folder (``images/``, ``loss_curve.png``, ``psnr_curve.png``).
        loggers: experiment trackers that also get the reconstruction grids.
    """

    def __init__(self, *, data: DataSource, losses: list[LossEntry], batch_size: int, batches: int,
                 device: torch.device, precision: str, out: Path, loggers: Optional[Logger] = None):
        self.data, self.losses, self.batch_size, self.batches = data, losses, batch_size, batches
        self.device, self.precision, self.out = device, precision, out
        self.loggers = loggers if loggers is not None else Logger()

    def __call__(self, model: VQGAN, *, step: int, write_images: bool, tag: str) -> dict[str, float]:
        """Held-out scores (and a reconstruction grid); leaves every RNG as it found it."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            was_training = model.training
            model.eval()
            try:
                eval_set = self.data.eval_set()
                n = min(len(eval_set), self.batches * self.batch_size)
                if n == 0:
                    return {}
                scores = self._scores(model, eval_set, n, step)
                if write_images:
                    self._grid(model, eval_set, tag, step)
            finally:
                model.train(was_training)
        return scores

    def _images(self, eval_set, indices) -> torch.Tensor:
        return torch.stack([split_batch(eval_set[i])[0] for i in indices]).to(self.device)

    def _scores(self, model: VQGAN, eval_set, n: int, step: int) -> dict[str, float]:
        scores: dict[str, float] = {}
        for start in range(0, n, self.batch_size):
            x = self._images(eval_set, range(start, min(n, start + self.batch_size)))
            with autocast(self.device, self.precision):
                out = model(x)
            rec = out.reconstruction.float()
            part = {"eval/psnr": psnr(x, rec)}
            inputs = LossInputs(real=x, reconstruction=rec, quantizer=out.quantizer, step=step)
            for entry in self.losses:
                if not entry.loss.adversarial:
                    term = entry.loss.generator_loss(inputs)
                    if term is not None:
                        part[f"eval/{entry.name}"] = term.value
            part["eval/usage"] = out.quantizer.metrics["usage"]
            for k, v in part.items():
                scores[k] = scores.get(k, 0.0) + float(v) * x.shape[0] / n
        return scores

    def _grid(self, model: VQGAN, eval_set, tag: str, step: int) -> None:
        # a grid spread over the whole eval set, so every held-out photo shows up
        picks = torch.linspace(0, len(eval_set) - 1, min(8, len(eval_set))).round().long().tolist()
        x = self._images(eval_set, picks)
        with autocast(self.device, self.precision):
            rec = model(x).reconstruction.float()
        path = save_grid([x.cpu(), rec.cpu()], self.out / "images" / f"recon_{tag}.png")
        self.loggers.image(step, "images/recon", path)

    def plot(self, metrics: MetricsLog) -> None:
        """``loss_curve.png`` (every ``loss/*`` series) and ``psnr_curve.png`` from ``metrics.jsonl``."""
        series = metrics.series()
        losses = {k: v for k, v in series.items() if k.startswith("loss/")}
        plot_curves(losses, self.out / "loss_curve.png", title="stage 1 losses (log scale)")
        if "eval/psnr" in series:
            plot_curves({"eval/psnr": series["eval/psnr"]}, self.out / "psnr_curve.png", title="held-out PSNR (dB)")
