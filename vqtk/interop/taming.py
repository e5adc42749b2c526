"""taming-transformers VQGAN checkpoints to vqtk checkpoints, and back.

Key mapping (taming ``VQModel`` state dict <-> vqtk checkpoint tensors):

========================================  ===============================================
taming                                    vqtk
========================================  ===============================================
``encoder.*`` ``decoder.*``               ``model.encoder.*`` ``model.decoder.*`` (same names)
``quant_conv.*`` ``post_quant_conv.*``    ``model.quant_conv.*`` ``model.post_quant_conv.*``
``quantize.embedding.weight`` (n, d)      ``model.quantizer.vq._codebook.embed`` (1, n, d)
``loss.discriminator.main.*``             ``discriminator.main.*`` (``patchgan``)
``loss.perceptual_loss.*``                not kept (LPIPS is frozen; vqtk builds its own)
========================================  ===============================================

The built-in ``taming`` encoder/decoder, ``vq`` quantizer and ``patchgan``
discriminator compute what taming's modules compute, so a converted model
encodes to the same indices and decodes to the same pixels. The quantizer's
*training* loss differs: vqtk's ``vq`` puts ``beta`` on the commitment term,
taming's legacy quantizer put it on the codebook term.

Pickled checkpoints are read with :mod:`vqtk.io.safe_unpickle`: nothing in
them is imported or run.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

import attrs
import torch

from vqtk.errors import VqtkError
from vqtk.io.safe_unpickle import find_state_dict, read_torch_file
from vqtk.interop.taming_infer import infer_discriminator, infer_spec
from vqtk.interop.taming_spec import (
    DEFAULT_RESOLUTION,
    DDConfig,
    DiscriminatorSpec,
    LossSpec,
    TamingSpec,
    spec_from_yaml,
    spec_to_yaml,
)

log = logging.getLogger("vqtk")

#: file suffixes ``vqtk.load`` treats as taming (pickled torch) checkpoints
TAMING_SUFFIXES = (".ckpt", ".pt", ".pth")
TAMING_CODEBOOK = "quantize.embedding.weight"
VQTK_CODEBOOK = "quantizer.vq._codebook.embed"
_SAME_NAME = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
_DISC = "loss.discriminator."
_PERCEPTUAL = "loss.perceptual_loss."
#: the codebook's bookkeeping buffers in vector-quantize-pytorch (unused by ``vq``'s forward pass)
_QUANTIZER_BOOKKEEPING = "quantizer.vq._codebook."

_TRANSFORMER_REASON = (
    "minGPT's attention projections and layer norms carry biases (transformer.blocks.N.attn.query.bias, "
    "ln1.bias) that vqtk's gpt prior (x-transformers: bias-free projections and norms) has no place for, "
    "and its conditioning prefix differs, so no weight mapping reproduces its predictions; convert the "
    "first-stage VQGAN checkpoint (first_stage_config.params.ckpt_path) to get its tokenizer"
)


def transformer_error(detail: str) -> VqtkError:
    """The error for taming ``Net2NetTransformer`` checkpoints and configs."""
    return VqtkError(f"taming Net2NetTransformer checkpoints do not map to vqtk's gpt prior: "
                     f"{_TRANSFORMER_REASON} ({detail})")


# -- reading -------------------------------------------------------------------------------


@attrs.define
class TamingCheckpoint:
    """A taming checkpoint's tensors and its training step (when it says)."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    global_step: Optional[int] = None
    foreign: list[str] = attrs.Factory(list)


def read_taming_checkpoint(path: str | Path) -> TamingCheckpoint:
    """Read a taming ``.ckpt`` (Lightning) or a plain state-dict ``.pt`` without unpickling code.

    Raises :class:`VqtkError` for unreadable files, Net2NetTransformer and
    GumbelVQ checkpoints.
    """
    path = Path(path)
    obj, foreign = read_torch_file(path)
    sd = find_state_dict(obj, path)
    step = obj.get("global_step") if isinstance(obj, dict) else None
    prefixes = ("transformer.", "first_stage_model.", "cond_stage_model.")
    if any(k.startswith(prefixes) for k in sd):
        n = sum(k.startswith("transformer.") for k in sd)
        raise transformer_error(f"{path.name} holds {n} transformer.* tensors")
    if any(k.startswith(("quantize.embed.", "quantize.proj.")) for k in sd):
        raise VqtkError(f"{path}: a taming GumbelQuantize model (quantize.proj, quantize.embed); "
                        "vqtk has no Gumbel-softmax quantizer to map it to")
    return TamingCheckpoint(path=path, state_dict=sd, global_step=step if isinstance(step, int) else None,
                            foreign=foreign)


# -- key mapping ---------------------------------------------------------------------------


