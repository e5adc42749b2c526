"""The ``vqtk`` command line.

Exit status: 0 on success, 2 on bad input (recipe, arguments, files, data) with
one line per problem and no traceback, 1 on internal errors (bugs), 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback
from typing import Optional, Sequence

from vqtk.cli import (
    convert_cmd,
    describe_cmd,
    download_cmd,
    eval_cmd,
    fid_stats_cmd,
    inspect_cmds,
    reconstruct_cmd,
    run_cmd,
    sample_cmd,
    shards_cmd,
)
from vqtk.errors import PluginBug, VqtkError
from vqtk.registry import default_registry
from vqtk.version import __version__

try:  # CUDA's out-of-memory error (a RuntimeError); plain RAM exhaustion is a MemoryError
    from torch import OutOfMemoryError as _TorchOOM
except ImportError:  # pragma: no cover - older torch
    _TorchOOM = MemoryError

_DISK_ERRORS = {errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own exit code is 2 already; keep one line
        self.print_usage(sys.stderr)
        raise VqtkError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vqtk", description="Train and use VQGAN image tokenizers from TOML recipes.")
    parser.add_argument("--version", action="version", version=f"vqtk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in (run_cmd, inspect_cmds, describe_cmd, reconstruct_cmd, sample_cmd, eval_cmd, fid_stats_cmd,
                   convert_cmd, download_cmd, shards_cmd):
        module.add_commands(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        # key=value overrides may come after options (vqtk run R --out D a.b=1)
        late = [e for e in extra if "=" in e and not e.startswith("-")]
        unknown = [e for e in extra if e not in late]
        if unknown or (late and not hasattr(args, "overrides")):
            raise VqtkError(f"unrecognized arguments: {' '.join(unknown or late)}")
        if late:
            args.overrides = [*args.overrides, *late]
        quiet_rank = os.environ.get("RANK", "0") != "0"  # under torchrun, rank 0 speaks for all
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING if quiet_rank else logging.INFO,
            format="%(message)s",
            stream=sys.stderr,
        )
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except VqtkError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"vqtk: error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vqtk: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (MemoryError, _TorchOOM) as exc:
        first = (str(exc).strip().splitlines() or ["no memory left"])[0]
        print(f"vqtk: error: out of memory: {first}; lower train.batch_size (or raise train.grad_accum) "
              "or the resolution; earlier checkpoints are intact", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _DISK_ERRORS:
            traceback.print_exc()
            print("vqtk: internal error (the traceback above is a bug in vqtk or a plugin)", file=sys.stderr)
            return 1
        where = exc.filename or "output"
        print(f"vqtk: error: cannot write {where}: {exc.strerror}; earlier checkpoints are intact",
              file=sys.stderr)
        return 2
    except PluginBug as exc:  # raised inside a plugin's code: its traceback is what its authors need
        traceback.print_exc()
        print(f"vqtk: error: {exc}", file=sys.stderr)
        print("vqtk: this is a bug in the plugin named above (the traceback shows where); "
              "report it to its authors", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: keep the traceback, it is what a bug report needs
        traceback.print_exc()
        print(f"vqtk: internal error ({_culprit(exc)})", file=sys.stderr)
        return 1


def _culprit(exc: BaseException) -> str:
    """Who the traceback of a bug points at: the innermost plugin frame, else vqtk."""
    registry = default_registry()
    tb = exc.__traceback__
    found = None
    while tb is not None:
        record = registry.plugin_of_module(tb.tb_frame.f_globals.get("__name__", ""))
        if record is not None:
            found = record
        tb = tb.tb_next
    if found is None:
        return "the traceback above is a bug in vqtk"
    dist = f" (pip distribution {found.distribution} {found.version or ''})".replace(" )", ")") \
        if found.distribution else ""
    return f"the traceback above is a bug in plugin {found.name!r}{dist}; report it to its authors"
