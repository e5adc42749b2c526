"""``train.loggers``: TensorBoard and W&B get what ``metrics.jsonl`` and the image folders get.

Real tiny runs, read back from the trackers' own files. W&B only ever runs
offline here (``WANDB_MODE=offline`` or ``VQTK_OFFLINE=1``; the online attempt
of the fallback test is a stand-in that fails at once): nothing touches the network.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_recipe import TINY

from vqtk.cli import main
from vqtk.errors import RecipeError
from vqtk.interfaces import StepAware
from vqtk.recipe import load_recipe
from vqtk.train.distributed import DistInfo
from vqtk.train.loggers import (
    WANDB_ID_FILE,
    TensorBoardLogger,
    WandbLogger,
    build_loggers,
    check_loggers,
    wandb_mode,
)
from vqtk.train.run import Run
from vqtk.train.stage1 import Stage1Trainer

PRIOR = """
[prior]
type = "gpt"
dim = 32
depth = 1
heads = 2

[prior_train]
steps = 4
batch_size = 8
log_every = 1
sample_every = 2
checkpoint_every = 2
num_samples = 4
large_grid = [10, 12]
"""


@pytest.fixture
def recipe_file(tmp_path, builtins_registry, use_registry):
    use_registry(builtins_registry)
    path = tmp_path / "tiny.toml"
    path.write_text(TINY + PRIOR)
    return path


needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason='needs the tensorboard package: pip install "vqtk[tensorboard]"')
needs_wandb = pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                                 reason='needs the wandb package: pip install "vqtk[wandb]"')


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B files in a temporary folder, offline, quiet, never asking anything."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("VQTK_OFFLINE", raising=False)
    (tmp_path / "wandb_dir").mkdir()
    return tmp_path / "wandb_dir"


class _Crash(StepAware):
    """Fails during step ``at`` (a crash, not a Ctrl-C: no checkpoint is written)."""

    def __init__(self, at: int):
        self.at = at

    def on_step(self, step: int, total_steps: int) -> None:
        if step == self.at - 1:
            raise RuntimeError("simulated crash")


def _trainer(recipe_file, out, overrides=(), resume=False):
    recipe, resolved = load_recipe(recipe_file, list(overrides))
    return Stage1Trainer(recipe, resolved, out, resume=resume, progress=False)


def _crash_then_resume(recipe_file, out, loggers, crash_at=5):
    """6 steps, checkpoint at 3, a crash during step ``crash_at``, then a resume to the end."""
    overrides = [f"train.loggers={json.dumps(loggers)}"]
    trainer = _trainer(recipe_file, out, overrides)
    trainer.step_fn.step_parts.append(_Crash(crash_at))
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.run()
    _trainer(recipe_file, out, overrides, resume=True).run()


def _metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _assert_same_scalars(acc, records: list[dict]) -> None:
    """Every number of every ``metrics.jsonl`` record is in TensorBoard at its step, and nothing else."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for rec in records:
        for k, v in rec.items():
            if k != "step":
                expected.setdefault(k, []).append((rec["step"], float(v)))
    assert set(acc.Tags()["scalars"]) == set(expected)
    for key, points in expected.items():
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in points], key
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6, nan_ok=True), key


@needs_tensorboard
def test_tensorboard_gets_metrics_and_grids_and_a_resume_continues_its_step_axis(recipe_file, tmp_path):
    out = tmp_path / "run"
    _crash_then_resume(recipe_file, out, ["tensorboard"])
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one per attempt
    acc = _events(out / "tensorboard")
    records = _metrics(out / "metrics.jsonl")
    _assert_same_scalars(acc, records)
    # the crashed attempt logged step 4 after the step-3 checkpoint; the resumed run logged it again
    assert [e.step for e in acc.Scalars("loss/total")] == [1, 2, 3, 4, 5, 6]
    grids = acc.Images("images/recon")
    assert [e.step for e in grids] == [0, 3, 6]  # start, image_every, final
    assert (grids[0].width, grids[0].height) != (0, 0)


