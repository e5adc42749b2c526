"""``vqtk eval`` on a prior: sample N images (resumably), then gFID, Inception Score and samples/s.

:func:`run_generation_eval` puts it together: the stage-2 checkpoint
(:mod:`~vqtk.evaluation.prior_run`), the sample folder
(:mod:`~vqtk.evaluation.sample_store`), :func:`make_samples` (the sampling loop,
with a progress bar; Ctrl-C keeps every finished batch), :func:`score_samples`
(one Inception pass over the stored samples: pool3 features for gFID through the
FID code rFID uses, :mod:`~vqtk.evaluation.fid_stats`, and the unbiased logits of
the same forward for the Inception Score) and the report
(:mod:`~vqtk.evaluation.generation_report`).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional

import attrs
import torch
from tqdm import tqdm

from vqtk.build import recipe_sampling_options
from vqtk.errors import VqtkError
from vqtk.evaluation.fid import IS_SPLITS, FidInception, inception_score, load_fid_inception
from vqtk.evaluation.fid_stats import FidAccumulator, FidStatistics
from vqtk.evaluation.generation_report import GRID_SAMPLES, build_generation_report
from vqtk.evaluation.metrics import Unavailable
from vqtk.evaluation.prior_run import PriorCheckpoint, balanced_labels, load_prior_checkpoint
from vqtk.evaluation.report import write_json
from vqtk.evaluation.run import checkpoint_info
from vqtk.evaluation.sample_store import SampleStore, batch_seed
from vqtk.interfaces import SamplingOptions
from vqtk.io.images import save_png, tile
from vqtk.train.environment import pick_device

log = logging.getLogger("vqtk")

#: what a report names of the extractor (from :meth:`FidInception.describe`, kept in statistics files)
INCEPTION_KEYS = ("implementation", "feature_layer", "protocol", "quantize", "resize", "weights", "weights_sha256")
#: samples ``vqtk eval`` draws from a prior by default (the papers' gFID protocol)
DEFAULT_NUM_SAMPLES = 50_000


def sampling_options(recipe: Any, *, temperature: Optional[float] = None, top_k: Optional[int] = None,
                     top_p: Optional[float] = None, cfg_scale: Optional[float] = None,
                     steps: Optional[int] = None) -> tuple[SamplingOptions, dict[str, str]]:
    """The recipe's sampling options with the given ones instead; and where each came from."""
    base = recipe_sampling_options(recipe)
    given = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "cfg_scale": cfg_scale, "steps": steps}
    options = attrs.evolve(base, **{k: v for k, v in given.items() if v is not None})
    return options, {k: "option" if v is not None else "recipe" for k, v in given.items()}


