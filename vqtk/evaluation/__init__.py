"""Evaluating trained tokenizers: image metrics, codebook statistics, rFID, JSON reports.

``vqtk eval CKPT`` runs :func:`run_evaluation`; ``vqtk eval --compare a.json b.json``
prints :func:`compare_files`. The report schema is documented in ``docs/eval_report.md``.

Modules, each with one job: :mod:`~vqtk.evaluation.loop` (the pass over a set),
:mod:`~vqtk.evaluation.metrics` (SSIM, the set's codebook summary),
:mod:`~vqtk.evaluation.perceptual` (LPIPS through a PerceptualDistance loss),
:mod:`~vqtk.evaluation.fid` (rFID), :mod:`~vqtk.evaluation.report` (the JSON
schema), :mod:`~vqtk.evaluation.plots` (the pictures), :mod:`~vqtk.evaluation.run`
(from a checkpoint to the files), :mod:`~vqtk.evaluation.compare` (``--compare``).
PSNR and code histograms are :mod:`vqtk.measure`'s.
"""

from vqtk.evaluation.compare import compare_files, compare_table, load_report
from vqtk.evaluation.fid import FeatureStatistics, InceptionFeatures, frechet_distance
from vqtk.evaluation.loop import EvaluationResult, evaluate
from vqtk.evaluation.metrics import Unavailable, codebook_statistics, ssim_per_image
from vqtk.evaluation.perceptual import LPIPSMetric, build_lpips_metric
from vqtk.evaluation.run import run_evaluation

__all__ = [
    "EvaluationResult",
    "FeatureStatistics",
    "InceptionFeatures",
    "LPIPSMetric",
    "Unavailable",
    "build_lpips_metric",
    "codebook_statistics",
    "compare_files",
    "compare_table",
    "evaluate",
    "frechet_distance",
    "load_report",
    "run_evaluation",
    "ssim_per_image",
]
