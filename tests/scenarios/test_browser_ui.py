"""The MLflow UI as a user sees it: a finished fake-trial study, `orchestrator ui`, and Debian's Chromium in headless
mode reading the rendered pages. The trial runs must be listed with their objectives, and the Pareto page must
draw every finished trial, inside MLflow's artifact viewer too.

Chromium is installed by `.ci/run`; without it the test skips here and fails in CI (env CI set).
``ORCHESTRATOR_SCREENSHOTS=docs/img`` copies the screenshots it takes there (the README's come from this test).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from servers import free_port, stop
from study_files import fake_study

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # no calls home: this machine's closed network refuses them, slowly
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "Debian's chromium is not installed (`.ci/run` installs it: apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def browse(chromium: str, url: str, tmp: Path, shot: Path, width: int = 1600, wait_ms: int = 15000) -> str:
    """The DOM of ``url`` once its scripts and requests settled (virtual time), and a screenshot of it."""
    profile = tmp / f"profile-{shot.stem}"
    cmd = [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={width},900",
        f"--virtual-time-budget={wait_ms}",
        f"--screenshot={shot}",
        "--dump-dom",
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    return out.stdout


class Grid(HTMLParser):
    """MLflow's runs table (ag-grid): run id -> {column id: text}; a row is split over pinned and scrolled parts."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self._stack: list[tuple[str | None, str | None]] = []  # (row id, column id) in force at each open tag

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        row, col = self._stack[-1] if self._stack else (None, None)
        if a.get("role") == "row" and a.get("row-id"):
            row = a["row-id"]
        if a.get("role") == "gridcell" and a.get("col-id"):
            col = a["col-id"]
        if tag not in ("input", "br", "img", "path", "circle", "rect", "line", "meta", "link"):
            self._stack.append((row, col))

    def handle_endtag(self, tag):
        if self._stack and tag not in ("input", "br", "img", "path", "circle", "rect", "line", "meta", "link"):
            self._stack.pop()

    def handle_data(self, data):
        row, col = self._stack[-1] if self._stack else (None, None)
        if row and col and data.strip():
            cell = self.rows.setdefault(row, {})
            cell[col] = cell.get(col, "") + data.strip()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A fake-trial study run to the end by the real command (Ray, Optuna, MLflow stores under one folder)."""
    folder = tmp_path_factory.mktemp("browser")
    path = fake_study(folder, budget={"n_trials": 6})
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(path), "--no-live"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return path


@pytest.fixture(scope="module")
def ui(finished: Path):
    """`orchestrator ui` on the finished study: (base URL, {label: link}); stopped (only it) at the end."""
    port = free_port()
    opened = finished.parent / "opened.txt"
    browser = finished.parent / "browser.sh"  # what --open starts: Python's webbrowser honours $BROWSER
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "ui", str(finished), "--port", str(port), "--open"],
        cwd=finished.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, BROWSER=str(browser)),
    )
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        links = dict(line.strip().split(": ", 1) for line in lines[1:])
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, "the MLflow UI exited"
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the MLflow UI did not answer in 90 s"
                time.sleep(0.3)
        while not opened.is_file() and time.monotonic() < deadline:  # --open: once the server answers
            time.sleep(0.2)
        assert opened.read_text().strip() == links["trial runs"]
        yield base, links
    finally:
        stop(proc)


def _keep(shot: Path, name: str) -> None:
    folder = os.environ.get("ORCHESTRATOR_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(folder) / name)


def test_trial_runs_listed_with_objectives_and_pareto_page_drawn(chromium, finished, ui, tmp_path):
    from mlflow.tracking import MlflowClient

    from orchestrator.search import load_existing, pareto_front
    from orchestrator.study.file import load_study_spec

    base, links = ui
    spec = load_study_spec(finished)
    trials = load_existing(spec).get_trials(deepcopy=False)
    on_front = {t.number for t in pareto_front(trials, spec.directions)}
    client = MlflowClient(spec.tracking.uri)
    exp = client.get_experiment_by_name(spec.name)
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id], "tags.role = 'trial'", max_results=100)}
    assert len(runs) == 6

    # the link `ui` printed opens the saved trials view: every trial a row, its objectives in their columns
    assert links["trial runs"].startswith(f"{base}/#/experiments/{exp.experiment_id}/runs?viewStateShareKey=")
    shot = tmp_path / "mlflow-trial-runs.png"
    grid = Grid()
    grid.feed(browse(chromium, links["trial runs"], tmp_path, shot))
    assert set(grid.rows) == set(runs), "the table lists exactly the trial runs (the parent is not a row)"
    for run_id, cells in grid.rows.items():
        run = runs[run_id]
        assert cells["attributes.`Run Name`"].endswith(run.info.run_name)  # after the colour swatch's label
        for o in spec.objectives:
            shown = float(cells[f"metrics.`{o.metric}`"])  # the UI rounds to a few significant digits
            assert shown == pytest.approx(run.data.metrics[o.metric], rel=1e-3), (run.info.run_name, o.metric)
    _keep(shot, "mlflow-trial-runs.png")

    # the Pareto page inside MLflow's artifact viewer: a sandboxed iframe, its red front drawn on screen
    shot = tmp_path / "mlflow-pareto-page.png"
    dom = browse(chromium, links["Pareto page"], tmp_path, shot)
    assert re.search(r'<iframe[^>]*class="mlflow-html-iframe"', dom), "the artifact viewer did not embed the page"
    from PIL import Image

    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 24)
    front_red = sum(n for n, rgb in colours if rgb == (0xD6, 0x27, 0x28))  # pareto_page.FRONT
    assert front_red > 50 * len(on_front), f"{front_red} pixels of the front's red: the page is not drawn"
    _keep(shot, "mlflow-pareto-page.png")

    # the same page as the server stores it, laid out by the browser: one point per finished trial and the star
    parent = re.search(r"/runs/([0-9a-f]+)/artifactPath/", links["Pareto page"]).group(1)
    page = tmp_path / "pareto.html"
    with urllib.request.urlopen(f"{base}/get-artifact?path=pareto/pareto.html&run_uuid={parent}", timeout=10) as r:
        page.write_bytes(r.read())
    dom = browse(chromium, page.as_uri(), tmp_path, tmp_path / "pareto-alone.png", width=1000, wait_ms=2000)
    done = [t.number for t in trials if t.state.name == "COMPLETE"]
    drawn = re.search(r'<body[^>]*data-drawn="(\d+)"', dom)
    assert drawn and int(drawn.group(1)) == len(done) + 1  # + the unpruned model's star
    assert sorted(int(n) for n in re.findall(r'data-trial="(\d+)"', dom)) == sorted(done)
    front = {int(n) for n in re.findall(r'class="pt [a-z]+ front" data-trial="(\d+)"', dom)}
    assert front == on_front


@pytest.fixture(scope="module")
def real_finished(tmp_path_factory, assets) -> Path:
    """A real-trial study run to the end by the real command: its front trials keep models to draw with."""
    from study_files import tiny_real_study

    folder = tmp_path_factory.mktemp("browser-real")
    path = tiny_real_study(folder, assets)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(path), "--no-live"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return path


@pytest.mark.slow
def test_a_clicked_front_trial_shows_its_detections_beside_the_unpruned_models(chromium, real_finished, tmp_path):
    """The end of a real study draws the front's and the unpruned model's detections on the same 4 val images: in
    the parent run's artifacts, and inside its Pareto page, where opening ``#trial=N`` clicks that trial's point."""
    from mlflow.tracking import MlflowClient

    from orchestrator.search import load_existing, pareto_front
    from orchestrator.study.file import load_study_spec

    spec = load_study_spec(real_finished)
    trials = load_existing(spec).get_trials(deepcopy=False)
    on_front = sorted(t.number for t in pareto_front(trials, spec.directions))
    client = MlflowClient(spec.tracking.uri)
    exp = client.get_experiment_by_name(spec.experiment)
    (parent,) = client.search_runs([exp.experiment_id], "tags.role = 'study'")
    logged = sorted(a.path.rsplit("/", 1)[1] for a in client.list_artifacts(parent.info.run_id, "pareto/detections"))
    prefixes = ["unpruned"] + [f"trial-{n:04d}" for n in on_front]
    assert sorted({name.rsplit("-", 1)[0] for name in logged}) == sorted(prefixes)
    assert len(logged) == 4 * len(prefixes)  # the same 4 images for every model

    page = Path(client.download_artifacts(parent.info.run_id, "pareto/pareto.html", str(tmp_path)))
    n = on_front[-1]
    shot = tmp_path / "pareto-detections.png"
    dom = browse(chromium, f"{page.as_uri()}#trial={n}", tmp_path, shot, width=1100, wait_ms=3000)
    assert re.search(r'<body[^>]*data-detections="8"', dom) and f'data-detections-trial="{n}"' in dom
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", dom)
    assert [c.split(" · ")[0] for c in captions] == [f"trial {n}"] * 4 + ["unpruned"] * 4
    assert [c.split(" · ")[1] for c in captions[:4]] == [c.split(" · ")[1] for c in captions[4:]]
    assert re.search(rf'class="pt [a-z]+ front picked" data-trial="{n}"', dom), "the clicked point is not marked"
    from PIL import Image

    below = Image.open(shot).convert("L").crop((0, 500, 1100, 900))  # under the panel: the pictures, not white
    assert sum(below.histogram()[:200]) > 0.2 * below.width * below.height
    _keep(shot, "pareto-detections.png")
