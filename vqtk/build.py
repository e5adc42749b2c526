"""Turning a validated recipe into components, with shape checks before any training."""

from __future__ import annotations

import contextlib
from typing import Any, Optional

import attrs
import torch

from vqtk.errors import RecipeError, VqtkError
from vqtk.interfaces import DataSource, Discriminator, Loss, QuantizerOutput
from vqtk.model import VQGAN
from vqtk.recipe.schema import ComponentRef, Recipe
from vqtk.registry import Registry, default_registry


def build_component(ref: ComponentRef, path: str, registry: Optional[Registry] = None) -> Any:
    """Build one component; config problems the builder finds are reported at ``path``."""
    registry = registry or default_registry()
    spec = registry.get(ref.kind, ref.type)
    try:
        with too_large(path, f" ({ref.kind} {ref.type!r})"):
            return spec.create(ref.config)
    except VqtkError as exc:
        text = str(exc)
        cls = VqtkError if isinstance(exc, RecipeError) else type(exc)
        raise cls(text if text.startswith(path) else f"{path}: {text}") from None
    except (ValueError, TypeError) as exc:
        raise VqtkError(f"{path} ({ref.kind} {ref.type!r}): {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (torch appends C++ stack frames to some)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _is_size_error(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, OverflowError)):
        return True
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "allocate" in text or "overflow" in text or "out of memory" in text
    )


@contextlib.contextmanager
def too_large(where: str, context: str = ""):
    """Turn "this does not fit in memory" failures (sizes from a recipe) into one-line errors.

    A recipe can ask for a 10**12-channel convolution or a 2**62-code codebook:
    torch then fails to allocate (or to compute the size), which is bad input,
    not a bug in vqtk.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a size failure
        if not _is_size_error(exc):
            raise
        raise VqtkError(f"{where}: too large to allocate{context}: {_first_line(exc)}") from None


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
    """Run one image through every part and check each output against the contracts.

    A part that fails on its input or returns the wrong shape is named in a
    one-line :class:`VqtkError` (``model.decoder: returned shape ..., expected ...``).
    """
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
        z = _call("model.encoder", model.encoder, x)
        _expect("model.encoder", z, (1, model.encoder.out_channels, h, w))
        q = _call("model.quantizer", model.quantizer, model.quant_conv(z))
        if not isinstance(q, QuantizerOutput):
            raise VqtkError(f"model.quantizer: returned a {type(q).__name__}, expected a QuantizerOutput")
        _expect("model.quantizer (quantized)", q.quantized, (1, model.quantizer.dim, h, w))
        want_idx = (1, h, w, *model.quantizer.index_shape_suffix)
        _expect("model.quantizer (indices)", q.indices, want_idx)
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
            logits = _call("model.discriminator", discriminator, d_input)
            if not torch.is_tensor(logits) or logits.dim() < 2 or logits.shape[0] != 1:
                got = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
                raise VqtkError(f"model.discriminator: returned shape {got}, expected (batch, ...)")
            shapes["discriminator"] = tuple(logits.shape)
    finally:
        model.train(was_training)
        if discriminator is not None:
            discriminator.train(disc_training)
    return shapes


def _call(where: str, fn, *args):
    """Call one part of the model; a failure becomes a one-line error naming the part."""
    shapes = ", ".join(str(tuple(a.shape)) for a in args if torch.is_tensor(a))
    with too_large(where, f" on a {shapes} input"):
        try:
            return fn(*args)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            if _is_size_error(exc):
                raise
            raise VqtkError(f"{where}: failed on a {shapes} input ({type(exc).__name__}: {_first_line(exc)})") from exc


def _expect(where: str, got: Any, want: tuple) -> None:
    if not torch.is_tensor(got):
        raise VqtkError(f"{where}: returned a {type(got).__name__}, expected a tensor of shape {want}")
    if tuple(got.shape) != want:
        raise VqtkError(f"{where}: returned shape {tuple(got.shape)}, expected {want}")