@needs_tensorboard
def test_tensorboard_gets_stage2_samples_and_metrics(recipe_file, tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(recipe_file), "--out", str(out), "--no-progress", "train.steps=2",
                 'train.loggers=["tensorboard"]']) == 0
    acc = _events(out / "prior" / "tensorboard")
    _assert_same_scalars(acc, _metrics(out / "prior" / "metrics.jsonl"))
    assert [e.step for e in acc.Images("images/samples")] == [2, 4]
    assert [e.step for e in acc.Images("images/samples_large")] == [4]
    stage1 = _events(out / "tensorboard")
    assert [e.step for e in stage1.Scalars("loss/total")] == [1, 2]


@needs_tensorboard
def test_a_fresh_start_leaves_an_earlier_attempts_events_out(tmp_path):
    stale = tmp_path / "events.out.tfevents.1.host.1.0"
    stale.write_bytes(b"")
    TensorBoardLogger(folder=tmp_path, resume_step=None).close()
    assert not stale.exists() and len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    TensorBoardLogger(folder=tmp_path, resume_step=3).close()  # a resume keeps them
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2


def _wandb_records(path: Path):
    """The records of a ``.wandb`` file (W&B's transaction log).

    wandb no longer ships a Python reader for these files (it moved to its Go
    core), so the framing is read here: LevelDB's log format (32 KiB blocks of
    7-byte-headed chunks) after a 7-byte ``:W&B`` file header; each record is
    wandb's own protobuf ``Record``.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, header = path.read_bytes(), 32768, 7
    ident, magic, _version = struct.unpack("<4sHB", data[:header])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path}: not a W&B transaction log"
    pos, pending = header, b""
    while pos + header <= len(data):
        if block - pos % block < header:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + header])
        if kind == 0:
            break
        chunk, pos = data[pos + header:pos + header + length], pos + header + length
        pending = chunk if kind in (1, 2) else pending + chunk  # full / first, else middle / last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def _wandb_run(folder: Path) -> tuple[str, list[dict]]:
    """The run id and the logged rows (``{"_step": ..., key: value}``) of one offline run folder."""
    (log_file,) = folder.glob("run-*.wandb")
    run_id, rows = None, []
    for record in _wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
        elif kind == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return run_id, rows


@needs_wandb
def test_wandb_offline_gets_metrics_and_grids_and_a_resume_continues_the_run(recipe_file, tmp_path,
                                                                               offline_wandb, monkeypatch):
    out = tmp_path / "run"
    overrides = ['train.loggers=["wandb"]']
    trainer = _trainer(recipe_file, out, overrides)
    trainer.step_fn.step_parts.append(_Crash(5))
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.run()
    first_id = (out / WANDB_ID_FILE).read_text().strip()
    # the resumed attempt: WANDB_MODE unset, VQTK_OFFLINE=1 keeps W&B offline
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("VQTK_OFFLINE", "1")
    _trainer(recipe_file, out, overrides, resume=True).run()
    assert (out / WANDB_ID_FILE).read_text().strip() == first_id
    folders = sorted((offline_wandb / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.name.endswith("-" + first_id) for f in folders)
    runs = [_wandb_run(f) for f in folders]
    assert [run_id for run_id, _ in runs] == [first_id, first_id]
    # each metrics.jsonl value is in the resumed attempt's rows (steps 4-6) or the first's (up to 3)
    rows = {}
    for (_, attempt), upto in zip(runs, (3, 6)):
        for row in attempt:
            if row["_step"] <= upto:
                rows.setdefault(row["_step"], {}).update(row)
    for rec in _metrics(out / "metrics.jsonl"):
        for k, v in rec.items():
            if k != "step":
                assert rows[rec["step"]][k] == pytest.approx(v, nan_ok=True), (rec["step"], k)
    grid_steps = sorted(step for step, row in rows.items() if any(k.startswith("images/recon") for k in row))
    assert grid_steps == [0, 3, 6]
    assert len(list(folders[1].glob("files/media/images/**/*.png"))) == 1  # the final grid


@needs_wandb
def test_wandb_falls_back_to_offline_when_the_online_start_fails(tmp_path, offline_wandb, monkeypatch, caplog):
    import wandb

    monkeypatch.delenv("WANDB_MODE")
    real_init, modes = wandb.init, []

    def init(*args, mode=None, **kwargs):  # stands in for an online start without network
        modes.append(mode)
        if mode != "offline":
            raise wandb.errors.CommError("could not reach api.wandb.ai")
        return real_init(*args, mode=mode, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    logger = WandbLogger(out=tmp_path, resume_step=None, name="t", job_type="tokenizer", config={})
    try:
        logger.scalars(1, {"loss": 0.5})
        assert logger.run.offline
    finally:
        logger.close()
    assert modes == [None, "offline"]
    assert "W&B did not start online (could not reach api.wandb.ai); logging offline instead" in caplog.text


def test_wandb_mode_rule():
    assert wandb_mode({}) is None  # W&B's own default (online)
    assert wandb_mode({"VQTK_OFFLINE": "1"}) == "offline"
    assert wandb_mode({"VQTK_OFFLINE": "1", "WANDB_MODE": "online"}) is None  # W&B reads WANDB_MODE itself
    assert wandb_mode({"VQTK_OFFLINE": "0"}) is None


@pytest.mark.parametrize("name", ["tensorboard", "wandb"])
def test_a_missing_tracker_package_is_a_one_line_recipe_error(name, recipe_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, name, None)  # `import NAME` now raises ImportError
    with pytest.raises(RecipeError) as exc:
        check_loggers([name])
    assert str(exc.value) == f'train.loggers: "{name}" needs the {name} package: pip install "vqtk[{name}]"'
    out = tmp_path / "run"
    assert main(["run", str(recipe_file), "--out", str(out), "--no-progress", f'train.loggers=["{name}"]']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'vqtk: error: train.loggers: "{name}" needs the {name} package: pip install "vqtk[{name}]"']
    assert not out.exists()  # refused before anything was built or written


@needs_tensorboard
@needs_wandb
def test_processes_other_than_rank_0_write_nothing(recipe_file, tmp_path, offline_wandb):
    recipe, resolved = load_recipe(recipe_file, ['train.loggers=["tensorboard", "wandb"]'])
    out = tmp_path / "run"
    out.mkdir()
    run = Run(recipe=recipe, resolved=resolved, out=out, stage="1", device="cpu", seed=0, progress=False)
    run.dist = DistInfo(rank=1, world_size=2)  # what torchrun's second process sees
    metrics = run.metrics_log(resume_step=None)
    assert run.loggers.loggers == []
    metrics.write({"step": 1, "loss/total": 0.5})
    run.loggers.image(1, "images/recon", tmp_path / "missing.png")
    run.loggers.close()
    assert list(out.iterdir()) == [] and list(offline_wandb.iterdir()) == []
    assert build_loggers(["tensorboard"], out=out, resume_step=None, main=False, stage="1", name="x",
                         config={}) == []


def test_importing_vqtk_imports_no_tracker():
    code = ("import sys, vqtk, vqtk.cli, vqtk.train.run, vqtk.train.loggers, vqtk.train.stage1, vqtk.train.stage2\n"
            "print(sorted(m for m in ('tensorboard', 'torch.utils.tensorboard', 'wandb') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_recipe_field_names_known_trackers_once(recipe_file):
    recipe, resolved = load_recipe(recipe_file, [])
    assert recipe.train.loggers == () and resolved["train"]["loggers"] == []
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_file, ['train.loggers=["mlflow", "wandb", "wandb"]'])
    assert str(exc.value).splitlines() == ['train.loggers[0]: expected one of "tensorboard", "wandb", got "mlflow"']
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe_file, ['train.loggers=["wandb", "wandb"]'])
    assert str(exc.value) == 'train.loggers: names "wandb" more than once'
