"""VAR VQVAE checkpoints to vqtk checkpoints, and back.

A VAR state dict is renamed into vqtk's names (:mod:`.var_state`); its encoder
and decoder architecture is inferred by the ``taming`` converter's machinery
(VAR's are taming's); the quantizer is ``msvq``, the convolutions around it
3x3 (``model.quant_conv_kernel``). What the weights cannot tell (the scales,
phi's blend ratio, cosine code search) is VAR's release unless told. Training
settings are those of ``recipes/var_tokenizer.toml`` (LlamaGen's, as VAR
released none).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import attrs
import torch

from vqtk.build import build_vqgan
from vqtk.errors import RecipeError, VqtkError
from vqtk.io.checkpoint import load_checkpoint, load_state_strict
from vqtk.io.files import write_atomic
from vqtk.model import VQGAN
from vqtk.pretrained import recipe_of
from vqtk.recipe import Recipe, dump_toml
from vqtk.registry import Registry
from vqtk_builtins.converters.converted_run import new_run_folder, write_converted_run
from vqtk_builtins.converters.llamagen_recipe import recipe_dict as llamagen_recipe_dict
from vqtk_builtins.converters.taming_infer import infer_ddconfig
from vqtk_builtins.converters.taming_recipe import validated_recipe
from vqtk_builtins.converters.taming_spec import TamingSpec
from vqtk_builtins.converters.var_state import VarState, read_var_checkpoint, var_to_vqtk, vqtk_to_var
from vqtk_builtins.quantizers.msvq import VAR_SCALES

log = logging.getLogger("vqtk")

#: VectorQuantizer2 defaults of the release: quant_resi, using_znorm, beta
VAR_QUANT_RESI, VAR_ZNORM, VAR_BETA = 0.5, False, 0.25


@attrs.define
class ConvertedVar:
    """A VAR checkpoint rebuilt as a vqtk model (weights loaded), with its recipe."""

    model: VQGAN
    recipe: Recipe
    recipe_text: str
    state: VarState
    summary: str


def parse_scales(text: Optional[str], num_scales: Optional[int], where: str) -> tuple[int, ...]:
    """``--scales "1,2,4"`` as a tuple; without it VAR's ten scales (refused when the file kept another count)."""
    if text is None:
        if num_scales not in (None, len(VAR_SCALES)):
            raise VqtkError(f"{where}: the checkpoint was trained with {num_scales} scales (quantize.ema_vocab_hit_SV), "
                            f"not VAR's {len(VAR_SCALES)}; give them with --scales, e.g. --scales 1,2,4,8")
        return VAR_SCALES
    try:
        scales = tuple(int(s) for s in text.replace(" ", "").split(",") if s)
    except ValueError:
        raise VqtkError(f"--scales: expected comma-separated sides such as 1,2,3,4, got {text!r}") from None
    if not scales:
        raise VqtkError("--scales: expected comma-separated sides such as 1,2,3,4, got nothing")
    if num_scales is not None and len(scales) != num_scales:
        raise VqtkError(f"--scales: {len(scales)} scales given, but the checkpoint was trained with {num_scales} "
                        "(quantize.ema_vocab_hit_SV)")
    return scales


def var_recipe(state: VarState, spec: TamingSpec, *, scales: Sequence[int], quant_resi: float, znorm: bool,
               kernel: int, name: str) -> dict:
    """A complete vqtk recipe (raw dict): VAR's architecture and var_tokenizer.toml's training."""
    raw = llamagen_recipe_dict(spec, name)  # taming encoder/decoder, PatchGAN, LlamaGen's losses and training
    raw["model"]["quantizer"] = {
        "type": "msvq", "dim": spec.embed_dim, "codebook_size": spec.n_embed, "scales": list(scales),
        "beta": VAR_BETA, "quant_resi": quant_resi if state.num_phi else 0.0,
        "share_quant_resi": state.share_quant_resi, "num_phi": state.num_phi if state.share_quant_resi == 0 else 0,
        "use_znorm": znorm,
    }
    raw["model"]["quant_conv_kernel"] = kernel
    raw["train"].update(restart_dead_codes=True, min_usage=0.05)  # var_tokenizer.toml's collapse protection
    return raw


