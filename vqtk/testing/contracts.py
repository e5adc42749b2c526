"""Per-kind contract checks: what every encoder, quantizer, decoder, discriminator, loss and prior must do.

Each check raises ``AssertionError`` with a message naming the broken promise,
so it reads well inside any test runner.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

from vqtk.build import build_component
from vqtk.interfaces import (
    SCALES,
    Decoder,
    Discriminator,
    Encoder,
    Loss,
    LossInputs,
    Prior,
    Quantizer,
    QuantizerOutput,
    StepAware,
    logit_maps,
)
from vqtk.io.checkpoint import load_checkpoint, save_checkpoint
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.schema import (
    ComponentRef,
    DataRef,
    DecoderRef,
    DiscriminatorRef,
    EncoderRef,
    LossRef,
    PriorRef,
    QuantizerRef,
)
from vqtk.registry import Registry

_REFS: dict[str, type[ComponentRef]] = {
    "encoder": EncoderRef, "quantizer": QuantizerRef, "decoder": DecoderRef,
    "discriminator": DiscriminatorRef, "loss": LossRef, "prior": PriorRef, "data": DataRef,
}


def structure_table(registry: Registry, kind: str, name: str, table: Optional[dict] = None) -> ComponentRef:
    """A recipe table (without ``type``) structured strictly, as ``vqtk run`` would; raises ``RecipeError``."""
    data = {"type": name, **(table or {})}
    return RecipeConverter(registry).structure(data, _REFS[kind])


def _finite_scalar(value: Any, what: str) -> None:
    assert torch.is_tensor(value) and value.dim() == 0, f"{what}: expected a scalar tensor, got {value!r}"
    assert torch.isfinite(value), f"{what}: not finite ({value.item()})"


def _grad_reaches(tensor: torch.Tensor, what: str) -> None:
    assert tensor.grad is not None, f"{what}: no gradient reached it"
    assert torch.isfinite(tensor.grad).all(), f"{what}: non-finite gradient"
    assert tensor.grad.abs().sum() > 0, f"{what}: gradient is all zeros"


def check_encoder(encoder: Encoder, *, resolution: int = 16, batch: int = 2) -> torch.Tensor:
    """Shape ``(B, out_channels, H/f, W/f)``, gradients to the images."""
    assert isinstance(encoder, Encoder), f"{type(encoder).__name__} is not a vqtk.interfaces.Encoder"
    f = encoder.downsample_factor
    x = torch.randn(batch, encoder.in_channels, resolution, resolution, requires_grad=True)
    z = encoder(x)
    want = (batch, encoder.out_channels, resolution // f, resolution // f)
    assert tuple(z.shape) == want, f"encoder: returned shape {tuple(z.shape)}, expected {want}"
    z.float().square().mean().backward()
    _grad_reaches(x, "encoder input")
    return z


def check_quantizer(quantizer: Quantizer, *, grid: Optional[tuple[int, int]] = None, batch: int = 2,
                    lookup_matches: bool = True, seed: int = 0) -> QuantizerOutput:
    """The :class:`QuantizerOutput` contract: shapes (indices in the quantizer's
    :attr:`~vqtk.interfaces.Quantizer.layout`), integer in-range indices, scalar loss,
    statistics, straight-through gradients to the latents, and ``lookup(indices)`` returning
    the quantized latents in eval mode (``lookup_matches``). ``grid`` defaults to 4x4, or to
    the last scale of a multi-scale layout."""
    assert isinstance(quantizer, Quantizer), f"{type(quantizer).__name__} is not a vqtk.interfaces.Quantizer"
    generator = torch.Generator().manual_seed(seed)
    layout = quantizer.layout
    h, w = grid or (layout.scales[-1] if layout.kind == SCALES else (4, 4))
    z = torch.randn(batch, quantizer.dim, h, w, generator=generator, requires_grad=True)
    quantizer.train()
    out = quantizer(z)
    assert isinstance(out, QuantizerOutput), f"quantizer: returned a {type(out).__name__}, not a QuantizerOutput"
    assert tuple(out.quantized.shape) == tuple(z.shape), \
        f"quantizer: quantized has shape {tuple(out.quantized.shape)}, expected {tuple(z.shape)}"
    want = layout.index_shape(batch, (h, w))
    assert tuple(out.indices.shape) == want, f"quantizer: indices have shape {tuple(out.indices.shape)}, expected {want}"
    assert not out.indices.is_floating_point(), f"quantizer: indices have dtype {out.indices.dtype}, expected integers"
    assert int(out.indices.min()) >= 0 and int(out.indices.max()) < quantizer.codebook_size, \
        f"quantizer: indices outside [0, {quantizer.codebook_size})"
    _finite_scalar(out.loss, "quantizer loss")
    for key in ("perplexity", "usage"):
        assert key in out.metrics, f"quantizer: metrics lack {key!r}"
    (out.quantized.float().square().mean() + out.loss).backward()
    _grad_reaches(z, "quantizer input (straight-through gradient)")
    quantizer.eval()
    with torch.no_grad():
        again = quantizer(z.detach())
        looked_up = quantizer.lookup(again.indices)
    assert tuple(looked_up.shape) == tuple(z.shape), \
        f"quantizer: lookup returned shape {tuple(looked_up.shape)}, expected {tuple(z.shape)}"
    if lookup_matches:
        torch.testing.assert_close(looked_up, again.quantized, rtol=1e-4, atol=1e-4,
                                   msg="quantizer: lookup(indices) differs from the quantized latents in eval mode")
    quantizer.train()
    return out


def check_decoder(decoder: Decoder, *, grid: tuple[int, int] = (4, 4), batch: int = 2) -> torch.Tensor:
    """Shape ``(B, out_channels, h*f, w*f)``; gradients reach the latents and ``last_layer``."""
    assert isinstance(decoder, Decoder), f"{type(decoder).__name__} is not a vqtk.interfaces.Decoder"
    f = decoder.upsample_factor
    z = torch.randn(batch, decoder.in_channels, *grid, requires_grad=True)
    y = decoder(z)
    want = (batch, decoder.out_channels, grid[0] * f, grid[1] * f)
    assert tuple(y.shape) == want, f"decoder: returned shape {tuple(y.shape)}, expected {want}"
    last = decoder.last_layer
    assert isinstance(last, torch.Tensor) and last.requires_grad, "decoder: last_layer must be a trainable weight"
    y.float().square().mean().backward()
    _grad_reaches(z, "decoder input")
    _grad_reaches(last, "decoder last_layer")
    return y


def check_discriminator(discriminator: Discriminator, *, resolution: int = 32, batch: int = 2) -> list[torch.Tensor]:
    """One logit map or a list of them, each with a leading batch dimension; gradients to the images."""
    assert isinstance(discriminator, Discriminator), \
        f"{type(discriminator).__name__} is not a vqtk.interfaces.Discriminator"
    x = torch.randn(batch, discriminator.in_channels, resolution, resolution, requires_grad=True)
    maps = logit_maps(discriminator(x))
    for i, logits in enumerate(maps):
        assert logits.dim() >= 2 and logits.shape[0] == batch, \
            f"discriminator: logit map {i} has shape {tuple(logits.shape)}, expected (batch, ...)"
    sum(m.float().mean() for m in maps).backward()
    _grad_reaches(x, "discriminator input")
    return maps


def check_loss(loss: Loss, *, discriminator: Optional[Discriminator] = None, resolution: int = 16,
               batch: int = 2, step: int = 10**6) -> dict[str, Any]:
    """Each term the loss defines is a finite scalar whose gradient reaches what it trains.

    The generator term must reach the reconstruction; the discriminator term the
    discriminator's parameters (give ``discriminator`` for losses that need one).
    ``step`` is far past any start step, so every term is active.
    """
    assert isinstance(loss, Loss), f"{type(loss).__name__} is not a vqtk.interfaces.Loss"
    if isinstance(loss, StepAware):
        loss.on_step(step, step + 1)
    has_g, has_d = type(loss).terms()
    assert has_g or has_d, f"{type(loss).__name__} overrides neither generator_loss nor discriminator_loss"
    real = torch.rand(batch, 3, resolution, resolution) * 2 - 1
    recon = (real + 0.1 * torch.randn_like(real)).requires_grad_(True)
    latents = torch.randn(batch, 4, 4, 4, requires_grad=True)
    q = QuantizerOutput(quantized=latents, indices=torch.zeros(batch, 4, 4, dtype=torch.long),
                        loss=latents.square().mean())
    terms: dict[str, Any] = {}
    if has_g:
        last = torch.nn.Parameter(torch.ones(3, 3, 1, 1))
        decoded = torch.nn.functional.conv2d(recon, last)
        nll = (decoded - real).abs().mean()
        inputs = LossInputs(real=real, reconstruction=decoded, quantizer=q, step=step,
                            discriminator=discriminator, last_layer=last, reconstruction_loss=nll)
        term = loss.generator_loss(inputs)
        if term is not None:
            _finite_scalar(term.value, "generator term")
            if term.value.requires_grad:
                term.value.backward()
                reached = [t.grad for t in (recon, latents) if t.grad is not None]
                assert reached and any(torch.isfinite(g).all() and g.abs().sum() > 0 for g in reached), \
                    "generator term: no gradient reached the reconstruction or the quantizer's output"
            terms["generator"] = term
    if has_d:
        assert discriminator is not None, "a loss with a discriminator term needs check_loss(..., discriminator=D)"
        discriminator.zero_grad(set_to_none=True)
        inputs = LossInputs(real=real, reconstruction=recon.detach(), quantizer=q, step=step,
                            discriminator=discriminator, phase="discriminator",
                            real_requires_grad=loss.needs_real_gradients)
        term = loss.discriminator_loss(inputs)
        if term is not None:
            _finite_scalar(term.value, "discriminator term")
            assert term.value.requires_grad, "discriminator term: does not depend on the discriminator"
            term.value.backward()
            grads = [p.grad for p in discriminator.parameters() if p.grad is not None]
            assert grads and any(g.abs().sum() > 0 for g in grads), \
                "discriminator term: no gradient reached the discriminator's parameters"
            terms["discriminator"] = term
    return terms


def check_prior(prior: Prior, *, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A finite training loss with gradients to every used parameter, and samples of the right shape
    (:attr:`~vqtk.interfaces.Prior.layout`'s index shape at the training grid) and range."""
    assert isinstance(prior, Prior), f"{type(prior).__name__} is not a vqtk.interfaces.Prior"
    generator = torch.Generator().manual_seed(seed)
    want = prior.layout.index_shape(batch, prior.grid_size)
    indices = torch.randint(0, prior.codebook_size, want, generator=generator)
    labels = torch.randint(0, prior.num_classes, (batch,), generator=generator) if prior.num_classes else None
    prior.train()
    out = prior.loss(indices, labels)
    _finite_scalar(out.loss, "prior loss")
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in prior.parameters()), \
        "prior: no gradient reached its parameters"
    prior.eval()
    with torch.no_grad():
        sample = prior.sample(batch, labels=labels, generator=torch.Generator().manual_seed(seed))
    assert tuple(sample.shape) == want, f"prior: sampled shape {tuple(sample.shape)}, expected {want}"
    assert int(sample.min()) >= 0 and int(sample.max()) < prior.codebook_size, "prior: sampled codes out of range"
    prior.train()
    return sample


