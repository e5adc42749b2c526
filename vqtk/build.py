"""Turning a validated recipe into components, with shape checks before any training."""

from __future__ import annotations

import contextlib
from typing import Any, Optional

import attrs
import torch

from vqtk.errors import PluginBug, RecipeError, VqtkError
from vqtk.interfaces import DataSource, Discriminator, Loss, Prior, QuantizerOutput, logit_maps
from vqtk.model import VQGAN
from vqtk.recipe.schema import ComponentRef, Recipe
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
                        f"{_first_line(exc)}", spec.origin) from exc


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
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, (list, tuple)) else repr(value)


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
    for entry in entries:
        if not any(type(entry.loss).terms()):
            spec = (registry or default_registry()).get("loss", recipe.loss[entry.name].type)
            raise PluginBug(f"loss.{entry.name}: {type(entry.loss).__name__} overrides neither "
                            "generator_loss nor discriminator_loss", spec.origin)
    return sorted(entries, key=lambda e: e.loss.adversarial)


def prior_facts(recipe: Recipe, tokenizer: VQGAN, resolution: int) -> dict[str, tuple[Any, str]]:
    """What the tokenizer tells a prior: ``codebook_size``, ``num_codebooks``, ``grid_size``."""
    q = tokenizer.quantizer
    source = f"model.quantizer ({recipe.model.quantizer.type!r})"
    provided = {
        "codebook_size": (q.codebook_size, f"the tokenizer's {source} codebook_size"),
        "num_codebooks": (q.num_codebooks, f"the tokenizer's {source} num_codebooks"),
        "grid_size": (tokenizer.latent_grid(resolution, resolution),
                      f"the tokenizer's code grid for data.resolution {resolution}"),
    }
    return provided


def build_prior(recipe: Recipe, tokenizer: VQGAN, resolution: int, registry: Optional[Registry] = None) -> Prior:
    """``[prior]`` over ``tokenizer``'s codes of ``resolution``-pixel images.

    The tokenizer provides ``codebook_size``, ``num_codebooks`` and ``grid_size``
    (the recipe need not repeat them; if it does, they must agree).
    """
    if recipe.prior is None:
        raise VqtkError("prior: this recipe has no [prior] table")
    return build_component(recipe.prior, "prior", registry, prior_facts(recipe, tokenizer, resolution))


def provided_values(ref: ComponentRef, path: str, provided: dict[str, tuple[Any, str]]) -> dict[str, Any]:
    """The provided arguments as the component received them (for a self-contained stored recipe)."""
    config = fill_provided(ref, path, provided)
    return {f.name: _plain(getattr(config, f.name)) for f in attrs.fields(type(config))
            if is_provided(f) and getattr(config, f.name) is not None} if attrs.has(type(config)) else {}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


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
            if _is_size_error(exc):
                raise
            raise PluginBug(f"{where}: raised {type(exc).__name__} on a {shapes} input: {_first_line(exc)}",
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
