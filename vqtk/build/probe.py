"""Shape checks before any training: data against the tokenizer, one image through every part."""

from __future__ import annotations

from typing import Any, Optional

import torch

from vqtk.build.components import first_line, is_size_error, too_large
from vqtk.errors import PluginBug, VqtkError
from vqtk.interfaces import Discriminator, QuantizerOutput, logit_maps
from vqtk.model import VQGAN
from vqtk.recipe.schema import Recipe
from vqtk.registry import Registry, default_registry


def check_data_fits(model: VQGAN, resolution: int, channels: int) -> None:
    f = model.downsample_factor
    if resolution % f:
        raise VqtkError(
            f"data.resolution: {resolution} is not divisible by the encoder's downsampling factor {f}"
        )
    if channels != model.encoder.in_channels:
        raise VqtkError(
            f"data: gives {channels}-channel images but model.encoder takes {model.encoder.in_channels}"
        )


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def probe_shapes(model: VQGAN, discriminator: Optional[Discriminator], resolution: int,
                 origins: Optional[dict[str, str]] = None) -> dict[str, tuple]:
    """Run one image through every part and check each output against the contracts.

    A part that returns the wrong shape is named in a one-line
    :class:`VqtkError` (``model.decoder: returned shape ..., expected ...``); a
    part that raises is a bug in its plugin (:class:`PluginBug`, named from
    ``origins``: path -> ``plugin 'x' (pip distribution y)``), unless it ran out
    of memory (a size from the recipe).
    """
    origins = origins or {}
    channels = model.encoder.in_channels
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    with too_large("data.resolution", f" a {resolution}x{resolution} image"):
        x = torch.zeros(1, channels, resolution, resolution, device=device)
    was_training = model.training
    disc_training = discriminator.training if discriminator is not None else False
    model.eval()
    try:
        h, w = model.latent_grid(resolution, resolution)

        def _call(where: str, fn, *args):
            return call_part(where, origins.get(where.split(" ")[0], ""), fn, *args)

        z = _call("model.encoder", model.encoder, x)
        _expect("model.encoder", z, (1, model.encoder.out_channels, h, w))
        # before the call: a multi-scale quantizer codes one latent grid only, and says so here by name
        model.quantizer.layout.check_grid((h, w), "model.quantizer: ")
        q = _call("model.quantizer", model.quantizer, model.quant_conv(z))
        if not isinstance(q, QuantizerOutput):
            raise VqtkError(f"model.quantizer: returned a {type(q).__name__}, expected a QuantizerOutput")
        _expect("model.quantizer (quantized)", q.quantized, (1, model.quantizer.dim, h, w))
        layout = model.quantizer.layout
        _expect("model.quantizer (indices)", q.indices, layout.index_shape(1, (h, w)))
        if q.indices.is_floating_point() or q.indices.is_complex():
            raise VqtkError(f"model.quantizer (indices): dtype {q.indices.dtype}, expected an integer dtype")
        if not (torch.is_tensor(q.loss) and q.loss.dim() == 0):
            got = tuple(q.loss.shape) if torch.is_tensor(q.loss) else type(q.loss).__name__
            raise VqtkError(f"model.quantizer (loss): got {got}, expected a scalar tensor")
        looked_up = _call("model.quantizer (lookup)", model.quantizer.lookup, q.indices)
        _expect("model.quantizer (lookup)", looked_up, (1, model.quantizer.dim, h, w))
        y = _call("model.decoder", model.decode, q.quantized)
        _expect("model.decoder", y, tuple(x.shape))
        shapes = {"latent": tuple(z.shape), "indices": tuple(q.indices.shape), "image": tuple(y.shape)}
        if discriminator is not None:
            discriminator.eval()
            d_first = next(discriminator.parameters(), None)  # the trainer may not have moved it yet
            d_input = y if d_first is None else y.to(d_first.device)
            output = _call("model.discriminator", discriminator, d_input)
            try:
                maps = logit_maps(output)
            except TypeError as exc:
                raise VqtkError(f"model.discriminator: {exc}") from None
            for i, logits in enumerate(maps):
                if logits.dim() < 2 or logits.shape[0] != 1:
                    scale = f" (scale {i})" if len(maps) > 1 else ""
                    raise VqtkError(f"model.discriminator{scale}: returned shape {tuple(logits.shape)}, "
                                    "expected (batch, ...)")
            shapes["discriminator"] = [tuple(t.shape) for t in maps] if len(maps) > 1 else tuple(maps[0].shape)
    finally:
        model.train(was_training)
        if discriminator is not None:
            discriminator.train(disc_training)
    return shapes


def call_part(where: str, origin: str, fn, *args):
    """Call one part of the model; a failure is a :class:`PluginBug` naming the part and its plugin."""
    shapes = ", ".join(str(tuple(a.shape)) for a in args if torch.is_tensor(a))
    with too_large(where, f" on a {shapes} input"):
        try:
            return fn(*args)
        except VqtkError:
            raise
        except Exception as exc:  # noqa: BLE001 - plugin code may raise anything
            if is_size_error(exc):
                raise
            raise PluginBug(f"{where}: raised {type(exc).__name__} on a {shapes} input: {first_line(exc)}",
                            origin) from exc


def component_origins(recipe: Recipe, registry: Optional[Registry] = None) -> dict[str, str]:
    """``{"model.encoder": "plugin 'x' (pip distribution y)", ...}`` for the recipe's model parts."""
    registry = registry or default_registry()
    m = recipe.model
    refs = {"model.encoder": m.encoder, "model.quantizer": m.quantizer, "model.decoder": m.decoder,
            "model.discriminator": m.discriminator}
    return {path: registry.get(ref.kind, ref.type).origin for path, ref in refs.items() if ref is not None}


def _expect(where: str, got: Any, want: tuple) -> None:
    if not torch.is_tensor(got):
        raise VqtkError(f"{where}: returned a {type(got).__name__}, expected a tensor of shape {want}")
    if tuple(got.shape) != want:
        raise VqtkError(f"{where}: returned shape {tuple(got.shape)}, expected {want}")