def store_settings(pc: PriorCheckpoint, *, batch_size: int, seed: int, options: SamplingOptions) -> dict[str, Any]:
    """What every batch of a sample folder shares (a resumed run must match all of it)."""
    classes = pc.prior.num_classes
    return {
        "checkpoint_sha256": pc.digest, "seed": seed, "batch_size": batch_size,
        "temperature": options.temperature, "top_k": options.top_k, "top_p": options.top_p,
        "cfg_scale": options.cfg_scale, "steps": options.steps, "grid_size": list(pc.prior.grid_size),
        "num_classes": classes,
        "labels": f"sample i has class i mod {classes}" if classes else "unconditional",
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def make_samples(pc: PriorCheckpoint, store: SampleStore, *, num_samples: int, seed: int,
                 options: SamplingOptions, progress: bool = True) -> int:
    """Make and store every missing batch of the first ``num_samples`` samples; return how many batches.

    Batch ``k`` draws ``store.batch_size`` samples with labels :func:`balanced_labels`
    and a CPU generator seeded :func:`batch_seed` ``(seed, k)``. On a terminal a tqdm bar
    shows samples/s and ETA; elsewhere a log line every tenth. Ctrl-C stops after
    logging how much is on disk (every finished batch is).
    """
    todo = store.missing(num_samples)
    done = store.done(num_samples)
    if not todo:
        return 0
    device = next(pc.prior.parameters()).device
    b, classes = store.batch_size, pc.prior.num_classes
    bar = tqdm(total=num_samples, initial=done, desc="sampling", unit="img", dynamic_ncols=True,
               disable=not (progress and sys.stderr.isatty()))
    log.info("sampling %d of %d images in %d batches of %d into %s", num_samples - done, num_samples, len(todo), b,
             store.folder)
    start, made, next_log = time.perf_counter(), 0, 1
    try:
        for n, k in enumerate(todo, 1):
            labels = balanced_labels(k * b, b, classes, device)
            seed_k = batch_seed(seed, k)
            generator = torch.Generator(device="cpu").manual_seed(seed_k)
            t0 = time.perf_counter()
            try:
                indices = pc.prior.sample(b, labels=labels, options=options, generator=generator)
            except ValueError as exc:  # an option the prior does not support
                raise VqtkError(f"prior {pc.recipe.prior.type!r}: {exc}") from None
            _sync(device)
            t1 = time.perf_counter()
            images = pc.tokenizer.decode_indices(indices.to(device)).float().clamp(-1, 1).cpu()
            t2 = time.perf_counter()
            store.write(k, images, labels, seed=seed_k, seconds={"prior": t1 - t0, "decode": t2 - t1})
            got = min(b, num_samples - k * b)
            made += got
            bar.update(got)
            if bar.disable and n * 10 >= next_log * len(todo):
                rate = made / (time.perf_counter() - start)
                on_disk = store.done(num_samples)
                log.info("sampling: %d/%d images, %.2f img/s, eta %.0f s", on_disk, num_samples, rate,
                         (num_samples - on_disk) / max(rate, 1e-9))
                next_log = n * 10 // len(todo) + 1
    except KeyboardInterrupt:
        bar.close()
        log.warning("interrupted: %d of %d samples are on disk in %s; the same command continues from there",
                    store.done(num_samples), num_samples, store.folder)
        raise
    bar.close()
    return len(todo)


@torch.no_grad()
def score_samples(store: SampleStore, num_samples: int, inception: FidInception, **meta: Any) -> FidStatistics:
    """One Inception pass over the stored samples: their FID statistics, with the Inception Score of the
    same forward's unbiased logits and the pass's seconds in ``meta`` (``inception_score``, ``seconds``)."""
    device = next(inception.parameters()).device
    start = time.perf_counter()
    acc = FidAccumulator(inception, device)
    logits = []
    for images, _ in store.read(num_samples):
        features = inception(images.to(device))
        acc.stats.add(features)
        logits.append(inception.logits(features).cpu())
    splits = IS_SPLITS if num_samples >= IS_SPLITS else 1  # splits of one image would all score 1
    mean, std = inception_score(torch.cat(logits), splits)
    return acc.result(**meta, inception_score={"value": mean, "std": std, "splits": splits},
                      seconds=time.perf_counter() - start)


def statistics_file(num_samples: int) -> str:
    return f"inception_{num_samples}.npz"


def sample_statistics(store: SampleStore, num_samples: int, inception: FidInception, **meta: Any) -> FidStatistics:
    """:func:`score_samples`, kept in the sample folder as ``inception_N.npz`` (a ``vqtk fid-stats`` file, usable
    as ``--ref-stats``): evaluating the same samples again, against another reference, needs no Inception pass."""
    path = store.folder / statistics_file(num_samples)
    if path.is_file():
        try:
            cached = FidStatistics.load(path, inception, where=str(path))
            if cached.count == num_samples and "inception_score" in cached.meta:
                log.info("Inception statistics of the samples: reusing %s", path)
                return cached
        except VqtkError as exc:
            log.info("recomputing the Inception statistics of the samples: %s", exc)
    stats = score_samples(store, num_samples, inception, **meta)
    stats.save(path)
    return stats


def generation_metrics(samples: FidStatistics | Unavailable, reference: Optional[FidStatistics]) -> dict[str, Any]:
    """``gfid``, ``inception_score`` (dicts or :class:`Unavailable`) and ``seconds`` of the scoring pass."""
    if isinstance(samples, Unavailable):
        return {"gfid": samples, "inception_score": samples, "seconds": 0.0}
    gfid: dict[str, Any] | Unavailable
    if reference is None:
        gfid = Unavailable("needs reference statistics of real images: --ref-stats STATS.npz, made once with "
                           "`vqtk fid-stats` (e.g. over ImageNet val at the samples' resolution)")
    else:
        gfid = {"value": reference.fid(samples), "reference": reference, "reconstructions": samples,
                "inception": {k: samples.meta[k] for k in INCEPTION_KEYS}}
    score = {**samples.meta["inception_score"], "inception": {k: samples.meta[k] for k in INCEPTION_KEYS}}
    return {"gfid": gfid, "inception_score": score, "seconds": samples.meta["seconds"]}


def run_generation_eval(
    checkpoint: str | Path,
    *,
    out: str | Path = "eval_report.json",
    num_samples: int = DEFAULT_NUM_SAMPLES,
    batch_size: int = 16,
    seed: int = 0,
    temperature: Optional[float] = None,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    cfg_scale: Optional[float] = None,
    steps: Optional[int] = None,
    inception_weights: Optional[str] = None,
    ref_stats: Optional[str] = None,
    device: Optional[str] = None,
    fresh: bool = False,
    progress: bool = True,
    registry: Any = None,
) -> dict[str, Any]:
    """Evaluate a stage-2 checkpoint's samples; write the report, its sample grid and the sample folder.

    Samples go to ``<out stem>_samples/`` next to the report (see
    :mod:`~vqtk.evaluation.sample_store`): the same call after an interruption
    continues there, ``fresh`` starts over. Sampling options default to the
    recipe's ``[prior_train]`` values. Without ``ref_stats`` gFID is reported
    unavailable (with the reason) and the Inception Score still computed.
    """
    out = Path(out)
    reference = FidStatistics.load(ref_stats) if ref_stats is not None else None
    inception = load_fid_inception(inception_weights)
    if reference is not None and isinstance(inception, FidInception):
        reference.check_weights(inception)
    info = checkpoint_info(checkpoint)
    pc = load_prior_checkpoint(checkpoint, device=pick_device(device or "auto", "--device"), registry=registry)
    options, sources = sampling_options(pc.recipe, temperature=temperature, top_k=top_k, top_p=top_p,
                                        cfg_scale=cfg_scale, steps=steps)
    store = SampleStore(out.with_name(f"{out.stem}_samples"),
                        store_settings(pc, batch_size=batch_size, seed=seed, options=options)).open(fresh=fresh)
    had = store.done(num_samples)
    made_now = make_samples(pc, store, num_samples=num_samples, seed=seed, options=options, progress=progress)
    samples: FidStatistics | Unavailable = inception
    if isinstance(inception, FidInception):
        inception.to(next(pc.prior.parameters()).device)
        h, w = pc.prior.grid_size
        f = pc.tokenizer.downsample_factor
        samples = sample_statistics(store, num_samples, inception, resolution=h * f,
                                    data=f"{num_samples} samples of {info['path']}")
    metrics = generation_metrics(samples, reference)

    grid_path = out.with_name(f"{out.stem}_grid.png")
    save_png(tile(torch.cat([x for x, _ in store.read(min(num_samples, GRID_SAMPLES))])), grid_path)
    report = build_generation_report(
        pc, info=info, store=store, num_samples=num_samples, options=options, sources=sources,
        labels=store.labels(num_samples), metrics=metrics, resumed_samples=had, batches_now=made_now,
        files={"samples": grid_path.name, "sample_folder": store.folder.name,
               "sample_statistics": None if isinstance(samples, Unavailable) else
               f"{store.folder.name}/{statistics_file(num_samples)}"})
    write_json(report, out)
    return report
