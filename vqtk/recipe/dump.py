"""Writing a resolved recipe back out as TOML (``vqtk show``, checkpoints)."""

from __future__ import annotations

import tomli_w


def dump_toml(data: dict) -> str:
    """TOML text for a resolved recipe dict; scalars of a table come before its sub-tables."""
    return tomli_w.dumps(data, multiline_strings=False)
