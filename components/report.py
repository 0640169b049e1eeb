"""The QC report of a campaign: one self-contained HTML page (no network, no external files).

Failed units come first, then the rest; each unit shows its verdict, first / middle / last frames and the
reference images, its scores as bars against the campaign's thresholds and HunyuanCustom's own averages, every
delivery check with the measured value and the limit, the loudness curve when the video has sound, and its
attempts. Images are inline PNGs. A short script at the end of the page only records, in ``data-`` attributes
of ``<body>``, how many images decoded and whether a script error occurred, so that a headless browser test
can read them from the DOM.

- :func:`render_html` builds the page from the units' QC documents (``qc.json`` of ``components.qc_metrics``).
- :func:`write_report` reads a campaign's index and the QC results its provenance names, and stores the page
  at ``<output_prefix>/<campaign>/qc-report.html`` (``publish.index`` calls it after the index).
- :func:`render_markdown` is the short summary for KFP's Markdown view.
- ``adrender report CAMPAIGN`` (:func:`add_report`) writes the page locally and can open it.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import struct
import sys
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "REPORT_NAME",
    "add_report",
    "encode_png",
    "load_qc_documents",
    "render_html",
    "render_markdown",
    "write_report",
]

REPORT_NAME = "qc-report.html"
log = logging.getLogger("adrender.report")

# metric -> (label, lower end of the bar, upper end)
_METRICS: Mapping[str, tuple[str, float, float]] = {
    "clip_text": ("CLIP-B-T", 0.0, 0.5),
    "dino_sim": ("DINO-Sim", 0.0, 1.0),
    "face_sim": ("Face-Sim", 0.0, 1.0),
    "temporal_consistency": ("Temporal consistency", 0.5, 1.0),
    "dynamic_degree": ("Dynamic degree (0/1)", 0.0, 1.0),
    "foley_speech_likeness": ("Foley speech-likeness", 0.0, 1.0),
    "desync": ("DeSync (s, lower is better)", 0.0, 2.0),
}
_THRESHOLD_FIELD = {
    "clip_text": "min_text_video_similarity",
    "dino_sim": "min_identity_similarity",
    "face_sim": "min_face_similarity",
}


def encode_png(rgb: np.ndarray) -> bytes:
    """A PNG (8-bit RGB, no interlace) of a uint8 ``[H, W, 3]`` array."""
    if str(rgb.dtype) != "uint8" or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_png needs uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter type 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------------------------------------------
# pieces of the page


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(b64: str, alt: str) -> str:
    return f'<figure><img src="data:image/png;base64,{b64}" alt="{_e(alt)}"><figcaption>{_e(alt)}</figcaption></figure>'


def _bar(value: float | None, lo: float, hi: float, threshold: float | None, paper: float | None) -> str:
    """An inline SVG bar: the value, the threshold (red line) and the paper's average (grey tick)."""
    width, height = 180, 14

    def x(v: float) -> float:
        return round(max(0.0, min(1.0, (v - lo) / (hi - lo))) * width, 1)

    parts = [f'<svg class="bar" width="{width}" height="{height}" role="img">']
    parts.append(f'<rect width="{width}" height="{height}" fill="#eee"/>')
    if value is not None:
        ok = threshold is None or value >= threshold
        parts.append(f'<rect width="{x(value)}" height="{height}" fill="{"#4a8" if ok else "#d44"}"/>')
    if paper is not None:
        parts.append(
            f'<line x1="{x(paper)}" x2="{x(paper)}" y1="0" y2="{height}" stroke="#555" stroke-dasharray="2,2"/>'
        )
    if threshold is not None:
        parts.append(
            f'<line x1="{x(threshold)}" x2="{x(threshold)}" y1="0" y2="{height}" stroke="#c00" stroke-width="2"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _curve_svg(curve: Mapping[str, Sequence[float | None]], target: float | None) -> str:
    """Short-term and momentary loudness over time (LUFS, -50 to 0), with the target as a dashed line."""
    width, height, lo, hi = 480, 120, -50.0, 0.0
    times = [float(t or 0.0) for t in curve.get("times", [])]
    if not times:
        return ""
    end = max(times[-1], 1e-3)

    def pt(t: float, v: float) -> str:
        y = (hi - max(lo, min(hi, v))) / (hi - lo) * height
        return f"{t / end * width:.1f},{y:.1f}"

    lines = []
    for key, colour in (("momentary_lufs", "#9bd"), ("short_term_lufs", "#236")):
        pts = " ".join(pt(t, v) for t, v in zip(times, curve.get(key, [])) if v is not None and v > lo)
        if pts:
            lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>')
    if target is not None:
        y = (hi - target) / (hi - lo) * height
        lines.append(
            f'<line x1="0" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c00" stroke-dasharray="4,3"/>'
        )
    return (
        f'<svg class="curve" width="{width}" height="{height}" role="img"><rect width="{width}" height="{height}" '
        f'fill="#f7f7f7"/>{"".join(lines)}</svg><div class="legend">short-term (dark), momentary (light), target '
        f"(red), -50 to 0 LUFS over {end:.1f} s</div>"
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v) or "none"
    return "-" if v is None else str(v)


def _unit_html(doc: Mapping[str, Any], attempts: Sequence[Mapping[str, Any]]) -> str:
    verdict = doc.get("verdict", "not checked")
    unit = str(doc.get("unit"))
    thumbs = doc.get("thumbnails", {})
    figures = [_img(thumbs[k], f"{k} frame") for k in ("first", "middle", "last") if thumbs.get(k)]
    figures += [_img(b, f"reference {i + 1}") for i, b in enumerate(thumbs.get("references", []))]
    thresholds = doc.get("thresholds", {})
    paper = doc.get("paper_averages", {})
    rows = []
    for name, (label, lo, hi) in _METRICS.items():
        value = doc.get("scores", {}).get(name)
        why = doc.get("metrics", {}).get(name, {}).get("not_run")
        limit = thresholds.get(_THRESHOLD_FIELD.get(name, ""), None)
        shown = f"{value:.3f}" if isinstance(value, (int, float)) else f"not run: {why}" if why else "-"
        rows.append(
            f"<tr><td>{_e(label)}</td><td>{_e(shown)}</td><td>{_bar(value, lo, hi, limit, paper.get(name))}</td>"
            f"<td>{_e('-' if limit is None else f'>= {limit:g}')}</td><td>{_e(paper.get(name, '-'))}</td></tr>"
        )
    checks = sorted(doc.get("checks", []), key=lambda c: c["status"] != "fail")
    check_rows = "".join(
        f'<tr class="{_e(c["status"].replace("/", ""))}"><td>{_e(c["name"])}</td><td>{_e(c["status"])}</td>'
        f"<td>{_e(_fmt(c['measured']))}</td><td>{_e(c['limit'])}</td><td>{_e(c.get('detail', ''))}</td></tr>"
        for c in checks
    )
    curve = doc.get("loudness_curve")
    target = None
    for c in doc.get("checks", []):
        if c["name"] == "loudness.integrated":
            target = float(str(c["limit"]).split()[0])
    attempt_rows = "".join(
        f"<tr><td>{i + 1}</td><td>{_e(a.get('seed'))}</td><td>{_e(a.get('verdict'))}</td>"
        f"<td>{_e(', '.join(a.get('failed', [])) or '-')}</td></tr>"
        for i, a in enumerate(attempts)
    )
    failed = ", ".join(doc.get("failed", []))
    fixable = " (a new seed may fix it)" if doc.get("rerender") else ""
    failed_html = f'<p class="failed">failed: {_e(failed)}{fixable}</p>' if failed else ""
    curve_html = f'<div class="loudness">{_curve_svg(curve, target)}</div>' if curve else ""
    meta = f"job {_e(doc.get('job'))} · seed {_e(doc.get('seed'))} · profile {_e(doc.get('profile'))}"
    badge = f'<span class="badge {_e(verdict)}">{_e(verdict.upper())}</span>'
    open_attr = " open" if failed else ""
    return (
        f'<section class="unit {_e(verdict)}" id="unit-{_e(unit)}">\n'
        f"<h2>{badge} {_e(unit)} <small>{meta}</small></h2>\n"
        f'<p class="prompt">{_e(doc.get("prompt", ""))}</p>\n{failed_html}\n'
        f'<div class="sheet">{"".join(figures)}</div>\n'
        '<table class="scores"><tr><th>metric</th><th>score</th><th></th><th>threshold</th>'
        f"<th>HunyuanCustom avg.</th></tr>{''.join(rows)}</table>\n{curve_html}\n"
        f"<details{open_attr}><summary>checks ({len(checks)})</summary>"
        '<table class="checks"><tr><th>check</th><th>status</th><th>measured</th><th>limit</th><th></th></tr>'
        f"{check_rows}</table></details>\n"
        '<table class="attempts"><tr><th>attempt</th><th>seed</th><th>verdict</th><th>failed</th></tr>'
        f"{attempt_rows}</table>\n</section>\n"
    )


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}h1{margin:0 0 4px}
.summary{margin:8px 0 16px}.summary a{color:#b00;margin-right:8px}
.unit{border:1px solid #ccc;border-left:8px solid #4a8;border-radius:4px;padding:8px 14px;margin:14px 0}
.unit.fail{border-left-color:#d33;background:#fff6f6}h2{font-size:17px;margin:4px 0}h2 small{color:#666;font-weight:normal}
.badge{padding:1px 8px;border-radius:3px;color:#fff;background:#4a8}.badge.fail{background:#d33}
.prompt{color:#444;font-style:italic;margin:2px 0}.failed{color:#b00;font-weight:bold}
.sheet{display:flex;gap:8px;flex-wrap:wrap}figure{margin:0}figure img{height:96px;border:1px solid #999;image-rendering:pixelated}
figcaption{font-size:11px;color:#666}table{border-collapse:collapse;margin:6px 0}td,th{padding:2px 8px;text-align:left}
tr.fail td{color:#b00;font-weight:bold}tr.warn td{color:#a60}tr.na td,tr.info td{color:#777}.legend{font-size:11px;color:#666}
"""

_PROBE = """<script>
window.addEventListener("error", function () { document.body.dataset.scriptErrors = "1"; });
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = ok + "/" + imgs.length;
});
</script>"""


def render_html(
    campaign: str,
    docs: Sequence[Mapping[str, Any]],
    attempts: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> str:
    """The report page of ``campaign`` from its units' QC documents; failed units first."""
    attempts = attempts or {}
    ordered = sorted(docs, key=lambda d: (d.get("verdict") != "fail", str(d.get("unit"))))
    failed = [d for d in ordered if d.get("verdict") == "fail"]
    links = "".join(f'<a href="#unit-{_e(d["unit"])}">{_e(d["unit"])}</a>' for d in failed)
    body = "".join(
        _unit_html(d, attempts.get(str(d.get("unit"))) or d.get("attempts") or [{"seed": d.get("seed"), **d}])
        for d in ordered
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>QC report: {_e(campaign)}</title>
<style>{_STYLE}</style></head>
<body data-images-loaded="" data-script-errors="0">
<h1>QC report: {_e(campaign)}</h1>
<div class="summary"><b>{len(failed)} failed</b> of {len(ordered)} unit(s). {links}</div>
{body if body else "<p>No unit of this campaign has QC results yet.</p>"}
{_PROBE}
</body></html>
"""


def render_markdown(campaign: str, docs: Sequence[Mapping[str, Any]]) -> str:
    """A short Markdown summary: one line per unit, failed units first."""
    lines = [
        f"# QC: {campaign}",
        "",
        "| unit | verdict | failed checks | CLIP-B-T | DINO-Sim |",
        "|---|---|---|---|---|",
    ]
    for d in sorted(docs, key=lambda d: (d.get("verdict") != "fail", str(d.get("unit")))):
        s = d.get("scores", {})
        lines.append(
            f"| {d.get('unit')} | {d.get('verdict')} | {', '.join(d.get('failed', [])) or '-'} | "
            f"{_fmt(s.get('clip_text'))} | {_fmt(s.get('dino_sim'))} |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# from the store


def load_qc_documents(store: Any, output_prefix: str, campaign: str) -> list[dict[str, Any]]:
    """The QC documents of every unit in the campaign's index whose provenance names one."""
    from components.runtime.store import ObjectNotFound

    index = json.loads(store.get_bytes(f"{output_prefix.strip('/')}/{campaign}/index.json"))
    docs = []
    for entry in index.get("units", []):
        try:
            prov = json.loads(store.get_bytes(entry["provenance"]))
        except (ObjectNotFound, KeyError, ValueError):
            continue
        key = (prov.get("qc") or {}).get("key")
        if key:
            try:
                doc = json.loads(store.get_bytes(key))
                doc["attempts"] = prov["qc"].get(
                    "attempts", []
                )  # every render of the unit, re-renders included
                docs.append(doc)
            except ObjectNotFound:
                log.warning("%s names QC results %s that are not in the store", entry["provenance"], key)
    return docs


def write_report(store: Any, output_prefix: str, campaign: str) -> str:
    """Store the campaign's report at ``<output_prefix>/<campaign>/qc-report.html``; returns the key."""
    docs = load_qc_documents(store, output_prefix, campaign)
    key = f"{output_prefix.strip('/')}/{campaign}/{REPORT_NAME}"
    store.put_bytes(key, render_html(campaign, docs).encode(), metadata={"format": "html"})
    return key


def cmd_report(args: argparse.Namespace) -> int:
    """``adrender report CAMPAIGN``: write the report of a rendered campaign to a local file (and open it)."""
    from components.runtime.settings import RuntimeSettings
    from components.runtime.spec import CampaignError, load_campaign
    from components.runtime.store import ObjectNotFound, open_store

    try:
        campaign = load_campaign(args.campaign)
    except CampaignError as exc:
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return 1
    settings = RuntimeSettings.from_env()
    store = open_store(settings=settings)
    try:
        docs = load_qc_documents(store, campaign.output_prefix, campaign.id)
    except ObjectNotFound:
        print(f"{campaign.id}: no campaign index in {settings.store}; render it first (adrender render {args.campaign})",
              file=sys.stderr)  # fmt: skip
        return 1
    out = Path(args.out or f"{campaign.id}-{REPORT_NAME}")
    out.write_text(render_html(campaign.id, docs))
    failed = sum(1 for d in docs if d.get("verdict") == "fail")
    print(f"{out}: {len(docs)} unit(s) with QC results, {failed} failed")
    if args.open:
        import webbrowser

        webbrowser.open(out.resolve().as_uri())
    return 0


def add_report(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``adrender report``."""
    parser = subparsers.add_parser(
        "report",
        help="write the QC report (HTML) of a rendered campaign",
        description="Write the self-contained QC report of a rendered campaign: failed units first, thumbnails, "
        "scores against thresholds, delivery checks, loudness curves.",
    )
    parser.add_argument("campaign", type=Path, metavar="CAMPAIGN", help="the campaign file that was rendered")
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the page (default: ./<id>-qc-report.html)"
    )
    parser.add_argument("--open", action="store_true", help="open the page in the default browser")
    parser.set_defaults(func=cmd_report)
