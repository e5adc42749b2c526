"""`vqtk describe` and the generated component reference stay in step with the registry."""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from vqtk.cli import main
from vqtk.interfaces import KINDS
from vqtk.registry.describe import fields_of, markdown

ROOT = Path(__file__).resolve().parents[2]


def test_docs_components_md_is_the_generated_reference(builtins_registry):
    expected = markdown(builtins_registry.components()) + "\n"
    actual = (ROOT / "docs" / "components.md").read_text()
    assert actual == expected, "docs/components.md is stale: run `vqtk describe --all --markdown > docs/components.md`"


def test_readme_component_table_names_every_builtin(builtins_registry):
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Components"):readme.index("## Several GPUs")]
    rows = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| kind") and not line.startswith("|---"):
            kinds, names = line.split("|")[1:3]
            for kind in kinds.strip().split(" / "):
                rows[kind] = set(re.findall(r"`([a-z0-9_]+)`", names))
    for kind in KINDS:
        assert rows.get(kind) == set(builtins_registry.names(kind)), kind


def test_every_builtin_field_has_a_description(builtins_registry):
    missing = [f"{s.kind} {s.name}.{r.name}" for s in builtins_registry.components() for r in fields_of(s)
               if not r.doc]
    assert not missing


def test_describe_prints_type_default_range_and_doc(builtins_registry, use_registry, capsys):
    use_registry(builtins_registry)
    assert main(["describe", "quantizer", "fsq"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("quantizer 'fsq'  [plugin 'builtins']\n")
    assert "  levels: array of int (default [8, 5, 5, 5]; not empty, each >= 2)\n" in out
    assert "  dim: int (default absent; > 0)\n" in out


def test_describe_marks_provided_and_required_fields(builtins_registry, use_registry, capsys):
    use_registry(builtins_registry)
    assert main(["describe", "prior", "gpt"]) == 0
    out = capsys.readouterr().out
    assert "  codebook_size: int (from the tokenizer; > 0)\n" in out
    spec = builtins_registry.get("prior", "gpt")
    assert {f.name for f in attrs.fields(spec.config)} >= {"codebook_size", "grid_size", "dim"}


def test_describe_errors(builtins_registry, use_registry, capsys):
    use_registry(builtins_registry)
    assert main(["describe", "quantizer", "vqq"]) == 2
    assert "vqtk: error: unknown quantizer 'vqq'; did you mean 'vq'?" in capsys.readouterr().err
    assert main(["describe"]) == 2
    assert main(["describe", "--all", "quantizer"]) == 0
