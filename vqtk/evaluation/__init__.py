"""Evaluating trained tokenizers: image metrics, codebook statistics, rFID, JSON reports.

``vqtk eval CKPT`` runs :func:`run_evaluation`; ``vqtk eval --compare a.json b.json``
prints :func:`compare_files`. The report schema is documented in ``docs/eval_report.md``.
"""

from vqtk.evaluation.compare import compare_files, compare_table, load_report
from vqtk.evaluation.fid import FeatureStatistics, InceptionFeatures, frechet_distance
from vqtk.evaluation.metrics import (
    LPIPSMetric,
    Unavailable,
    build_lpips_metric,
    code_histogram,
    codebook_statistics,
    entropy_bits,
    psnr_per_image,
    ssim_per_image,
)
from vqtk.evaluation.report import evaluate, run_evaluation

__all__ = [
    "FeatureStatistics",
    "InceptionFeatures",
    "LPIPSMetric",
    "Unavailable",
    "build_lpips_metric",
    "code_histogram",
    "codebook_statistics",
    "compare_files",
    "compare_table",
    "entropy_bits",
    "evaluate",
    "frechet_distance",
    "load_report",
    "psnr_per_image",
    "run_evaluation",
    "ssim_per_image",
]
