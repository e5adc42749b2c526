"""``vqtk show``, ``vqtk check``, ``vqtk list`` and ``vqtk plugins``: look without training."""

from __future__ import annotations

import argparse

from vqtk.build import (
    build_data,
    build_discriminator,
    build_losses,
    build_vqgan,
    check_data_fits,
    check_recipe_prior,
    component_origins,
    count_parameters,
    probe_shapes,
)
from vqtk.errors import MissingFileError, VqtkError
from vqtk.interfaces import KINDS
from vqtk.recipe import dump_toml, load_recipe
from vqtk.registry import default_registry
from vqtk.train.loggers import check_loggers


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="path to a TOML recipe")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="override recipe values (TOML literals)")


def add_commands(sub) -> None:
    p = sub.add_parser("show", help="print the fully resolved recipe (extends, overrides, defaults) as TOML")
    add_recipe_args(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("check", help="validate a recipe and build its model: parameter counts, latent grid")
    add_recipe_args(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("list", help="list registered components with their provider")
    p.add_argument("kind", nargs="?", choices=list(KINDS), help="only this kind")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("plugins", help="list plugins: name, version, components, failures")
    p.set_defaults(func=cmd_plugins)


def cmd_show(args) -> int:
    _, resolved = load_recipe(args.recipe, args.overrides)
    print(dump_toml(resolved), end="")
    return 0


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n:,}"


def cmd_check(args) -> int:
    recipe, _ = load_recipe(args.recipe, args.overrides)
    check_loggers(recipe.train.loggers)
    model = build_vqgan(recipe)
    disc = build_discriminator(recipe)
    data = build_data(recipe)
    check_data_fits(model, data.resolution, data.channels)
    missing: list[str] = []
    try:
        losses = build_losses(recipe)
    except MissingFileError as exc:  # the recipe is fine; this machine lacks a file the run needs
        missing.append(str(exc))
        losses = []
    needs_disc = [f"loss.{e.name}" for e in losses if type(e.loss).terms()[1]]
    if needs_disc and disc is None:
        raise VqtkError(f"model.discriminator: the recipe has losses that need a discriminator "
                        f"({', '.join(needs_disc)}) but no [model.discriminator]")
    shapes = probe_shapes(model, disc, data.resolution, component_origins(recipe))
    h, w = model.latent_grid(data.resolution, data.resolution)
    prior = None
    if recipe.prior is not None:  # a prior that does not model the tokenizer's codes is refused before any output
        prior = check_recipe_prior(recipe, model, data.resolution)

    m = recipe.model
    rows = [
        (f"encoder ({m.encoder.type})", count_parameters(model.encoder)),
        ("quant_conv", count_parameters(model.quant_conv)),
        (f"quantizer ({m.quantizer.type})", count_parameters(model.quantizer)),
        ("post_quant_conv", count_parameters(model.post_quant_conv)),
        (f"decoder ({m.decoder.type})", count_parameters(model.decoder)),
    ]
    total = sum(n for _, n in rows)
    width = max(len(r[0]) for r in rows) + 2
    print(f"recipe {args.recipe}: ok")
    print("parameters:")
    for name, n in rows:
        print(f"  {name:<{width}}{_millions(n):>10}")
    print(f"  {'VQGAN total':<{width}}{_millions(total):>10}")
    if disc is not None:
        print(f"  {'discriminator (' + m.discriminator.type + ')':<{width}}{_millions(count_parameters(disc)):>10}")
    q = model.quantizer
    codes = f"{q.codebook_size} codes" + (f" x {q.num_codebooks} codebooks" if q.num_codebooks > 1 else "")
    print(f"image {data.resolution}x{data.resolution}x{data.channels} -> latent grid {h}x{w}x{q.dim} "
          f"(downsampling {model.downsample_factor}), {codes}, {q.bits_per_position:.1f} bits per position")
    print(f"codes: {codes}, layout: {q.layout.describe()}")
    print(f"indices per image: {tuple(shapes['indices'][1:])}")
    if "discriminator" in shapes:
        maps = shapes["discriminator"]
        maps = maps if isinstance(maps, list) else [maps]
        print("discriminator output: " + ", ".join(str(tuple(m[1:])) for m in maps)
              + (f" ({len(maps)} scales)" if len(maps) > 1 else ""))
    if losses:
        print("losses: " + ", ".join(f"{e.name} ({type(e.loss).__name__}, weight {e.weight:g})" for e in losses))
    print(f"data: {data.describe()}")
    if prior is not None:
        print(f"prior ({recipe.prior.type}): {_millions(count_parameters(prior))} parameters over "
              f"{tuple(prior.grid_size)} grids of {prior.codebook_size} codes ({prior.layout.describe()})")
    for text in missing:
        print(f"warning: {text}")
        print("warning: the recipe is valid, but `vqtk run` stops until that file is in place "
              "(offline: fetch it with `vqtk download` where there is a network)")
    return 0


def cmd_list(args) -> int:
    registry = default_registry()
    specs = registry.components(args.kind)
    kind_w = max([len(s.kind) for s in specs] + [4])
    name_w = max([len(s.name) for s in specs] + [4])
    plug_w = max([len(s.plugin) for s in specs] + [6])
    for s in specs:
        print(f"{s.kind:<{kind_w}}  {s.name:<{name_w}}  {s.plugin:<{plug_w}}  {s.doc}")
    if not specs:
        print("no components registered" + (f" for kind {args.kind!r}" if args.kind else ""))
    for p in registry.failures():
        print(f"warning: plugin {p.name!r} {p.error}")
    return 0


def _with_layouts(registry, kind: str, name: str) -> str:
    """``name``, or for a prior ``name (layouts: grid, depth)``: the token layouts it models."""
    cls = registry.get(kind, name).component_class if kind == "prior" else None
    layouts = getattr(cls, "layouts", None) if cls is not None else None
    return f"{name} (layouts: {', '.join(layouts)})" if layouts else name


def cmd_plugins(args) -> int:
    registry = default_registry()
    if not registry.plugins:
        print("no plugins loaded")
    for p in registry.plugins.values():
        print(f"{p.name} {p.version or '(no version)'}  [{p.source}]")
        if p.error:
            print(f"  FAILED: {p.error}")
        by_kind: dict[str, list[str]] = {}
        for kind, name in p.components:
            by_kind.setdefault(kind, []).append(name)
        for kind, names in by_kind.items():
            print(f"  {kind}: {', '.join(_with_layouts(registry, kind, n) for n in names)}")
        if p.converters:
            print(f"  converters: {', '.join(p.converters)}")
    return 0
