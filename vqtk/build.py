"""Turning a validated recipe into components, with shape checks before any training."""

from __future__ import annotations

from typing import Any, Optional

import attrs
import torch

from vqtk.errors import RecipeError, VqtkError
from vqtk.interfaces import DataSource, Discriminator, Loss
from vqtk.model import VQGAN
from vqtk.recipe.schema import ComponentRef, Recipe
from vqtk.registry import Registry, default_registry


def build_component(ref: ComponentRef, path: str, registry: Optional[Registry] = None) -> Any:
    """Build one component; config problems the builder finds are reported at ``path``."""
    registry = registry or default_registry()
    spec = registry.get(ref.kind, ref.type)
    try:
        return spec.create(ref.config)
    except VqtkError as exc:
        text = str(exc)
        cls = VqtkError if isinstance(exc, RecipeError) else type(exc)
        raise cls(text if text.startswith(path) else f"{path}: {text}") from None
    except (ValueError, TypeError) as exc:
        raise VqtkError(f"{path} ({ref.kind} {ref.type!r}): {exc}") from exc


@attrs.define(eq=False)
class LossEntry:
    name: str
    weight: float
    loss: Loss


def build_vqgan(recipe: Recipe, registry: Optional[Registry] = None) -> VQGAN:
    """Encoder, quantizer and decoder from ``[model]``, checked to fit together."""
    m = recipe.model
    encoder = build_component(m.encoder, "model.encoder", registry)
    quantizer = build_component(m.quantizer, "model.quantizer", registry)
    decoder = build_component(m.decoder, "model.decoder", registry)
    if encoder.downsample_factor != decoder.upsample_factor:
        raise VqtkError(
            f"model.decoder: upsamples by {decoder.upsample_factor} but model.encoder "
            f"downsamples by {encoder.downsample_factor}"
        )
    if encoder.in_channels != decoder.out_channels:
        raise VqtkError(
            f"model.decoder: outputs {decoder.out_channels} channels but model.encoder "
            f"takes {encoder.in_channels}"
        )
    return VQGAN(encoder=encoder, quantizer=quantizer, decoder=decoder)


def build_discriminator(recipe: Recipe, registry: Optional[Registry] = None) -> Optional[Discriminator]:
    ref = recipe.model.discriminator
    return None if ref is None else build_component(ref, "model.discriminator", registry)


def build_losses(recipe: Recipe, registry: Optional[Registry] = None) -> list[LossEntry]:
    """The recipe's losses; adversarial ones last (they balance against the others)."""
    entries = [
        LossEntry(name, ref.weight, build_component(ref, f"loss.{name}", registry))
        for name, ref in recipe.loss.items()
    ]
    return sorted(entries, key=lambda e: e.loss.adversarial)


def build_data(recipe: Recipe, registry: Optional[Registry] = None) -> DataSource:
    return build_component(recipe.data, "data", registry)


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
def probe_shapes(model: VQGAN, discriminator: Optional[Discriminator], resolution: int) -> dict[str, tuple]:
    """Run one image through every part and check each output against the contracts."""
    channels = model.encoder.in_channels
    x = torch.zeros(1, channels, resolution, resolution)
    was_training = model.training
    model.eval()
    try:
        z = model.encoder(x)
        h, w = model.latent_grid(resolution, resolution)
        _expect("model.encoder", tuple(z.shape), (1, model.encoder.out_channels, h, w))
        q = model.quantizer(model.quant_conv(z))
        _expect("model.quantizer (quantized)", tuple(q.quantized.shape), (1, model.quantizer.dim, h, w))
        want_idx = (1, h, w, *model.quantizer.index_shape_suffix)
        _expect("model.quantizer (indices)", tuple(q.indices.shape), want_idx)
        y = model.decode(q.quantized)
        _expect("model.decoder", tuple(y.shape), tuple(x.shape))
        shapes = {"latent": tuple(z.shape), "indices": tuple(q.indices.shape), "image": tuple(y.shape)}
        if discriminator is not None:
            discriminator.eval()
            logits = discriminator(y)
            if logits.dim() < 2 or logits.shape[0] != 1:
                raise VqtkError(
                    f"model.discriminator: returned shape {tuple(logits.shape)}, expected (batch, ...)"
                )
            shapes["discriminator"] = tuple(logits.shape)
    finally:
        model.train(was_training)
    return shapes


def _expect(where: str, got: tuple, want: tuple) -> None:
    if got != want:
        raise VqtkError(f"{where}: returned shape {got}, expected {want}")
