"""Recipes: strict validation with every error at once, extends, overrides, type changes."""

from __future__ import annotations

import pytest
from toy_plugin import TOY_RECIPE

from vqtk.errors import RecipeError, VqtkError
from vqtk.recipe import dump_toml, load_recipe


def write(tmp_path, text, name="r.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(tmp_path, registry, text, overrides=()):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text), overrides, registry)
    return info.value.problems


def test_valid_recipe_structures_with_defaults(tmp_path, toy_registry):
    recipe, resolved = load_recipe(write(tmp_path, TOY_RECIPE), registry=toy_registry)
    assert recipe.model.quantizer.type == "toy"
    assert recipe.model.quantizer.config.codebook_size == 8
    assert recipe.model.quantizer.config.dim == 4  # default filled in
    assert recipe.loss["pixel"].weight == 1.0
    assert recipe.train.optimizer.betas == (0.5, 0.9)
    assert resolved["train"]["grad_accum"] == 1
    assert resolved["model"]["quantizer"] == {"type": "toy", "dim": 4, "codebook_size": 8, "mode": "nearest"}


def test_all_errors_reported_at_once_with_paths(tmp_path, toy_registry):
    text = TOY_RECIPE.replace("codebook_size = 8", 'codebook_size = "big"\ncodebok = 3\nmode = "nearst"')
    text = text.replace("steps = 4", "steps = 4.5").replace('type = "toy_l1"', 'type = "l1"')
    text += "[bogus]\nx = 1\n"
    got = problems(tmp_path, toy_registry, text)
    assert 'model.quantizer.codebook_size: expected int, got "big"' in got
    assert any(p.startswith("model.quantizer.codebok: unknown key; did you mean 'codebook_size'?") for p in got)
    assert 'model.quantizer.mode: expected one of "nearest", "other", got "nearst"; did you mean "nearest"?' in got
    assert "train.steps: expected int, got 4.5" in got
    assert any(p.startswith("loss.pixel.type: unknown loss 'l1'") and "available: toy_l1" in p for p in got)
    assert any(p.startswith("bogus: unknown key") for p in got)
    assert len(got) == 6


def test_missing_required_and_unknown_component(tmp_path, toy_registry):
    text = TOY_RECIPE.replace('[model.encoder]\ntype = "toy"\n', "").replace("batch_size = 2\n", "")
    text = text.replace('[data]\ntype = "toy"', '[data]\ntype = "tiy"')
    got = problems(tmp_path, toy_registry, text)
    assert "model.encoder: required field missing" in got
    assert "train.batch_size: required field missing" in got
    assert any(p.startswith("data.type: unknown data 'tiy'; did you mean 'toy'?") for p in got)


def test_validators_report_each_bad_value(tmp_path, toy_registry):
    text = TOY_RECIPE.replace("codebook_size = 8", "codebook_size = 0").replace("steps = 4", "steps = -1")
    got = problems(tmp_path, toy_registry, text)
    assert got == ["model.quantizer.codebook_size: must be > 0, got 0", "train.steps: must be > 0, got -1"]


def test_component_table_needs_type(tmp_path, toy_registry):
    got = problems(tmp_path, toy_registry, TOY_RECIPE.replace('[data]\ntype = "toy"', "[data]"))
    assert got == ["data.type: required field missing; available data types: toy"]


def test_bool_is_not_an_int_and_int_is_a_float(tmp_path, toy_registry):
    got = problems(tmp_path, toy_registry, TOY_RECIPE.replace("batch_size = 2", "batch_size = true"))
    assert got == ["train.batch_size: expected int, got true"]
    recipe, _ = load_recipe(write(tmp_path, TOY_RECIPE + "[train.optimizer]\nlr = 1\n"), registry=toy_registry)
    assert recipe.train.optimizer.lr == 1.0 and isinstance(recipe.train.optimizer.lr, float)


def test_extends_merges_and_type_change_replaces_table(tmp_path, toy_registry):
    write(tmp_path, TOY_RECIPE, "base.toml")
    child = 'extends = "base.toml"\n[train]\nsteps = 9\n[model.quantizer]\ntype = "toy_fancy"\n'
    recipe, resolved = load_recipe(write(tmp_path, child), registry=toy_registry)
    assert recipe.train.steps == 9 and recipe.train.batch_size == 2
    # the new type's table starts from its own defaults, not from the old table
    assert recipe.model.quantizer.type == "toy_fancy"
    assert recipe.model.quantizer.config.codebook_size == 8  # default of the new component
    assert resolved["name"] == "toy"


def test_extends_cycle_and_missing_parent(tmp_path, toy_registry):
    write(tmp_path, 'extends = "b.toml"\n', "a.toml")
    write(tmp_path, 'extends = "a.toml"\n', "b.toml")
    with pytest.raises(VqtkError, match="extends: cycle"):
        load_recipe(tmp_path / "a.toml", registry=toy_registry)
    with pytest.raises(VqtkError, match="extends: no such recipe file"):
        load_recipe(write(tmp_path, 'extends = "nope.toml"\n', "c.toml"), registry=toy_registry)


def test_overrides_are_toml_literals(tmp_path, toy_registry):
    recipe, _ = load_recipe(
        write(tmp_path, TOY_RECIPE),
        ["train.steps=7", "train.optimizer.betas=[0.9, 0.99]", "name=hello", 'model.quantizer.mode="other"'],
        toy_registry,
    )
    assert recipe.train.steps == 7
    assert recipe.train.optimizer.betas == (0.9, 0.99)
    assert recipe.name == "hello"
    assert recipe.model.quantizer.config.mode == "other"


def test_override_bad_value_is_reported_with_its_path(tmp_path, toy_registry):
    got = problems(tmp_path, toy_registry, TOY_RECIPE, ["model.quantizer.codebook_size=big"])
    assert got == ['model.quantizer.codebook_size: expected int, got "big"']


def test_override_type_change_revalidates_against_new_component(tmp_path, toy_registry):
    recipe, resolved = load_recipe(
        write(tmp_path, TOY_RECIPE), ["model.quantizer.codebook_size=16", "model.quantizer.type=toy_fancy"], toy_registry
    )
    assert recipe.model.quantizer.type == "toy_fancy"
    assert resolved["model"]["quantizer"]["codebook_size"] == 16


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1"])
def test_malformed_override(tmp_path, toy_registry, bad):
    with pytest.raises(VqtkError, match="expected key.path=value"):
        load_recipe(write(tmp_path, TOY_RECIPE), [bad], toy_registry)


def test_invalid_toml_and_missing_file(tmp_path, toy_registry):
    with pytest.raises(VqtkError, match="invalid TOML"):
        load_recipe(write(tmp_path, "[model\n"), registry=toy_registry)
    with pytest.raises(VqtkError, match="no such recipe file"):
        load_recipe(tmp_path / "none.toml", registry=toy_registry)


def test_recipe_cannot_name_python_code(tmp_path, toy_registry):
    got = problems(tmp_path, toy_registry, TOY_RECIPE.replace('[data]\ntype = "toy"', '[data]\ntype = "os.system"'))
    assert any(p.startswith("data.type: unknown data 'os.system'") for p in got)


def test_resolved_recipe_round_trips_through_toml(tmp_path, toy_registry):
    recipe, resolved = load_recipe(write(tmp_path, TOY_RECIPE), registry=toy_registry)
    again, resolved2 = load_recipe(write(tmp_path, dump_toml(resolved), "again.toml"), registry=toy_registry)
    assert resolved2 == resolved
    assert again == recipe
