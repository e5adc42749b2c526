"""Experiment trackers that watch a run: what ``metrics.jsonl`` and the image folders get, they get too.

``train.loggers`` names them (``"tensorboard"``, ``"wandb"``); each is an optional
extra, imported only when a recipe asks for it. A :class:`Logger` is the seam:
``scalars``, ``image``, ``flush`` and ``close``, each doing nothing unless
overridden, so another tracker is one small subclass. :class:`Loggers` fans out
to the run's trackers and is the one object the trainers talk to; only the main
process (rank 0) gets any. Resumed runs continue the same tracker run on the same
step axis: TensorBoard hides the events an interrupted attempt wrote after its last
checkpoint (as ``metrics.jsonl`` drops those lines), W&B resumes the run whose id
is kept in the run folder.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np
from PIL import Image

from vqtk.errors import RecipeError, VqtkError
from vqtk.train.metrics_log import MetricsLog

log = logging.getLogger("vqtk")

#: a PNG file, or pixels as an (H, W, 3) uint8 array
ImageLike = Union[str, Path, np.ndarray]

#: the file in a stage's run folder that holds its W&B run id (a resumed run continues that run)
WANDB_ID_FILE = "wandb_run_id"


class Logger:
    """One experiment tracker. Every method does nothing until a subclass overrides it."""

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Numbers logged at ``step`` (the same keys and values as a ``metrics.jsonl`` line)."""

    def image(self, step: int, tag: str, image: ImageLike) -> None:
        """A picture written at ``step`` (a reconstruction grid, a grid of samples)."""

    def flush(self) -> None:
        """Put what was logged on disk (called after every checkpoint)."""

    def close(self) -> None:
        """End the tracker's run (the stage is over, or the loop stopped)."""


class Loggers(Logger):
    """The fan-out the trainers hold: forwards each call to every tracker of the run."""

    def __init__(self, loggers: Iterable[Logger] = ()):
        self.loggers = list(loggers)

    def replace(self, loggers: Iterable[Logger]) -> None:
        """Close the current trackers and forward to ``loggers`` from now on."""
        self.close()
        self.loggers = list(loggers)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for logger in self.loggers:
            logger.scalars(step, values)

    def image(self, step: int, tag: str, image: ImageLike) -> None:
        for logger in self.loggers:
            logger.image(step, tag, image)

    def flush(self) -> None:
        for logger in self.loggers:
            logger.flush()

    def close(self) -> None:
        loggers, self.loggers = self.loggers, []
        for logger in loggers:
            logger.close()


def _pixels(image: ImageLike) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    with Image.open(image) as im:
        return np.asarray(im.convert("RGB"))


