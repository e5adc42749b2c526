"""Helpers for the hardening suite (a plain module: test files import it by name)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from tiny_recipe import TINY  # noqa: E402

#: one problem per line: ``vqtk: error: WHERE: message`` (a dotted recipe path, a file, an option)
ERROR_LINE = re.compile(r"vqtk: error: \S[^\n]*?: \S.*")

#: what a forked ``vqtk run`` child needs imported already (see :func:`cli_in_child`)
PRELOAD = ["robust_helpers", "vqtk.cli", "vqtk.cli.run_cmd", "vqtk.train.stage1", "vqtk_builtins",
           "vqtk_builtins.autoencoders", "vqtk_builtins.quantizers",
           "vqtk_builtins.discriminators", "vqtk_builtins.losses",
           "vqtk_builtins.data.sample_photos", "vector_quantize_pytorch"]


@attrs.frozen
class CliResult:
    code: int
    out: str
    err: str

    @property
    def errors(self) -> list[str]:
        """The ``vqtk: error:`` lines, prefix removed."""
        return [ln[len("vqtk: error: "):] for ln in self.err.splitlines() if ln.startswith("vqtk: error: ")]


def assert_clean_failure(result: CliResult) -> None:
    """Exit 2, no traceback, and every stderr line is a one-line ``vqtk: error: where: message``."""
    assert result.code == 2, result.err
    assert "Traceback" not in result.err and "internal error" not in result.err, result.err
    lines = [ln for ln in result.err.splitlines() if ln.strip() and not ln.startswith("usage:")]
    assert lines, "no error message at all"
    for line in lines:
        assert ERROR_LINE.fullmatch(line), f"not a one-line error: {line!r}"


def cli_in_child(argv: list[str], log_file: str) -> None:
    """Body of a forked child process: ``vqtk ARGV`` exactly as ``python -m vqtk`` runs it
    (real plugin loading, real signal handling), output to ``log_file``.

    Forked from a multiprocessing fork server that imported :data:`PRELOAD`, so a child
    starts in milliseconds instead of the ~6 s ``import torch`` + plugins take here.
    """
    import torch

    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    torch.set_num_threads(1)
    from vqtk.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
