"""The separately packaged example plugin is found through its entry point once installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(ROOT / "plugins" / "vqtk-example")],
        capture_output=True, text=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert list(target.glob("vqtk_example-*.dist-info"))
    return target


def _vqtk(args, site, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "vqtk", *args], capture_output=True, text=True, env=env, cwd=tmp_path)


def test_installed_plugin_is_discovered(installed_example, tmp_path):
    proc = _vqtk(["plugins"], installed_example, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "example 0.2.0  [entry point vqtk_example (vqtk-example)]" in proc.stdout
    assert "loss: charbonnier, drift" in proc.stdout
    proc = _vqtk(["list", "loss"], installed_example, tmp_path)
    assert "charbonnier" in proc.stdout and "example" in proc.stdout
    proc = _vqtk(["describe", "loss", "drift"], installed_example, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "loss 'drift'  [plugin 'example' (pip distribution vqtk-example)]" in proc.stdout
    assert "warmup_steps: int (default 0; >= 0)" in proc.stdout


def test_plugin_component_works_in_a_recipe(installed_example, tmp_path):
    code = (
        "import torch, vqtk\n"
        "from vqtk.registry import default_registry\n"
        "from vqtk.interfaces import LossInputs, QuantizerOutput\n"
        "spec = default_registry().get('loss', 'charbonnier')\n"
        "loss = spec.create(spec.config(eps=0.5))\n"
        "x = torch.zeros(1, 3, 2, 2)\n"
        "q = QuantizerOutput(quantized=x, indices=x.long(), loss=x.sum())\n"
        "print(float(loss.generator_loss(LossInputs(real=x, reconstruction=x, quantizer=q)).value))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(installed_example)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) == pytest.approx(0.5)
    # not installed: the core does not know it
    proc = subprocess.run([sys.executable, "-m", "vqtk", "list", "loss"], capture_output=True, text=True, cwd=tmp_path)
    assert "charbonnier" not in proc.stdout
