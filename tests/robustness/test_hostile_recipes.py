"""Malformed recipes through the real CLI: exit 2, one ``vqtk: error: path: message`` line per
problem, never a traceback, and ``vqtk run`` leaves no run folder behind."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import attrs
import pytest
import tomli_w
from robust_helpers import TINY, assert_clean_failure
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vqtk.config import non_negative, positive
from vqtk.recipe import load_recipe
from vqtk.recipe.schema import OptimizerSection, Recipe, TrainSection

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# -- the field catalogue of the tiny recipe -------------------------------------------------

_SECTIONS = {"": Recipe, "train": TrainSection, "train.optimizer": OptimizerSection,
             "train.disc_optimizer": OptimizerSection}
_KIND = {"model.encoder": "encoder", "model.quantizer": "quantizer", "model.decoder": "decoder",
         "model.discriminator": "discriminator", "data": "data"}


@attrs.frozen
class Table:
    path: str                  # dotted ("" for the top level)
    values: dict               # its scalar fields, resolved
    cls: type                  # attrs class its fields come from
    kind: str = ""             # component kind, "" for a core section

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def allowed(self) -> set[str]:
        names = {f.name for f in attrs.fields(self.cls)}
        if self.kind:
            names |= {"type"} | ({"weight"} if self.kind == "loss" else set())
        return names | {"extends", "model", "loss", "data", "train", "prior", "prior_train"}


def _validators(field) -> tuple:
    v = field.validator
    return tuple(getattr(v, "_validators", ())) or (v,)


def catalogue(registry, folder: Path) -> tuple[dict, list[Table]]:
    (folder / "base.toml").write_text(TINY)
    recipe, resolved = load_recipe(folder / "base.toml", registry=registry)
    tables = []

    def walk(node: dict, path: str) -> None:
        scalars = {k: v for k, v in node.items() if not isinstance(v, dict)}
        if path in _SECTIONS:
            tables.append(Table(path, scalars, _SECTIONS[path]))
        elif "type" in node:
            kind = _KIND.get(path, "loss" if path.startswith("loss.") else "")
            spec = registry.get(kind, node["type"])
            tables.append(Table(path, scalars, spec.config, kind))
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{path}.{k}" if path else k)

    walk(resolved, "")
    return resolved, tables


def _field(table: Table, name: str):
    return next((f for f in attrs.fields(table.cls) if f.name == name), None)


# -- mutations: each sets one value and says which error line must name it ------------------

@attrs.frozen
class Mutation:
    table: str
    key: str
    value: object
    expect: str          # the start of the error line (after "vqtk: error: ")
    phase: int           # 1: structure (types, keys, names); 2: value checks, reported once 1 passes


def _wrong_type_values(current):
    text = st.text(max_size=6)
    if isinstance(current, bool):
        return st.one_of(st.integers(-3, 3), text, st.floats(allow_nan=False))
    if isinstance(current, int):
        return st.one_of(text, st.booleans(), st.floats(allow_nan=False).filter(lambda f: True),
                         st.lists(st.integers(0, 9), max_size=2), st.just({"a": 1}))
    if isinstance(current, float):
        return st.one_of(text, st.booleans(), st.lists(st.integers(0, 9), max_size=2), st.just({"a": 1}))
    if isinstance(current, str):
        return st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False),
                         st.lists(st.integers(0, 9), max_size=2))
    if isinstance(current, list):
        return st.one_of(st.integers(), text, st.booleans(), st.just({"a": 1}))
    raise AssertionError(current)


@st.composite
def mutation_for(draw, table: Table, registry) -> Mutation:
    options = ["wrong_type", "unknown_key"]
    ints = [k for k, v in table.values.items() if type(v) is int]
    floats = [k for k, v in table.values.items() if type(v) is float]
    if table.kind:
        options.append("unknown_component")
    if ints:
        options += ["huge_int", "out_of_range"]
    if floats:
        options.append("non_finite")
    how = draw(st.sampled_from(options))
    if how == "wrong_type":
        key = draw(st.sampled_from(sorted(table.values)))
        value = draw(_wrong_type_values(table.values[key]))
        return Mutation(table.path, key, value, f"{table.where(key)}: ", 1)
    if how == "unknown_key":
        key = draw(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(lambda k: k not in table.allowed()))
        return Mutation(table.path, key, 1, f"{table.where(key)}: unknown key", 1)
    if how == "unknown_component":
        name = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in registry.names(table.kind)))
        return Mutation(table.path, "type", name, f"{table.where('type')}: unknown {table.kind} ", 1)
    if how == "huge_int":
        key = draw(st.sampled_from(ints))
        value = draw(st.one_of(st.integers(min_value=2**63, max_value=10**40),
                               st.integers(min_value=-(10**40), max_value=-(2**63) - 1)))
        return Mutation(table.path, key, value, f"{table.where(key)}: {value} is out of range", 1)
    if how == "non_finite":
        key = draw(st.sampled_from(floats))
        value = draw(st.sampled_from([math.inf, -math.inf, math.nan]))
        return Mutation(table.path, key, value, f"{table.where(key)}: expected a finite number", 1)
    # out_of_range: zero / negative sizes against the field's own validator
    key = draw(st.sampled_from(ints))
    checks = _validators(_field(table, key)) if _field(table, key) is not None else ()
    if positive in checks:
        value = draw(st.integers(min_value=-(2**63), max_value=0))
        return Mutation(table.path, key, value, f"{table.where(key)}: must be > 0, got {value}", 2)
    if non_negative in checks:
        value = draw(st.integers(min_value=-(2**63), max_value=-1))
        return Mutation(table.path, key, value, f"{table.where(key)}: must be >= 0, got {value}", 2)
    value = draw(st.integers(min_value=2**63, max_value=2**70))  # no lower bound to break: too large
    return Mutation(table.path, key, value, f"{table.where(key)}: {value} is out of range", 1)


@st.composite
def mutations(draw, tables: list[Table], registry) -> list[Mutation]:
    chosen = draw(st.lists(st.sampled_from(tables), min_size=1, max_size=3, unique_by=lambda t: t.path))
    return [draw(mutation_for(t, registry)) for t in chosen]


def apply(resolved: dict, muts: list[Mutation]) -> dict:
    data = copy.deepcopy(resolved)
    for m in muts:
        node = data
        for part in [p for p in m.table.split(".") if p]:
            node = node[part]
        if m.key == "type":  # a new component: its old fields no longer apply
            node.clear()
        node[m.key] = m.value
    return data


# -- properties --------------------------------------------------------------------------------

@pytest.fixture
def catalog(builtins_registry, use_registry, tmp_path):
    use_registry(builtins_registry)
    resolved, tables = catalogue(builtins_registry, tmp_path)
    return builtins_registry, resolved, tables


def test_malformed_recipes_fail_cleanly_and_name_every_problem(catalog, cli, tmp_path):
    registry, resolved, tables = catalog
    counter = iter(range(10**6))

    @SETTINGS
    @given(data=st.data())
    def check(data):
        muts = data.draw(mutations(tables, registry))
        recipe = tmp_path / f"r{next(counter)}.toml"
        recipe.write_text(tomli_w.dumps(apply(resolved, muts)))
        result = cli("show", recipe)
        assert_clean_failure(result)
        phase = min(m.phase for m in muts)
        for m in muts:
            if m.phase == phase:
                assert any(line.startswith(m.expect) for line in result.errors), (m, result.errors)
        # vqtk run validates before it creates anything
        out = tmp_path / f"out{next(counter)}"
        assert_clean_failure(cli("run", recipe, "--out", out, "--no-progress"))
        assert not out.exists()

    check()


def test_any_bytes_as_a_recipe_fail_cleanly(tiny, cli, tmp_path):
    counter = iter(range(10**6))

    @SETTINGS
    @given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: t.encode("utf-8"))))
    def check(blob):
        path = tmp_path / f"b{next(counter)}.toml"
        path.write_bytes(blob)
        assert_clean_failure(cli("show", path))

    check()


def test_any_override_is_applied_or_refused_cleanly(tiny, cli):
    @SETTINGS
    @given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=3))
    def check(overrides):
        assume(all(not o.startswith("-") for o in overrides))
        result = cli("show", tiny, *overrides)
        if result.code != 0:
            assert_clean_failure(result)

    check()


def test_keys_and_values_with_line_breaks_and_escapes_stay_on_one_line(tiny, cli, tmp_path):
    data = tomllib.loads(TINY)
    data["train"]["steps"] = "6\nvqtk: error: forged"
    data["model"]["encoder"]["bad\nkey"] = 1
    path = tmp_path / "evil.toml"
    path.write_text(tomli_w.dumps(data))
    result = cli("show", path)
    assert_clean_failure(result)
    assert len(result.errors) == 2
    assert 'train.steps: expected int, got "6\\nvqtk: error: forged"' in result.errors
    assert any(line.startswith('model.encoder."bad\\nkey": unknown key') for line in result.errors)

    data = tomllib.loads(TINY)
    data["data"]["train_photos"] = ["astronaut", "x\x1b[2J\ny"]  # a terminal escape in a value
    path.write_text(tomli_w.dumps(data))
    result = cli("show", path)
    assert_clean_failure(result)
    assert "\x1b" not in result.err
    assert result.errors == ['data.train_photos: [1] unknown photo "x\\x1b[2J\\ny"; valid names: '
                             + result.errors[0].split("valid names: ")[1]]


# -- specific shapes of bad input ----------------------------------------------------------------

@pytest.mark.parametrize("override, expect", [
    ("model.quantizer.codebook_size=1000000000000000000000000000000",
     "model.quantizer.codebook_size: 1000000000000000000000000000000 is out of range (integers must fit in 64 bits)"),
    ("train.steps=-100000000000000000000", "train.steps: -100000000000000000000 is out of range"),
    ("train.optimizer.lr=inf", "train.optimizer.lr: expected a finite number, got inf"),
    ("loss.gan.weight=nan", "loss.gan.weight: expected a finite number, got nan"),
    ("loss.gan.weight=1e400", "loss.gan.weight: expected a finite number, got inf"),
    ("train.seed=-1", "train.seed: must be between 0 and 4294967295, got -1"),
    ("train.seed=9223372036854775807", "train.seed: must be between 0 and 4294967295"),
    ("train.device=meta", 'train.device: expected "auto", "cpu", "cuda", "cuda:N", "mps" or "xpu", got "meta"'),
    ("model.encoder=[1]", "model.encoder: expected an encoder table with a 'type' key, got an array"),
])
def test_out_of_range_numbers_are_recipe_errors(tiny, cli, override, expect):
    result = cli("check", tiny, override)
    assert_clean_failure(result)
    assert len(result.errors) == 1 and result.errors[0].startswith(expect), result.errors


@pytest.mark.parametrize("override, where", [
    # valid 64-bit ints, far too large to allocate: torch fails; vqtk names the part
    ("model.quantizer.codebook_size=4611686018427387904", "model.quantizer: too large to allocate (quantizer 'factorized')"),
    ("model.encoder.ch=100000000000", "model.encoder: too large to allocate (encoder 'taming')"),
    ("data.resolution=1099511627776", "data.resolution: too large to allocate a 1099511627776x1099511627776 image"),
])
def test_sizes_too_large_to_allocate_are_one_line_errors(tiny, cli, override, where):
    result = cli("check", tiny, override)
    assert_clean_failure(result)
    assert len(result.errors) == 1 and result.errors[0].startswith(where + ": "), result.errors


@pytest.mark.parametrize("resolution", [15, 17, 33, 7])
def test_resolution_not_divisible_by_the_downsampling(tiny, cli, tmp_path, resolution):
    result = cli("check", tiny, f"data.resolution={resolution}")
    assert_clean_failure(result)
    assert result.errors == [
        f"data.resolution: {resolution} is not divisible by the encoder's downsampling factor 2"]
    out = tmp_path / "run"
    assert_clean_failure(cli("run", tiny, "--out", out, "--no-progress", f"data.resolution={resolution}"))
    assert not (out / "checkpoints").exists()


def test_run_creates_no_folder_for_a_recipe_that_fails_its_shape_checks(tiny, cli, tmp_path):
    out = tmp_path / "run"
    assert_clean_failure(cli("run", tiny, "--out", out, "--no-progress", "data.resolution=17"))
    assert not out.exists()


def _chain(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path / next(iter(files))


@pytest.mark.parametrize("files, expect", [
    ({"a.toml": 'extends = "b.toml"', "b.toml": 'extends = "a.toml"'}, "{d}/b.toml: extends: cycle: {d}/a.toml -> {d}/b.toml -> {d}/a.toml"),
    ({"a.toml": 'extends = "a.toml"'}, "{d}/a.toml: extends: cycle: {d}/a.toml -> {d}/a.toml"),
    ({"a.toml": 'extends = "gone.toml"'}, "{d}/a.toml: extends: no such recipe file {d}/gone.toml"),
    ({"a.toml": "extends = 3"}, "{d}/a.toml: extends: expected a path string, got 3"),
    ({"a.toml": 'extends = ["b.toml"]'}, "{d}/a.toml: extends: expected a path string, got an array"),
    ({"a.toml": 'extends = "sub"', "sub/x.toml": ""}, "{d}/a.toml: extends: {d}/sub is a folder, not a recipe file"),
    ({"a.toml": 'extends = "b.toml"', "b.toml": "[model\n"},
     "{d}/b.toml: invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 7)"),
    ({"a.toml": 'extends = "b.toml"', "b.toml": "x = 1\nx = 2\n"}, "{d}/b.toml: invalid TOML: "),
])
def test_broken_extends_chains(tiny, cli, tmp_path, files, expect):
    recipe = _chain(tmp_path, files)
    result = cli("show", recipe)
    assert_clean_failure(result)
    assert len(result.errors) == 1 and result.errors[0].startswith(expect.format(d=tmp_path)), result.errors


def test_extends_chain_deeper_than_the_limit(tiny, cli, tmp_path):
    for i in range(40):
        (tmp_path / f"r{i}.toml").write_text(f'extends = "r{i + 1}.toml"\n')
    (tmp_path / "r40.toml").write_text(TINY)
    result = cli("show", tmp_path / "r0.toml")
    assert_clean_failure(result)
    assert result.errors[0].endswith("extends: chain deeper than 32")


def test_recipe_files_that_are_not_text(tiny, cli, tmp_path):
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert cli("show", binary).errors == [f"{binary}: not UTF-8 text (invalid start byte at byte 0)"]
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    assert cli("show", folder).errors == [f"{folder}: is a folder, not a recipe file"]
    endless = cli("show", "/dev/zero")  # read with a cap, not into memory
    assert endless.code == 2 and endless.errors == ["/dev/zero: larger than 16 MiB, not a recipe"]
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + TINY.encode())  # a Windows editor's byte-order mark is fine
    assert cli("show", bom).code == 0


def test_subprocess_reports_bad_input_on_one_line(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    proc = subprocess.run(
        [sys.executable, "-m", "vqtk", "run", str(recipe), "--out", str(tmp_path / "out"),
         "model.quantizer.codebook_size=100000000000000000000", "train.optimizer.lr=-inf"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "vqtk: error: model.quantizer.codebook_size: 100000000000000000000 is out of range "
        "(integers must fit in 64 bits)",
        "vqtk: error: train.optimizer.lr: expected a finite number, got -inf",
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["[" * 5000 + "]" * 5000, "{a = " * 3000 + "1" + "}" * 3000, "[" * 65 + "]" * 65])
def test_deeply_nested_values_are_one_line_errors(tiny, cli, tmp_path, value):
    """Python's TOML reader recurses once per level; thousands of levels must not crash it."""
    recipe = tmp_path / "deep.toml"
    recipe.write_text(tiny.read_text() + f"\n[model.encoder.extra]\nx = {value}\n")
    result = cli("show", recipe)
    assert_clean_failure(result)
    assert result.errors == [f"{recipe}: values nested {value.count('[') or value.count('{')} levels deep; "
                             "recipes may nest at most 64"]
    override = cli("show", tiny, f"train.steps={value}")
    assert_clean_failure(override)
    assert override.errors == ["override train.steps: value nested more than 64 levels deep"]


def test_nesting_at_the_limit_is_read(tiny, cli):
    """64 levels pass the reader: the value then fails as any wrong value does, at its path."""
    result = cli("show", tiny, "model.encoder.x=" + "[" * 63 + "1" + "]" * 63)
    assert_clean_failure(result)
    assert len(result.errors) == 1 and result.errors[0].startswith("model.encoder.x: unknown key"), result.errors