class TensorBoardLogger(Logger):
    """Event files under ``folder`` (``tensorboard --logdir runs/``), via ``torch.utils.tensorboard``.

    Args:
        folder: where the event files go (one folder per stage).
        resume_step: the checkpoint step a resumed run continues from; None for a fresh start.
    """

    def __init__(self, *, folder: Path, resume_step: Optional[int]):
        from torch.utils.tensorboard import SummaryWriter

        if resume_step is None:  # a fresh start: an earlier attempt's events do not mix in
            for old in folder.glob("events.out.tfevents.*"):
                old.unlink()
        # events at steps after the checkpoint (logged again by this run) are hidden from TensorBoard
        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def image(self, step: int, tag: str, image: ImageLike) -> None:
        self.writer.add_image(tag, _pixels(image), step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def wandb_mode(env: Mapping[str, str]) -> Optional[str]:
    """The mode vqtk asks W&B for: None leaves it to W&B (``WANDB_MODE``, else online)."""
    if env.get("WANDB_MODE"):
        return None
    if env.get("VQTK_OFFLINE") == "1":
        return "offline"
    return None


class WandbLogger(Logger):
    """A Weights & Biases run; its id is kept in ``out/wandb_run_id`` so a resumed stage continues it.

    Offline when ``WANDB_MODE=offline``, or when ``WANDB_MODE`` is unset and
    ``VQTK_OFFLINE=1``; if an online start fails (no network, no API key) while
    ``WANDB_MODE`` is unset, the run continues offline with a warning
    (``wandb sync`` uploads it later). Files go to ``$WANDB_DIR`` when set,
    else to ``out/wandb/``.

    Args:
        out: the stage's run folder.
        resume_step: the checkpoint step a resumed run continues from; None for a fresh start.
        name: the run's display name.
        job_type: ``"tokenizer"`` or ``"prior"``.
        config: the resolved recipe.
    """

    def __init__(self, *, out: Path, resume_step: Optional[int], name: str, job_type: str, config: dict):
        import wandb

        self.wandb = wandb
        id_file = out / WANDB_ID_FILE
        # a fresh start is a new W&B run (W&B picks its id); a resumed stage continues the stored one
        run_id = None
        if resume_step is not None and id_file.exists():
            run_id = id_file.read_text().strip() or None
        env = os.environ
        options: dict[str, Any] = dict(project=env.get("WANDB_PROJECT") or "vqtk", id=run_id, resume="allow",
                                       name=name, job_type=job_type, config=config,
                                       dir=None if env.get("WANDB_DIR") else str(out))
        mode = wandb_mode(env)
        try:
            self.run = wandb.init(mode=mode, **options)
        except Exception as exc:  # W&B's own errors: no network, no API key, a bad WANDB_* setting
            reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            if env.get("WANDB_MODE") or mode == "offline":
                raise VqtkError(f"train.loggers: W&B did not start: {reason}") from None
            log.warning("W&B did not start online (%s); logging offline instead", reason)
            self.run = wandb.init(mode="offline", **options)
        id_file.write_text(self.run.id + "\n")
        if self.run.offline:
            log.info("W&B is logging offline; upload with `wandb sync %s`", Path(self.run.dir).parent)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def image(self, step: int, tag: str, image: ImageLike) -> None:
        self.run.log({tag: self.wandb.Image(_pixels(image) if isinstance(image, np.ndarray) else str(image))},
                     step=step)

    def close(self) -> None:
        self.run.finish()


class Tracker(NamedTuple):
    """A tracker ``train.loggers`` may name: the package it needs and how to start it."""

    package: str
    start: Callable[..., Logger]


def _tensorboard(*, out: Path, resume_step: Optional[int], **_: Any) -> Logger:
    return TensorBoardLogger(folder=out / "tensorboard", resume_step=resume_step)


def _wandb(*, out: Path, resume_step: Optional[int], name: str, stage: str, config: dict) -> Logger:
    return WandbLogger(out=out, resume_step=resume_step, name=name, config=config,
                       job_type="tokenizer" if stage == "1" else "prior")


#: the trackers ``train.loggers`` may name (the pip extra of each is its name: ``vqtk[NAME]``)
TRACKERS: dict[str, Tracker] = {
    "tensorboard": Tracker("tensorboard", _tensorboard),
    "wandb": Tracker("wandb", _wandb),
}


def check_loggers(names: Sequence[str], where: str = "train.loggers") -> None:
    """Refuse, one line per tracker, a recipe naming a tracker whose package is not installed."""
    problems = []
    for name in names:
        package = TRACKERS[name].package
        try:
            importlib.import_module(package)
        except ImportError:
            problems.append(f'{where}: "{name}" needs the {package} package: pip install "vqtk[{name}]"')
    if problems:
        raise RecipeError(problems)


def build_loggers(names: Sequence[str], *, out: Path, resume_step: Optional[int], main: bool, stage: str,
                  name: str, config: dict) -> list[Logger]:
    """The trackers ``names`` of one stage, started; none on processes other than the main one."""
    if not main or not names:
        return []
    check_loggers(names)
    return [TRACKERS[n].start(out=out, resume_step=resume_step, name=name, stage=stage, config=config)
            for n in names]


class TrackedMetrics(MetricsLog):
    """``metrics.jsonl`` whose every record also goes to the run's trackers (as numbers at its step)."""

    def __init__(self, path: Path, *, resume_step: Optional[int], enabled: bool, loggers: Logger):
        super().__init__(path, resume_step=resume_step, enabled=enabled)
        self.loggers = loggers

    def write(self, record: dict[str, Any]) -> None:
        super().write(record)
        values = {k: float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        if self.enabled and values:
            self.loggers.scalars(int(record["step"]), values)
