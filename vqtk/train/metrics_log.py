"""``metrics.jsonl`` (one JSON object per logged step) and the progress display."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from tqdm import tqdm

log = logging.getLogger("vqtk")


class MetricsLog:
    """Appends records to ``metrics.jsonl``; on resume, drops records past the checkpoint.

    A fresh start (``resume_step`` None) begins a new file: the lines of an earlier
    attempt that crashed before its first checkpoint do not mix into this run's curves.
    """

    def __init__(self, path: Path, resume_step: Optional[int] = None, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        if enabled and resume_step is None and path.exists():
            path.unlink()
        if enabled and resume_step is not None and path.exists():
            kept = [ln for ln in path.read_text().splitlines() if _step_of(ln) is not None and _step_of(ln) <= resume_step]
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept))
            os.replace(tmp, path)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")

    def series(self, keys: Optional[list[str]] = None) -> dict[str, list[tuple[int, float]]]:
        out: dict[str, list[tuple[int, float]]] = {}
        if not self.path.exists():
            return out
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            for k, v in rec.items():
                if k == "step" or not isinstance(v, (int, float)) or (keys and k not in keys):
                    continue
                out.setdefault(k, []).append((rec["step"], float(v)))
        return out


def _step_of(line: str) -> Optional[int]:
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A tqdm bar on a terminal; plain log lines (with rate and ETA) otherwise."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True):
        self.total = total
        self.start_step = initial
        self.t0 = time.perf_counter()
        self.bar = None
        self.interactive = enabled and sys.stderr.isatty()
        if self.interactive:
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)

    def eta(self, step: int) -> float:
        done = step - self.start_step
        if done <= 0:
            return math.inf
        return (time.perf_counter() - self.t0) / done * (self.total - step)

    def update(self, step: int, postfix: dict[str, str]) -> None:
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(postfix, refresh=True)

    def line(self, step: int, postfix: dict[str, str]) -> None:
        text = f"step {step}/{self.total} " + " ".join(f"{k} {v}" for k, v in postfix.items())
        text += f" eta {_duration(self.eta(step))}"
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            log.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
