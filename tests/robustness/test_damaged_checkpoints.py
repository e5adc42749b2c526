"""Damaged, mismatched and hostile checkpoints: every load gives a clear one-line error naming the
file (or the mismatched tensors, or the missing component), never a traceback or wrong weights."""

from __future__ import annotations

import json
import shutil
import struct
import tomllib
from pathlib import Path

import pytest
import tomli_w
from robust_helpers import TINY, assert_clean_failure
from PIL import Image
from safetensors.torch import load_file, save_file

from vqtk.errors import VqtkError
from vqtk.io.checkpoint import DIGEST, FORMAT, MODEL_FILE, STATE_FILE, load_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 2-step tiny run with a checkpoint after each step (trained once for the module)."""
    import vqtk_builtins

    import vqtk.registry.registry as registry_module
    from vqtk.recipe import load_recipe
    from vqtk.registry import Registry
    from vqtk.train.stage1 import Stage1Trainer

    registry = Registry()
    registry.register_plugin(vqtk_builtins, "builtins")
    root = tmp_path_factory.mktemp("trained")
    recipe_file = root / "tiny.toml"
    recipe_file.write_text(TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry_module, "_default", registry)
        recipe, resolved = load_recipe(recipe_file, ["train.steps=2", "train.checkpoint_every=1",
                                                     "train.image_every=100"])
        Stage1Trainer(recipe, resolved, root / "run", progress=False).run()
    return root / "run"


@pytest.fixture
def run(trained, tmp_path, tiny) -> Path:
    """A private copy of the trained run (tests damage it)."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (20, 18), (30, 120, 200)).save(path)
    return path


def newest(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "last").read_text().strip()


def rewrite(file: Path, *, metadata: dict | None = None, tensors: dict | None = None, digest: bool = False) -> None:
    """Re-save a checkpoint file with changed metadata / tensors (digest dropped unless asked)."""
    from vqtk.io.checkpoint import tensor_digest
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        meta = dict(f.metadata())
    meta.pop(DIGEST, None)
    meta.update(metadata or {})
    data = tensors if tensors is not None else load_file(str(file))
    if digest:
        meta[DIGEST] = tensor_digest(data)
    save_file(data, str(file), metadata=meta)


def test_truncated_model_file(run, cli, image, tmp_path):
    model = newest(run) / MODEL_FILE
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    result = cli("reconstruct", run, image, "--out", tmp_path / "rec")
    assert_clean_failure(result)
    assert result.errors[0].startswith(f"{model}: not a readable safetensors checkpoint (")
    assert len(result.errors) == 1


def test_flipped_bits_in_the_weights_are_detected(run, cli, image, tmp_path):
    model = newest(run) / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[-100] ^= 0x40  # inside the last tensor's bytes: the header still parses
    model.write_bytes(bytes(data))
    result = cli("reconstruct", run, image, "--out", tmp_path / "rec")
    assert_clean_failure(result)
    assert result.errors == [f"{model}: damaged: its tensors do not match the checksum written with them"]


def test_checkpoints_without_a_digest_still_load(run):
    model = newest(run) / MODEL_FILE
    before = load_checkpoint(run).tensors
    rewrite(model)  # as written before digests existed
    after = load_checkpoint(run)
    assert DIGEST not in after.metadata and after.tensors.keys() == before.keys()


def test_zero_byte_and_foreign_files(run, cli, image, tmp_path):
    model = newest(run) / MODEL_FILE
    model.write_bytes(b"")
    assert cli("reconstruct", run, image, "--out", tmp_path / "r").errors[0].startswith(
        f"{model}: not a readable safetensors checkpoint")
    save_file({"w": load_file(str(newest(run).parent / "step_000001" / MODEL_FILE))["model.quant_conv.weight"]},
              str(model), metadata={"format": "something-else"})
    assert cli("reconstruct", run, image, "--out", tmp_path / "r").errors == [
        f"{model}: not a vqtk checkpoint (format 'something-else')"]


