"""A LlamaGen VQ tokenizer as a vqtk recipe, and the checks that a vqtk recipe maps back to LlamaGen.

The architecture comes from the weights (via the ``taming`` converter's
inference: LlamaGen's encoder/decoder are taming's, attention at the deepest
level only); the training from LlamaGen's ``tokenizer/tokenizer_image/vq_train.py``
defaults, which GETTING_STARTED.md trains VQ-16 with. ``recipes/llamagen_vq16.toml``
writes the same values out with their sources (a test keeps the two in step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from vqtk.recipe import Recipe
from vqtk.recipe.values import as_lists
from vqtk_builtins.converters.taming_recipe import recipe_dict as taming_recipe_dict
from vqtk_builtins.converters.taming_spec import DiscriminatorSpec, TamingSpec

#: VQLoss's discriminator: discriminator_patchgan.NLayerDiscriminator(input_nc=3, n_layers=3, ndf=64)
DISCRIMINATOR = DiscriminatorSpec(in_channels=3, ndf=64, n_layers=3, actnorm=False)
#: vq_train.py's loss arguments (--reconstruction-loss l2, --perceptual-weight 1.0, --disc-weight 0.5,
#: --disc-start 20000 counted from step 1, hinge; VQLoss's disc_adaptive_weight=False)
LOSSES: dict[str, Any] = {
    "pixel": {"type": "l2", "weight": 1.0},
    "perceptual": {"type": "lpips", "weight": 1.0, "net": "vgg"},
    "codebook": {"type": "quantizer", "weight": 1.0},
    "gan": {"type": "gan", "weight": 0.5, "objective": "hinge", "adaptive": False, "start_step": 19999},
}
#: torch.optim.Adam(lr=1e-4, betas=(0.9, 0.95)), --max-grad-norm 1.0; the discriminator's loss is
#: scaled by disc_weight 0.5 in LlamaGen but not in vqtk, hence clipping at 2.0 there
_ADAM = {"lr": 1e-4, "betas": [0.9, 0.95], "weight_decay": 0.0, "grad_clip": 1.0}
TRAIN: dict[str, Any] = {
    "steps": 400360, "batch_size": 128, "seed": 0, "precision": "bf16", "log_every": 100,
    "checkpoint_every": 5000, "image_every": 5000, "eval_batches": 4,
    "optimizer": _ADAM, "disc_optimizer": {**_ADAM, "grad_clip": 2.0},
}
#: random_crop_arr: 0.8 to 1.0 of the shorter side, and horizontal flips
DATA_AUGMENTATION = {"scale": [0.8, 1.0], "hflip": True}
#: what LlamaGen's VQModel(ModelArgs(...)) builds its Encoder/Decoder with (not in ModelArgs)
LLAMAGEN_CH, LLAMAGEN_NUM_RES_BLOCKS = 128, 2


def recipe_dict(spec: TamingSpec, name: str) -> dict[str, Any]:
    """A complete vqtk recipe (raw dict): LlamaGen's architecture from ``spec`` and its training."""
    spec_with_disc = TamingSpec(ddconfig=spec.ddconfig, embed_dim=spec.embed_dim, n_embed=spec.n_embed,
                                discriminator=spec.discriminator or DISCRIMINATOR)
    raw = taming_recipe_dict(spec_with_disc, name)  # encoder, decoder, discriminator, data
    raw["model"]["quantizer"] = {
        "type": "factorized", "dim": spec.embed_dim, "codebook_dim": spec.embed_dim,
        "codebook_size": spec.n_embed, "use_cosine_sim": True, "beta": 0.25, "entropy_loss_weight": 0.0,
        "threshold_ema_dead_code": 0.0,
    }
    raw["data"].update(DATA_AUGMENTATION)
    raw["loss"] = {k: dict(v) for k, v in LOSSES.items()}
    raw["train"] = {**TRAIN, "optimizer": dict(TRAIN["optimizer"]), "disc_optimizer": dict(TRAIN["disc_optimizer"])}
    return raw


