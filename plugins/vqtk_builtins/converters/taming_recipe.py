"""A taming VQGAN as a vqtk recipe, and a vqtk recipe as a taming VQGAN (the parts that map)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from vqtk.errors import VqtkError
from vqtk.recipe import Recipe
from vqtk.recipe.converter import RecipeConverter
from vqtk.recipe.values import as_lists
from vqtk.registry import Registry, default_registry
from vqtk_builtins.converters.taming_spec import DDConfig, DiscriminatorSpec, LossSpec, TamingSpec

log = logging.getLogger("vqtk")


def recipe_dict(spec: TamingSpec, name: str) -> dict[str, Any]:
    """A complete vqtk recipe (raw dict) reproducing the taming model and, as far as it maps, its training."""
    dd = spec.ddconfig
    arch = {"ch": dd.ch, "ch_mult": list(dd.ch_mult), "num_res_blocks": dd.num_res_blocks,
            "attn_resolutions": list(dd.attn_resolutions), "z_channels": dd.z_channels,
            "resolution": dd.resolution, "dropout": dd.dropout}
    model: dict[str, Any] = {
        "encoder": {"type": "taming", **arch, "in_channels": dd.in_channels},
        "quantizer": {"type": "vq", "dim": spec.embed_dim, "codebook_size": spec.n_embed, "beta": spec.beta},
        "decoder": {"type": "taming", **arch, "out_channels": dd.out_ch},
    }
    loss: dict[str, Any] = {"pixel": {"type": "l1", "weight": spec.loss.pixelloss_weight}}
    if spec.loss.perceptual_weight > 0:
        loss["perceptual"] = {"type": "lpips", "weight": spec.loss.perceptual_weight, "net": "vgg"}
    loss["codebook"] = {"type": "quantizer", "weight": spec.loss.codebook_weight}
    if spec.discriminator is not None:
        d = spec.discriminator
        model["discriminator"] = {"type": "patchgan", "in_channels": d.in_channels, "ndf": d.ndf,
                                  "n_layers": d.n_layers, "norm": "actnorm" if d.actnorm else "batch"}
        loss["gan"] = {"type": "gan", "weight": spec.loss.disc_weight * spec.loss.disc_factor,
                       "objective": spec.loss.disc_loss, "start_step": spec.loss.disc_start, "adaptive": True}
    batch = spec.batch_size or 8
    # taming: lr = base_learning_rate * batch size (one GPU, no accumulation)
    lr = (spec.base_learning_rate or 4.5e-6) * batch
    optimizer = {"lr": lr, "betas": [0.5, 0.9]}
    return {
        "name": name,
        "model": model,
        "data": {"type": "sample_photos", "resolution": dd.resolution},
        "loss": loss,
        "train": {"steps": 100000, "batch_size": batch, "optimizer": optimizer, "disc_optimizer": dict(optimizer)},
    }


def recipe_header(spec: TamingSpec, source: Path, step: Optional[int]) -> str:
    """The comment block heading a converted recipe: where it came from and how it differs from taming."""
    at = f" (global_step {step})" if step is not None else ""
    return "\n".join([
        f"# Converted from the taming-transformers checkpoint {source.name}{at} by `vqtk convert taming`.",
        f"# Architecture {spec.origin}.",
        "# The quantizer is vqtk's `vq`: its forward pass is taming's VectorQuantizer (nearest code by",
        "# L2 distance), but its loss puts beta on the commitment term, where taming's legacy quantizer",
        "# put it on the codebook term, so fine-tuning from here differs slightly from taming's training.",
        "# [data] and [train] are starting points for fine-tuning: set data.type / data.path and train.steps.",
        "",
    ]) + "\n"


def validated_recipe(raw: dict, registry: Optional[Registry] = None) -> tuple[Recipe, dict]:
    """Validate a raw recipe dict; returns ``(Recipe, resolved dict with every default)``."""
    converter = RecipeConverter(registry or default_registry())
    recipe = converter.structure(raw, Recipe)
    return recipe, converter.unstructure(recipe)


def describe(spec: TamingSpec) -> str:
    """One line naming the architecture, e.g. for the CLI."""
    dd = spec.ddconfig
    parts = [f"ch {dd.ch}, ch_mult {list(dd.ch_mult)}, {dd.num_res_blocks} res blocks, "
             f"attention at {list(dd.attn_resolutions)} (of {dd.resolution}), z {dd.z_channels}, "
             f"{spec.n_embed} codes of {spec.embed_dim} dims"]
    if spec.discriminator is not None:
        d = spec.discriminator
        parts.append(f"patchgan discriminator ({d.n_layers} layers, ndf {d.ndf}, "
                     f"{'actnorm' if d.actnorm else 'batch norm'})")
    return "; ".join(parts)


def spec_from_recipe(recipe: Recipe, *, discriminator: bool = True) -> TamingSpec:
    """The taming description of a vqtk recipe; :class:`VqtkError` names every part that does not map."""
    m = recipe.model
    problems: list[str] = []
    for part in ("encoder", "decoder"):
        ref = getattr(m, part)
        if ref.type != "taming":
            problems.append(f"model.{part}: type {ref.type!r} has no taming counterpart (needs 'taming')")
    if not problems:
        enc, dec = m.encoder.config, m.decoder.config
        for field in ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "z_channels", "resolution", "dropout"):
            a, b = as_lists(getattr(enc, field)), as_lists(getattr(dec, field))
            if a != b:
                problems.append(f"model.decoder.{field}: {b!r} differs from model.encoder.{field} {a!r} "
                                "(taming's VQModel shares one ddconfig)")
    q = m.quantizer
    if q.type != "vq":
        problems.append(f"model.quantizer: type {q.type!r} has no taming counterpart "
                        "(needs 'vq', taming's VectorQuantizer)")
    else:
        if q.config.codebook_dim not in (None, q.config.dim):
            problems.append(f"model.quantizer.codebook_dim: {q.config.codebook_dim} (a factorised codebook) "
                            "has no taming counterpart; taming's codes have dim channels")
        if q.config.use_cosine_sim:
            problems.append("model.quantizer.use_cosine_sim: true has no taming counterpart "
                            "(taming picks codes by L2 distance)")
    disc_spec = None
    d = m.discriminator
    if d is not None and discriminator:
        if d.type != "patchgan":
            problems.append(f"model.discriminator: type {d.type!r} has no taming counterpart (needs 'patchgan'); "
                            "--no-discriminator exports without it")
        elif d.config.norm not in ("batch", "actnorm"):
            problems.append(f"model.discriminator.norm: {d.config.norm!r} has no taming counterpart "
                            "(batch or actnorm); --no-discriminator exports without it")
        else:
            disc_spec = DiscriminatorSpec(in_channels=d.config.in_channels, ndf=d.config.ndf,
                                          n_layers=d.config.n_layers, actnorm=d.config.norm == "actnorm")
    if problems:
        raise VqtkError("\n".join(["this tokenizer does not map to taming-transformers' VQModel:", *problems]))
    enc = m.encoder.config
    ddconfig = DDConfig(ch=enc.ch, ch_mult=tuple(enc.ch_mult), num_res_blocks=enc.num_res_blocks,
                        attn_resolutions=tuple(enc.attn_resolutions), z_channels=enc.z_channels,
                        resolution=enc.resolution, in_channels=enc.in_channels,
                        out_ch=m.decoder.config.out_channels, dropout=enc.dropout)
    return TamingSpec(ddconfig=ddconfig, embed_dim=q.config.dim, n_embed=q.config.codebook_size,
                      beta=q.config.beta, discriminator=disc_spec, loss=_loss_spec(recipe),
                      base_learning_rate=recipe.train.optimizer.lr / recipe.train.batch_size,
                      batch_size=recipe.train.batch_size, origin="exported")


def _loss_spec(recipe: Recipe) -> LossSpec:
    """taming's loss parameters from the recipe's losses (weights of absent terms are 0)."""
    by_type: dict[str, Any] = {}
    for ref in recipe.loss.values():
        by_type.setdefault(ref.type, ref)
    pixel, lpips, codebook, gan = (by_type.get(t) for t in ("l1", "lpips", "quantizer", "gan"))
    unmapped = sorted(set(by_type) - {"l1", "lpips", "quantizer", "gan"})
    if unmapped:
        log.warning("losses %s have no taming counterpart; the exported config leaves them out", unmapped)
    objective = gan.config.objective if gan is not None else "hinge"
    if objective not in ("hinge", "vanilla"):
        log.warning("gan objective %r has no taming counterpart; the exported config says hinge", objective)
        objective = "hinge"
    if gan is not None and (gan.config.disc_warmup_steps or gan.config.ramp_steps):
        log.warning("gan disc_warmup_steps / ramp_steps have no taming counterpart; the exported config "
                    "starts the discriminator and the generator's term together at disc_start")
    return LossSpec(
        disc_start=gan.config.start_step if gan is not None else 0,
        disc_weight=gan.weight if gan is not None else 0.0,
        codebook_weight=codebook.weight if codebook is not None else 0.0,
        pixelloss_weight=pixel.weight if pixel is not None else 0.0,
        perceptual_weight=lpips.weight if lpips is not None else 0.0,
        disc_loss=objective,
    )