def rebuild_var(path: str | Path, *, scales: Optional[str] = None, resolution: Optional[int] = None,
                quant_resi: float = VAR_QUANT_RESI, znorm: bool = VAR_ZNORM,
                registry: Optional[Registry] = None) -> ConvertedVar:
    """Build the vqtk model for a VAR VQVAE file and load its weights."""
    path = Path(path)
    where = str(path)
    state = var_to_vqtk(read_var_checkpoint(path), where)
    sides = parse_scales(scales, state.num_scales, where)
    # the weights fix the downsampling factor; the scales fix the latent grid, hence the image side
    factor = 2 ** (len({k.split(".")[2] for k in state.model if k.startswith("encoder.down.")}) - 1)
    side = resolution or sides[-1] * factor
    if side != sides[-1] * factor:
        raise VqtkError(f"--resolution: {side} px images give a {side // factor}x{side // factor} latent grid, "
                        f"but the last scale is {sides[-1]} (the scales end at the latent grid)")
    ddconfig = infer_ddconfig(state.model, resolution=side, where=where)
    codebook = state.model.get("quantizer.embedding.weight")
    if codebook is None or codebook.dim() != 2:
        raise VqtkError(f"{where}: no quantize.embedding.weight (codes x channels): not a VAR VQVAE")
    kernel = int(state.model["quant_conv.weight"].shape[-1])
    spec = TamingSpec(ddconfig=ddconfig, embed_dim=int(codebook.shape[1]), n_embed=int(codebook.shape[0]),
                      origin=f"inferred from the weights (image side {side}: the last scale x {factor})")
    raw = var_recipe(state, spec, scales=sides, quant_resi=quant_resi, znorm=znorm, kernel=kernel,
                     name=f"var_{path.stem}")
    try:
        recipe, resolved = validated_recipe(raw, registry)
    except RecipeError as exc:
        raise VqtkError(f"{where}: the architecture does not make a valid vqtk recipe:\n{exc}") from None
    model = build_vqgan(recipe, registry)
    load_state_strict(model, state.model, where)
    summary = (f"VAR VQVAE: ch {ddconfig.ch}, ch_mult {list(ddconfig.ch_mult)}, {ddconfig.num_res_blocks} res blocks, "
               f"z {ddconfig.z_channels}, {spec.n_embed} codes of {spec.embed_dim} dims, scales {list(sides)}, "
               f"{state.num_phi} phi convs (share_quant_resi {state.share_quant_resi}), "
               f"{kernel}x{kernel} quant convs")
    text = _header(path, summary) + dump_toml(resolved)
    return ConvertedVar(model=model, recipe=recipe, recipe_text=text, state=state, summary=summary)


def _header(source: Path, summary: str) -> str:
    return "\n".join([
        f"# Converted from the VAR VQVAE checkpoint {source.name} by `vqtk convert var`.",
        f"# {summary}.",
        "# VAR's Encoder/Decoder are vqtk's `taming` components (its fused qkv attention conv split into",
        "# q, k, v); its VectorQuantizer2 is `msvq`. The weights do not tell the scales, quant_resi or",
        "# using_znorm: VAR's released values unless given to the converter. [loss] and [train] are",
        "# recipes/var_tokenizer.toml's (LlamaGen's tokenizer training; VAR released none); the PatchGAN",
        "# discriminator starts untrained. Set data.type / data.path to fine-tune.",
        "",
    ]) + "\n"


def convert_var(source: str | Path, out: str | Path, *, registry: Optional[Registry] = None,
                **options) -> tuple[Path, ConvertedVar]:
    """Convert a VAR VQVAE file into the vqtk run folder ``out`` (``checkpoints/`` and ``recipe.toml``)."""
    out = new_run_folder(out)
    converted = rebuild_var(source, registry=registry, **options)
    folder = write_converted_run(out, {"model": converted.model}, recipe_text=converted.recipe_text,
                                 source=f"VAR {Path(source).name}")
    return folder, converted


def export_problems(recipe: Recipe) -> list[str]:
    """Why this tokenizer is not a VAR VQVAE (empty when it is)."""
    m = recipe.model
    problems = []
    for part in ("encoder", "decoder"):
        ref = getattr(m, part)
        if ref.type != "taming":
            problems.append(f"model.{part}: type {ref.type!r} has no VAR counterpart (needs 'taming')")
            continue
        c = ref.config
        deepest = c.resolution // 2 ** (len(c.ch_mult) - 1)
        if list(c.attn_resolutions) not in ([deepest], []):
            problems.append(f"model.{part}.attn_resolutions: {list(c.attn_resolutions)}; VAR has attention at the "
                            f"deepest level only ([{deepest}] for resolution {c.resolution}) or none")
    if m.quantizer.type != "msvq":
        problems.append(f"model.quantizer: type {m.quantizer.type!r} has no VAR counterpart (needs 'msvq')")
    return problems


def export_var(checkpoint: str | Path, out: str | Path, *, registry: Optional[Registry] = None
               ) -> tuple[Path, list[str]]:
    """Write a vqtk msvq tokenizer as VAR's bare ``VQVAE`` state dict (plain tensors); returns the file and notes."""
    ckpt = load_checkpoint(checkpoint)
    recipe = recipe_of(ckpt, registry)
    problems = export_problems(recipe)
    if problems:
        raise VqtkError("\n".join(["this tokenizer does not map to VAR's VQVAE:", *problems]))
    q = recipe.model.quantizer.config
    sd = vqtk_to_var(ckpt.state_dict("model"), share_quant_resi=q.share_quant_resi, num_scales=len(q.scales))
    out = Path(out)
    write_atomic(out, lambda p: torch.save(sd, p))
    enc = recipe.model.encoder.config
    notes = [f"{len(sd)} tensors",
             f"build it with VQVAE(vocab_size={q.codebook_size}, z_channels={q.dim}, ch={enc.ch}, "
             f"quant_conv_ks={recipe.model.quant_conv_kernel}, quant_resi={q.quant_resi}, "
             f"share_quant_resi={q.share_quant_resi}, using_znorm={q.use_znorm}, "
             f"v_patch_nums={tuple(q.scales)}, beta={q.beta})"]
    if tuple(enc.ch_mult) != (1, 1, 2, 2, 4) or enc.num_res_blocks != 2:
        notes.append(f"ch_mult {list(enc.ch_mult)}, num_res_blocks {enc.num_res_blocks}: VQVAE hard-codes "
                     "(1, 1, 2, 2, 4) and 2; build Encoder/Decoder with these directly")
    if recipe.model.discriminator is not None:
        notes.append("the discriminator is not written (VAR's file holds the VQVAE only)")
    return out, notes
