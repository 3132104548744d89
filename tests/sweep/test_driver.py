"""The study loop end to end on fake trials: real Ray (one local instance), real Optuna and MLflow stores."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from study_files import fake_study, trial_runs

from orchestrator.errors import OrchestratorError
from orchestrator.search import feasible, load_existing, make_sampler
from orchestrator.study.dimensions import trial_ratios
from orchestrator.study.file import load_study_spec
from orchestrator.sweep.driver import run_study


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
    yield
    ray.shutdown()


def _states(spec) -> list[str]:
    return [t.state.name for t in load_existing(spec).get_trials(deepcopy=False)]


def test_constraints_reach_the_sampler_through_set_constraint(tmp_path):
    import optuna

    spec = load_study_spec(fake_study(tmp_path, constraints=["map50_95 >= 0.9 * baseline"], budget={"n_trials": 3}))
    assert run_study(spec, live=False).complete == 3
    for t in load_existing(spec).get_trials(deepcopy=False):
        want = 0.9 * 0.314 - t.user_attrs["metrics"]["map50_95"]
        assert t.constraints == {"map50_95 >= 0.9 * baseline": pytest.approx(want)}  # what Optuna's samplers read
        assert feasible(t) is (want <= 0)  # and what the front reads
    import warnings
    from dataclasses import replace

    assert type(make_sampler(spec, 0)) is optuna.samplers.TPESampler  # the default, also with several objectives
    for name in ("gp", "tpe", "nsga2", "random"):  # none takes a deprecated argument (constraints_func: Optuna 7)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            make_sampler(replace(spec, sampler=replace(spec.sampler, name=name)), 0)


def test_study_completes_and_mlflow_holds_every_trial(tmp_path):
    from mlflow.tracking import MlflowClient

    spec = load_study_spec(fake_study(tmp_path, tracking={"artifacts": "pareto"}))
    out = run_study(spec, live=False)
    assert out.stopped == "done" and out.complete == 6 and out.failed == 0
    trials = load_existing(spec).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    # uniform baselines run first, with the largest fine-tune budget
    assert [t.user_attrs.get("uniform_ratio") for t in trials[:2]] == [0.1, 0.3]
    assert all(t.params["epochs"] == 2 for t in trials[:2])
    assert len(set(trials[0].params.values()) - {2, trials[0].params["lr0"]}) == 1  # one ratio for every group

    runs = trial_runs(spec)
    assert sorted(runs) == list(range(6))
    c = MlflowClient(spec.tracking.uri)
    exp = c.get_experiment_by_name("fake")
    parents = c.search_runs([exp.experiment_id], filter_string="tags.role = 'study'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.metrics["baseline_map50_95"] == pytest.approx(0.314)
    assert "hypervolume" in parent.data.metrics
    assert parent.data.params["name"] == "fake"
    parent_files = {a.path for a in c.list_artifacts(parent.info.run_id, "pareto")}
    assert {"pareto/pareto.csv", "pareto/gflops_vs_map50_95.png", "pareto/hypervolume.png"} <= parent_files
    csv_rows = (tmp_path / "csv").mkdir() or c.download_artifacts(parent.info.run_id, "pareto/pareto.csv", tmp_path)
    front_numbers = {int(line.split(",")[0]) for line in open(csv_rows).read().splitlines()[1:]}
    assert front_numbers == set(out.front)
    for n, run in runs.items():
        t = trials[n]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["state"] == "COMPLETE" and run.data.tags["device"]
        # one param per group (so the UI's parallel coordinates work), plus epochs and lr0
        assert {k for k in run.data.params if k.startswith("ratio.")} == {k for k in t.params if k.startswith("ratio.")}
        assert float(run.data.params["lr0"]) == pytest.approx(t.params["lr0"])
        assert run.data.metrics["map50_95"] == pytest.approx(t.values[0])
        assert run.data.metrics["gflops"] == pytest.approx(t.values[1])
        history = c.get_metric_history(run.info.run_id, "epoch_box")
        assert [m.step for m in history] == list(range(t.params["epochs"]))
        files = {a.path for a in c.list_artifacts(run.info.run_id, "model")}
        if n in out.front:  # artifacts policy "pareto": every trial on the final front has its checkpoint
            assert files == {"model/pruned.pt", "model/ratios.json"}
    # nothing left waiting in the staging folder
    assert not any((tmp_path / "mlruns" / "staging").rglob("*.pt"))


def test_failing_trials_are_recorded_and_the_study_goes_on(tmp_path):
    spec = load_study_spec(fake_study(tmp_path, fake={"fail_on": [2], "nan_on": [3]}, budget={"n_trials": 5}))
    out = run_study(spec, live=False)
    assert out.complete == 5 and out.failed == 2
    trials = load_existing(spec).get_trials(deepcopy=False)
    assert trials[2].state.name == "FAIL" and "fake failure injected in trial 2" in trials[2].user_attrs["failure"]
    assert trials[3].state.name == "FAIL" and "loss became nan" in trials[3].user_attrs["failure"]
    runs = trial_runs(spec)
    assert runs[2].info.status == "FAILED" and "fake failure" in runs[2].data.tags["failure_reason"]
    assert "nan" in runs[3].data.tags["failure_reason"]
    assert sum(r.info.status == "FINISHED" for r in runs.values()) == 5


def test_killed_worker_is_replaced_and_its_trial_retried(tmp_path):
    spec = load_study_spec(fake_study(tmp_path, fake={"kill_on": [1]}, budget={"n_trials": 3}))
    out = run_study(spec, live=False)
    assert out.complete == 3 and out.failed == 0
    t1 = load_existing(spec).get_trials(deepcopy=False)[1]
    assert t1.state.name == "COMPLETE" and t1.user_attrs["attempt"] == 1  # ran again on a fresh worker
    assert "attempt" not in load_existing(spec).get_trials(deepcopy=False)[0].user_attrs


def test_a_worker_that_dies_twice_fails_its_trial_only(tmp_path):
    import io

    from rich.console import Console

    spec = load_study_spec(fake_study(tmp_path, fake={"kill_on": [2], "kill_twice": True}, budget={"n_trials": 3}))
    buf = io.StringIO()
    out = run_study(spec, live=True, console=Console(file=buf, force_terminal=True, width=120))
    assert out.complete == 3 and out.failed == 1
    t2 = load_existing(spec).get_trials(deepcopy=False)[2]
    assert t2.state.name == "FAIL" and t2.user_attrs["failure"].startswith("worker died twice: ")
    assert "fake: 3/3 complete" in buf.getvalue() and "current Pareto front" in buf.getvalue()  # the live view


def test_resume_reaches_n_trials_without_logging_twice(tmp_path):
    path = fake_study(tmp_path)
    spec = load_study_spec(path)
    assert run_study(spec, n_trials=3, live=False).complete == 3
    out = run_study(spec, live=False)  # same study, budget 6
    assert out.complete == 6
    assert _states(spec) == ["COMPLETE"] * 6
    assert sorted(trial_runs(spec)) == list(range(6))
    assert run_study(spec, live=False).complete == 6  # nothing left to do: no new trial, no new run
    assert len(_states(spec)) == 6 and len(trial_runs(spec)) == 6


def test_warm_start_runs_after_the_baselines_once_and_is_tagged(tmp_path):
    warm = {"name": "tpe", "warm_start": "global_magnitude"}
    spec = load_study_spec(fake_study(tmp_path, pruning={"method": "unstructured"}, sampler=warm))
    assert run_study(spec, n_trials=3, live=False).complete == 3
    assert run_study(spec, live=False).complete == 6  # the resume must not enqueue the warm start again
    trials = load_existing(spec).get_trials(deepcopy=False)
    assert [t.user_attrs.get("uniform_ratio") for t in trials[:2]] == [0.1, 0.3]
    assert [t.user_attrs.get("warm_start") for t in trials] == [None, None, 0.1, 0.3, None, None]
    assert all(t.params["epochs"] == 2 for t in trials[:4])  # the baselines' fine-tune budget
    warm = trial_ratios(trials[3].params)
    assert min(warm.values()) == pytest.approx(0.15) and max(warm.values()) == pytest.approx(0.45)
    runs = trial_runs(spec)
    assert [runs[n].data.tags["origin"] for n in range(4)] == ["uniform 0.1", "uniform 0.3", "warm 0.1", "warm 0.3"]
    assert runs[4].data.tags["origin"] == "sampler"


def test_a_second_driver_on_the_same_study_is_refused(tmp_path):
    spec = load_study_spec(fake_study(tmp_path))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from orchestrator.search import create_or_load, open_storage

        study = create_or_load(spec, open_storage(spec.storage))
        study.set_user_attr("driver", {"host": os.uname().nodename, "pid": other.pid, "token": "x", "beat": 0})
        with pytest.raises(OrchestratorError, match=f"being run by another driver \\(pid {other.pid}"):
            run_study(spec, live=False)
        assert _states(spec) == []
    finally:
        other.kill()
        other.wait()
    time.sleep(0.1)
    assert run_study(spec, n_trials=2, live=False).complete == 2  # its lease is stale once the process is gone


def test_gpu_study_on_a_cluster_without_gpus_is_refused(tmp_path):
    spec = load_study_spec(fake_study(tmp_path, resources={"gpus_per_trial": 1}))
    with pytest.raises(OrchestratorError, match="1 GPU per trial but the Ray cluster .* has no GPU"):
        run_study(spec, live=False)
    assert _states(spec) == []


def test_unreachable_tracker_stops_before_any_trial(tmp_path):
    spec = load_study_spec(fake_study(tmp_path, tracking={"uri": "http://user:hunter2@127.0.0.1:9/"}))
    with pytest.raises(OrchestratorError) as e:
        run_study(spec, live=False)
    msg = str(e.value)
    assert "does not answer" in msg and "hunter2" not in msg and "user:***@" in msg
    assert not (tmp_path / "mlruns").exists()


def test_status_pareto_and_ui_commands(tmp_path, capsys):
    import json
    import signal
    import socket

    from orchestrator.cli import main

    path = fake_study(tmp_path, fake={"fail_on": [3]}, budget={"n_trials": 5})
    run_study(load_study_spec(path), live=False)
    capsys.readouterr()
    assert main(["status", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"]["COMPLETE"] == 5 and status["counts"]["FAIL"] == 1
    assert status["trials"][3]["failure"].startswith("RuntimeError: fake failure injected in trial 3 (fake.py:")
    assert status["driver"] is None  # released at the end
    assert main(["pareto", str(path), "--json", "--export", str(tmp_path / "front"), "--no-onnx"]) == 0
    front = json.loads(capsys.readouterr().out)["front"]
    assert front and all(r["number"] in [t["number"] for t in status["trials"] if t["pareto"]] for r in front)
    for r in front:
        assert sorted(p.rsplit("/", 1)[-1] for p in r["files"]) == ["pruned.pt", "ratios.json"]
        assert (tmp_path / "front" / f"trial-{r['number']:04d}" / "pruned.pt").is_file()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ui = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "ui", str(path), "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert f"http://127.0.0.1:{port} (this machine only" in ui.stdout.readline()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("the MLflow UI did not start")
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=30)
        time.sleep(1)
        with socket.socket() as s:  # the server went with it: nothing left listening
            assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        if ui.poll() is None:
            ui.kill()


def test_missing_weights_and_data_stop_before_anything_is_created(tmp_path):
    spec = load_study_spec(fake_study(tmp_path, trial="real", model="weights/nope.pt", data="nowhere/data.yaml"))
    with pytest.raises(OrchestratorError) as e:
        run_study(spec, live=False)
    assert str(e.value).splitlines() == [
        f"{spec.path}: model: weights/nope.pt: no such weights file",
        f"{spec.path}: data: nowhere/data.yaml: no such data yaml",
    ]
    assert not (tmp_path / "mlruns").exists()


def test_screened_trials_are_told_infeasible_counted_apart_and_never_on_the_front(tmp_path):
    from orchestrator.search import SCREEN_CONSTRAINT, is_screened, pareto_front, trial_summary
    from orchestrator.study.metrics import ONESHOT

    spec = load_study_spec(fake_study(tmp_path, screen={"min_map": 0.5}, budget={"n_trials": 8}))
    out = run_study(spec, live=False)
    trials = load_existing(spec).get_trials(deepcopy=False)
    screened = [t for t in trials if is_screened(t)]
    tuned = [t for t in trials if t.state.name == "COMPLETE" and not is_screened(t)]
    assert out.stopped == "done" and out.complete == len(tuned) == 8 and out.screened == len(screened) > 0
    front = {t.number for t in pareto_front(trials, spec.directions)}
    for t in screened:  # COMPLETE to Optuna (TPE reads it), with the screen's constraint violated
        assert t.state.name == "COMPLETE" and t.constraints[SCREEN_CONSTRAINT] > 0 and not feasible(t)
        assert t.number not in front
        s = trial_summary(t)
        assert s["state"] == "SCREENED" and s["failure"].startswith("screened: one-shot mAP50-95 ")
        assert "\n" not in s["failure"] and " < 0.5 x 0.3140" in s["failure"]
        assert s["metrics"]["map50_95"] < 0.5 * 0.314
    for t in tuned:  # the same constraint, met; the one-shot figure kept for sampler trials
        assert t.constraints[SCREEN_CONSTRAINT] <= 0
        assert (ONESHOT in t.user_attrs["metrics"]) is (t.user_attrs.get("uniform_ratio") is None)
    from orchestrator.tracking.pareto_page import pareto_page

    page = pareto_page(
        trials, list(front_trials := pareto_front(trials, spec.directions)), spec, {}, tmp_path / "p.html"
    )
    assert f"{len(screened)} screened or stopped early (trials {screened[0].number}" in page.read_text()
    assert front_trials and not any(is_screened(t) for t in front_trials)
    runs = trial_runs(spec)
    assert all(runs[t.number].data.tags["state"] == "SCREENED" for t in screened)
    assert all(runs[t.number].info.status == "FINISHED" for t in screened)


def test_without_screen_no_trial_is_screened_nor_constrained(tmp_path):
    spec = load_study_spec(fake_study(tmp_path, budget={"n_trials": 4}))
    assert run_study(spec, live=False).screened == 0
    assert all(t.constraints == {} for t in load_existing(spec).get_trials(deepcopy=False))


def test_the_relative_space_runs_ratios_translated_from_level_and_offsets(tmp_path):
    from orchestrator.search import ATTR_RATIOS, STUDY_ALLOCATIONS, trial_summary
    from orchestrator.study.dimensions import LEVEL

    path = fake_study(
        tmp_path,
        pruning={"method": "unstructured", "granularity": "stage", "ratio": {"max": 0.6}, "step": 0.05},
        sampler={"space": "relative", "warm_start": "global_magnitude", "offset": 0.1},
        budget={"n_trials": 8},
    )
    spec = load_study_spec(path)
    assert run_study(spec, live=False).complete == 8
    study = load_existing(spec)
    trials, stored = study.get_trials(deepcopy=False), study.user_attrs[STUDY_ALLOCATIONS]
    maps = dict(zip(stored["levels"], stored["maps"]))
    for t in trials:
        ratios = t.user_attrs[ATTR_RATIOS]
        assert LEVEL in t.params and not any(k.startswith("ratio.") for k in t.params)
        assert trial_summary(t)["ratios"] == ratios and all(0.0 <= r <= 0.6 for r in ratios.values())
        base = maps[min(maps, key=lambda v: abs(v - t.params[LEVEL]))]
        if t.user_attrs.get("uniform_ratio") is not None:  # a uniform baseline runs its own exact map
            assert set(ratios.values()) == {t.user_attrs["uniform_ratio"]}
        else:  # every other trial perturbs the allocation at its level, within the offset
            assert all(abs(ratios[g] - base[g]) <= 0.1 + 0.025 + 1e-9 for g in ratios)  # + half a step: the grid
        if t.user_attrs.get("warm_start") is not None:  # the warm start is the allocation: offsets 0
            assert ratios == maps[t.user_attrs["warm_start"]]
    runs = trial_runs(spec)  # MLflow shows the ratios beside the level and offsets
    assert all(
        f"ratio.{g}" in runs[t.number].data.params and "level" in runs[t.number].data.params
        for t in trials
        for g in t.user_attrs[ATTR_RATIOS]
    )


def test_early_stopped_trials_keep_their_epochs_and_reason_and_are_never_on_the_front(tmp_path):
    from orchestrator.search import STOP_CONSTRAINT, is_screened, pareto_front, trial_summary

    path = fake_study(
        tmp_path,
        finetune={"epochs": {"min": 2, "max": 4}},
        objectives=[{"metric": "map50_95"}, {"metric": "nonzero_params"}],
        early_stop={"margin": 0.01},
        sampler={"seed": 1},
        budget={"n_trials": 12},
    )
    spec = load_study_spec(path)
    out = run_study(spec, live=False)
    trials = load_existing(spec).get_trials(deepcopy=False)
    stopped = [t for t in trials if trial_summary(t)["state"] == "STOPPED"]
    full = [t for t in trials if t.state.name == "COMPLETE" and not is_screened(t)]
    assert out.complete == len(full) == 12 and out.screened == len(stopped) > 0
    front = {t.number for t in pareto_front(trials, spec.directions)}
    for t in stopped:  # told COMPLETE with the stop's constraint violated; its epochs kept, fewer than asked
        s = trial_summary(t)
        assert t.constraints[STOP_CONSTRAINT] > 0 and not feasible(t) and t.number not in front
        assert 1 <= len(t.user_attrs["history"]) == t.user_attrs["stopped_epoch"] < t.params["epochs"]
        assert s["failure"].startswith(f"stopped after epoch {t.user_attrs['stopped_epoch']} of ")
        assert "\n" not in s["failure"] and s["origin"] == "sampler"
        ref = int(s["failure"].split("trial ")[1].split()[0])  # the cheaper trial it trails is a full one
        assert ref in {f.number for f in full}
        assert trials[ref].user_attrs["metrics"]["nonzero_params"] <= s["metrics"]["nonzero_params"]
    assert all(t.constraints[STOP_CONSTRAINT] == 0 for t in full)
    assert all(t.params["epochs"] == len(t.user_attrs["history"]) for t in full)
    assert all(trial_summary(t)["origin"] != "sampler" for t in full[:2])  # baselines always run in full


def test_early_stop_is_refused_where_it_could_not_compare_or_never_act(tmp_path):
    from orchestrator.errors import ConfigError

    late = fake_study(tmp_path, name="late", early_stop=True)  # objectives: map50_95 and gflops: known at the cut
    assert load_study_spec(late).early_stop.margin == 0.02
    cases = {
        "latency": ({"objectives": [{"metric": "map50_95"}, {"metric": "latency_ms"}]}, "early_stop: objective "),
        "never": ({"finetune": {"epochs": 2}, "early_stop": {"after": 2}}, "early_stop.after: 2 >= the most epochs"),
        "margin": ({"early_stop": {"margin": 1.5}}, "early_stop.margin: must be >= 0 and < 1"),
        "shape": ({"early_stop": "yes"}, "early_stop: must be true, false or"),
    }
    for name, (overrides, message) in cases.items():
        with pytest.raises(ConfigError) as e:
            load_study_spec(fake_study(tmp_path, name=name, **{"early_stop": True, **overrides}))
        assert message in str(e.value), name
