"""The interactive Pareto page: every finished trial a point in each objective-pair panel, the front, baselines,
warm starts and the unpruned model marked, the held-out test figures of the front and the baselines beside their
val points and in a table, everything inside one file (read back with an HTML parser)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import optuna
import pytest
from study_files import fake_study

from orchestrator.search import pareto_front
from orchestrator.study.file import load_study_spec
from orchestrator.tracking.pareto_page import pareto_page


class Points(HTMLParser):
    """The page's panels and, per panel, its points' classes and hover data; every src/href seen."""

    def __init__(self):
        super().__init__()
        self.panels: list[dict] = []
        self.links: list[str] = []
        self.rows: dict[int, list[str]] = {}  # the held-out table: trial -> cell texts
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [v for k, v in a.items() if k in ("src", "href") and v]
        if tag == "svg" and "panel" in a.get("class", ""):
            self.panels.append({"x": a["data-x"], "y": a["data-y"], "points": []})
        elif "pt" in a.get("class", "").split():
            xy = _centre(tag, a)
            self.panels[-1]["points"].append((set(a["class"].split()), json.loads(a["data-info"]), xy))
        elif tag == "tr" and "data-trial" in a:
            self._row = self.rows.setdefault(int(a["data-trial"]), [])
        elif tag == "td" and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._row:
            self._row[-1] += data


def _centre(tag: str, a: dict) -> tuple[float, float] | None:
    """A marker's centre in pixels (circles and the 10-px squares; None for polygons)."""
    if tag == "circle":
        return float(a["cx"]), float(a["cy"])
    if tag == "rect":
        return float(a["x"]) + 5, float(a["y"]) + 5
    return None


def _trials(spec, test: bool = False):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=spec.directions)
    dist = {
        "ratio.model.2": optuna.distributions.FloatDistribution(0, 0.6),
        "epochs": optuna.distributions.IntDistribution(0, 2),
    }
    values = [(0.30, 1.0, 9e5), (0.25, 0.8, 8e5), (0.20, 0.9, 8.5e5), (0.10, 0.5, 5e5), (0.05, 0.7, 6e5)]
    for i, (q, g, p) in enumerate(values):
        t = study.ask(dist)
        t.set_user_attr("metrics", {"map50_95": q, "gflops": g, "params": p})
        if i == 1:
            t.set_user_attr("uniform_ratio", 0.3)
        if i == 2:
            t.set_user_attr("warm_start", 0.3)
        if test:  # sealed by every trial; only the front's and the baselines' are ever shown
            t.set_user_attr("test_metrics", {"test_map50_95": q - 0.05, "test_map50": q + 0.1, "test_images": 16.0})
        study.tell(t, [{"map50_95": q, "gflops": g, "params": p}[o.metric] for o in spec.objectives])
    t = study.ask(dist)
    t.set_user_attr("failure", "boom")
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    return study.get_trials()


@pytest.mark.parametrize("n_objectives", [2, 3])
def test_every_trial_is_a_point_in_every_pair(tmp_path, n_objectives):
    objectives = [{"metric": "map50_95"}, {"metric": "gflops"}, {"metric": "params"}][:n_objectives]
    spec = load_study_spec(fake_study(tmp_path, objectives=objectives))
    trials = _trials(spec)
    front = pareto_front(trials, spec.directions)
    page = pareto_page(trials, front, spec, {"map50_95": 0.35, "gflops": 1.1, "params": 1e6}, tmp_path / "p.html")
    doc = Points()
    doc.feed(page.read_text())
    pairs = {2: [("gflops", "map50_95")], 3: [("gflops", "map50_95"), ("params", "map50_95"), ("params", "gflops")]}
    assert [(p["x"], p["y"]) for p in doc.panels] == pairs[n_objectives]
    assert doc.links == []  # nothing fetched when MLflow's sandboxed viewer shows it
    on_front = {t.number for t in front}
    for panel in doc.panels:
        trials_drawn = {info["trial"]: cls for cls, info, _ in panel["points"] if "trial" in info}
        assert sorted(trials_drawn) == [0, 1, 2, 3, 4]  # the failed trial 5 has no point
        assert {n for n, cls in trials_drawn.items() if "front" in cls} == on_front
        assert "uniform" in trials_drawn[1] and "warm" in trials_drawn[2] and "sampler" in trials_drawn[3]
        (star,) = [info for cls, info, _ in panel["points"] if "unpruned" in cls]
        assert star[panel["x"]] == {"map50_95": 0.35, "gflops": 1.1, "params": 1e6}[panel["x"]]
    info = dict((i["trial"], i) for _, i, _ in doc.panels[0]["points"] if "trial" in i)[1]
    assert info["run"] == "trial-0001" and info["origin"] == "uniform 0.3"
    assert info["map50_95"] == 0.25 and set(info["ratios"]) == {"model.2"} and info["epochs"] in (0, 1, 2)
    assert not any("test" in cls for p in doc.panels for cls, _, _ in p["points"]) and doc.rows == {}


