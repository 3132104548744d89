"""The interactive Pareto page: every finished trial a point in each objective-pair panel, the front, baselines,
warm starts and the unpruned model marked, everything inside one file (read back with an HTML parser)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import optuna
import pytest
from study_files import fake_study

from orchestrator.pareto_page import pareto_page
from orchestrator.search import pareto_front
from orchestrator.study_file import load_study_spec


class Points(HTMLParser):
    """The page's panels and, per panel, its points' classes and hover data; every src/href seen."""

    def __init__(self):
        super().__init__()
        self.panels: list[dict] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [v for k, v in a.items() if k in ("src", "href") and v]
        if tag == "svg" and "panel" in a.get("class", ""):
            self.panels.append({"x": a["data-x"], "y": a["data-y"], "points": []})
        elif "pt" in a.get("class", "").split():
            self.panels[-1]["points"].append((set(a["class"].split()), json.loads(a["data-info"])))


def _trials(spec):
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
        trials_drawn = {info["trial"]: cls for cls, info in panel["points"] if "trial" in info}
        assert sorted(trials_drawn) == [0, 1, 2, 3, 4]  # the failed trial 5 has no point
        assert {n for n, cls in trials_drawn.items() if "front" in cls} == on_front
        assert "uniform" in trials_drawn[1] and "warm" in trials_drawn[2] and "sampler" in trials_drawn[3]
        (star,) = [info for cls, info in panel["points"] if "unpruned" in cls]
        assert star[panel["x"]] == {"map50_95": 0.35, "gflops": 1.1, "params": 1e6}[panel["x"]]
    info = dict((i["trial"], i) for _, i in doc.panels[0]["points"] if "trial" in i)[1]
    assert info["run"] == "trial-0001" and info["origin"] == "uniform 0.3"
    assert info["map50_95"] == 0.25 and set(info["ratios"]) == {"model.2"} and info["epochs"] in (0, 1, 2)


def test_no_finished_trial_says_so(tmp_path):
    spec = load_study_spec(fake_study(tmp_path))
    page = pareto_page([], [], spec, {}, tmp_path / "p.html").read_text()
    assert "No finished trial yet" in page and '<svg class="panel"' not in page
