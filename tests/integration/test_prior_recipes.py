"""The class-conditional prior recipes check, with the parameter counts of the models they reproduce."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vqtk.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"

#: parameters of the published priors, counted from their code (see each recipe's header)
PUBLISHED = {
    "llamagen_gpt_b.toml": 110_888_448,  # LlamaGen GPT_B, 1000 classes + the null class
    "maskgit_c2i.toml": 172_457_193,  # MaskGIT's class-conditional transformer
}

#: narrower tokenizers keep the check quick on CPU; the prior's size depends only on the codes
SMALL_TOKENIZER = ["model.encoder.ch=32", "model.decoder.ch=32", "model.discriminator.ndf=8"]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_recipe_checks_with_the_published_parameter_count(name, builtins_registry, use_registry, capsys):
    use_registry(builtins_registry)
    assert main(["check", str(RECIPES / name), *SMALL_TOKENIZER]) == 0
    out = capsys.readouterr().out
    found = re.search(r"^prior \((\w+)\): ([\d.]+) M parameters over \(16, 16\) grids", out, re.MULTILINE)
    assert found, out
    assert float(found.group(2)) * 1e6 == pytest.approx(PUBLISHED[name], rel=0.02)
