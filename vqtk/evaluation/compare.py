"""Side-by-side comparison of evaluation reports: ``vqtk eval --compare a.json b.json ...``.

Tokenizer reports (``vqtk-eval-report-1``) compare with each other, prior reports
(``vqtk-generation-report-1``) with each other; each kind has its rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from vqtk.errors import VqtkError
from vqtk.evaluation.generation_report import FORMAT as GENERATION_FORMAT
from vqtk.evaluation.report import FORMAT

#: (metric key in the report, row label, better: "higher" / "lower")
ROWS: list[tuple[str, str, str]] = [
    ("psnr", "PSNR (dB)", "higher"),
    ("ssim", "SSIM", "higher"),
    ("lpips", "LPIPS", "lower"),
    ("rfid", "rFID", "lower"),
    ("codebook_usage", "codebook usage", "higher"),
    ("perplexity", "perplexity (codes)", "higher"),
    ("index_entropy", "index entropy (bits)", "higher"),
]

#: rows of a prior's report: (label, where the number is, better)
GENERATION_ROWS: list[tuple[str, tuple[str, ...], str]] = [
    ("samples", ("sampling", "samples"), ""),
    ("gFID", ("metrics", "gfid", "value"), "lower"),
    ("Inception Score", ("metrics", "inception_score", "value"), "higher"),
    ("  IS std over splits", ("metrics", "inception_score", "std"), ""),
    ("samples/s, sampling (prior + decode)", ("timing", "sampling_samples_per_s"), "higher"),
    ("samples/s, end to end", ("timing", "end_to_end_samples_per_s"), "higher"),
]


def load_report(path: str | Path) -> dict[str, Any]:
    """A report written by ``vqtk eval``; one-line errors for missing or foreign files."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise VqtkError(f"{path}: no such report file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VqtkError(f"{path}: cannot read as JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") not in (FORMAT, GENERATION_FORMAT):
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise VqtkError(f"{path}: not a vqtk evaluation report (format {found!r}, expected {FORMAT!r} or "
                        f"{GENERATION_FORMAT!r})")
    return data


def report_rows(report: dict[str, Any]) -> list[tuple[str, Optional[float], str]]:
    """``(label, value or None, better)`` for every metric row, per-codebook rows included."""
    if report.get("format") == GENERATION_FORMAT:
        return [(label, _num(_at(report, where)), better) for label, where, better in GENERATION_ROWS]
    metrics = report.get("metrics", {})
    rows: list[tuple[str, Optional[float], str]] = [("images", _num(report.get("data", {}).get("images")), "")]
    for key, label, better in ROWS:
        entry = metrics.get(key) or {}
        value = _num(entry.get("value")) if entry.get("available") else None
        rows.append((label, value, better))
        per = entry.get("per_codebook") if entry.get("available") else None
        if isinstance(per, list) and len(per) > 1:
            rows.extend((f"  codebook {q}", _num(v), better) for q, v in enumerate(per))
    return rows


def _at(report: dict[str, Any], where: tuple[str, ...]) -> Any:
    """The value at ``where`` in a report; ``None`` when absent or in a metric entry that is not available."""
    value: Any = report
    for key in where:
        if not isinstance(value, dict) or (value.get("available") is False):
            return None
        value = value.get(key)
    return value


def _num(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.6g}"


def _labels(paths: Sequence[str | Path]) -> list[str]:
    """Short column names: file stems, or parent/stem where stems repeat."""
    stems = [Path(p).stem for p in paths]
    out = []
    for p, stem in zip(paths, stems):
        out.append(stem if stems.count(stem) == 1 else f"{Path(p).parent.name}/{stem}")
    return [f"{label} ({i + 1})" if out.count(label) > 1 else label for i, label in enumerate(out)]


def compare_table(reports: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """Metric rows, one column per report; with exactly two reports also ``diff`` (B - A) and ``ratio`` (B / A)."""
    if len(reports) != len(labels) or not reports:
        raise ValueError("need one label per report, and at least one report")
    table = [report_rows(r) for r in reports]
    names = [label for label, _, _ in table[0]]
    for rows in table[1:]:  # per-codebook rows may differ between reports: union, in order
        for label, _, _ in rows:
            if label not in names:
                names.append(label)
    lookup = [{label: (value, better) for label, value, better in rows} for rows in table]
    header = ["metric", "better", *labels]
    if len(reports) == 2:
        header += [f"diff ({labels[1]} - {labels[0]})", f"ratio ({labels[1]} / {labels[0]})"]
    lines = [header]
    for name in names:
        values = [lk.get(name, (None, ""))[0] for lk in lookup]
        better = next((lk[name][1] for lk in lookup if name in lk), "")
        row = [name, better, *(_fmt(v) for v in values)]
        if len(reports) == 2:
            a, b = values
            diff = None if a is None or b is None else b - a
            ratio = None if a is None or b is None or a == 0 else b / a
            row += ["n/a" if diff is None else f"{diff:+.4g}", "n/a" if ratio is None else f"{ratio:.4g}"]
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    text = []
    for n, row in enumerate(lines):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
        text.append("  ".join(cells).rstrip())
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def compare_files(paths: Sequence[str | Path]) -> str:
    """Load the reports and return their table, headed by which checkpoint each column is."""
    reports = [load_report(p) for p in paths]
    kinds = {r["format"] for r in reports}
    if len(kinds) > 1:
        raise VqtkError("--compare: tokenizer reports (vqtk eval of a stage-1 run) and prior reports (of a stage-2 "
                        "run) measure different things; compare reports of one kind")
    labels = _labels(paths)
    head = [f"{label}: {r.get('checkpoint', {}).get('path', '?')} (step {r.get('checkpoint', {}).get('step', '?')}), "
            f"{(r.get('data') or r.get('sampling') or {}).get('description', '?')}"
            for label, r in zip(labels, reports)]
    return "\n".join(head) + "\n\n" + compare_table(reports, labels)
