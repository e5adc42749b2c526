"""Writing a run's results: ``results.json``, ``results.md`` (tables) and ``results.png`` (bar chart)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Optional

from PIL import Image, ImageDraw

from vqtk.io.files import write_atomic

FAMILY_TITLES = {
    "stage1": "Stage-1 training step",
    "codec": "Encode to indices / decode from indices",
    "prior": "Prior sampling",
    "gpt_decode": "GPT sampling vs taming minGPT, KV cache on and off",
    "quantizer": "Quantizer alone",
    "optimizer": "Generator optimizer step",
    "data": "Data loading, decode + augment per loader worker",
}
#: families whose rows compare with a row of their own rather than a baseline: the column's heading
RELATIVE = {"prior": "speed vs gpt · no cache", "data": "speed vs image_folder"}

VQTK_COLOUR = (31, 119, 180)
BASELINE_COLOUR = (150, 150, 150)


def fmt(value: Optional[float], digits: int = 3) -> str:
    """A number for a table cell: about ``digits`` significant figures, thousands separators."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if value == 0:
        return "0"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


def _throughput(side: Optional[dict]) -> str:
    if not side:
        return "–"
    return f"{fmt(side['throughput'])} ({fmt(side['throughput_min'])}–{fmt(side['throughput_max'])})"


def _ratio(r: Optional[dict]) -> str:
    if not r:
        return "–"
    return f"{r['median']:.2f} [{r['min']:.2f}–{r['max']:.2f}]"


def _mfu(side: Optional[dict]) -> str:
    if not side or side.get("mfu") is None:
        return "–"
    return f"{100 * side['mfu']:.1f}%"


