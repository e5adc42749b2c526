"""Fixtures for the hardening suite: the tiny recipe on disk and the in-process CLI."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir
from robust_helpers import TINY, CliResult

# hypothesis caches (constants, unicode tables) outside the repository; examples are never stored
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "vqtk-hypothesis")


@pytest.fixture
def cli(capsys):
    """Run ``vqtk.cli.main`` in-process; returns a :class:`robust_helpers.CliResult`."""
    from vqtk.cli import main

    def run(*argv) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliResult(code=code, out=captured.out, err=captured.err)

    return run


@pytest.fixture
def tiny(tmp_path, builtins_registry, use_registry) -> Path:
    """The tiny end-to-end recipe written to ``tmp_path/tiny.toml``, with the built-ins as the registry."""
    use_registry(builtins_registry)
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path
