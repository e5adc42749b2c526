"""The recipe matrix: quantizer, discriminator and prior variants as overrides of shipped recipes.

Each variant's settings come from the recipe that ships it (``recipes/variants/``),
with the sizes (latent channels, number of codes, resolution) of the preset
being run, so that the variants differ from the reference in one thing only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vqtk.recipe import apply_overrides, load_raw
from vqtk.recipe.loader import read_toml

from benchmarks.presets import COMMON_OVERRIDES, RECIPES, Preset

#: where each quantizer variant's ``[model.quantizer]`` table comes from
QUANTIZER_SOURCES = {
    "vq": "vqgan_f16.toml",
    "ema_vq": "variants/ema_vq.toml",
    "factorized": "small_f8.toml",
    "fsq": "variants/fsq.toml",
    "lfq": "variants/lfq.toml",
    "residual": "variants/residual.toml",
}
QUANTIZERS = tuple(QUANTIZER_SOURCES)

#: FSQ levels for a target number of codes (the FSQ paper's recommendations where it has them)
FSQ_LEVELS = {
    16: [4, 4],
    32: [8, 4],
    64: [8, 8],
    256: [8, 6, 5],
    1024: [8, 5, 5, 5],
    4096: [7, 5, 5, 5, 5],
    16384: [8, 8, 8, 6, 5],
    65536: [8, 8, 8, 5, 5, 5],
}

STYLEGAN_SOURCE = "variants/stylegan_disc.toml"
PRIOR_SOURCES = {"gpt": "quickstart.toml", "maskgit": "variants/maskgit_prior.toml"}


def toml_literal(value: Any) -> str:
    """A Python value as the TOML literal an override takes (``key=LITERAL``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {type(value).__name__}")


def table_overrides(prefix: str, table: dict) -> list[str]:
    """``prefix.key=value`` for every entry of a recipe table."""
    return [f"{prefix}.{k}={toml_literal(v)}" for k, v in table.items()]


def base_raw(preset: Preset) -> dict:
    """The preset's tokenizer recipe with its overrides, unvalidated."""
    return apply_overrides(load_raw(preset.recipe_path), [*COMMON_OVERRIDES, *preset.overrides])


def fsq_levels(codes: int) -> list[int]:
    if codes not in FSQ_LEVELS:
        raise ValueError(f"no FSQ levels for {codes} codes (known: {sorted(FSQ_LEVELS)})")
    return FSQ_LEVELS[codes]


def quantizer_table(variant: str, *, dim: int, codebook_size: int) -> dict:
    """The variant's ``[model.quantizer]`` table as its file writes it, resized to ``dim`` and ``codebook_size``."""
    table = dict(read_toml(RECIPES / QUANTIZER_SOURCES[variant])["model"]["quantizer"])
    table["dim"] = dim
    if variant == "fsq":
        table["levels"] = fsq_levels(codebook_size)
    elif "codebook_size" in table:
        table["codebook_size"] = codebook_size
    return table


def discriminator_overrides(variant: str, preset: Preset, resolution: int) -> list[str]:
    """Nothing for the recipe's own PatchGAN; StyleGAN's tables from its variant recipe otherwise."""
    if variant == "patchgan":
        return []
    if variant != "stylegan":
        raise ValueError(f"unknown discriminator variant {variant!r}")
    raw = read_toml(RECIPES / STYLEGAN_SOURCE)  # the file's own tables, not those it extends
    disc = dict(raw["model"]["discriminator"], resolution=resolution)
    gan = {k: v for k, v in raw.get("loss", {}).get("gan", {}).items() if k != "type"}
    return [*table_overrides("model.discriminator", disc), *table_overrides("loss.gan", gan),
            *preset.stylegan]


@dataclass(frozen=True)
class Stage1Config:
    """One stage-1 measurement: the reference with at most a few settings changed."""

    key: str
    quantizer: str = "vq"
    disc: str = "patchgan"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    @property
    def label(self) -> str:
        parts = [self.quantizer, self.disc, "compile" if self.compile else "eager", self.precision]
        if self.channels_last:
            parts.append("channels_last")
        return " · ".join(parts)


#: the reference (taming's setup: VQ, PatchGAN, eager, fp32) and one change at a time, then all speed-ups
STAGE1_CONFIGS = (
    Stage1Config("reference"),
    *(Stage1Config(q, quantizer=q) for q in QUANTIZERS if q != "vq"),
    Stage1Config("stylegan", disc="stylegan"),
    Stage1Config("bf16", precision="bf16"),
    Stage1Config("channels_last", channels_last=True),
    Stage1Config("compile", compile=True),
    Stage1Config("fast", precision="bf16", channels_last=True, compile=True),
)


def _keep(overrides: tuple[str, ...], replaced: list[str]) -> list[str]:
    """``overrides`` minus those setting a table that is replaced whole."""
    return [o for o in overrides if not any(o.startswith(prefix + ".") for prefix in replaced)]


def stage1_overrides(config: Stage1Config, preset: Preset, device: str) -> list[str]:
    """Overrides on ``preset.recipe`` that build ``config`` for ``device``."""
    raw = base_raw(preset)
    q = raw["model"]["quantizer"]
    resolution = raw["data"]["resolution"]
    replaced = ["model.quantizer"] + (["model.discriminator"] if config.disc != "patchgan" else [])
    out = [*COMMON_OVERRIDES, *_keep(preset.overrides, replaced)]
    out += table_overrides("model.quantizer", quantizer_table(config.quantizer, dim=q["dim"],
                                                              codebook_size=q["codebook_size"]))
    out += discriminator_overrides(config.disc, preset, resolution)
    out += [f"train.device={toml_literal(device)}", f"train.precision={toml_literal(config.precision)}"]
    if config.channels_last:
        out.append("train.channels_last=true")
    if config.compile:
        out.append("train.compile=true")
    if preset.batch is not None:
        out.append(f"train.batch_size={preset.batch}")
    return out


def quantizer_overrides(variant: str, preset: Preset, **changes: Any) -> list[str]:
    """Overrides building the quantizer-alone variant at the preset's quantizer sizes."""
    table = quantizer_table(variant, dim=preset.quantizer_dim, codebook_size=preset.quantizer_codes)
    table.update(changes)
    return [*COMMON_OVERRIDES, *_keep(preset.overrides, ["model.quantizer"]),
            *table_overrides("model.quantizer", table)]


def prior_overrides(variant: str, preset: Preset) -> list[str]:
    return [*COMMON_OVERRIDES, *preset.prior_overrides]