@pytest.mark.parametrize("header", [
    struct.pack("<Q", 2**62) + b"{}",                                # header length far past the file
    struct.pack("<Q", 2**20) + b'{"a": 1}',                           # 1 MiB header promised, 8 bytes given
    (lambda h: struct.pack("<Q", len(h)) + h)(json.dumps(             # a 2**40 x 2**40 float tensor claimed
        {"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 2**82]},
         "__metadata__": {"format": FORMAT}}).encode()),
    (lambda h: struct.pack("<Q", len(h)) + h + b"\x00" * 8)(json.dumps(  # offsets inconsistent with shape
        {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}, "__metadata__": {"format": FORMAT}}).encode()),
    (lambda h: struct.pack("<Q", len(h)) + h)(b"[" * 100_000 + b"]" * 100_000),  # deeply nested JSON
])
def test_crafted_headers_are_refused_without_allocating(run, header):
    model = newest(run) / MODEL_FILE
    model.write_bytes(header)
    with pytest.raises(VqtkError, match="not a readable safetensors checkpoint") as info:
        load_checkpoint(run)
    assert "\n" not in str(info.value)


def test_truncated_train_state_stops_resume_with_a_clear_message(run, cli):
    state = newest(run) / STATE_FILE
    state.write_bytes(state.read_bytes()[:200])
    result = cli("run", run.parent / "tiny.toml", "--out", run, "--resume", "--no-progress", "train.steps=4")
    assert_clean_failure(result)
    assert result.errors[0].startswith(f"{state}: not a readable safetensors checkpoint (")


@pytest.mark.parametrize("skeleton", ['{"__dict__": 5}', '{"__tensor__": "nope"}', "[" * 5000 + "]" * 5000,
                                      "not json", '{"__mystery__": 1}'])
def test_malformed_training_state_structure(run, skeleton):
    rewrite(newest(run) / STATE_FILE, metadata={"state": skeleton})
    with pytest.raises(VqtkError, match="corrupt training state"):
        load_checkpoint(run, with_train_state=True)


def _write_tiny(run: Path) -> Path:
    recipe = run.parent / "tiny.toml"
    recipe.write_text(TINY)
    return recipe


def test_resume_from_a_damaged_checkpoint_never_silently_restarts(run, cli):
    model = newest(run) / MODEL_FILE
    model.write_bytes(model.read_bytes()[:1000])
    result = cli("run", _write_tiny(run), "--out", run, "--resume", "--no-progress", "train.steps=4")
    assert_clean_failure(result)
    assert str(model) in result.errors[0]


def test_last_pointing_at_a_missing_folder(run, cli, image, tmp_path):
    last = run / "checkpoints" / "last"
    last.write_text("step_000099\n")
    result = cli("reconstruct", run, image, "--out", tmp_path / "rec")
    assert_clean_failure(result)
    assert result.errors == [f"{last}: points at step_000099, which has no {MODEL_FILE}; the newest complete "
                             f"checkpoint is {run / 'checkpoints' / 'step_000002'}"]


@pytest.mark.parametrize("content", ["../../etc\n", "", "\xff\xfe garbage", "step_000002/../../x"])
def test_last_holding_garbage(run, content):
    last = run / "checkpoints" / "last"
    last.write_bytes(content.encode("latin-1"))
    with pytest.raises(VqtkError, match=r"last: (does not name a step folder|unreadable)"):
        load_checkpoint(run)


def test_kill_while_a_step_is_saved_again_falls_back_to_the_old_copy(run):
    """The one window where ``last`` names a folder that is briefly absent: a second save of
    the same step (Ctrl-C right after a periodic checkpoint) moves the first copy to ``.old``."""
    folder = newest(run)
    expected = load_checkpoint(run).tensors
    folder.rename(folder.with_name(folder.name + ".old"))
    (folder.with_name(folder.name + ".partial")).mkdir()  # the new copy, not yet complete
    got = load_checkpoint(run, with_train_state=True)
    assert got.path.name == "step_000002.old" and got.train_state["step"] == 2
    assert all((got.tensors[k] == v).all() for k, v in expected.items())


