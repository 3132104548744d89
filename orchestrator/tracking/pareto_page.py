"""An interactive Pareto page of a study: one standalone HTML file (inline SVG, a few lines of script), no network.

Why a small writer and not a plotting library: MLflow's artifact viewer shows an HTML artifact in a sandboxed
iframe with scripts allowed but nothing fetched, so the page must carry everything. plotly (the usual choice)
inlines its runtime in every standalone page (7.1.0: plotly.min.js, 4.8 MB) and adds a dependency for what is a
few scatter panels; bokeh likewise.
Inline SVG is a few kB per study, renders with scripts off (every point keeps an SVG ``<title>`` tooltip), and
its points are plain DOM elements a browser test can count. The hover card is the only script.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Protocol

from ..search import ATTR_BASELINE, ATTR_METRICS, ATTR_WARM_START, is_screened, revealed, trial_summary
from ..study.metrics import HELD_OUT, QUALITY
from ..study.spec import StudySpec


class Thumbnail(Protocol):
    """One annotated val image (``trial.detections.Thumbnail``): its file name, JPEG bytes, boxes drawn."""

    image: str
    jpeg: bytes
    boxes: int


class PageDetections(Protocol):
    """What ``trial.detections.front_detections`` returns: the same images drawn by the unpruned model and by
    each trial, and why a trial has none (tracking reads it; it never runs a model)."""

    unpruned: Sequence[Thumbnail]
    trials: Mapping[int, Sequence[Thumbnail]]
    missing: Mapping[int, str]


W, H = 460, 360  # one panel
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 48
FRONT, OTHER, UNIFORM, WARM, TEST = "#d62728", "#9e9e9e", "#1f77b4", "#2ca02c", "#9467bd"


def pareto_page(
    trials: list,
    front: list,
    spec: StudySpec,
    baseline: dict[str, float],
    path: Path,
    test: dict | None = None,
    detections: PageDetections | None = None,
) -> Path:
    """Write ``path``: every finished trial a point in one panel per objective pair, the front in red, uniform
    baselines as squares, warm starts as triangles, the unpruned model as a star; hover for the trial.

    Held-out test figures (``test``: trial number -> ``test_map50_95``/``test_map50``..., by default what
    ``holdout.revealed`` hands out: the front and the uniform baselines) are drawn beside the val point of their
    trial, as a hollow purple circle joined to it in every panel with a mAP axis, and listed val beside test in a
    table under the panels.

    ``detections``: clicking a point (or opening the page at ``#trial=N``) shows that trial's annotated val images
    above the unpruned model's, the same pictures side by side; they are embedded as data URIs (JPEG), so the
    page stays one file that works offline and inside MLflow's artifact viewer."""
    test = revealed(trials, spec.directions) if test is None else test
    done = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get(ATTR_METRICS) and not is_screened(t)]
    on_front = {t.number for t in front}
    objectives = [o.metric for o in spec.objectives]
    directions = {o.metric: o.direction for o in spec.objectives}
    # every objective pair; one objective alone is drawn against mAP50-95 (or the size, when it is mAP50-95)
    axes = objectives if len(objectives) > 1 else [*objectives, QUALITY if objectives != [QUALITY] else "params"]
    pairs = list(combinations(axes, 2))
    test = {t.number: test[t.number] for t in done if test.get(t.number)}
    line = len(spec.objectives) == 2
    panels = [_panel(x, y, done, on_front, baseline, directions, line, test) for y, x in pairs]
    n_front = sum(1 for t in done if t.number in on_front)
    body = "\n".join(panels) if done else "<p>No finished trial yet: the page is refreshed as trials finish.</p>"
    summary = f"{len(done)} finished trials, {n_front} on the Pareto front"
    screened = [t.number for t in trials if is_screened(t)]
    if screened:  # their figures are one-shot, not fine-tuned: listed, not drawn beside the others
        shown = ", ".join(map(str, screened[:20])) + (", ..." if len(screened) > 20 else "")
        summary += f"; {len(screened)} screened or stopped early (trials {shown}: under the floor or a cheaper trial)"
    if test:
        summary += f"; {len(test)} checked once on the held-out test split (chosen on val, never on test)"
    if detections is not None:
        summary += "; click a point for its detections beside the unpruned model's"
    page = _PAGE.format(
        title=html.escape(f"{spec.name}: Pareto front"),
        summary=html.escape(summary),
        legend=_LEGEND + (_TEST_KEY if test else ""),
        body=body,
        table=_test_table(done, test),
        detections=_detections_block(detections),
        script=_SCRIPT,
    )
    path.write_text(page, encoding="utf-8")
    return path


