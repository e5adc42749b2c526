"""Evaluating trained tokenizers: image metrics, codebook statistics, rFID, JSON reports.

``vqtk eval CKPT`` runs :func:`run_evaluation` (a tokenizer) or :func:`run_generation_eval`
(a stage-2 checkpoint: a prior's samples); ``vqtk eval --compare a.json b.json``
prints :func:`compare_files`; ``vqtk fid-stats DIR`` saves :func:`folder_statistics`.
The report schema is documented in ``docs/eval_report.md``.

Modules, each with one job: :mod:`~vqtk.evaluation.loop` (the pass over a set),
:mod:`~vqtk.evaluation.metrics` (SSIM, the set's codebook summary),
:mod:`~vqtk.evaluation.perceptual` (LPIPS through a PerceptualDistance loss),
:mod:`~vqtk.evaluation.fid` (the FID feature network and distance),
:mod:`~vqtk.evaluation.fid_stats` (FID statistics of image batches, their files),
:mod:`~vqtk.evaluation.sets` (which images, in which batches; folders as sets),
:mod:`~vqtk.evaluation.report` (the JSON schema), :mod:`~vqtk.evaluation.plots`
(the pictures), :mod:`~vqtk.evaluation.run` (from a checkpoint to the files),
:mod:`~vqtk.evaluation.compare` (``--compare``); for priors :mod:`~vqtk.evaluation.prior_run`
(a stage-2 checkpoint loaded to sample), :mod:`~vqtk.evaluation.sample_store` (samples
written as they are made, resumable), :mod:`~vqtk.evaluation.generation` (sampling, gFID,
Inception Score, samples/s) and :mod:`~vqtk.evaluation.generation_report` (its JSON schema).
PSNR and code histograms are :mod:`vqtk.measure`'s.
"""

from vqtk.evaluation.compare import compare_files, compare_table, load_report
from vqtk.evaluation.fid import (
    FeatureStatistics,
    FidInception,
    frechet_distance,
    inception_score,
    load_fid_inception,
)
from vqtk.evaluation.fid_stats import FidStatistics, compute_statistics, folder_statistics
from vqtk.evaluation.generation import generation_metrics, make_samples, run_generation_eval
from vqtk.evaluation.loop import EvaluationResult, evaluate
from vqtk.evaluation.metrics import Unavailable, codebook_statistics, ssim_per_image
from vqtk.evaluation.perceptual import LPIPSMetric, build_lpips_metric
from vqtk.evaluation.prior_run import PriorCheckpoint, balanced_labels, load_prior_checkpoint
from vqtk.evaluation.run import run_evaluation
from vqtk.evaluation.sample_store import SampleStore

__all__ = [
    "EvaluationResult",
    "FeatureStatistics",
    "FidInception",
    "FidStatistics",
    "LPIPSMetric",
    "PriorCheckpoint",
    "SampleStore",
    "Unavailable",
    "balanced_labels",
    "build_lpips_metric",
    "codebook_statistics",
    "compare_files",
    "compare_table",
    "compute_statistics",
    "evaluate",
    "folder_statistics",
    "frechet_distance",
    "generation_metrics",
    "inception_score",
    "load_fid_inception",
    "load_prior_checkpoint",
    "load_report",
    "make_samples",
    "run_evaluation",
    "run_generation_eval",
    "ssim_per_image",
]
