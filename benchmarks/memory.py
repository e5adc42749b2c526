"""Peak memory of a measurement: CUDA allocator statistics, or the process's resident set on CPU.

On CUDA the figure is ``torch.cuda.max_memory_allocated`` (tensors only, not
the allocator's cache) minus what was allocated when :meth:`PeakMemory.start`
ran. On CPU it is the peak resident set size (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``) minus the resident set at :meth:`PeakMemory.start`,
after returning freed heap pages to the system with glibc's ``malloc_trim``,
so memory that an earlier measurement freed does not hide this one's. Where
the peak cannot be reset, a thread samples ``VmRSS`` every millisecond instead.
"""

from __future__ import annotations

import ctypes
import gc
import threading
from pathlib import Path
from typing import Optional

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> Optional[int]:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> Optional[int]:
    """Current resident set size of this process (None where ``/proc`` is missing)."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class _Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss_bytes() or 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.001):
            self.peak = max(self.peak, rss_bytes() or 0)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, rss_bytes() or 0)


class PeakMemory:
    """Measures ``peak - base``: ``start()`` takes the base, ``begin()`` / ``end()`` bracket the peak.

    Typical use: ``start()`` before building a model (so its weights and optimizer
    state count), warm-up steps, then ``begin()``, one steady-state step, ``end()``.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.base = 0
        self._sampler: Optional[_Sampler] = None
        self.method = "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)"

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            _trim_heap()
            self.base = rss_bytes() or 0

    def begin(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif not _reset_hwm() or _status_kib("VmHWM") is None:
            self.method = "peak RSS (sampled every 1 ms)"
            self._sampler = _Sampler()
            self._sampler.start()

    def end(self) -> Optional[float]:
        """Peak minus base, in MiB (None where it cannot be measured)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._sampler is not None:
            peak, self._sampler = self._sampler.stop(), None
        else:
            kib = _status_kib("VmHWM")
            if kib is None:
                return None
            peak = kib * 1024
        return max(peak - self.base, 0) / 2**20
