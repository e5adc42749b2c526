"""``vqtk describe``: every field of a registered component, with type, default, allowed values and doc."""

from __future__ import annotations

import textwrap

from vqtk.errors import VqtkError
from vqtk.interfaces import KINDS
from vqtk.registry import default_registry
from vqtk.registry.describe import fields_of, markdown


def add_commands(sub) -> None:
    p = sub.add_parser("describe", help="a component's recipe fields: type, default, allowed values, doc")
    p.add_argument("kind", nargs="?", choices=list(KINDS), help="component kind")
    p.add_argument("name", nargs="?", help="registered name (as in the recipe's type = ...)")
    p.add_argument("--all", action="store_true", help="every registered component (of KIND, if given)")
    p.add_argument("--markdown", action="store_true", help="a Markdown reference (tables) instead of text")
    p.set_defaults(func=cmd_describe)


def _text(spec) -> str:
    origin = spec.origin
    record_lines = [f"{spec.kind} {spec.name!r}  [{origin}]", f"  {spec.doc}" if spec.doc else ""]
    rows = fields_of(spec)
    if not rows:
        record_lines.append("  (no fields)")
    for r in rows:
        default = "required" if r.required else r.default if r.provided else f"default {r.default}"
        allowed = f"; {r.allowed}" if r.allowed else ""
        record_lines.append(f"  {r.name}: {r.type} ({default}{allowed})")
        if r.doc:
            record_lines += textwrap.wrap(r.doc, width=96, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(line for line in record_lines if line != "")


def cmd_describe(args) -> int:
    registry = default_registry()
    if args.all:
        if args.name:
            raise VqtkError("describe: give KIND NAME, or --all [KIND], not both")
        specs = registry.components(args.kind)
    else:
        if not (args.kind and args.name):
            raise VqtkError("describe: give KIND NAME (e.g. vqtk describe quantizer vq), or --all")
        specs = [registry.get(args.kind, args.name)]
    if args.markdown:
        print(markdown(specs))
    else:
        print("\n\n".join(_text(s) for s in specs))
    return 0
