"""Reading recipes: TOML files, ``extends`` chains and ``key.path=value`` overrides."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from vqtk.errors import RecipeError, VqtkError
from vqtk.recipe.converter import RecipeConverter, show
from vqtk.recipe.schema import Recipe
from vqtk.registry import Registry, default_registry

MAX_EXTENDS_DEPTH = 32
#: a recipe is a few kB; anything this large is a wrong path (or /dev/zero)
MAX_RECIPE_BYTES = 16 * 2**20
#: arrays and inline tables nested deeper than this are refused before parsing (Python's TOML
#: reader recurses once per level and would crash with a RecursionError on thousands)
MAX_NESTING = 64


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in TOML values, strings and comments skipped.

    A linear scan (no recursion), so a hostile file costs one pass. Table headers
    (``[a.b]``, ``[[x]]``) count as depth 1-2, which never comes near the limit.
    """
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif ch in "\"'":
            triple = text.startswith(ch * 3, i)
            quote = ch * 3 if triple else ch
            j = i + len(quote)
            while j < n:
                if ch == '"' and text[j] == "\\":
                    j += 2
                    continue
                if text.startswith(quote, j):
                    break
                if not triple and text[j] == "\n":
                    break
                j += 1
            i = j + len(quote)
            continue
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
        i += 1
    return deepest


def parse_toml(text: str, where: str) -> dict:
    """``tomllib.loads`` with the nesting cap; every failure is a one-line :class:`VqtkError`."""
    depth = nesting_depth(text)
    if depth > MAX_NESTING:
        raise VqtkError(f"{where}: values nested {depth} levels deep; recipes may nest at most {MAX_NESTING}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise VqtkError(f"{where}: invalid TOML: {exc}") from None
    except RecursionError:  # a backstop: the scan above should have refused it
        raise VqtkError(f"{where}: values nested too deeply to read") from None


def read_toml(path: Path) -> dict:
    """Parse one TOML file, turning I/O and syntax errors into one-line messages."""
    try:
        with open(path, "rb") as f:  # a pipe works too; /dev/zero must not fill memory
            data = f.read(MAX_RECIPE_BYTES + 1)
    except FileNotFoundError:
        raise VqtkError(f"{path}: no such recipe file") from None
    except IsADirectoryError:
        raise VqtkError(f"{path}: is a folder, not a recipe file") from None
    except OSError as exc:
        raise VqtkError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_RECIPE_BYTES:
        raise VqtkError(f"{path}: larger than {MAX_RECIPE_BYTES // 2**20} MiB, not a recipe")
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (Windows editors) is fine
    except UnicodeDecodeError as exc:
        raise VqtkError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_toml(text, str(path))


def merge(base: dict, child: dict) -> dict:
    """Deep-merge ``child`` over ``base``.

    A table whose ``type`` differs from the base's replaces it whole: a new
    component is validated against its own fields, never mixed with the old one's.
    """
    out = copy.deepcopy(base)
    for key, value in child.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if "type" in value and value.get("type") != old.get("type"):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_raw(path: str | Path, _chain: Optional[list[Path]] = None) -> dict:
    """A recipe file with its ``extends`` chain resolved (paths are relative to the file)."""
    path = Path(path)
    chain = _chain or []
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in [*chain, resolved])
        raise VqtkError(f"{chain[-1]}: extends: cycle: {cycle}")
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise VqtkError(f"{path}: extends: chain deeper than {MAX_EXTENDS_DEPTH}")
    data = read_toml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise VqtkError(f"{path}: extends: expected a path string, got {show(parent)}")
    parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    if parent_path.is_dir():
        raise VqtkError(f"{path}: extends: {parent_path} is a folder, not a recipe file")
    if not parent_path.exists():
        raise VqtkError(f"{path}: extends: no such recipe file {parent_path}")
    return merge(load_raw(parent_path, [*chain, resolved]), data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=VALUE`` with VALUE a TOML literal; a bare word that is not TOML is a string."""
    key, sep, value = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or not all(p.strip() for p in parts):
        raise VqtkError(f"override {text!r}: expected key.path=value")
    if nesting_depth(value) > MAX_NESTING:
        raise VqtkError(f"override {key}: value nested more than {MAX_NESTING} levels deep")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return [p.strip() for p in parts], parsed


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``key.path=value`` overrides; ``type`` changes are applied first and reset their table."""
    out = copy.deepcopy(data)
    parsed = [parse_override(o) for o in overrides]
    ordered = [p for p in parsed if p[0][-1] == "type"] + [p for p in parsed if p[0][-1] != "type"]
    for parts, value in ordered:
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise VqtkError(f"override {'.'.join(parts)}: {where} is {show(child)}, not a table")
            node = child
        last = parts[-1]
        if last == "type" and node.get("type") != value:
            node.clear()
        node[last] = value
    return out


def load_recipe(
    path: str | Path,
    overrides: Iterable[str] = (),
    registry: Optional[Registry] = None,
) -> tuple[Recipe, dict]:
    """Load, resolve and validate a recipe; returns the recipe and its resolved raw dict.

    Raises :class:`RecipeError` listing every problem as ``dotted.path: message``.
    """
    registry = registry or default_registry()
    raw = apply_overrides(load_raw(path), overrides)
    converter = RecipeConverter(registry)
    recipe = converter.structure(raw, Recipe)
    return recipe, converter.unstructure(recipe)


def recipe_from_dict(data: dict, registry: Optional[Registry] = None) -> Recipe:
    """Validate an already-resolved recipe dict (e.g. one stored in a checkpoint)."""
    return RecipeConverter(registry or default_registry()).structure(copy.deepcopy(data), Recipe)


__all__ = ["RecipeError", "apply_overrides", "load_raw", "load_recipe", "merge", "recipe_from_dict"]
