"""A full or read-only disk while a run writes: one clear line (exit 2), the previous checkpoint
survives and loads, the half-written one is removed, and ``--resume`` carries on.

Running as root, permissions stop nothing: the write functions are made to fail the way the
real ones do (safetensors reports a full disk as ``SafetensorError``, not ``OSError``)."""

from __future__ import annotations

import errno
import os

import pytest
from robust_helpers import assert_clean_failure
from safetensors import SafetensorError

import vqtk.io.checkpoint as ckpt_mod
import vqtk.io.files as files_mod
from vqtk.io.checkpoint import LAST, load_checkpoint

RUN = ["--no-progress", "train.steps=6", "train.checkpoint_every=2", "train.image_every=100"]


def fail_on_call(monkeypatch, target, name: str, calls: int, exc: BaseException, torn: bool = True):
    """Make ``target.name`` raise ``exc`` on its ``calls``-th call (after writing a torn file)."""
    real = getattr(target, name)
    seen = {"n": 0}

    def wrapper(*args, **kwargs):
        seen["n"] += 1
        if seen["n"] == calls:
            path = kwargs.get("filename", args[1] if len(args) > 1 else None)
            if torn and path is not None:
                with open(path, "wb") as f:
                    f.write(b"\x00" * 64)
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)
    return seen


def _full_disk():
    return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("call, file", [(3, "model.safetensors"), (4, "train_state.safetensors")])
def test_disk_full_while_writing_a_checkpoint(tiny, cli, tmp_path, monkeypatch, call, file):
    # save_file calls: step 2 model (1), state (2); step 4 model (3), state (4)
    out = tmp_path / "run"
    fail_on_call(monkeypatch, files_mod, "save_file", call, _full_disk())
    result = cli("run", tiny, "--out", out, *RUN)
    assert_clean_failure(result)
    partial = out / "checkpoints" / "step_000004.partial"
    assert result.errors == [f"cannot write {partial / file}: No space left on device; earlier checkpoints are intact"]
    ckpt = load_checkpoint(out, with_train_state=True)
    assert ckpt.step == 2 and ckpt.train_state["step"] == 2
    assert not partial.exists()  # the torn copy is removed: its space is given back
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [LAST, "step_000002"]

    monkeypatch.undo()
    monkeypatch.setattr("vqtk.registry.registry._default", _registry())
    resumed = cli("run", tiny, "--out", out, *RUN, "--resume")
    assert resumed.code == 0, resumed.err
    assert load_checkpoint(out).step == 6


def _registry():
    import vqtk_builtins

    from vqtk.registry import Registry

    registry = Registry()
    registry.register_plugin(vqtk_builtins, "builtins")
    return registry


def test_disk_full_while_moving_the_last_pointer(tiny, cli, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(f"checkpoints/{LAST}") and "step_000004" in open(src).read():
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", replace)
    result = cli("run", tiny, "--out", out, *RUN)
    assert_clean_failure(result)
    assert result.errors == [f"cannot write {out / 'checkpoints' / LAST}: No space left on device; "
                             "earlier checkpoints are intact"]
    assert load_checkpoint(out).step == 2  # last still names the previous checkpoint
    assert not (out / "checkpoints" / f"{LAST}.tmp").exists()


@pytest.mark.parametrize("code, text", [(errno.EROFS, "Read-only file system"), (errno.EDQUOT, "Disk quota exceeded"),
                                        (errno.EACCES, "Permission denied")])
def test_read_only_or_over_quota_output(tiny, cli, tmp_path, monkeypatch, code, text):
    from vqtk.train.metrics_log import MetricsLog

    out = tmp_path / "run"
    target = out / "metrics.jsonl"
    fail_on_call(monkeypatch, MetricsLog, "write", 3, OSError(code, text, str(target)), torn=False)
    result = cli("run", tiny, "--out", out, *RUN)
    assert_clean_failure(result)
    assert result.errors == [f"cannot write {target}: {text}; earlier checkpoints are intact"]


def test_save_checkpoint_failure_keeps_the_previous_one_loadable(tmp_path, monkeypatch):
    """The library call on its own: a failed save changes nothing a loader sees."""
    import torch

    modules = {"model": torch.nn.Linear(3, 2)}
    root = tmp_path / "checkpoints"
    ckpt_mod.save_checkpoint(root, 1, modules, {"recipe": ""}, {"step": 1})
    before = load_checkpoint(root)
    with torch.no_grad():
        modules["model"].weight.add_(1)
    fail_on_call(monkeypatch, files_mod, "save_file", 1, _full_disk())
    with pytest.raises(OSError) as info:
        ckpt_mod.save_checkpoint(root, 2, modules, {"recipe": ""}, {"step": 2})
    assert info.value.errno == errno.ENOSPC and info.value.filename.endswith("step_000002.partial/model.safetensors")
    after = load_checkpoint(root)
    assert after.path == before.path and torch.equal(after.tensors["model.weight"], before.tensors["model.weight"])
    assert sorted(p.name for p in root.iterdir()) == [LAST, "step_000001"]


def test_running_out_of_memory_mid_run_is_a_clear_message(tiny, cli, tmp_path, monkeypatch):
    import torch

    from vqtk.train.stage1 import Stage1Trainer

    fail_on_call(monkeypatch, Stage1Trainer, "train_step", 3,
                 torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), torn=False)
    out = tmp_path / "run"
    result = cli("run", tiny, "--out", out, *RUN)
    assert_clean_failure(result)
    assert len(result.errors) == 1 and result.errors[0].startswith("out of memory: CUDA out of memory.")
    assert "train.batch_size" in result.errors[0]
    assert load_checkpoint(out).step == 2