@pytest.mark.parametrize("n_objectives", [2, 3])
def test_held_out_figures_sit_beside_the_val_points(tmp_path, n_objectives):
    objectives = [{"metric": "map50_95"}, {"metric": "gflops"}, {"metric": "params"}][:n_objectives]
    spec = load_study_spec(fake_study(tmp_path, objectives=objectives))
    trials = _trials(spec, test=True)
    front = pareto_front(trials, spec.directions)
    shown = {t.number for t in front} | {1}  # the front and the uniform baseline (trial 1); the others stay sealed
    assert shown != {0, 1, 2, 3, 4}
    page = pareto_page(trials, front, spec, {"map50_95": 0.35, "gflops": 1.1, "params": 1e6}, tmp_path / "p.html")
    text = page.read_text()
    doc = Points()
    doc.feed(text)
    q = {t.number: t.user_attrs["metrics"]["map50_95"] for t in trials if "metrics" in t.user_attrs}
    for panel in doc.panels:
        held = {info["trial"]: (info, xy) for cls, info, xy in panel["points"] if "test" in cls}
        val = {info["trial"]: (info, xy) for cls, info, xy in panel["points"] if "trial" in info and "test" not in cls}
        if "map50_95" not in (panel["x"], panel["y"]):  # params vs gflops: no mAP axis, nothing held out to draw
            assert held == {} and all("test_map50_95" in val[n][0] for n in shown)
            continue
        assert set(held) == shown
        for n in shown:
            info, (cx, cy) = held[n]
            assert info["test_map50_95"] == pytest.approx(q[n] - 0.05) and info["val map50_95"] == q[n]
            assert info["test_map50"] == pytest.approx(q[n] + 0.1) and info["test_images"] == 16
            vinfo, v_xy = val[n]
            assert vinfo["test_map50_95"] == info["test_map50_95"]  # the val point's card shows both
            if v_xy is not None:  # same cost, lower mAP: drawn straight below its val point
                assert cx == pytest.approx(v_xy[0]) and cy > v_xy[1]
        assert all("test_map50_95" not in val[n][0] for n in set(val) - shown)
    assert set(doc.rows) == shown
    for n in shown:
        number, origin, val50_95, test50_95, val50, test50, images = doc.rows[n]
        assert int(number) == n and float(val50_95) == q[n] and float(test50_95) == pytest.approx(q[n] - 0.05)
        assert val50 == "" and float(test50) == pytest.approx(q[n] + 0.1) and images == "16"
    assert "held-out test" in text and "chosen on val, never on test" in text


def test_figures_computed_on_demand_can_be_passed_in(tmp_path):
    """`pareto --test` validates trials that sealed nothing; the page draws the figures it is handed."""
    spec = load_study_spec(fake_study(tmp_path))
    trials = _trials(spec)
    front = pareto_front(trials, spec.directions)
    given = {front[0].number: {"test_map50_95": 0.01, "test_map50": 0.02}}
    page = pareto_page(trials, front, spec, {}, tmp_path / "p.html", test=given)
    doc = Points()
    doc.feed(page.read_text())
    (held,) = [info for cls, info, _ in doc.panels[0]["points"] if "test" in cls]
    assert held["trial"] == front[0].number and held["test_map50_95"] == 0.01 and list(doc.rows) == list(given)


def test_no_finished_trial_says_so(tmp_path):
    spec = load_study_spec(fake_study(tmp_path))
    page = pareto_page([], [], spec, {}, tmp_path / "p.html").read_text()
    assert "No finished trial yet" in page and '<svg class="panel"' not in page


def test_detections_ride_in_the_page_as_data_uris_and_as_files(tmp_path):
    """The page carries each front trial's pictures and the unpruned model's inside itself (no file beside it),
    and the same JPEGs are written for MLflow under names that say whose they are."""
    import base64
    import io
    from dataclasses import dataclass

    from PIL import Image

    from orchestrator.tracking.pareto_page import write_detections

    @dataclass(frozen=True)
    class Thumb:
        image: str
        jpeg: bytes
        boxes: int

    @dataclass(frozen=True)
    class Found:
        unpruned: tuple
        trials: dict
        missing: dict

    def jpeg(colour: str) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (32, 24), colour).save(buf, format="JPEG")
        return buf.getvalue()

    spec = load_study_spec(fake_study(tmp_path))
    trials = _trials(spec)
    front = pareto_front(trials, spec.directions)
    shown, left_out = front[0].number, front[-1].number
    found = Found(
        unpruned=(Thumb("a.jpg", jpeg("red"), 3), Thumb("b.jpg", jpeg("blue"), 0)),
        trials={shown: (Thumb("a.jpg", jpeg("green"), 1), Thumb("b.jpg", jpeg("white"), 2))},
        missing={left_out: "its checkpoint is gone </script>"},
    )
    html_text = pareto_page(trials, front, spec, {}, tmp_path / "p.html", detections=found).read_text()
    blob = html_text.split('<script type="application/json" id="detections-data">', 1)[1].split("</script>", 1)[0]
    data = json.loads(blob)  # a reason holding "</script>" did not end the element early
    assert data["missing"] == {str(left_out): "its checkpoint is gone </script>"}
    assert [(i["name"], i["boxes"]) for i in data["trials"][str(shown)]] == [("a.jpg", 1), ("b.jpg", 2)]
    srcs = [i["src"] for i in data["unpruned"]]
    assert [base64.b64decode(s.split(",", 1)[1]) for s in srcs] == [t.jpeg for t in found.unpruned]
    assert '<section id="detections" hidden>' in html_text and "click a point for its detections" in html_text
    files = write_detections(found, tmp_path / "detections")
    assert sorted(f.name for f in files) == sorted(
        ["unpruned-a.jpg", "unpruned-b.jpg", f"trial-{shown:04d}-a.jpg", f"trial-{shown:04d}-b.jpg"]
    )
    assert (tmp_path / "detections" / f"trial-{shown:04d}-b.jpg").read_bytes() == found.trials[shown][1].jpeg
    no_pictures = pareto_page(trials, front, spec, {}, tmp_path / "q.html").read_text()
    assert 'id="detections-data"' not in no_pictures and '<section id="detections"' not in no_pictures