def family_table(records: list[dict]) -> list[str]:
    """Markdown lines of one family's table."""
    unit = records[0]["unit"]
    prior = records[0]["family"] in RELATIVE
    ratio_head = RELATIVE.get(records[0]["family"], "speed ratio vqtk/baseline")
    lines = [
        f"| measurement | vqtk {unit} (min–max) | baseline {unit} (min–max) | {ratio_head} | "
        "vqtk peak MiB | baseline peak MiB | vqtk TFLOP/s | vqtk MFU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r.get("skipped") or r.get("error"):
            why = f"skipped: {r['skipped']}" if r.get("skipped") else f"error: {r['error']}"
            lines.append(f"| {r['name']} | {why} | | | | | | |")
            continue
        ours, base = r["vqtk"], r["baseline"]
        ratio = r.get("relative_to", {}).get("speed") if prior else r.get("speed_ratio")
        lines.append(
            f"| {r['name']} | {_throughput(ours)} | {_throughput(base)} | {_ratio(ratio)} | "
            f"{fmt((ours or {}).get('peak_memory_mb'))} | {fmt((base or {}).get('peak_memory_mb'))} | "
            f"{fmt((ours or {}).get('tflops'))} | {_mfu(ours)} |"
        )
    return lines


def markdown(result: dict) -> str:
    m, run = result["machine"], result["run"]
    gpu = f", GPU {m['gpu_name']}" if m.get("gpu_name") else ""
    lines = [
        f"# vqtk benchmarks: preset `{run['preset']}` on {m['device']}",
        "",
        f"- machine: {m.get('cpu_model')}, {m.get('cpu_cores_usable')} usable cores, "
        f"{m.get('torch_threads')} torch threads{gpu}; torch {m.get('torch')}, vqtk {m.get('vqtk')} "
        f"(commit {m.get('git_commit')})",
        f"- load average (1, 5, 15 min) at start {m.get('load_average_start')}, at end {m.get('load_average_end')}",
        f"- command: `{run['command']}`; {run['warmup']} warm-up and {run['repeats']} timed calls per side, "
        f"sides alternating; {run['elapsed_s']:.0f} s in all",
        "- throughput: median call (slowest–fastest call); speed ratio: vqtk speed / baseline speed in each "
        "round, median [min–max] over rounds (> 1: vqtk faster)",
        f"- peak memory: {run.get('memory_method', '–')} during one steady-state call, above the memory "
        "in use before that side was built",
        "- baseline: the plain PyTorch taming-transformers step in `benchmarks/baseline_taming.py` "
        "(VQ, PatchGAN, LPIPS, Adam) at the same sizes and settings",
    ]
    if run.get("peak_tflops"):
        lines.append(f"- MFU against {run['peak_tflops']} TFLOP/s (bf16)"
                     + (f", {run['peak_tflops_fp32']} TFLOP/s (fp32)" if run.get("peak_tflops_fp32") else ""))
    for note in run.get("notes", []):
        lines.append(f"- {note}")
    by_family: dict[str, list[dict]] = {}
    for r in result["results"]:
        by_family.setdefault(r["family"], []).append(r)
    for family, records in by_family.items():
        lines += ["", f"## {FAMILY_TITLES.get(family, family)} ({records[0]['unit']})", ""]
        lines += family_table(records)
        notes = [f"- {r['name']}: {note}" for r in records for note in r.get("notes", [])]
        lines += ["", *notes] if notes else []
    return "\n".join(lines) + "\n"


def _bars(records: Iterable[dict]) -> list[tuple[str, Optional[dict], Optional[dict]]]:
    return [(r["name"], r.get("vqtk"), r.get("baseline")) for r in records if r.get("vqtk")]


def chart(result: dict, width: int = 1100) -> Image.Image:
    """Horizontal bars of throughput per family (vqtk blue, baseline grey), whiskers from slowest to fastest call."""
    by_family: dict[str, list[dict]] = {}
    for r in result["results"]:
        by_family.setdefault(r["family"], []).append(r)
    panels = [(f, _bars(rs), rs[0]["unit"]) for f, rs in by_family.items() if _bars(rs)]
    bar_h, gap, head = 11, 8, 34
    label_w, right = 330, 110
    heights = [head + sum((2 if b else 1) * bar_h + gap for _, _, b in bars) for _, bars, _ in panels]
    height = 40 + sum(heights) + 10 * len(panels)
    img = Image.new("RGB", (width, max(height, 80)), "white")
    d = ImageDraw.Draw(img)
    m = result["machine"]
    d.text((10, 8), f"vqtk benchmarks, preset {result['run']['preset']}, {m['device']}"
           f" ({m.get('gpu_name') or m.get('cpu_model')})", fill="black")
    d.rectangle([width - 260, 8, width - 248, 18], fill=VQTK_COLOUR)
    d.text((width - 244, 8), "vqtk", fill="black")
    d.rectangle([width - 200, 8, width - 188, 18], fill=BASELINE_COLOUR)
    d.text((width - 184, 8), "baseline (plain taming)", fill="black")
    y = 40
    for (family, bars, unit), h in zip(panels, heights):
        d.text((10, y), f"{FAMILY_TITLES.get(family, family)} ({unit}, median; whiskers slowest-fastest call)",
               fill="black")
        top = max(max(s["throughput_max"] for s in (o, b) if s) for _, o, b in bars)
        scale = (width - label_w - right) / top if top > 0 else 0.0
        yy = y + head - 14
        d.line([label_w, yy, label_w, y + h - gap // 2], fill="black")
        for name, ours, base in bars:
            d.text((10, yy), name[:52], fill="black")
            for side, colour in ((ours, VQTK_COLOUR), (base, BASELINE_COLOUR)):
                if not side:
                    continue
                x1 = label_w + side["throughput"] * scale
                d.rectangle([label_w, yy, max(label_w + 1, x1), yy + bar_h - 2], fill=colour)
                lo, hi = label_w + side["throughput_min"] * scale, label_w + side["throughput_max"] * scale
                mid = yy + (bar_h - 2) // 2
                d.line([lo, mid, hi, mid], fill="black")
                d.line([lo, yy + 1, lo, yy + bar_h - 3], fill="black")
                d.line([hi, yy + 1, hi, yy + bar_h - 3], fill="black")
                d.text((max(x1, hi) + 6, yy - 1), fmt(side["throughput"]), fill="black")
                yy += bar_h
            yy += gap
        y += h + 10
    return img


def write_json(result: dict, path: Path) -> None:
    """Write ``result`` as JSON to ``path`` atomically (a reader never sees half a file)."""
    write_atomic(path, lambda p: p.write_text(json.dumps(result, indent=2, default=str) + "\n"))


def write_all(result: dict, out: Path) -> dict[str, Path]:
    """Write the JSON, markdown and PNG files into ``out``; returns their paths."""
    paths = {"json": out / "results.json", "markdown": out / "results.md", "chart": out / "results.png"}
    write_json(result, paths["json"])
    write_atomic(paths["markdown"], lambda p: p.write_text(markdown(result)))
    write_atomic(paths["chart"], lambda p: chart(result).save(p, format="PNG"))
    return paths


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m benchmarks.report RESULTS.json [--out DIR]``: render a (partial) run's tables and chart again."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    parser.add_argument("results", type=Path, help="results.json or results.partial.json of a run")
    parser.add_argument("--out", type=Path, help="folder for results.md/.png/.json (default: beside the file)")
    args = parser.parse_args(argv)
    result = json.loads(args.results.read_text())
    paths = write_all(result, args.out or args.results.parent)
    print(markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
