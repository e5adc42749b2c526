"""``vqtk download``: fetch known pretrained weight files ahead of time (for offline machines, shared storage)."""

from __future__ import annotations

import argparse

from vqtk.errors import VqtkError
from vqtk.io import weights


def add_commands(sub) -> None:
    p = sub.add_parser(
        "download",
        help="fetch pretrained weight files (LPIPS backbones, FID Inception) into the cache",
        description="Download known weight files, verify their SHA-256 and print where each one is; a valid "
                    "copy already there is not fetched again. Without NAME: list them. Files go to --to DIR, "
                    "else $VQTK_WEIGHTS_DIR, else torch's hub cache ($TORCH_HOME/hub/checkpoints).",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help=f"{' | '.join(weights.KNOWN)} | all")
    p.add_argument("--to", metavar="DIR", help="download into DIR (and look only there)")
    p.set_defaults(func=cmd_download)


def cmd_download(args: argparse.Namespace) -> int:
    if not args.names:
        return _list(args.to)
    names = list(weights.KNOWN) if "all" in args.names else list(dict.fromkeys(args.names))
    unknown = [n for n in names if n not in weights.KNOWN]
    if unknown:
        raise VqtkError(f"download: unknown name {unknown[0]!r}; choose from {', '.join(weights.KNOWN)}, all")
    problems = []
    for name in names:
        try:
            present = weights.find(name, to=args.to)
            path = present or weights.fetch(name, to=args.to)
        except VqtkError as exc:
            problems.append(f"{name}: {exc}")
            continue
        state = "already present, verified" if present else "downloaded, verified"
        print(f"{name}: {path} ({state})", flush=True)
    if problems:
        raise VqtkError("\n".join(problems))
    return 0


def _list(to) -> int:
    for name, record in weights.KNOWN.items():
        try:
            path = weights.find(name, to=to)
            state = f"{path}" if path else f"not downloaded ({weights.weights_dirs(to)[0]})"
        except VqtkError as exc:
            state = f"unusable: {exc}"
        size = f", ~{record.approx_mib:.0f} MiB" if record.approx_mib else ""
        print(f"{name}: {record.file} ({record.what}{size}): {state}")
    return 0
