"""The JSON report of ``vqtk eval`` on a prior (schema ``vqtk-generation-report-1``).

Same style and place as the tokenizer report (:mod:`~vqtk.evaluation.report`):
``checkpoint``, ``model``, ``sampling`` (what was sampled, how), ``metrics``
(entries with ``available``; an unavailable one is exactly ``{"available": false,
"reason": ...}``), ``timing`` and ``files``. gFID's entry has every field of
rFID's (implementation, protocol, weights, reference, warnings), made by the
same function.
"""

from __future__ import annotations

import datetime
from typing import Any

import torch

from vqtk.evaluation import fid as fid_mod
from vqtk.evaluation.metrics import Unavailable
from vqtk.evaluation.prior_run import PriorCheckpoint
from vqtk.evaluation.report import rfid_entry
from vqtk.evaluation.sample_store import SampleStore
from vqtk.interfaces import SamplingOptions
from vqtk.version import __version__

FORMAT = "vqtk-generation-report-1"
#: samples in the report's grid picture
GRID_SAMPLES = 64

PRECISION_RECALL = (
    "improved precision/recall (Kynkaenniemi et al. 2019; torch-fidelity's prc) compares the samples' "
    "features with the real images' own features, one by one; a --ref-stats file holds only their mean and "
    "covariance (and torch-fidelity computes it with VGG-16 features, weights other than the FID Inception's)"
)


def _entry(value: dict[str, Any] | Unavailable, make) -> dict[str, Any]:
    return value.as_dict() if isinstance(value, Unavailable) else make(value)


def gfid_entry(gfid: dict[str, Any], *, resolution: int) -> dict[str, Any]:
    """rFID's entry (:func:`~vqtk.evaluation.report.rfid_entry`) for samples instead of reconstructions."""
    entry = rfid_entry(gfid, resolution=resolution)
    entry["computed"] = ("Fréchet distance between the Inception pool3 statistics (mean, unbiased covariance, "
                         "float64) of the samples and of the reference")
    return entry


def inception_score_entry(score: dict[str, Any], *, images: int) -> dict[str, Any]:
    inception = score["inception"]
    return {
        "available": True, "value": score["value"], "std": score["std"], "unit": "1", "images": images,
        "splits": score["splits"], "computed": fid_mod.IS_TEXT, "implementation": inception["implementation"],
        "protocol": inception["protocol"], "weights": {"path": inception["weights"],
                                                       "sha256": inception["weights_sha256"]},
    }


def _rate(images: int, seconds: float) -> float:
    return images / max(seconds, 1e-9)


def build_generation_report(
    pc: PriorCheckpoint,
    *,
    info: dict[str, Any],
    store: SampleStore,
    num_samples: int,
    options: SamplingOptions,
    sources: dict[str, str],
    labels: torch.Tensor,
    metrics: dict[str, Any],
    resumed_samples: int,
    batches_now: int,
    files: dict[str, str],
) -> dict[str, Any]:
    """The whole report (see the module doc); ``metrics`` from :func:`vqtk.evaluation.generation.generation_metrics`."""
    prior, tokenizer = pc.prior, pc.tokenizer
    h, w = prior.grid_size
    f = tokenizer.downsample_factor
    classes = prior.num_classes
    opts = {"temperature": options.temperature, "top_k": options.top_k, "top_p": options.top_p,
            "cfg_scale": options.cfg_scale, "steps": options.steps}
    per_class = torch.bincount(labels.clamp_min(0), minlength=classes).tolist() if classes else None
    made, seconds = store.seconds(num_samples)
    sampling_s = seconds.get("prior", 0.0) + seconds.get("decode", 0.0)
    end_to_end = sampling_s + seconds.get("write", 0.0) + metrics["seconds"]
    described = ", ".join(f"{k} {v}" for k, v in opts.items() if v is not None)
    return {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"vqtk": __version__, "torch": torch.__version__},
        "checkpoint": {**info, "sha256": pc.digest, "tokenizer": pc.metadata.get("tokenizer")},
        "model": {
            "name": pc.recipe.name, "prior": pc.recipe.prior.type, "quantizer": pc.recipe.model.quantizer.type,
            "codebook_size": tokenizer.quantizer.codebook_size, "layout": prior.layout.describe(),
            "grid_size": [h, w], "resolution": [h * f, w * f],
            "num_classes": classes, "prior_parameters": sum(p.numel() for p in prior.parameters()),
            "tokenizer_parameters": sum(p.numel() for p in tokenizer.parameters()),
        },
        "sampling": {
            "description": f"{num_samples} samples of {h * f}x{w * f} px, {described}",
            "samples": num_samples, "batch_size": store.batch_size, "seed": store.settings["seed"],
            "options": opts, "options_from": sources, "labels": store.settings["labels"], "per_class": per_class,
            "device": str(next(prior.parameters()).device), "precision": "fp32", "folder": str(store.folder.resolve()),
            "resumed_from": resumed_samples, "batches_made_now": batches_now,
            "batch_seeds": "numpy SeedSequence([seed, batch index]) (vqtk.evaluation.sample_store.batch_seed)",
        },
        "metrics": {
            "gfid": _entry(metrics["gfid"], lambda g: gfid_entry(g, resolution=h * f)),
            "inception_score": _entry(metrics["inception_score"],
                                      lambda s: inception_score_entry(s, images=num_samples)),
            "precision_recall": {"available": False, "reason": PRECISION_RECALL},
        },
        "timing": {
            "samples_made": made,
            "prior_seconds": seconds.get("prior", 0.0),
            "decode_seconds": seconds.get("decode", 0.0),
            "write_seconds": seconds.get("write", 0.0),
            "metrics_seconds": metrics["seconds"],
            "end_to_end_seconds": end_to_end,
            "prior_samples_per_s": _rate(made, seconds.get("prior", 0.0)),
            "sampling_samples_per_s": _rate(made, sampling_s),
            "end_to_end_samples_per_s": _rate(num_samples, end_to_end),
        },
        "files": files,
    }
