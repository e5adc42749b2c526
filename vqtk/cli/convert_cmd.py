"""``vqtk convert``: taming-transformers checkpoints to vqtk checkpoints and back."""

from __future__ import annotations

import argparse

from vqtk.errors import VqtkError

_EPILOG = """\
directions:
  taming (alias from-taming)  taming VQModel .ckpt/.pt -> vqtk checkpoint folder (vqtk.load, vqtk reconstruct)
  to-taming                   vqtk tokenizer checkpoint -> taming {"state_dict": ...} file (+ optional YAML config)

Pickled checkpoints are read without running code from them: objects other than
tensors and plain containers (OmegaConf configs, Lightning callbacks) are replaced
by inert placeholders.
"""


def add_commands(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert taming-transformers VQGAN checkpoints to vqtk checkpoints and back",
        description="Convert taming-transformers VQGAN checkpoints to vqtk checkpoints and back.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    directions = p.add_subparsers(dest="direction", metavar="DIRECTION")
    p.set_defaults(func=lambda args: _usage(p))

    t = directions.add_parser(
        "taming",
        aliases=["from-taming"],
        help="taming VQModel checkpoint -> vqtk checkpoint folder",
        description="Convert a taming-transformers VQModel checkpoint (Lightning .ckpt or a state-dict .pt) "
                    "into a vqtk checkpoint folder: OUT/checkpoints/step_000000/model.safetensors and "
                    "OUT/recipe.toml. Without --config the architecture is inferred from the weights.",
    )
    t.add_argument("checkpoint", help="taming .ckpt / .pt file (e.g. logs/.../checkpoints/last.ckpt)")
    t.add_argument("--config", metavar="YAML", help="taming's YAML config for it (e.g. configs/model.yaml); needs PyYAML")
    t.add_argument("--resolution", type=int, metavar="N",
                   help="image side the weights were trained at, which places attn_resolutions when "
                        "inferring without --config (default 256; the network computes the same either way)")
    t.add_argument("--out", required=True, help="new folder for the vqtk checkpoint")
    t.set_defaults(func=cmd_convert_taming)

    e = directions.add_parser(
        "to-taming",
        help="vqtk tokenizer checkpoint -> taming state-dict file",
        description="Write a vqtk tokenizer (encoder/decoder 'taming', quantizer 'vq', discriminator "
                    "'patchgan') as a taming-transformers checkpoint {\"state_dict\": ...} of plain tensors, "
                    "loadable by taming's VQModel(ckpt_path=...).",
    )
    e.add_argument("checkpoint", help="vqtk run folder, checkpoint folder or model.safetensors")
    e.add_argument("--out", required=True, help="output file, e.g. model.ckpt")
    e.add_argument("--config-out", metavar="YAML", help="also write taming's YAML config for the model here")
    e.add_argument("--no-discriminator", action="store_true", help="leave the discriminator out")
    e.set_defaults(func=cmd_convert_to_taming)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_convert_taming(args: argparse.Namespace) -> int:
    from vqtk.interop.taming import convert_taming, describe

    if args.resolution is not None and args.resolution <= 0:
        raise VqtkError(f"--resolution: must be > 0, got {args.resolution}")
    folder, converted = convert_taming(args.checkpoint, args.out, config=args.config, resolution=args.resolution)
    print(f"taming VQModel: {describe(converted.spec)}")
    print(f"-> {folder} (recipe: {args.out}/recipe.toml); load it with vqtk.load({str(args.out)!r})")
    return 0


def cmd_convert_to_taming(args: argparse.Namespace) -> int:
    from vqtk.interop.taming import describe, export_taming

    path, spec, count = export_taming(args.checkpoint, args.out, config_out=args.config_out,
                                      discriminator=not args.no_discriminator)
    print(f"taming VQModel: {describe(spec)}")
    extra = f" and config {args.config_out}" if args.config_out else ""
    print(f"-> {path} ({count} tensors){extra}")
    return 0