def taming_to_vqtk_state(sd: dict[str, torch.Tensor]) -> tuple[dict, dict, list[str]]:
    """Split a taming state dict into vqtk's ``model`` and ``discriminator`` tensors.

    Returns ``(model, discriminator, ignored)``; ``ignored`` lists the keys
    that have no vqtk counterpart (LPIPS weights are dropped without listing).
    """
    model: dict[str, torch.Tensor] = {}
    disc: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in sd.items():
        if key.startswith(_SAME_NAME):
            model[key] = value
        elif key == TAMING_CODEBOOK:
            model[VQTK_CODEBOOK] = value.unsqueeze(0)
        elif key.startswith(_DISC):
            disc[key[len(_DISC):]] = value
        elif not key.startswith(_PERCEPTUAL):
            ignored.append(key)
    return model, disc, ignored


def vqtk_to_taming_state(model: dict[str, torch.Tensor], disc: Optional[dict[str, torch.Tensor]] = None
                         ) -> dict[str, torch.Tensor]:
    """The inverse of :func:`taming_to_vqtk_state` (the codebook's bookkeeping buffers are dropped)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.items():
        if key == VQTK_CODEBOOK:
            out[TAMING_CODEBOOK] = value[0]
        elif key.startswith(_SAME_NAME):
            out[key] = value
        elif not key.startswith(_QUANTIZER_BOOKKEEPING):
            raise VqtkError(f"{key}: no taming counterpart for this tensor")
    for key, value in (disc or {}).items():
        out[_DISC + key] = value
    return {k: v.detach().cpu().contiguous().clone() for k, v in out.items()}


def _load_mapped(module: torch.nn.Module, mapped: dict[str, torch.Tensor], where: str) -> None:
    """Load taming tensors; only the quantizer's bookkeeping buffers may keep their fresh values."""
    from vqtk.io.checkpoint import load_state_strict

    own = module.state_dict()
    fill = {k: v for k, v in own.items()
            if k not in mapped and k.startswith(_QUANTIZER_BOOKKEEPING) and k != VQTK_CODEBOOK}
    load_state_strict(module, {**fill, **mapped}, where)


# -- recipes -------------------------------------------------------------------------------


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


def _header(spec: TamingSpec, source: Path, step: Optional[int]) -> str:
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


def validated_recipe(raw: dict, registry=None) -> tuple[Any, dict]:
    """Validate a raw recipe dict; returns ``(Recipe, resolved dict with every default)``."""
    from vqtk.recipe import Recipe
    from vqtk.recipe.converter import RecipeConverter
    from vqtk.registry import default_registry

    converter = RecipeConverter(registry or default_registry())
    recipe = converter.structure(raw, Recipe)
    return recipe, converter.unstructure(recipe)


# -- import --------------------------------------------------------------------------------


@attrs.define
class ConvertedModel:
    """A taming checkpoint rebuilt as vqtk modules (weights loaded), with its recipe."""

    model: Any
    discriminator: Any
    recipe: Any
    resolved: dict
    spec: TamingSpec
    recipe_text: str


def _spec_for(ckpt: TamingCheckpoint, config: Optional[str | Path], resolution: Optional[int]) -> TamingSpec:
    where = str(ckpt.path)
    if config is None:
        return infer_spec(ckpt.state_dict, resolution=resolution or DEFAULT_RESOLUTION, where=where)
    if resolution is not None:
        raise VqtkError("--resolution: the config sets the resolution (model.params.ddconfig.resolution); "
                        "give one or the other")
    spec = spec_from_yaml(config)
    disc_in_weights = infer_discriminator(ckpt.state_dict, where=where)
    if disc_in_weights is None:
        spec = attrs.evolve(spec, discriminator=None)
    elif spec.discriminator is None:
        spec = attrs.evolve(spec, discriminator=disc_in_weights)
    return spec


def rebuild_taming(ckpt: TamingCheckpoint, *, config: Optional[str | Path] = None,
                   resolution: Optional[int] = None, name: Optional[str] = None, registry=None) -> ConvertedModel:
    """Build the vqtk model (and discriminator) for a taming checkpoint and load its weights."""
    from vqtk.build import build_discriminator, build_vqgan
    from vqtk.errors import RecipeError
    from vqtk.recipe import dump_toml

    spec = _spec_for(ckpt, config, resolution)
    model_sd, disc_sd, ignored = taming_to_vqtk_state(ckpt.state_dict)
    if "quantize.used" in ignored:
        log.warning("%s: the quantizer remaps its indices to a subset of codes (quantize.used); the "
                    "converted model decodes the same pixels but numbers codes by the full codebook",
                    ckpt.path.name)
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        log.warning("%s: ignored %d tensor(s) with no vqtk counterpart: %s", ckpt.path.name, len(ignored), shown)
    raw = recipe_dict(spec, name or f"taming_{ckpt.path.stem}")
    try:
        recipe, resolved = validated_recipe(raw, registry)
    except RecipeError as exc:
        raise VqtkError(f"{ckpt.path}: the architecture does not make a valid vqtk recipe:\n{exc}") from None
    model = build_vqgan(recipe, registry)
    _load_mapped(model, model_sd, str(ckpt.path))
    disc = build_discriminator(recipe, registry)
    if disc is not None:
        _load_mapped(disc, disc_sd, f"{ckpt.path} (discriminator)")
    text = _header(spec, ckpt.path, ckpt.global_step) + dump_toml(resolved)
    return ConvertedModel(model=model, discriminator=disc, recipe=recipe, resolved=resolved, spec=spec,
                          recipe_text=text)


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