def check_state_round_trip(module: torch.nn.Module, fresh: torch.nn.Module) -> None:
    """``module``'s state (weights, buffers, extra state) survives a real checkpoint into ``fresh``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp), 0, {"part": module}, {})
        state = load_checkpoint(path).state_dict("part")
    fresh.load_state_dict(state)
    mine, theirs = module.state_dict(), fresh.state_dict()
    assert mine.keys() == theirs.keys(), f"state round trip: keys differ ({sorted(mine.keys() ^ theirs.keys())})"
    for key, value in mine.items():
        if torch.is_tensor(value):
            assert torch.equal(value, theirs[key]), f"state round trip: {key} differs"
        else:
            assert value == theirs[key], f"state round trip: extra state {key} differs"


_CHECKS = {"encoder": check_encoder, "quantizer": check_quantizer, "decoder": check_decoder,
           "discriminator": check_discriminator, "prior": check_prior}


def check_component(registry: Registry, kind: str, name: str, table: Optional[dict] = None,
                    **check_options: Any) -> Any:
    """Structure ``table`` strictly, build the component as a run does, and check its kind's contract.

    ``check_options`` go to the kind's check (e.g. ``grid=(8, 8)`` for a
    quantizer, ``discriminator=D`` for a loss with a discriminator term). A
    state round trip through a real checkpoint into a second build runs for
    every ``nn.Module``. A :class:`StepAware` component is told step 0 first
    (a loss: a step far past any start step). Returns the component.
    """
    ref = structure_table(registry, kind, name, table)
    component = build_component(ref, kind, registry)
    if isinstance(component, StepAware) and kind != "loss":  # the trainer announces step 0 first
        component.on_step(0, 1)
    if kind == "loss":
        check_loss(component, **check_options)
    elif kind in _CHECKS:
        _CHECKS[kind](component, **check_options)
    if isinstance(component, torch.nn.Module):
        fresh = build_component(copy.deepcopy(ref), kind, registry)
        check_state_round_trip(component, fresh)
    return component