def _panel(
    x: str, y: str, done: list, on_front: set[int], baseline: dict, directions: dict, line: bool, test: dict
) -> str:
    pts = [(t, t.user_attrs[ATTR_METRICS]) for t in done]
    pts = [(t, m[x], m[y]) for t, m in pts if _num(m.get(x)) and _num(m.get(y))]
    held = [
        (t, px, py, _held_out(x, px, test.get(t.number)), _held_out(y, py, test.get(t.number))) for t, px, py in pts
    ]
    held = [h for h in held if (h[3], h[4]) != (h[1], h[2])]  # a test twin on at least one axis
    xs = [p[1] for p in pts] + [h[3] for h in held] + ([baseline[x]] if _num(baseline.get(x)) else [])
    ys = [p[2] for p in pts] + [h[4] for h in held] + ([baseline[y]] if _num(baseline.get(y)) else [])
    if not xs:
        return f'<p class="panel">No trial has both {html.escape(x)} and {html.escape(y)}.</p>'
    sx, xticks = _scale(xs, LEFT, W - RIGHT)
    sy, yticks = _scale(ys, H - BOTTOM, TOP)
    out = [f'<svg class="panel" width="{W}" height="{H}" viewBox="0 0 {W} {H}" data-x="{x}" data-y="{y}">']
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" class="plot"/>')
    for v in xticks:
        out.append(f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{TOP}" y2="{H - BOTTOM}" class="grid"/>')
        out.append(f'<text x="{sx(v):.1f}" y="{H - BOTTOM + 16}" class="tick" text-anchor="middle">{v:g}</text>')
    for v in yticks:
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" class="grid"/>')
        out.append(f'<text x="{LEFT - 6}" y="{sy(v) + 4:.1f}" class="tick" text-anchor="end">{v:g}</text>')
    out.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 10}" text-anchor="middle">{_label(x, directions)}</text>')
    mid = (TOP + H - BOTTOM) / 2
    out.append(f'<text transform="translate(14,{mid}) rotate(-90)" text-anchor="middle">{_label(y, directions)}</text>')
    if line:  # two objectives: the front is a curve in its only panel
        fr = sorted((p for p in pts if p[0].number in on_front), key=lambda p: p[1])
        if len(fr) > 1:
            d = " ".join(f"{sx(px):.1f},{sy(py):.1f}" for _, px, py in fr)
            out.append(f'<polyline points="{d}" class="front-line"/>')
    for _, px, py, tx, ty in held:  # val -> held-out test, under the points
        out.append(f'<line x1="{sx(px):.1f}" y1="{sy(py):.1f}" x2="{sx(tx):.1f}" y2="{sy(ty):.1f}" class="test-link"/>')
    for t, px, py in sorted(pts, key=lambda p: p[0].number in on_front):  # front drawn last, on top
        out.append(_point(t, sx(px), sy(py), t.number in on_front, test.get(t.number)))
    for t, px, py, tx, ty in held:
        out.append(_test_point(t, sx(tx), sy(ty), test[t.number], {x: px, y: py}))
    if _num(baseline.get(x)) and _num(baseline.get(y)):
        info = {"unpruned model": "", x: baseline[x], y: baseline[y]}
        out.append(
            f'<polygon class="pt unpruned" points="{_star(sx(baseline[x]), sy(baseline[y]))}" '
            f'data-info="{html.escape(json.dumps(info))}"><title>unpruned model</title></polygon>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _detections_block(detections: PageDetections | None) -> str:
    """The hidden panel the script fills on a click, and the images as JSON (data URIs) it fills it from."""
    if detections is None:
        return ""

    def images(thumbs: Sequence[Thumbnail]) -> list[dict]:
        return [
            {"name": t.image, "boxes": t.boxes, "src": "data:image/jpeg;base64," + base64.b64encode(t.jpeg).decode()}
            for t in thumbs
        ]

    data = {
        "unpruned": images(detections.unpruned),
        "trials": {str(n): images(th) for n, th in detections.trials.items()},
        "missing": {str(n): why for n, why in detections.missing.items()},
    }
    blob = json.dumps(data).replace("</", "<\\/")  # never closes its <script> element early
    return (
        f'<script type="application/json" id="detections-data">{blob}</script>\n'
        '<section id="detections" hidden><h2 id="det-title"></h2><div id="det-grid" class="det-grid"></div></section>'
    )


def write_detections(detections: PageDetections, folder: Path) -> list[Path]:
    """The page's annotated images as files (``unpruned-NAME.jpg``, ``trial-0005-NAME.jpg``) for MLflow."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    named = [("unpruned", detections.unpruned)] + [(f"trial-{n:04d}", t) for n, t in sorted(detections.trials.items())]
    for prefix, thumbs in named:
        for t in thumbs:
            path = folder / f"{prefix}-{Path(t.image).stem}.jpg"
            path.write_bytes(t.jpeg)
            out.append(path)
    return out


def _held_out(metric: str, val: float, figures: dict | None) -> float:
    """The held-out twin of a val figure (test_map50_95 for map50_95), or the val figure when it has none."""
    v = (figures or {}).get(f"test_{metric}") if metric in HELD_OUT else None
    return v if _num(v) else val


def _test_point(t, cx: float, cy: float, figures: dict, val: dict[str, float]) -> str:
    info = {
        "trial": t.number,
        "run": f"trial-{t.number:04d}",
        "origin": trial_summary(t)["origin"],
        "held-out test (val point: the filled marker)": "",
        **{k: v for k, v in sorted(figures.items())},
        **{f"val {k}": v for k, v in val.items() if k in HELD_OUT},
    }
    attrs = f'class="pt test" data-trial="{t.number}" data-info="{html.escape(json.dumps(info))}"'
    title = f"<title>trial {t.number}: held-out test</title>"
    return f'<circle {attrs} cx="{cx:.1f}" cy="{cy:.1f}" r="5">{title}</circle>'


def _test_table(done: list, test: dict) -> str:
    """The revealed trials, val beside held-out test for each mAP (no script needed to read it)."""
    if not test:
        return ""
    head = "".join(f"<th>{m} val</th><th>{m} test</th>" for m in HELD_OUT)
    rows = []
    for t in done:
        if t.number not in test:
            continue
        val, held = t.user_attrs[ATTR_METRICS], test[t.number]
        cells = "".join(f"<td>{_fmt(val.get(m))}</td><td>{_fmt(held.get(f'test_{m}'))}</td>" for m in HELD_OUT)
        origin = html.escape(trial_summary(t)["origin"])
        n_img = held.get("test_images")
        rows.append(
            f'<tr data-trial="{t.number}"><td>{t.number}</td><td>{origin}</td>{cells}<td>{_fmt(n_img)}</td></tr>'
        )
    return (
        '<table class="test"><caption>Held-out test split: each trial validated once on images no selection has '
        f"seen</caption><tr><th>trial</th><th>origin</th>{head}<th>test images</th></tr>{''.join(rows)}</table>"
    )


def _fmt(v) -> str:
    if not _num(v):
        return ""
    return f"{v:.0f}" if float(v).is_integer() and abs(v) >= 1 else f"{v:.4f}"


def _point(t, cx: float, cy: float, front: bool, held: dict | None = None) -> str:
    s = trial_summary(t)
    info = {
        "trial": t.number,
        "run": f"trial-{t.number:04d}",
        "origin": s["origin"],
        **{k: v for k, v in sorted(s["metrics"].items())},
        **{k: v for k, v in sorted((held or {}).items()) if k != "test_images"},
        **{k: v for k, v in s["dimensions"].items() if v is not None},
        "ratios": s["ratios"],
    }
    kind = "uniform" if t.user_attrs.get(ATTR_BASELINE) is not None else "sampler"
    if t.user_attrs.get(ATTR_WARM_START) is not None:
        kind = "warm"
    cls = f"pt {kind}{' front' if front else ''}"
    attrs = f'class="{cls}" data-trial="{t.number}" data-info="{html.escape(json.dumps(info))}"'
    title = f"<title>trial {t.number} ({html.escape(s['origin'])})</title>"
    if kind == "uniform":
        return f'<rect {attrs} x="{cx - 5:.1f}" y="{cy - 5:.1f}" width="10" height="10">{title}</rect>'
    if kind == "warm":
        pts = f"{cx:.1f},{cy - 6:.1f} {cx - 6:.1f},{cy + 5:.1f} {cx + 6:.1f},{cy + 5:.1f}"
        return f'<polygon {attrs} points="{pts}">{title}</polygon>'
    return f'<circle {attrs} cx="{cx:.1f}" cy="{cy:.1f}" r="{6 if front else 4.5}">{title}</circle>'


def _scale(values: list[float], a: float, b: float):
    """A linear map of ``values`` (padded 5%) onto pixels ``a..b`` and its round-number ticks."""
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - (abs(lo) or 1) * 0.05, hi + (abs(hi) or 1) * 0.05
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    step = _nice_step((hi - lo) / 5)
    ticks = [k * step for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)]
    return (lambda v: a + (v - lo) / (hi - lo) * (b - a)), [round(v, 12) for v in ticks]


def _nice_step(raw: float) -> float:
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _star(cx: float, cy: float, r: float = 10) -> str:
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        a = math.pi / 2 + k * math.pi / 5
        pts.append(f"{cx + rad * math.cos(a):.1f},{cy - rad * math.sin(a):.1f}")
    return " ".join(pts)


def _label(metric: str, directions: dict[str, str]) -> str:
    d = directions.get(metric)
    return html.escape(metric + ("" if d is None else f" ({'lower' if d == 'minimize' else 'higher'} is better)"))


def _num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _key(shape: str, label: str) -> str:
    return f'<span class="key"><svg width="14" height="14">{shape}</svg> {label}</span>'


_LEGEND = "".join(
    [
        _key(f'<circle cx="7" cy="7" r="5" fill="{FRONT}"/>', "Pareto front"),
        _key(f'<circle cx="7" cy="7" r="4" fill="{OTHER}"/>', "sampled trial"),
        _key(f'<rect x="2" y="2" width="10" height="10" fill="none" stroke="{UNIFORM}" stroke-width="2"/>', "uniform"),
        _key(f'<polygon points="7,1 1,12 13,12" fill="none" stroke="{WARM}" stroke-width="2"/>', "warm start"),
        _key(f'<polygon points="{_star(7, 7, 7)}" fill="#000"/>', "unpruned model"),
    ]
)

_TEST_KEY = _key(f'<circle cx="7" cy="7" r="5" fill="none" stroke="{TEST}" stroke-width="2"/>', "held-out test")

_SCRIPT = """
const card = document.getElementById('card');
function fmt(v) { return typeof v === 'number' ? (Number.isInteger(v) ? v : v.toPrecision(4)) :
  (v && typeof v === 'object') ? Object.entries(v).map(([k, r]) => k + '=' + fmt(r)).join(', ') : String(v); }
document.querySelectorAll('.pt').forEach(el => {
  el.addEventListener('mouseenter', ev => {
    const info = JSON.parse(el.dataset.info);
    card.replaceChildren(...Object.entries(info).map(([k, v]) => {
      const row = document.createElement('div'); row.textContent = v === '' ? k : k + ': ' + fmt(v); return row; }));
    card.style.display = 'block';
    card.style.left = (ev.pageX + 14) + 'px'; card.style.top = (ev.pageY + 10) + 'px';
    document.querySelectorAll('[data-trial="' + el.dataset.trial + '"]').forEach(p => p.classList.add('hl'));
  });
  el.addEventListener('mouseleave', () => {
    card.style.display = 'none';
    document.querySelectorAll('.hl').forEach(p => p.classList.remove('hl'));
  });
});
// detections: a click on a point (or #trial=N in the URL) shows its annotated images above the unpruned model's
const detData = document.getElementById('detections-data');
const det = detData ? JSON.parse(detData.textContent) : null;
function figure(img, label) {
  const f = document.createElement('figure');
  const i = document.createElement('img'); i.src = img.src; i.alt = label + ': ' + img.name;
  const c = document.createElement('figcaption');
  c.textContent = label + ' · ' + img.name + ' · ' + img.boxes + (img.boxes === 1 ? ' box' : ' boxes');
  f.append(i, c); return f;
}
function showDetections(n) {
  if (!det) return;
  const panel = document.getElementById('detections'), grid = document.getElementById('det-grid');
  const mine = det.trials[n] || [];
  document.getElementById('det-title').textContent = mine.length ? 'Trial ' + n + ' (top) and the unpruned model ' +
    '(bottom) on the same val images' : 'Trial ' + n + ': no detections drawn (' + (det.missing[n] ||
    'not on the front when the study ended') + '); the unpruned model:';
  grid.style.gridTemplateColumns = 'repeat(' + Math.max(det.unpruned.length, 1) + ', minmax(0, 320px))';
  grid.replaceChildren(...mine.map(im => figure(im, 'trial ' + n)), ...det.unpruned.map(im => figure(im, 'unpruned')));
  panel.hidden = false;
  document.querySelectorAll('.pt.picked').forEach(p => p.classList.remove('picked'));
  document.querySelectorAll('.pt[data-trial="' + n + '"]').forEach(p => p.classList.add('picked'));
  document.body.dataset.detections = grid.querySelectorAll('img').length;
  document.body.dataset.detectionsTrial = n;
}
document.querySelectorAll('.pt[data-trial]').forEach(el => el.addEventListener('click', () => {
  showDetections(el.dataset.trial);
  history.replaceState(null, '', '#trial=' + el.dataset.trial);
}));
const wanted = /trial=([0-9]+)/.exec(location.hash);
if (wanted) {  // the same click a user gives, on the trial's first point
  const el = document.querySelector('.pt[data-trial="' + wanted[1] + '"]');
  if (el) el.dispatchEvent(new MouseEvent('click', {bubbles: true})); else showDetections(wanted[1]);
}
// points the browser laid out (a box of non-zero size): what a headless browser test reads back
document.body.dataset.drawn = [...document.querySelectorAll('.pt')].filter(p => p.getBBox().width > 0).length;
"""

_PAGE = (
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 13px system-ui, sans-serif; margin: 12px; color: #222; }}
h1 {{ font-size: 16px; margin: 0 0 4px; }} .summary {{ color: #555; margin-bottom: 6px; }}
.key {{ margin-right: 14px; white-space: nowrap; }} .key svg {{ vertical-align: middle; }}
.panels {{ display: flex; flex-wrap: wrap; gap: 8px; margin-top: 8px; }}
.plot {{ fill: #fff; stroke: #ccc; }} .grid {{ stroke: #eee; }} .tick {{ font-size: 10px; fill: #555; }}
.pt {{ cursor: pointer; }} .pt.sampler {{ fill: OTHER; }} .pt.front {{ fill: FRONT; }}
.pt.uniform {{ fill: none; stroke: UNIFORM; stroke-width: 2; }}
.pt.warm {{ fill: none; stroke: WARM; stroke-width: 2; }}
.pt.uniform.front, .pt.warm.front {{ fill: FRONT; fill-opacity: .35; }}
.pt.unpruned {{ fill: #000; }} .pt.hl {{ stroke: #000; stroke-width: 2.5; }}
.front-line {{ fill: none; stroke: FRONT; stroke-width: 1.5; opacity: .7; }}
.pt.test {{ fill: none; stroke: TEST; stroke-width: 2; }} .test-link {{ stroke: TEST; stroke-dasharray: 3 2; }}
table.test {{ border-collapse: collapse; margin-top: 10px; }} table.test caption {{ text-align: left; color: #555; }}
table.test td, table.test th {{ border: 1px solid #ddd; padding: 2px 8px; text-align: right; }}
#detections {{ margin-top: 12px; }} #detections h2 {{ font-size: 14px; margin: 0 0 6px; }}
.det-grid {{ display: grid; gap: 6px; }} .det-grid figure {{ margin: 0; }}
.det-grid img {{ display: block; max-width: 100%; max-height: 220px; border: 1px solid #ccc; }}
.det-grid figcaption {{ font-size: 11px; color: #555; }} .pt.picked {{ stroke: #000; stroke-width: 3; }}
#card {{ position: absolute; display: none; background: #fffff4; border: 1px solid #999; padding: 6px 8px;
  max-width: 420px; box-shadow: 0 2px 6px rgba(0,0,0,.2); pointer-events: none; }}
</style></head><body>
<h1>{title}</h1><div class="summary">{summary}; hover a point for its trial (run name, origin, metrics, epochs,
ratios).</div>
<div>{legend}</div>
<div class="panels">
{body}
</div>
{table}
{detections}
<div id="card"></div>
<script>{script}</script>
</body></html>
""".replace("OTHER", OTHER)
    .replace("FRONT", FRONT)
    .replace("UNIFORM", UNIFORM)
    .replace("WARM", WARM)
    .replace("TEST", TEST)
)
