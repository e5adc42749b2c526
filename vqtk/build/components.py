"""Recipe tables to components: one built component, the tokenizer, its discriminator, losses and data.

Problems a component reports as bad input (:class:`VqtkError`) name the recipe
path; anything else raised while building is a bug in the plugin
(:class:`PluginBug`); an allocation a recipe size makes impossible is bad input.
"""

from __future__ import annotations

import contextlib
from typing import Any, Optional

import attrs
import torch

from vqtk.errors import PluginBug, RecipeError, VqtkError
from vqtk.interfaces import DataSource, Discriminator, Loss
from vqtk.model import VQGAN
from vqtk.recipe.schema import ComponentRef, Recipe
from vqtk.recipe.values import as_lists
from vqtk.registry import Registry, default_registry
from vqtk.registry.signature import is_provided


def build_component(ref: ComponentRef, path: str, registry: Optional[Registry] = None,
                    provided: Optional[dict[str, tuple[Any, str]]] = None) -> Any:
    """Build one component; problems the builder reports as bad input are named at ``path``.

    ``provided`` holds facts the assembler knows from other parts of the recipe
    (a prior's ``codebook_size`` and ``grid_size`` come from its tokenizer), as
    ``{argument: (value, where it comes from)}``: an argument the component
    declares as provided and the recipe left out is filled in; one the recipe
    set to another value is an error naming both places.

    A :class:`VqtkError` from the component is bad input (exit 2); any other
    exception is a bug in the plugin, re-raised as :class:`PluginBug` (exit 1,
    with its traceback) naming the plugin and its pip distribution.
    """
    registry = registry or default_registry()
    spec = registry.get(ref.kind, ref.type)
    config = fill_provided(ref, path, provided or {})
    try:
        with too_large(path, f" ({ref.kind} {ref.type!r})"):
            return spec.create(config)
    except VqtkError as exc:
        text = str(exc)
        cls = VqtkError if isinstance(exc, RecipeError) else type(exc)
        raise cls(text if text.startswith(path) else f"{path}: {text}") from None
    except Exception as exc:  # noqa: BLE001 - anything else raised by plugin code is a bug in it
        raise PluginBug(f"{path}: building {ref.kind} {ref.type!r} raised {type(exc).__name__}: "
                        f"{first_line(exc)}", spec.origin) from exc


def fill_provided(ref: ComponentRef, path: str, provided: dict[str, tuple[Any, str]]) -> Any:
    """``ref.config`` with the assembler's facts filled in (see :func:`build_component`)."""
    config = ref.config
    if not provided or not attrs.has(type(config)):
        return config
    fill: dict[str, Any] = {}
    for field in attrs.fields(type(config)):
        if field.name not in provided:
            continue
        fact, source = provided[field.name]
        value = getattr(config, field.name)
        if value is None and is_provided(field):
            fill[field.name] = fact
        elif value is not None and _as_tuple(value) != _as_tuple(fact):
            raise VqtkError(f"{path}.{field.name}: {_show(value)} does not match {source} ({_show(fact)}); "
                            "leave it out to take it from there")
    return attrs.evolve(config, **fill) if fill else config


def _as_tuple(value: Any) -> Any:
    """Lists and tuples, nested ones too, as tuples: a recipe's ``[[1, 1], [2, 2]]`` equals ``((1, 1), (2, 2))``."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _show(value: Any) -> str:
    return str(as_lists(value)) if isinstance(value, (list, tuple)) else repr(value)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (torch appends C++ stack frames to some)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def is_size_error(exc: BaseException) -> bool:
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
        if not is_size_error(exc):
            raise
        raise VqtkError(f"{where}: too large to allocate{context}: {first_line(exc)}") from None


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
    return VQGAN(encoder=encoder, quantizer=quantizer, decoder=decoder, quant_conv_kernel=m.quant_conv_kernel)


def build_discriminator(recipe: Recipe, registry: Optional[Registry] = None) -> Optional[Discriminator]:
    ref = recipe.model.discriminator
    return None if ref is None else build_component(ref, "model.discriminator", registry)


def build_losses(recipe: Recipe, registry: Optional[Registry] = None) -> list[LossEntry]:
    """The recipe's losses; adversarial ones last (they balance against the others)."""
    entries = [
        LossEntry(name, ref.weight, build_component(ref, f"loss.{name}", registry))
        for name, ref in recipe.loss.items()
    ]
    for entry in entries:
        if not any(type(entry.loss).terms()):
            spec = (registry or default_registry()).get("loss", recipe.loss[entry.name].type)
            raise PluginBug(f"loss.{entry.name}: {type(entry.loss).__name__} overrides neither "
                            "generator_loss nor discriminator_loss", spec.origin)
    return sorted(entries, key=lambda e: e.loss.adversarial)


def build_data(recipe: Recipe, registry: Optional[Registry] = None) -> DataSource:
    return build_component(recipe.data, "data", registry)
