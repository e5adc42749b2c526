"""Reading pickled torch checkpoints without running code from them (vqtk.io.safe_unpickle)."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from taming_fixtures import (
    CallsWriteMarker,
    RunsShellCommand,
    foreign_module,
    run_cli,
    save_lightning_checkpoint,
)
from vqtk.errors import VqtkError
from vqtk.io.safe_unpickle import Placeholder, find_state_dict, loads, read_torch_file


def _sd():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(3, 4, generator=g), "b": torch.arange(5), "h": torch.ones(2, dtype=torch.float16)}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_plain_checkpoint_loads_with_weights_only(tmp_path):
    sd = _sd()
    torch.save({"state_dict": sd, "global_step": 7}, tmp_path / "m.ckpt")
    obj, foreign = read_torch_file(tmp_path / "m.ckpt")
    assert foreign == []  # torch.load(weights_only=True) sufficed
    assert obj["global_step"] == 7
    _assert_same(find_state_dict(obj, "m.ckpt"), sd)


def test_a_bare_state_dict_file_is_its_own_state_dict(tmp_path):
    sd = _sd()
    torch.save(sd, tmp_path / "m.pt")
    obj, _ = read_torch_file(tmp_path / "m.pt")
    _assert_same(find_state_dict(obj, "m.pt"), sd)


def test_the_crafted_files_really_run_code_with_plain_unpickling(tmp_path):
    """Control: the payloads below do run under ordinary torch.load, so the next tests mean something."""
    shell_marker, py_marker = tmp_path / "shell_ran", tmp_path / "python_ran"
    torch.save({"state_dict": _sd(), "x": RunsShellCommand(shell_marker), "y": CallsWriteMarker(py_marker)},
               tmp_path / "evil.ckpt")
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert shell_marker.exists() and py_marker.exists()


def test_code_in_reduce_is_not_run_and_the_tensors_load(tmp_path):
    shell_marker, py_marker = tmp_path / "shell_ran", tmp_path / "python_ran"
    sd = _sd()
    torch.save({"state_dict": sd, "x": RunsShellCommand(shell_marker), "y": [CallsWriteMarker(py_marker)]},
               tmp_path / "evil.ckpt")
    obj, foreign = read_torch_file(tmp_path / "evil.ckpt")
    assert not shell_marker.exists()
    assert not py_marker.exists()  # write_marker is importable right now, and still not called
    assert "posix.system" in foreign or "nt.system" in foreign
    assert "taming_fixtures.write_marker" in foreign
    assert isinstance(obj["x"], Placeholder) and isinstance(obj["y"][0], Placeholder)
    _assert_same(find_state_dict(obj, "evil.ckpt"), sd)


def test_a_payload_inside_the_state_dict_fails_with_a_clear_message(tmp_path):
    marker = tmp_path / "ran"
    sd = {**_sd(), "encoder.conv_in.weight": RunsShellCommand(marker)}
    torch.save({"state_dict": sd}, tmp_path / "evil.ckpt")
    obj, _ = read_torch_file(tmp_path / "evil.ckpt")
    with pytest.raises(VqtkError) as info:
        find_state_dict(obj, tmp_path / "evil.ckpt")
    assert not marker.exists()
    message = str(info.value)
    assert "\n" not in message
    assert "state_dict entry 'encoder.conv_in.weight' is a Placeholder[posix.system], not a tensor" in message


def test_lightning_objects_from_modules_absent_at_load_time_become_placeholders(tmp_path):
    sd = _sd()
    save_lightning_checkpoint(tmp_path / "last.ckpt", sd)
    with pytest.raises(pickle.UnpicklingError):  # torch's safe loader refuses the file...
        torch.load(tmp_path / "last.ckpt", weights_only=True)
    with pytest.raises(ModuleNotFoundError):  # ...and plain unpickling cannot import the classes
        torch.load(tmp_path / "last.ckpt", weights_only=False)
    obj, foreign = read_torch_file(tmp_path / "last.ckpt")
    assert foreign == ["fake_lightning.callbacks.ModelCheckpoint", "fake_omegaconf.dictconfig.DictConfig"]
    assert obj["global_step"] == 3 and obj["epoch"] == 0
    assert repr(obj["hyper_parameters"]) == "<placeholder for fake_omegaconf.dictconfig.DictConfig>"
    _assert_same(find_state_dict(obj, "last.ckpt"), sd)


def test_torch_legacy_format_with_foreign_objects(tmp_path):
    marker = tmp_path / "ran"
    sd = _sd()
    with foreign_module("fake_omegaconf") as mod:
        class Config:
            pass

        Config.__module__, Config.__qualname__ = "fake_omegaconf", "Config"
        mod.Config = Config
        torch.save({"state_dict": sd, "cfg": Config(), "evil": RunsShellCommand(marker)},
                   tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    obj, foreign = read_torch_file(tmp_path / "old.pt")
    assert not marker.exists()
    assert "fake_omegaconf.Config" in foreign
    _assert_same(find_state_dict(obj, "old.pt"), sd)


def test_placeholders_ignore_everything_done_to_them(tmp_path):
    marker = tmp_path / "ran"
    # protocol 0 by hand: eval("open(...).write(...)"), then BUILD and SETITEMS on the result
    payload = (
        "cbuiltins\neval\n(V__import__('pathlib').Path(%r).write_text('x')\ntR"
        "(dp0\nVk\nI1\nsb"
        "(Va\nI2\nu."
    ) % str(marker)
    obj = loads(payload.encode())
    assert isinstance(obj, Placeholder) and obj.foreign == "builtins.eval"
    assert not marker.exists()
    assert isinstance(obj("anything"), Placeholder)
    assert pickle.loads(pickle.dumps(obj)).__class__ is Placeholder  # re-pickling stays inert


def test_allowed_globals_still_work():
    data = pickle.dumps({"s": {1, 2}, "f": frozenset([3]), "c": complex(1, 2), "d": torch.float16,
                         "dev": torch.device("cpu"), "size": torch.Size([2, 3])}, protocol=2)
    obj = loads(data)
    assert obj == {"s": {1, 2}, "f": frozenset([3]), "c": complex(1, 2), "d": torch.float16,
                   "dev": torch.device("cpu"), "size": torch.Size([2, 3])}


def test_an_unreadable_file_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    with pytest.raises(VqtkError) as info:
        read_torch_file(bad)
    assert str(info.value).startswith(f"{bad}: cannot read this checkpoint (")
    assert "\n" not in str(info.value)
    assert run_cli(["convert", "taming", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vqtk: error: ") and "cannot read this checkpoint" in err[0]
    with pytest.raises(VqtkError, match="no such file"):
        read_torch_file(tmp_path / "absent.ckpt")


def test_a_checkpoint_without_tensors_is_named(tmp_path):
    torch.save({"epoch": 1, "optimizer_states": []}, tmp_path / "opt.ckpt")
    obj, _ = read_torch_file(tmp_path / "opt.ckpt")
    with pytest.raises(VqtkError, match=r"no 'state_dict' dict of tensors in this checkpoint; it holds a dict "
                                        r"\(keys: epoch, optimizer_states\)"):
        find_state_dict(obj, "opt.ckpt")


def test_loads_reads_from_bytes():
    buf = io.BytesIO()
    pickle.dump([1, "two", (3.0,)], buf, protocol=4)
    assert loads(buf.getvalue()) == [1, "two", (3.0,)]