def recipe_header(spec: TamingSpec, source: Path, weights: Optional[str], steps: Optional[int]) -> str:
    """The comment block heading a converted recipe."""
    entry = f"checkpoint[{weights!r}]" if weights else "its state dict"
    at = f", steps {steps}" if steps is not None else ""
    disc = ("with its discriminator" if spec.discriminator is not None
            else "without a discriminator: the PatchGAN below starts untrained")
    return "\n".join([
        f"# Converted from the LlamaGen checkpoint {source.name} ({entry}{at}) by `vqtk convert llamagen`,",
        f"# {disc}.",
        f"# Architecture {spec.origin}.",
        "# LlamaGen's Encoder/Decoder are vqtk's `taming` components with attention at the deepest level",
        "# only; its VectorQuantizer is the `factorized` quantizer (l2-normalised codes, the same loss, no",
        "# dead-code replacement). [loss] and [train] are LlamaGen's vq_train.py defaults (see",
        "# recipes/llamagen_vq16.toml for the source of each); set data.type / data.path to fine-tune.",
        "",
    ]) + "\n"


def export_problems(recipe: Recipe, *, discriminator: bool) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` of writing this tokenizer as a LlamaGen checkpoint.

    A problem (a part with no LlamaGen counterpart) refuses the export; a note
    says how to build LlamaGen's modules for a model its ``ModelArgs`` cannot describe.
    """
    m = recipe.model
    problems: list[str] = []
    notes: list[str] = []
    for part in ("encoder", "decoder"):
        ref = getattr(m, part)
        if ref.type != "taming":
            problems.append(f"model.{part}: type {ref.type!r} has no LlamaGen counterpart (needs 'taming')")
            continue
        c = ref.config
        deepest = c.resolution // 2 ** (len(c.ch_mult) - 1)
        if as_lists(c.attn_resolutions) != [deepest]:
            problems.append(f"model.{part}.attn_resolutions: {as_lists(c.attn_resolutions)}; LlamaGen has attention "
                            f"at the deepest level only ([{deepest}] for resolution {c.resolution})")
        if (c.ch, c.num_res_blocks) != (LLAMAGEN_CH, LLAMAGEN_NUM_RES_BLOCKS):
            notes.append(f"{part}: ch {c.ch}, num_res_blocks {c.num_res_blocks} (VQModel builds 128 and 2; "
                         f"build {part.capitalize()}(ch={c.ch}, num_res_blocks={c.num_res_blocks}, ...) directly)")
    q = m.quantizer
    if q.type not in ("factorized", "vq"):
        problems.append(f"model.quantizer: type {q.type!r} has no LlamaGen counterpart (needs 'factorized' "
                        "or 'vq', LlamaGen's VectorQuantizer)")
    else:
        if q.config.codebook_dim not in (None, q.config.dim):
            problems.append(f"model.quantizer.codebook_dim: {q.config.codebook_dim} differs from dim "
                            f"{q.config.dim}; LlamaGen's quant_conv maps straight to the codebook's dimension")
        if not q.config.use_cosine_sim:
            notes.append("quantizer: codes are not l2-normalised; load it with ModelArgs(codebook_l2_norm=False)")
    d = m.discriminator
    if d is not None and discriminator:
        if d.type != "patchgan" or d.config.norm != "batch":
            problems.append(f"model.discriminator: {d.type!r} (norm {getattr(d.config, 'norm', '?')!r}) has no "
                            "LlamaGen counterpart (needs 'patchgan' with norm 'batch'); --no-discriminator "
                            "exports without it")
        elif (d.config.ndf, d.config.n_layers) != (DISCRIMINATOR.ndf, DISCRIMINATOR.n_layers):
            notes.append(f"discriminator: ndf {d.config.ndf}, {d.config.n_layers} layers (VQLoss(disc_dim="
                         f"{d.config.ndf}, disc_num_layers={d.config.n_layers}))")
    return problems, notes


def describe(spec: TamingSpec) -> str:
    """One line naming a LlamaGen architecture, e.g. for the CLI."""
    dd = spec.ddconfig
    text = (f"ch {dd.ch}, ch_mult {list(dd.ch_mult)}, {dd.num_res_blocks} res blocks, z {dd.z_channels}, "
            f"{spec.n_embed} l2-normalised codes of {spec.embed_dim} dims")
    if spec.discriminator is not None:
        text += f"; patchgan discriminator ({spec.discriminator.n_layers} layers, ndf {spec.discriminator.ndf})"
    return text
