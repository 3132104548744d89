"""Passwords in storage, tracking and weight URLs never reach a printed line, an error, an MLflow param, tag or
artifact, whatever characters they hold (SQLAlchemy reads ``u:p%40ss/w@host`` as the password ``p@ss/w``)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
from mlflow.tracking import MlflowClient
from study_files import fake_study, trial_runs

from orchestrator.cli import main
from orchestrator.errors import OrchestratorError
from orchestrator.search import ATTR_FAILURE, create_or_load, open_storage
from orchestrator.study.file import load_study_spec
from orchestrator.tracking.tracker import Tracker
from orchestrator.urls import mask_url

MARK = "Zq9"  # at both ends of every password: a mask that stops early or starts late still shows it
# passwords as written in a URL: plain, raw '/', '%40' + '/', ':' '?' '#', a raw '@', a space, percent-escapes only
PASSWORDS = [
    f"{MARK}s3cret{MARK}",
    f"{MARK}p/w{MARK}",
    f"{MARK}p%40ss/w{MARK}",
    f"{MARK}p:q?x#y{MARK}",
    f"{MARK}p@ss{MARK}",
    f"{MARK}p w{MARK}",
    quote(f"{MARK}@/:?# {MARK}", safe=""),
]
# where a password sits: Optuna storages (SQLAlchemy URLs), MLflow trackers, weights
FORMS = [
    "postgresql+psycopg2://u:{pw}@127.0.0.1:9/db",
    "postgresql://optuna:{pw}@db.example:5432/studies?sslmode=require",
    "mysql+pymysql://root:{pw}@127.0.0.1:9/optuna",
    "http://u:{pw}@127.0.0.1:9",
    "https://alice:{pw}@mlflow.example/",
]


def _clean(text: str) -> bool:
    return MARK not in text and MARK.lower() not in text.lower()


@pytest.mark.parametrize(
    "url, masked",
    [
        ("postgresql://optuna:s3cret@db:5432/studies", "postgresql://optuna:***@db:5432/studies"),
        ("postgresql+psycopg2://u:p%40ss:w@db/x", "postgresql+psycopg2://u:***@db/x"),
        ("postgresql+psycopg2://u:p%40ss/w@host/db", "postgresql+psycopg2://u:***@host/db"),
        ("http://u:p%40ss/w@host", "http://u:***@host"),
        ("postgresql://u:p@x@host/db", "postgresql://u:***@host/db"),  # SQLAlchemy: 'p'; urllib: 'p@x'
        ("mysql://root:pw@127.0.0.1/optuna?charset=utf8", "mysql://root:***@127.0.0.1/optuna?charset=utf8"),
        ("https://alice:tok3n@mlflow.example.com/", "https://alice:***@mlflow.example.com/"),
        (
            "postgresql://db/x?user=u&password=pw&sslmode=require",
            "postgresql://db/x?user=u&password=***&sslmode=require",
        ),
        ("host=db password=p@ss/w dbname=x", "host=db password=*** dbname=x"),
        ("https://store.example/w.pt?token=abc&x=1", "https://store.example/w.pt?token=***&x=1"),
        ("could not connect to mysql://a:b@h/db: refused", "could not connect to mysql://a:***@h/db: refused"),
        ("a postgresql://u:pw@h/db and https://a:b/c@d/e end", "a postgresql://u:***@h/db and https://a:***@d/e end"),
        (
            "storage: postgresql://u:p/w@h/db\nuri: http://m:5000\n",
            "storage: postgresql://u:***@h/db\nuri: http://m:5000\n",
        ),
        ("sqlite:///mlruns/optuna.db", "sqlite:///mlruns/optuna.db"),
        ("journal:///shared/optuna.log", "journal:///shared/optuna.log"),
        ("http://mlflow:5000", "http://mlflow:5000"),
        ("ray://head:10001", "ray://head:10001"),
        ("", ""),
    ],
)
def test_mask_url(url: str, masked: str):
    assert mask_url(url) == masked


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("pw", PASSWORDS)
def test_every_password_form_is_masked_alone_in_text_and_decoded(form: str, pw: str):
    from sqlalchemy.engine import make_url

    url = form.format(pw=pw)
    assert _clean(mask_url(url)) and "***" in mask_url(url)
    assert _clean(mask_url(f"error: cannot reach {url}: refused\nnext line"))
    if form.startswith(("postgresql", "mysql")):  # what SQLAlchemy hands the driver: the decoded password
        decoded = make_url(url).password
        assert MARK in decoded
        assert _clean(mask_url(f"FATAL: password {decoded!r} rejected", url))


def _secret_study(tmp_path: Path, pw: str, **overrides) -> Path:
    return fake_study(
        tmp_path,
        storage=f"postgresql://optuna:{pw}@127.0.0.1:9/studies",
        tracking={"uri": f"https://bob:{pw}@127.0.0.1:9/"},
        model=f"https://user:{pw}@weights.example/yolov5n.pt",
        **overrides,
    )


@pytest.mark.parametrize("pw", PASSWORDS)
def test_check_and_ui_print_masked_urls(tmp_path, capsys, monkeypatch, pw: str):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # `ui` asks the (absent) server for links once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    path = _secret_study(tmp_path, pw)
    assert main(["check", str(path), "--json"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary["storage"] == "postgresql://optuna:***@127.0.0.1:9/studies"
    assert summary["tracking"] == "https://bob:***@127.0.0.1:9/"
    assert summary["model"] == "https://user:***@weights.example/yolov5n.pt"
    assert _clean(out.out + out.err)
    assert main(["check", str(path)]) == 0  # the table
    out = capsys.readouterr()
    assert "https://bob:***@127.0.0.1:9/" in out.out and _clean(out.out + out.err)
    assert main(["ui", str(path)]) == 0  # a tracking server: named, not started
    out = capsys.readouterr()
    assert "https://bob:***@127.0.0.1:9/" in out.out and _clean(out.out + out.err)


@pytest.mark.parametrize("pw", PASSWORDS)
def test_unreachable_stores_are_named_without_their_password(tmp_path, capsys, pw: str):
    url = f"postgresql://optuna:{pw}@127.0.0.1:9/studies"
    with pytest.raises(OrchestratorError) as e:
        open_storage(url)
    assert str(e.value).startswith("cannot open the Optuna storage postgresql://optuna:***@127.0.0.1:9/studies: ")
    assert _clean(str(e.value))
    # the whole command: the tracking server does not answer; stderr names it masked
    assert main(["run", str(_secret_study(tmp_path, pw)), "--no-live"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the MLflow tracking server https://bob:***@127.0.0.1:9/ does not answer")
    assert _clean(err)
    # a local tracker, the storage unreachable: its error is masked too
    path = fake_study(tmp_path, name="st", storage=url)
    assert main(["run", str(path), "--no-live"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot open the Optuna storage postgresql://optuna:***@127.0.0.1:9/studies")
    assert _clean(err)


def test_mlflow_params_tags_and_study_file_are_masked(tmp_path):
    """The parent run logs the study file (params + study.yaml) and the storage URL; trial tags carry reasons.

    One MLflow store for every password form (creating one takes seconds): a study per form.
    """
    from sqlalchemy.engine import make_url

    for i, pw in enumerate(PASSWORDS):
        path = fake_study(
            tmp_path,
            name=f"s{i}",
            model=f"https://user:{pw}@weights.example/yolov5n.pt",
            storage=f"postgresql+psycopg2://optuna:{pw}@db.example/studies",
        )
        spec = load_study_spec(path)
        assert MARK in spec.text  # what the user wrote
        tracker = Tracker(spec, spec.storage)
        tracker.open()
        study = optuna.create_study(directions=spec.directions)
        t = study.ask({"epochs": optuna.distributions.IntDistribution(0, 2)})
        decoded = make_url(spec.storage).password  # what a driver's message may quote
        t.set_user_attr(ATTR_FAILURE, f"OperationalError: connection to {spec.storage} failed ({decoded})")
        study.tell(t, state=optuna.trial.TrialState.FAIL)
        assert tracker.log_trial(study.trials[0], None, keep_files=False)
        tracker.finish()

        c = MlflowClient(spec.tracking.uri)
        parent = c.get_run(tracker.parent_id)
        assert parent.data.tags["storage"] == "postgresql+psycopg2://optuna:***@db.example/studies"
        assert parent.data.params["model"] == "https://user:***@weights.example/yolov5n.pt"
        assert parent.data.params["storage"] == "postgresql+psycopg2://optuna:***@db.example/studies"
        logged = Path(c.download_artifacts(tracker.parent_id, "study.yaml", str(tmp_path / f"dl{i}"))).read_text()
        assert "user:***@weights.example" in logged and _clean(logged), pw
        trial = c.get_run(tracker.runs[0].run_id)
        assert "postgresql+psycopg2://optuna:***@db.example/studies failed" in trial.data.tags["failure_reason"]
        everything = [parent.data.params, parent.data.tags, trial.data.params, trial.data.tags]
        assert _clean(json.dumps(everything)), pw


def test_status_masks_failure_reasons(tmp_path, capsys):
    path = fake_study(tmp_path)
    spec = load_study_spec(path)
    study = create_or_load(spec, open_storage(spec.storage))
    t = study.ask({"epochs": optuna.distributions.IntDistribution(0, 2)})
    t.set_user_attr(ATTR_FAILURE, f"cannot reach https://bob:{PASSWORDS[2]}@mlflow.example/")
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    assert main(["status", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["trials"][0]["failure"] == "cannot reach https://bob:***@mlflow.example/"
    assert main(["status", str(path)]) == 0
    assert _clean(out + capsys.readouterr().out)


# ---------------------------------------------------------------------------------------------------------------
# A real PostgreSQL on loopback, when this machine has one to start (the server binaries and psycopg 3, the driver
# SQLAlchemy 2 picks for postgresql://). Otherwise the tests above stand on SQLAlchemy's URL parser alone.
PG_PASSWORD = "p@ss/w:x?#"  # the role's password; in the URL: p%40ss/w:x%3F%23 ('/' and ':' raw)


def _pg_bin() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").exists():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _unavailable(why: str) -> None:
    """Skip, except in CI (``.ci/run`` installs the server; CI sets ``CI``, as for the assets) or with
    ORCHESTRATOR_TEST_POSTGRES=required: there a missing server is a failure, never a silent skip."""
    if os.environ.get("CI") or os.environ.get("ORCHESTRATOR_TEST_POSTGRES") == "required":
        pytest.fail(f"the PostgreSQL test is required here: {why}")
    pytest.skip(why)


@pytest.fixture
def postgres(tmp_path_factory):
    """A throwaway PostgreSQL cluster on 127.0.0.1 with a role whose password holds '@', '/', ':', '?', '#'."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg 3 is not installed (pip install 'psycopg[binary]')")
    pg = _pg_bin()
    if pg is None:
        _unavailable("no PostgreSQL server binaries (initdb) on this machine")
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        if not shutil.which("runuser"):
            _unavailable("running as root without runuser: cannot start PostgreSQL as another user")
        as_user = ["runuser", "-u", "postgres", "--"]
    folder = Path("/tmp") / f"pg-{os.getpid()}-{time.monotonic_ns()}"  # its socket path must stay short
    folder.mkdir()
    (folder / "pw").write_text("admin-pw\n")
    if as_user:
        shutil.chown(folder, "postgres")
        shutil.chown(folder / "pw", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "db"

    def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=60, **kw)

    r = sh(str(pg / "initdb"), "-D", str(data), "-A", "scram-sha-256", "-U", "admin", f"--pwfile={folder / 'pw'}")
    if r.returncode:
        shutil.rmtree(folder, ignore_errors=True)
        _unavailable(f"initdb failed: {r.stderr.strip()[-200:]}")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
    r = sh(str(pg / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(folder / "log"), "-w", "start")
    try:
        if r.returncode:
            _unavailable(f"PostgreSQL did not start: {r.stderr.strip()[-200:]}")
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="admin", password="admin-pw", dbname="postgres") as c:
            c.autocommit = True
            c.execute(f"CREATE ROLE optuna LOGIN PASSWORD '{PG_PASSWORD}'")
            c.execute("CREATE DATABASE studies OWNER optuna")
        yield port
    finally:
        sh(str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_study_on_a_real_postgresql_prints_no_password(tmp_path, postgres):
    port = postgres
    pw_in_url = PG_PASSWORD.replace("@", "%40").replace("?", "%3F").replace("#", "%23")  # '/' and ':' stay raw
    good = f"postgresql://optuna:{pw_in_url}@127.0.0.1:{port}/studies"
    model = f"https://u:{pw_in_url}@weights.example/yolov5n.pt"
    path = fake_study(tmp_path, storage=good, model=model, budget={"n_trials": 3})
    secret = ("p@ss/w", "p%40ss/w", "x?#", "x%3F")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    run = [sys.executable, "-m", "orchestrator", "run", str(path), "--no-live"]
    out = subprocess.run(run, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "3 trials complete" in out.stderr
    assert not any(s in out.stdout + out.stderr for s in secret)
    spec = load_study_spec(path)
    assert optuna.load_study(study_name=spec.name, storage=good).trials[2].state.name == "COMPLETE"
    runs = trial_runs(spec)
    assert sorted(runs) == [0, 1, 2]
    parent = MlflowClient(spec.tracking.uri).search_runs(
        [runs[0].info.experiment_id], filter_string="tags.role = 'study'"
    )[0]
    assert parent.data.tags["storage"] == f"postgresql://optuna:***@127.0.0.1:{port}/studies"
    logged = json.dumps([parent.data.params, parent.data.tags])
    assert not any(s in logged for s in secret)
    # the wrong password: the driver's error, one line, masked
    bad = fake_study(tmp_path, name="bad", storage=good.replace("p%40ss", "wrong%40ss"))
    out = subprocess.run([*run[:4], str(bad), "--no-live"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "password authentication failed" in out.stderr
    assert "wrong" not in out.stderr and not any(s in out.stderr for s in secret)
