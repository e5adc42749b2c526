"""The architecture arguments shared by the taming encoder and decoder, and their shape arithmetic (no torch import).

Defaults are taming's ImageNet f16-16384 VQGAN (ch 128, ch_mult [1, 1, 2, 2, 4],
2 residual blocks, attention at 16x16, 256 latent channels, 256x256 images).
"""

from __future__ import annotations

from typing import Annotated, Any

from vqtk.config import each, fraction, non_empty, positive

#: GroupNorm groups of every normalisation layer.
NUM_GROUPS = 32


class TamingLayout:
    """The layout taming's encoder and decoder share (they mirror each other; taming's ``ddconfig``).

    Both components take these arguments (see
    :func:`~vqtk.registry.forwarding.forwards_arguments`), so each
    default, validator and doc is declared here once.

    Args:
        ch: base channel width; level i has ch * ch_mult[i] channels (all divisible by 32).
        ch_mult: width multiplier per level; the encoder has len(ch_mult) - 1 stride-2
            downsamplings, the decoder as many x2 upsamplings.
        num_res_blocks: residual blocks per level (the decoder uses num_res_blocks + 1, like taming).
        attn_resolutions: image sides (pixels) at which attention follows each residual block.
        z_channels: channels of the latents the encoder outputs and the decoder takes.
        resolution: image side the attention placement refers to (divisible by 2 ** (len(ch_mult) - 1)).
        dropout: dropout before each block's second convolution.
    """

    def __init__(
        self,
        *,
        ch: Annotated[int, positive] = 128,
        ch_mult: Annotated[tuple[int, ...], non_empty, each(positive)] = (1, 1, 2, 2, 4),
        num_res_blocks: Annotated[int, positive] = 2,
        attn_resolutions: Annotated[tuple[int, ...], each(positive)] = (16,),
        z_channels: Annotated[int, positive] = 256,
        resolution: Annotated[int, positive] = 256,
        dropout: Annotated[float, fraction] = 0.0,
    ):
        self.ch = ch
        self.ch_mult = tuple(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.attn_resolutions = tuple(attn_resolutions)
        self.z_channels = z_channels
        self.resolution = resolution
        self.dropout = dropout

    @property
    def factor(self) -> int:
        """The down- (encoder) or upsampling (decoder) factor ``2 ** (len(ch_mult) - 1)``."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def sides(self) -> list[int]:
        """Side length at each level (see :func:`level_resolutions`)."""
        return level_resolutions(self.resolution, len(self.ch_mult))


def level_resolutions(resolution: int, num_levels: int) -> list[int]:
    """Side length at each level: ``resolution / 2**i`` for ``i < num_levels``."""
    return [resolution // 2**i for i in range(num_levels)]


def check_architecture(layout: Any, *, include_base: bool = True) -> None:
    """Raise ``ValueError`` when the layout cannot be built or would silently misbehave.

    ``layout`` is anything with ``ch``, ``ch_mult``, ``attn_resolutions`` and
    ``resolution`` attributes: a :class:`TamingLayout`, or the recipe config of
    the encoder or decoder (registered as their cross-field ``check``, with
    ``functools.partial`` fixing ``include_base``).

    Checks that ``ch_mult`` is non-empty and positive; that every width the
    network normalises (``ch * m`` for each multiplier, plus ``ch`` itself when
    ``include_base``, as in the encoder's first level) is divisible by the 32
    GroupNorm groups; that ``resolution`` is divisible by the downsampling
    factor; and that every attention resolution is one the network passes through.
    """
    ch, ch_mult = layout.ch, layout.ch_mult
    attn_resolutions, resolution = layout.attn_resolutions, layout.resolution
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
