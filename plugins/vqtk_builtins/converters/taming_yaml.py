"""taming-transformers' YAML configs <-> :class:`TamingSpec` (PyYAML's safe loader reads; a small writer writes)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vqtk.errors import VqtkError
from vqtk_builtins.converters.taming_spec import (
    LOSS_TARGET,
    VQMODEL_TARGETS,
    DDConfig,
    DiscriminatorSpec,
    LossSpec,
    TamingSpec,
    transformer_error,
)

# -- reading taming YAML -------------------------------------------------------------------


def _yaml():
    try:
        import yaml
    except ImportError:
        raise VqtkError(
            "--config: reading taming's YAML configs needs PyYAML (pip install pyyaml); "
            "without --config the architecture is inferred from the weights"
        ) from None
    return yaml


def spec_from_yaml(path: str | Path) -> TamingSpec:
    """Read a taming config file (``configs/*.yaml`` or ``*-project.yaml``) with PyYAML's safe loader."""
    path = Path(path)
    yaml = _yaml()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise VqtkError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VqtkError(f"{path}: cannot read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise VqtkError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    return spec_from_config(data, str(path))


class _Reader:
    """Typed look-ups in nested config dicts, collecting every problem as ``path: message``."""

    def __init__(self, where: str):
        self.where = where
        self.problems: list[str] = []

    def get(self, table: Any, key: str, path: str, kind: type, default: Any = ...) -> Any:
        full = f"{path}.{key}"
        if not isinstance(table, dict) or key not in table:
            if default is ...:
                self.problems.append(f"{full}: missing")
            return None if default is ... else default
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is tuple:
            ok = isinstance(value, (list, tuple)) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value)
            if ok:
                return tuple(value)
            self.problems.append(f"{full}: expected a list of integers, got {value!r}")
            return None
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            self.problems.append(f"{full}: expected {kind.__name__}, got {value!r}")
            return None
        if kind is float and not math.isfinite(value):
            self.problems.append(f"{full}: expected a finite number, got {value!r}")
            return None
        return value

    def fail_if_any(self) -> None:
        if self.problems:
            raise VqtkError("\n".join(f"{self.where}: {p}" for p in self.problems))


def spec_from_config(data: Any, where: str) -> TamingSpec:
    """A :class:`TamingSpec` from a parsed taming config (the dict PyYAML returns)."""
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise VqtkError(f"{where}: not a taming config (no 'model' table)")
    model = data["model"]
    target = model.get("target")
    params = model.get("params")
    if not isinstance(params, dict):
        raise VqtkError(f"{where}: model.params: missing (not a taming model config)")
    if "transformer_config" in params or (isinstance(target, str) and target.endswith("Net2NetTransformer")):
        raise transformer_error(f"{where} configures a {target or 'Net2NetTransformer'}")
    if isinstance(target, str) and target not in VQMODEL_TARGETS:
        raise VqtkError(
            f"{where}: model.target {target!r} is not a VQGAN vqtk can rebuild "
            f"(supported: {', '.join(VQMODEL_TARGETS)})"
        )
    r = _Reader(where)
    dd = params.get("ddconfig")
    p = "model.params.ddconfig"
    if r.get(dd, "double_z", p, bool, False):
        r.problems.append(f"{p}.double_z: true is a KL autoencoder layout; a VQGAN has double_z: false")
    ddconfig = DDConfig(
        ch=r.get(dd, "ch", p, int),
        ch_mult=r.get(dd, "ch_mult", p, tuple),
        num_res_blocks=r.get(dd, "num_res_blocks", p, int),
        attn_resolutions=r.get(dd, "attn_resolutions", p, tuple, ()),
        z_channels=r.get(dd, "z_channels", p, int),
        resolution=r.get(dd, "resolution", p, int),
        in_channels=r.get(dd, "in_channels", p, int, 3),
        out_ch=r.get(dd, "out_ch", p, int, 3),
        dropout=r.get(dd, "dropout", p, float, 0.0),
    )
    embed_dim = r.get(params, "embed_dim", "model.params", int)
    n_embed = r.get(params, "n_embed", "model.params", int)
    lossconfig = params.get("lossconfig")
    disc = None
    loss = LossSpec()
    if isinstance(lossconfig, dict):
        lt = lossconfig.get("target")
        lp = lossconfig.get("params") or {}
        q = "model.params.lossconfig.params"
        if lt == LOSS_TARGET or lt is None:
            disc = DiscriminatorSpec(
                in_channels=r.get(lp, "disc_in_channels", q, int, 3),
                ndf=r.get(lp, "disc_ndf", q, int, 64),
                n_layers=r.get(lp, "disc_num_layers", q, int, 3),
                actnorm=r.get(lp, "use_actnorm", q, bool, False),
            )
            disc_loss = r.get(lp, "disc_loss", q, str, "hinge")
            if disc_loss not in ("hinge", "vanilla"):
                r.problems.append(f"{q}.disc_loss: expected 'hinge' or 'vanilla', got {disc_loss!r}")
            loss = LossSpec(
                disc_start=r.get(lp, "disc_start", q, int, 0),
                disc_weight=r.get(lp, "disc_weight", q, float, 1.0),
                disc_factor=r.get(lp, "disc_factor", q, float, 1.0),
                codebook_weight=r.get(lp, "codebook_weight", q, float, 1.0),
                pixelloss_weight=r.get(lp, "pixelloss_weight", q, float, 1.0),
                perceptual_weight=r.get(lp, "perceptual_weight", q, float, 1.0),
                disc_loss=disc_loss,
            )
    lr = r.get(model, "base_learning_rate", "model", float, None)
    data_params = data.get("data", {}).get("params") if isinstance(data.get("data"), dict) else None
    batch = r.get(data_params, "batch_size", "data.params", int, None) if isinstance(data_params, dict) else None
    r.fail_if_any()
    return TamingSpec(ddconfig=ddconfig, embed_dim=embed_dim, n_embed=n_embed, discriminator=disc, loss=loss,
                      base_learning_rate=lr, batch_size=batch, origin=f"read from {Path(where).name}")


# -- writing taming YAML -------------------------------------------------------------------


def spec_to_config(spec: TamingSpec) -> dict:
    """The taming config dict (``model:`` and, when known, ``data.params.batch_size``)."""
    dd = spec.ddconfig
    params: dict[str, Any] = {
        "embed_dim": spec.embed_dim,
        "n_embed": spec.n_embed,
        "ddconfig": {
            "double_z": False,
            "z_channels": dd.z_channels,
            "resolution": dd.resolution,
            "in_channels": dd.in_channels,
            "out_ch": dd.out_ch,
            "ch": dd.ch,
            "ch_mult": list(dd.ch_mult),
            "num_res_blocks": dd.num_res_blocks,
            "attn_resolutions": list(dd.attn_resolutions),
            "dropout": dd.dropout,
        },
    }
    if spec.discriminator is not None:
        d, loss = spec.discriminator, spec.loss
        params["lossconfig"] = {
            "target": LOSS_TARGET,
            "params": {
                "disc_conditional": False,
                "disc_in_channels": d.in_channels,
                "disc_ndf": d.ndf,
                "disc_num_layers": d.n_layers,
                "use_actnorm": d.actnorm,
                "disc_start": loss.disc_start,
                "disc_weight": loss.disc_weight,
                "disc_factor": loss.disc_factor,
                "codebook_weight": loss.codebook_weight,
                "pixelloss_weight": loss.pixelloss_weight,
                "perceptual_weight": loss.perceptual_weight,
                "disc_loss": loss.disc_loss,
            },
        }
    model: dict[str, Any] = {}
    if spec.base_learning_rate is not None:
        model["base_learning_rate"] = spec.base_learning_rate
    model["target"] = VQMODEL_TARGETS[0]
    model["params"] = params
    out: dict[str, Any] = {"model": model}
    if spec.batch_size is not None:
        out["data"] = {"params": {"batch_size": spec.batch_size}}
    return out


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        # YAML 1.1 (PyYAML) reads 1e-06 as a string: it needs a dot and a signed exponent
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exp = text.split("e")
            text = f"{mantissa}.0e{exp}"
        return text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return json.dumps(str(value))


def dump_yaml(data: dict, indent: int = 0) -> str:
    """Block-style YAML for nested dicts of scalars and flat lists (all a taming config needs)."""
    lines = []
    for key, value in data.items():
        pad = "  " * indent
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            lines.append(dump_yaml(value, indent + 1).rstrip("\n"))
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"


def spec_to_yaml(spec: TamingSpec) -> str:
    """A taming config file for the spec (loadable by taming's ``instantiate_from_config``)."""
    return dump_yaml(spec_to_config(spec))
