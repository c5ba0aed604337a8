"""``report.csv`` (one row per case) and ``report.html`` (the same table with each case's QC montage)."""

from __future__ import annotations

import csv
import html
from pathlib import Path

from ..io import atomic_write
from .work import CaseOutcome

BASE_COLUMNS = ["case", "status", "reason", "this_run", "seconds", "worker", "inputs", "montage"]


def _row(outcome: CaseOutcome) -> dict:
    return {"case": outcome.case_id, "status": outcome.status, "reason": outcome.reason,
            "this_run": "ran" if outcome.ran else "skipped", "seconds": f"{outcome.seconds:.2f}",
            "worker": outcome.worker, "inputs": outcome.inputs, "montage": outcome.montage or "", **outcome.metrics}


def write_csv(outcomes: list[CaseOutcome], path: Path) -> Path:
    rows = [_row(o) for o in sorted(outcomes, key=lambda o: o.case_id)]
    extra = sorted({k for r in rows for k in r} - set(BASE_COLUMNS))
    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=BASE_COLUMNS + extra)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_html(outcomes: list[CaseOutcome], path: Path, title: str = "clinseg batch") -> Path:
    """Failed cases first (they need a look), then the rest by case id; images are linked, not embedded."""
    ordered = sorted(outcomes, key=lambda o: (o.status == "done", o.case_id))
    failed = sum(o.status != "done" for o in outcomes)
    lines = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif} td{padding:4px 8px;vertical-align:top;border-bottom:1px solid #ddd}"
        " .failed{background:#fde8e8} img{height:160px}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(outcomes)} cases: {len(outcomes) - failed} done, {failed} failed.</p>",
        "<table><tr><th>case</th><th>status</th><th>reason / time</th><th>QC montage</th></tr>",
    ]
    for o in ordered:
        cls = "" if o.status == "done" else " class='failed'"
        detail = html.escape(o.reason) if o.status != "done" else \
            f"{o.seconds:.1f} s{' (earlier run)' if not o.ran else ''}"
        image = f"<a href='{html.escape(o.montage)}'><img src='{html.escape(o.montage)}' alt='montage'></a>" \
            if o.montage else ""
        case = f"<a href='{html.escape(o.case_id)}/log.txt'>{html.escape(o.case_id)}</a>"
        lines.append(f"<tr{cls}><td>{case}</td><td>{html.escape(o.status)}</td><td>{detail}</td><td>{image}</td></tr>")
    lines += ["</table>", "</body></html>"]
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_report(outcomes: list[CaseOutcome], out_dir: Path) -> tuple[Path, Path]:
    return write_csv(outcomes, out_dir / "report.csv"), write_html(outcomes, out_dir / "report.html")
