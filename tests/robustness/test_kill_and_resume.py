"""Crashes: SIGKILL a real training process at random moments, resume each time, and end with
exactly the weights of an uninterrupted run; Ctrl-C checkpoints and exits 130."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from robust_helpers import PRELOAD, TINY, cli_in_child
from safetensors.torch import load_file

from vqtk.io.checkpoint import LAST, MODEL_FILE, load_checkpoint

STEPS = 16
RUN = ["--no-progress", f"train.steps={STEPS}", "train.checkpoint_every=1", "train.image_every=7",
       "train.log_every=1"]


@pytest.fixture(scope="module")
def fork_server():
    """Children forked from a server that has imported torch, vqtk and the built-ins once."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start(ctx, argv: list, log: Path):
    proc = ctx.Process(target=cli_in_child, args=([str(a) for a in argv], str(log)))
    proc.start()
    return proc


def newest_step(out: Path) -> int:
    try:
        return int((out / "checkpoints" / LAST).read_text().strip()[5:])
    except (OSError, ValueError):
        return -1


def wait_for(predicate, proc, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if not proc.is_alive():
            return
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out; log:\n{log.read_text()}")
        time.sleep(0.01)


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(load_checkpoint(out).path / MODEL_FILE))


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(fork_server, tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    note = f"(random seed {seed})"

    reference = tmp_path / "reference"
    ref_proc = start(fork_server, ["run", recipe, "--out", reference, *RUN], tmp_path / "reference.log")

    out = tmp_path / "killed"
    log = tmp_path / "killed.log"
    kills = []
    for attempt in range(3):
        resume = ["--resume"] if (out / "checkpoints" / LAST).exists() else []
        before = newest_step(out)
        proc = start(fork_server, ["run", recipe, "--out", out, *RUN, *resume], log)
        # let it write 1-3 new checkpoints, then kill it at a random moment of the next step
        # (a checkpoint is written every step, so this lands in training and in saving alike)
        target = before + rng.randint(1, 3)
        seen = []
        wait_for(lambda: seen.append((newest_step(out), time.monotonic())) or newest_step(out) >= target,
                 proc, 60, log)
        changes = [t for (a, t), (b, _) in zip(seen[1:], seen) if a != b]
        step_time = changes[-1] - changes[-2] if len(changes) >= 2 else 0.25
        delay = rng.uniform(0.0, step_time)
        time.sleep(delay)
        proc.kill()
        proc.join()
        assert proc.exitcode == -signal.SIGKILL, f"run ended on its own before the kill {note}:\n{log.read_text()}"
        kills.append((before, round(delay, 3), newest_step(out)))
        ckpt = load_checkpoint(out, with_train_state=True)  # every kill leaves a loadable checkpoint
        assert ckpt.train_state["step"] == ckpt.step > before, (kills, note)

    proc = start(fork_server, ["run", recipe, "--out", out, *RUN, "--resume"], log)
    proc.join(120)
    assert proc.exitcode == 0, f"{kills} {note}\n{log.read_text()}"
    ref_proc.join(120)
    assert ref_proc.exitcode == 0, (tmp_path / "reference.log").read_text()

    a, b = final_weights(reference), final_weights(out)
    assert load_checkpoint(out).step == STEPS and a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ after kills {kills} {note}: {different[:5]}"
    # the metrics hold every step exactly once despite the kills
    import json

    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()
             if "loss/total" in ln]
    assert steps == list(range(1, STEPS + 1)), (kills, note)


def test_second_ctrl_c_aborts_at_once_and_the_last_checkpoint_still_loads(fork_server, tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    out, log = tmp_path / "run", tmp_path / "run.log"
    proc = start(fork_server, ["run", recipe, "--out", out, *RUN], log)
    wait_for(lambda: newest_step(out) >= 2, proc, 60, log)
    os.kill(proc.pid, signal.SIGINT)
    os.kill(proc.pid, signal.SIGINT)
    proc.join(60)
    text = log.read_text()
    assert proc.exitcode == 130, text
    assert "Traceback" not in text and text.rstrip().endswith("vqtk: interrupted")
    assert load_checkpoint(out, with_train_state=True).step >= 2


def test_ctrl_c_checkpoints_exits_130_and_resumes(fork_server, tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    out, log = tmp_path / "run", tmp_path / "run.log"
    proc = start(fork_server, ["run", recipe, "--out", out, "--no-progress", "train.steps=500",
                               "train.checkpoint_every=1000", "train.image_every=1000", "train.log_every=1"], log)
    metrics = out / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.read_text().count('"loss/total"') >= 2, proc, 60, log)
    os.kill(proc.pid, signal.SIGINT)
    proc.join(60)
    err = log.read_text()
    assert proc.exitcode == 130, err
    assert "Traceback" not in err and err.rstrip().endswith("vqtk: interrupted")
    stopped = [ln for ln in err.splitlines() if ln.startswith("stopped at step ")]
    assert len(stopped) == 1 and stopped[0].endswith("(resume with --resume)"), err
    step = int(stopped[0].split()[3].rstrip(";"))
    ckpt = load_checkpoint(out, with_train_state=True)
    assert ckpt.step == step == ckpt.train_state["step"] and 2 <= step < 500

    proc = start(fork_server, ["run", recipe, "--out", out, "--no-progress", f"train.steps={step + 2}",
                               "train.image_every=1000", "--resume"], log)
    proc.join(60)
    assert proc.exitcode == 0, log.read_text()
    assert load_checkpoint(out).step == step + 2
