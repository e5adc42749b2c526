"""``vqtk convert``: other projects' checkpoints to vqtk checkpoints and back, through registered converters.

``vqtk convert NAME`` (or ``from-NAME``) imports with the converter ``NAME``,
``vqtk convert to-NAME`` exports; each converter's extra flags are built from
the options class it declares (:mod:`vqtk.interfaces.converter`). Without a
name, the installed converters are listed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vqtk.errors import VqtkError
from vqtk.interfaces.converter import first_paragraph, option_specs
from vqtk.registry import ConverterSpec, Registry, default_registry

_EPILOG = """\
commands of an installed converter NAME (`vqtk convert` lists them):
  NAME (alias from-NAME)  NAME's checkpoint file -> vqtk checkpoint folder (vqtk.load, vqtk reconstruct)
  to-NAME                 vqtk checkpoint -> NAME's format (converters that export)
`vqtk convert NAME --help` shows the converter's options.
"""


def add_commands(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert other projects' checkpoints to vqtk checkpoints and back (alone: list the converters)",
        description="Convert checkpoints of other projects to vqtk checkpoints and back, with the converters "
                    "that plugins register. Without NAME (or with --list) lists them.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--list", action="store_true", help="list the installed converters")
    p.add_argument("name", nargs="?", metavar="NAME", help="converter: NAME or from-NAME imports, to-NAME exports")
    p.add_argument("arguments", nargs=argparse.REMAINDER, metavar="...",
                   help="the converter's arguments (vqtk convert NAME --help)")
    parser_class = type(p)  # the CLI's parser: errors are one line and exit 2
    p.set_defaults(func=lambda args: cmd_convert(args, parser_class))


def cmd_convert(args: argparse.Namespace, parser_class: type = argparse.ArgumentParser) -> int:
    registry = default_registry()
    if args.list or args.name is None:
        return _list(registry)
    command: str = args.name
    export = command.startswith("to-")
    spec = registry.converter(command.removeprefix("to-") if export else command.removeprefix("from-"))
    converter = spec.converter
    if export and not converter.can_export:
        raise VqtkError(f"converter {spec.name!r} ({spec.origin}) only imports: there is no {command}")
    options_class = converter.export_options if export else converter.import_options
    parsed = _parser(parser_class, spec, command, export, options_class).parse_args(args.arguments)
    options = _options(options_class, parsed)
    if export:
        result = converter.export_checkpoint(parsed.checkpoint, parsed.out, options, registry=registry)
    else:
        result = converter.import_checkpoint(Path(parsed.checkpoint), parsed.out, options, registry=registry)
    for line in result.summary:
        print(line)
    return 0


def _list(registry: Registry) -> int:
    """One line per converter: name, plugin, its commands, what it converts."""
    rows = [(s.name, s.plugin, f"{s.name}, to-{s.name}" if s.converter.can_export else s.name, s.doc)
            for s in registry.converters()]
    widths = [max([len(r[i]) for r in rows] + [0]) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
    if not rows:
        print("no converters installed")
    for p in registry.failures():
        print(f"warning: plugin {p.name!r} {p.error}")
    return 0


def _parser(parser_class: type, spec: ConverterSpec, command: str, export: bool,
            options_class: type) -> argparse.ArgumentParser:
    """The command line of one direction of a converter, its flags made from the declared options."""
    method = spec.converter.export_checkpoint if export else spec.converter.import_checkpoint
    parser = parser_class(prog=f"vqtk convert {command}", description=first_paragraph(method.__doc__))
    out_help = f"output file in {spec.name}'s format" if export else "new folder for the vqtk checkpoint"
    if export:
        parser.add_argument("checkpoint", help="vqtk run folder, checkpoint folder or model.safetensors")
        parser.add_argument("--out", required=True, help=out_help)
    else:
        parser.add_argument("checkpoint", help=f"the {spec.name} checkpoint file to convert")
    for opt in option_specs(options_class):
        if opt.type is bool:
            parser.add_argument(opt.flag, dest=opt.name, action="store_false" if opt.default else "store_true",
                                help=opt.help)
        else:
            parser.add_argument(opt.flag, dest=opt.name, type=opt.type, choices=opt.choices, metavar=opt.metavar,
                                required=opt.required, default=None if opt.required else opt.default,
                                help=opt.help)
    if not export:
        parser.add_argument("--out", required=True, help=out_help)
    return parser


def _options(options_class: type, parsed: argparse.Namespace) -> Any:
    """The options instance; a value its validator refuses is ``--flag: message`` (all at once)."""
    values, problems = {}, []
    for opt in option_specs(options_class):
        values[opt.name] = getattr(parsed, opt.name)
        if opt.validator is not None:
            try:
                opt.validator(None, opt.field, values[opt.name])
            except ValueError as exc:
                problems.append(f"{opt.flag}: {exc}")
    if problems:
        raise VqtkError("\n".join(problems))
    return options_class(**values)