def convert_taming(source: str | Path, out: str | Path, *, config: Optional[str | Path] = None,
                   resolution: Optional[int] = None, registry=None) -> tuple[Path, ConvertedModel]:
    """Convert a taming VQModel checkpoint into the vqtk run folder ``out``.

    Writes ``out/checkpoints/step_000000/model.safetensors`` (+ ``checkpoints/last``)
    and ``out/recipe.toml``; ``vqtk.load(out)`` then returns the model. Returns
    the step folder and the rebuilt model.
    """
    from vqtk import __version__
    from vqtk.io.checkpoint import save_checkpoint

    out = Path(out)
    if (out / "checkpoints").exists() or (out / "recipe.toml").exists():
        raise VqtkError(f"--out: {out} already holds a run or a converted checkpoint; choose a new folder")
    ckpt = read_taming_checkpoint(source)
    converted = rebuild_taming(ckpt, config=config, resolution=resolution, registry=registry)
    modules = {"model": converted.model}
    if converted.discriminator is not None:
        modules["discriminator"] = converted.discriminator
    metadata = {
        "recipe": converted.recipe_text,
        "versions": json.dumps({"vqtk": __version__, "torch": torch.__version__}),
        "stage": "1",
        "source": f"taming-transformers {ckpt.path.name}"
                  + (f" (global_step {ckpt.global_step})" if ckpt.global_step is not None else ""),
    }
    out.mkdir(parents=True, exist_ok=True)
    folder = save_checkpoint(out / "checkpoints", 0, modules, metadata)
    (out / "recipe.toml").write_text(converted.recipe_text)
    return folder, converted


def load_taming_model(path: str | Path, registry=None) -> tuple[Any, Any]:
    """``(VQGAN, Recipe)`` straight from a taming checkpoint (architecture inferred), without writing files."""
    converted = rebuild_taming(read_taming_checkpoint(path), registry=registry)
    return converted.model, converted.recipe


# -- export --------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def spec_from_recipe(recipe: Any, *, discriminator: bool = True) -> TamingSpec:
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
            a, b = _plain(getattr(enc, field)), _plain(getattr(dec, field))
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


def _loss_spec(recipe: Any) -> LossSpec:
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
    return LossSpec(
        disc_start=gan.config.start_step if gan is not None else 0,
        disc_weight=gan.weight if gan is not None else 0.0,
        codebook_weight=codebook.weight if codebook is not None else 0.0,
        pixelloss_weight=pixel.weight if pixel is not None else 0.0,
        perceptual_weight=lpips.weight if lpips is not None else 0.0,
        disc_loss=objective,
    )


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    write(tmp)
    os.replace(tmp, path)


def export_taming(checkpoint: str | Path, out: str | Path, *, config_out: Optional[str | Path] = None,
                  discriminator: bool = True, registry=None) -> tuple[Path, TamingSpec, int]:
    """Write a vqtk tokenizer checkpoint as a taming ``{"state_dict": ...}`` file (plain tensors).

    With ``config_out``, also a taming YAML config for it. Returns the file,
    the taming description and the number of tensors written.
    """
    from vqtk.pretrained import recipe_of
    from vqtk.io.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    if ckpt.metadata.get("stage", "1") != "1":
        log.info("%s: a stage-2 checkpoint; exporting its tokenizer only", ckpt.path)
    recipe = recipe_of(ckpt, registry)
    spec = spec_from_recipe(recipe, discriminator=discriminator)
    disc = ckpt.state_dict("discriminator") if spec.discriminator is not None else None
    sd = vqtk_to_taming_state(ckpt.state_dict("model"), disc)
    if TAMING_CODEBOOK not in sd:
        raise VqtkError(f"{ckpt.path}: no {VQTK_CODEBOOK} tensor; not a vq tokenizer checkpoint")
    out = Path(out)
    _write_atomic(out, lambda p: torch.save({"state_dict": sd}, p))
    if config_out is not None:
        text = spec_to_yaml(spec)
        _write_atomic(Path(config_out), lambda p: p.write_text(text))
    return out, spec, len(sd)
