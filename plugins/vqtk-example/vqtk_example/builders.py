"""Config and builder of the example plugin's component."""

import attrs

from vqtk.config import positive


@attrs.define(kw_only=True)
class CharbonnierConfig:
    """Charbonnier (smooth L1) pixel loss."""

    eps: float = attrs.field(default=1e-3, validator=positive)


def build_charbonnier(config: CharbonnierConfig):
    from vqtk_example.charbonnier import CharbonnierLoss

    return CharbonnierLoss(eps=config.eps)
