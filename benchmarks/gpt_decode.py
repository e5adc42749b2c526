"""GPT sampling speed per token step against taming's minGPT, with and without a key/value cache.

Both models have taming's minGPT size (``SIZES``; the smoke preset shrinks them),
start from one start token, sample every code of the grid with temperature 1
and top-k, and are timed in one alternation: vqtk's ``GPTPrior.sample`` with
``use_cache`` on and off, and :mod:`benchmarks.baseline_mingpt`'s
``sample_with_past`` and ``sample``. Records pair vqtk cached with taming cached
and vqtk uncached with taming uncached; ``config.ms_per_step`` holds the median
milliseconds per token step of both sides.
"""

from __future__ import annotations

import torch

from benchmarks import baseline_mingpt
from benchmarks.context import Context, compare, new_record, side_result
from benchmarks.timing import alternate
from vqtk.interfaces import SamplingOptions

FAMILY = "gpt_decode"
UNIT = "tokens/s"
ITEMS = ("cached", "uncached")

#: taming's minGPT size for a 16x16 f16 grid (batch, grid side, codebook, depth, heads, width, top-k)
SIZES = {"batch": 4, "side": 16, "codes": 1024, "depth": 4, "heads": 4, "dim": 256, "top_k": 100}
SMOKE_SIZES = {"batch": 2, "side": 4, "codes": 32, "depth": 1, "heads": 2, "dim": 32, "top_k": 8}


def sizes(ctx: Context) -> dict:
    return SMOKE_SIZES if ctx.preset.name == "smoke" else SIZES


def measure_all(ctx: Context, keys: list[str]) -> list[dict]:
    """Time the four sampling loops in one alternation; one record per selected pairing."""
    from vqtk_builtins.priors.gpt import GPTPrior

    s = sizes(ctx)
    side, batch, steps = s["side"], s["batch"], s["side"] * s["side"]
    torch.manual_seed(ctx.seed)
    prior = GPTPrior(codebook_size=s["codes"], grid_size=(side, side), dim=s["dim"], depth=s["depth"],
                     heads=s["heads"]).to(ctx.device).eval()
    mingpt = baseline_mingpt.GPT(vocab_size=s["codes"], block_size=steps, n_layer=s["depth"], n_head=s["heads"],
                                 n_embd=s["dim"]).to(ctx.device).eval()
    start = torch.zeros(batch, 1, dtype=torch.long, device=ctx.device)
    gen = torch.Generator(device=ctx.device)

    def ours(cache: bool):
        options = SamplingOptions(temperature=1.0, top_k=s["top_k"], use_cache=cache)

        def call():
            gen.manual_seed(ctx.seed)
            return prior.sample(batch, options=options, generator=gen)
        return call

    def theirs(loop):
        def call():
            torch.manual_seed(ctx.seed)
            return loop(start, mingpt, steps, temperature=1.0, top_k=s["top_k"])
        return call

    calls = {"vqtk-cached": ours(True), "taming-cached": theirs(baseline_mingpt.sample_with_past),
             "vqtk-uncached": ours(False), "taming-uncached": theirs(baseline_mingpt.sample)}
    calls = {k: fn for k, fn in calls.items() if k.split("-", 1)[1] in keys}
    if not calls:
        return []
    for fn in calls.values():
        fn()  # lazy initialisation outside the warm-ups' count
    times = alternate(calls, ctx.device, warmup=max(ctx.warmup - 1, 0), repeats=ctx.repeats)
    tokens = batch * steps
    records = []
    for key in (k for k in ITEMS if k in keys):
        rec = new_record(FAMILY, key, f"gpt · {'KV cache' if key == 'cached' else 'no cache'} · top-k {s['top_k']}",
                         UNIT, batch=batch, grid=[side, side], steps=steps, **{k: s[k] for k in
                                                                              ("codes", "depth", "heads", "dim")})
        rec["vqtk"] = side_result(f"vqtk GPTPrior.sample(use_cache={key == 'cached'})", times[f"vqtk-{key}"], tokens)
        loop = "sample_with_past" if key == "cached" else "sample"
        rec["baseline"] = side_result(f"taming minGPT {loop}", times[f"taming-{key}"], tokens)
        rec["config"]["ms_per_step"] = {who: rec[who]["median_ms"] / steps for who in ("vqtk", "baseline")}
        records.append(compare(rec))
    return records


def main() -> None:
    """``python -m benchmarks.gpt_decode [repeats] [--items cached]``: print ms per token step.

    Run with ``OMP_NUM_THREADS`` set. ``--items cached`` alternates the two cached
    loops only (the default alternates all four, as the benchmark row does).
    """
    import argparse

    from benchmarks.presets import SMALL

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpt_decode")
    parser.add_argument("repeats", nargs="?", type=int, default=5)
    parser.add_argument("--items", default=",".join(ITEMS), help="comma-separated subset of: " + ", ".join(ITEMS))
    args = parser.parse_args()
    items = [item for item in args.items.split(",") if item]
    unknown = sorted(set(items) - set(ITEMS))
    if unknown:
        parser.error(f"--items: unknown {', '.join(unknown)} (choose from {', '.join(ITEMS)})")
    ctx = Context(preset=SMALL, device=torch.device("cpu"), warmup=1, repeats=args.repeats, compile=False)
    for rec in measure_all(ctx, items):
        ours, ref, ratio = rec["vqtk"], rec["baseline"], rec["speed_ratio"]
        steps = rec["config"]["steps"]
        print(f"{rec['key']:>8}: vqtk {ours['median_ms'] / steps:.2f} ms/step "
              f"({ours['min_ms'] / steps:.2f}-{ours['max_ms'] / steps:.2f}), taming {ref['median_ms'] / steps:.2f} "
              f"({ref['min_ms'] / steps:.2f}-{ref['max_ms'] / steps:.2f}); speed vqtk/taming "
              f"{ratio['median']:.2f} (rounds {ratio['min']:.2f}-{ratio['max']:.2f})")


if __name__ == "__main__":
    main()