def test_checkpoint_of_a_different_architecture_names_the_tensors(run, cli, image, tmp_path):
    """Weights from a ch=32 model under a recipe that says ch=64 (e.g. files copied between runs)."""
    model = newest(run) / MODEL_FILE
    recipe = tomllib.loads(load_checkpoint(run).recipe_toml)
    recipe["model"]["encoder"]["ch"] = 64
    rewrite(model, metadata={"recipe": tomli_w.dumps(recipe)}, digest=True)
    result = cli("reconstruct", run, image, "--out", tmp_path / "rec")
    assert_clean_failure(result)
    assert len(result.errors) == 1, result.errors
    (line,) = result.errors
    assert line.startswith(f"{newest(run)}: weights do not match the model (shape mismatch: ")
    assert "encoder.conv_in.weight (32, 3, 3, 3) vs (64, 3, 3, 3)" in line


def test_resume_with_a_different_architecture_names_the_tensors(run, cli):
    result = cli("run", _write_tiny(run), "--out", run, "--resume", "--no-progress", "train.steps=4",
                 "model.encoder.ch=64")
    assert_clean_failure(result)
    assert "encoder.conv_in.weight" in result.err


def _recipe_with_missing_component(run: Path, plugins: dict) -> None:
    recipe = tomllib.loads(load_checkpoint(run).recipe_toml)
    recipe["model"]["quantizer"] = {"type": "fancy_vq", "dim": 8}
    versions = {"vqtk": "0.1.0", "torch": "x", "plugins": plugins}
    rewrite(newest(run) / MODEL_FILE, metadata={"recipe": tomli_w.dumps(recipe), "versions": json.dumps(versions)},
            digest=True)


def test_checkpoint_naming_a_component_that_is_not_installed(run, cli, image, tmp_path):
    _recipe_with_missing_component(run, {"builtins": "0.1.0", "fancy_plugin": "1.2"})
    result = cli("reconstruct", run, image, "--out", tmp_path / "rec")
    assert_clean_failure(result)
    assert result.errors[0] == (f"{newest(run)}: its recipe does not validate with the installed plugins "
                                "(written with plugins not installed here: fancy_plugin 1.2):")
    assert result.errors[1].startswith("model.quantizer.type: unknown quantizer 'fancy_vq'")
    assert len(result.errors) == 2


def test_missing_checkpoint_paths(tiny, cli, image, tmp_path):
    assert cli("reconstruct", tmp_path / "nothing", image, "--out", tmp_path / "r").errors == [
        f"{tmp_path / 'nothing'}: no such checkpoint file or folder"]
    (tmp_path / "emptyrun").mkdir()
    assert cli("reconstruct", tmp_path / "emptyrun", image, "--out", tmp_path / "r").errors == [
        f"{tmp_path / 'emptyrun'}: no checkpoint here (expected {MODEL_FILE}, or checkpoints/last)"]


def test_leftovers_of_interrupted_saves_are_cleaned_by_the_next_save(tmp_path):
    import torch

    from vqtk.io.checkpoint import save_checkpoint

    root = tmp_path / "checkpoints"
    modules = {"model": torch.nn.Linear(2, 2)}
    save_checkpoint(root, 1, modules, {"recipe": ""})
    for stale in ("step_000001.old", "step_000002.partial", "step_000000.partial"):
        (root / stale).mkdir()
        (root / stale / MODEL_FILE).write_bytes(b"torn")
    save_checkpoint(root, 3, modules, {"recipe": ""})
    assert sorted(p.name for p in root.iterdir()) == ["last", "step_000001", "step_000003"]
    assert load_checkpoint(root).step == 3


# -- bad arguments to the commands that read checkpoints -------------------------------------------

@pytest.mark.parametrize("args, where", [
    (["--size", "0"], "--size"),
    (["--size", "1000000000000"], "--size"),
    (["--device", "banana"], "--device"),
    (["--device", "meta"], "--device"),
    (["--out-is-a-file"], "--out"),
])
def test_reconstruct_rejects_bad_arguments_on_one_line(run, cli, image, tmp_path, args, where):
    out = tmp_path / "rec"
    if args == ["--out-is-a-file"]:
        out.write_text("a file, not a folder")
        args = []
    result = cli("reconstruct", run, image, "--out", out, *args)
    assert_clean_failure(result)
    assert result.errors[0].startswith(where)


def test_run_on_a_device_this_machine_lacks(run, cli, tmp_path):
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    result = cli("run", _write_tiny(run), "--out", tmp_path / "new", "--no-progress", "train.device=mps")
    assert_clean_failure(result)
    assert result.errors[0].startswith("train.device: 'mps'")
