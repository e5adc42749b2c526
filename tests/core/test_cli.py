"""The command line: exit codes, one-line errors, and what each command prints."""

from __future__ import annotations

import subprocess
import sys

import pytest
from toy_plugin import TOY_RECIPE

from vqtk.cli import main


@pytest.fixture
def toy(toy_registry, use_registry, tmp_path):
    use_registry(toy_registry)
    path = tmp_path / "toy.toml"
    path.write_text(TOY_RECIPE)
    return path


def test_show_prints_resolved_toml(toy, capsys):
    assert main(["show", str(toy), "train.steps=3"]) == 0
    out = capsys.readouterr().out
    assert "steps = 3" in out and 'type = "toy"' in out and "grad_accum = 1" in out


def test_bad_recipe_exits_2_with_one_line_per_problem(toy, capsys):
    code = main(["show", str(toy), "model.quantizer.codebook_size=big", "train.steps=0"])
    err = capsys.readouterr().err
    assert code == 2
    # a type error in one table does not hide a range error in another
    assert err.splitlines() == [
        'vqtk: error: model.quantizer.codebook_size: expected int, got "big"',
        "vqtk: error: train.steps: must be > 0, got 0",
    ]
    assert "Traceback" not in err


def test_check_reports_parameters_and_grid(toy, capsys):
    assert main(["check", str(toy)]) == 0
    out = capsys.readouterr().out
    assert "latent grid 4x4x4 (downsampling 4), 8 codes" in out
    assert "VQGAN total" in out


def test_list_and_plugins(toy, capsys):
    assert main(["list", "quantizer"]) == 0
    out = capsys.readouterr().out
    assert "quantizer  toy        toy" in out and "Nearest-code quantizer (test toy)." in out
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "toy (no version)  [direct]" in out and "quantizer: toy, toy_fancy" in out


def test_unknown_command_and_missing_recipe_exit_2(toy, capsys, tmp_path):
    assert main(["frobnicate"]) == 2
    assert main(["show", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert f"vqtk: error: {tmp_path / 'nope.toml'}: no such recipe file" in err


def test_run_refuses_to_overwrite_a_run(toy, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(toy), "--out", str(out), "--no-progress"]) == 0
    assert (out / "checkpoints" / "last").exists()
    assert main(["run", str(toy), "--out", str(out)]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main(["run", str(toy), "--out", str(tmp_path / "other"), "--resume"]) == 2


def test_internal_error_exits_1(toy, monkeypatch, capsys):
    from vqtk.cli import build_parser

    args = build_parser().parse_args(["list"])
    args.func = lambda a: 1 / 0
    monkeypatch.setattr("vqtk.cli.build_parser", lambda: _FixedParser(args))
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "internal error" in err


class _FixedParser:
    def __init__(self, args):
        self.args = args

    def parse_known_args(self, argv):
        return self.args, []


def test_console_script_exit_code_for_bad_input(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    proc = subprocess.run([sys.executable, "-m", "vqtk", "show", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"vqtk: error: {bad}: invalid TOML")
    assert "Traceback" not in proc.stderr


def test_unwritable_output_is_a_one_line_error(toy, tmp_path, capsys):
    import os

    if os.geteuid() == 0:
        # root ignores permissions: simulate a read-only file system instead
        import vqtk.train.stage1 as stage1

        def read_only(*a, **k):
            raise OSError(30, "Read-only file system", str(tmp_path / "ro" / "recipe.toml"))

        mp = pytest.MonkeyPatch()
        mp.setattr(stage1, "dump_toml", read_only)
        try:
            code = main(["run", str(toy), "--out", str(tmp_path / "ro"), "--no-progress"])
        finally:
            mp.undo()
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        code = main(["run", str(toy), "--out", str(ro / "run"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("vqtk: error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", "0"], "--n: must be > 0, got 0"),
        (["--temperature", "inf"], "--temperature: must be a finite number > 0, got inf"),
        (["--temperature", "0"], "--temperature: must be a finite number > 0, got 0.0"),
        (["--top-p", "1.5"], "--top-p: must be in (0, 1], got 1.5"),
        (["--top-k", "-1"], "--top-k: must be > 0, got -1"),
        (["--cfg", "nan"], "--cfg: must be a finite number >= 0 (1 = no guidance), got nan"),
        (["--steps", "0"], "--steps: must be > 0, got 0"),
        (["--seed", str(2**64)], f"--seed: must fit in 64 bits, got {2**64}"),
        (["--device", "tpu"], "--device: 'tpu' is not a device (use auto, cpu, cuda or cuda:N)"),
    ],
)
def test_sample_refuses_bad_options_before_reading_the_checkpoint(tmp_path, capsys, argv, message):
    code = main(["sample", str(tmp_path / "missing"), "--out", str(tmp_path / "s.png"), *argv])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [f"vqtk: error: {message}"]
    assert not (tmp_path / "s.png").exists()
