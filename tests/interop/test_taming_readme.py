"""The README's "Importing taming-transformers checkpoints" section, executed.

Its commands and Python run on a tiny taming checkpoint, with paths and the image size
substituted.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

import taming_reference as ref
from taming_fixtures import TINY, TINY_YAML, registry, run_cli, save_lightning_checkpoint, tiny_taming_state  # noqa: F401

HEADING = "## Importing taming-transformers checkpoints"
HERE = Path(__file__).resolve().parent


def _section() -> str:
    readme = (HERE.parents[1] / "README.md").read_text()
    text = readme
    start = text.index(HEADING)
    end = text.find("\n## ", start + len(HEADING))
    return text[start:] if end < 0 else text[start:end]


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def _substitute(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"the README example no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def test_readme_example_runs(tmp_path, registry):
    pytest.importorskip("yaml")
    section = _section()
    sd = tiny_taming_state()
    save_lightning_checkpoint(tmp_path / "last.ckpt", sd)
    (tmp_path / "model.yaml").write_text(TINY_YAML.format(actnorm="False"))
    out = tmp_path / "converted"
    paths = {
        "logs/vqgan_imagenet_f16_16384/checkpoints/last.ckpt": str(tmp_path / "last.ckpt"),
        "logs/vqgan_imagenet_f16_16384/configs/model.yaml": str(tmp_path / "model.yaml"),
        "converted/vqgan_f16": str(out),
    }

    (bash,) = _blocks(section, "bash")
    command = shlex.split(_substitute(bash.replace("\\\n", " "), paths))
    assert command[:3] == ["vqtk", "convert", "taming"]
    assert run_cli(command[1:]) == 0

    (python,) = _blocks(section, "python")
    code = _substitute(python, {'vqtk.load("converted/vqgan_f16")': f"vqtk.load({str(out)!r}, device='cpu')",
                                "torch.rand(1, 3, 256, 256)": "torch.rand(1, 3, 16, 16)"})
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["indices"].shape == (1, 8, 8) and namespace["indices"].dtype == torch.int64
    assert namespace["recon"].shape == (1, 3, 16, 16)
    assert torch.equal(namespace["indices"], ref.encode_to_indices(sd, namespace["images"], TINY))
    torch.testing.assert_close(namespace["recon"], ref.decode_indices(sd, namespace["indices"], TINY),
                               atol=1e-5, rtol=1e-5)

    (export,) = re.findall(r"`(vqtk convert to-taming [^`]*)`", section)
    command = shlex.split(_substitute(export, {"converted/vqgan_f16": str(out),
                                               "model.ckpt": str(tmp_path / "model.ckpt"),
                                               "model.yaml": str(tmp_path / "exported.yaml")}))
    assert run_cli(command[1:]) == 0
    back = torch.load(tmp_path / "model.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(back["quantize.embedding.weight"], sd["quantize.embedding.weight"])
    assert (tmp_path / "exported.yaml").is_file()
