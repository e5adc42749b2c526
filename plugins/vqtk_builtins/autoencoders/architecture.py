"""Shape arithmetic shared by the taming encoder/decoder and their configs (no torch import)."""

from __future__ import annotations

from typing import Sequence

#: GroupNorm groups of every normalisation layer.
NUM_GROUPS = 32


def level_resolutions(resolution: int, num_levels: int) -> list[int]:
    """Side length at each level: ``resolution / 2**i`` for ``i < num_levels``."""
    return [resolution // 2**i for i in range(num_levels)]


def check_architecture(
    *,
    ch: int,
    ch_mult: Sequence[int],
    attn_resolutions: Sequence[int],
    resolution: int,
    include_base: bool = True,
) -> None:
    """Raise ``ValueError`` when the layout cannot be built or would silently misbehave.

    Checks that ``ch_mult`` is non-empty and positive; that every width the
    network normalises (``ch * m`` for each multiplier, plus ``ch`` itself when
    ``include_base``, as in the encoder's first level) is divisible by the 32
    GroupNorm groups; that ``resolution`` is divisible by the downsampling
    factor; and that every attention resolution is one the network passes through.
    """
    if len(ch_mult) == 0:
        raise ValueError("ch_mult must not be empty")
    if any(m <= 0 for m in ch_mult):
        raise ValueError(f"ch_mult entries must be > 0, got {list(ch_mult)}")
    widths = ([ch] if include_base else []) + [ch * m for m in ch_mult]
    bad = sorted({w for w in widths if w % NUM_GROUPS})
    if bad:
        raise ValueError(
            f"every channel width ch * m (ch = {ch}, ch_mult = {list(ch_mult)}"
            f"{', and ch itself' if include_base else ''}) must be divisible by the "
            f"{NUM_GROUPS} GroupNorm groups, but {', '.join(map(str, bad))} "
            f"{'is' if len(bad) == 1 else 'are'} not"
        )
    factor = 2 ** (len(ch_mult) - 1)
    if resolution % factor:
        raise ValueError(
            f"resolution {resolution} is not divisible by the downsampling factor {factor} "
            f"(2 ** (len(ch_mult) - 1))"
        )
    levels = level_resolutions(resolution, len(ch_mult))
    missing = [r for r in attn_resolutions if r not in levels]
    if missing:
        raise ValueError(
            f"attn_resolutions {missing} never occur: with resolution {resolution} and "
            f"{len(ch_mult)} levels the network works at {levels}"
        )
