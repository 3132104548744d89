"""``pareto --register``: a real study's trial becomes a version in the MLflow Model Registry that a fresh process
loads with ``mlflow.onnx.load_model`` and runs on an image; tags and model card hold the trial's figures."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from study_files import tiny_real_study, trial_runs

from orchestrator.cli import main
from orchestrator.study.file import load_study_spec

pytestmark = pytest.mark.slow  # a real study: two trials, about a minute on 2 idle cores
RULE = "max ort_speedup where map50_95 >= 0.4 * baseline"


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "orchestrator", *argv]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def study(tmp_path_factory, assets) -> Path:
    folder = tmp_path_factory.mktemp("register")
    path = tiny_real_study(folder, assets)
    r = _cli("run", str(path), "--no-live", cwd=folder)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return path


def _status(study: Path, capsys) -> dict:
    assert main(["status", str(study), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_register_load_back_and_register_again(study, assets, capsys):
    spec = load_study_spec(study)
    r = _cli("pareto", str(study), "--register", "tiny-yolo", "--pick", RULE, "--json", cwd=study.parent)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["name"], got["version"], got["model_uri"]) == ("tiny-yolo", 1, "models:/tiny-yolo/1")
    status = _status(study, capsys)
    trials = {t["number"]: t for t in status["trials"]}
    base = status["baseline"]["map50_95"]
    front = [n for n, t in trials.items() if t["pareto"] and t["state"] == "COMPLETE"]
    eligible = [n for n in front if trials[n]["metrics"]["map50_95"] >= 0.4 * base]
    best = max(eligible, key=lambda n: (trials[n]["metrics"]["ort_speedup"], -n))
    assert got["trial"] == best  # the rule's choice, recomputed here from status's own figures
    metrics = trials[best]["metrics"]

    # a fresh process that knows nothing of orchestrator: MLflow and ONNX Runtime only
    image = sorted((assets / "coco128" / "images" / "val2017").glob("*.jpg"))[0]
    script = textwrap.dedent(f"""
        import json, os, cv2, numpy as np, mlflow, mlflow.onnx, onnxruntime
        mlflow.set_tracking_uri({spec.tracking.uri!r})
        model = mlflow.onnx.load_model("models:/tiny-yolo/1")
        session = onnxruntime.InferenceSession(model.SerializeToString())
        im = cv2.resize(cv2.imread({str(image)!r}), (64, 64))[:, :, ::-1].transpose(2, 0, 1)[None] / 255.0
        y = session.run(None, {{"images": np.ascontiguousarray(im, dtype=np.float32)}})[0]
        files = sorted(os.listdir(mlflow.artifacts.download_artifacts("models:/tiny-yolo/1/extra_files")))
        sig = mlflow.models.get_model_info("models:/tiny-yolo/1").signature.inputs.to_dict()
        print(json.dumps({{"shape": list(y.shape), "conf": float((y[0, :, 4:5] * y[0, :, 5:]).max()),
                           "files": files, "signature": sig}}))
    """)
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    out = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert out["shape"] == [1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 85]  # imgsz 64: three levels of anchors, 80 classes
    assert 0.05 < out["conf"] <= 1  # a real detector's scores on a real photo, not noise
    assert out["files"] == ["pruned.pt"]
    assert out["signature"] == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [1, 3, 64, 64]},
                                 "name": "images"}]  # fmt: skip

    from mlflow.tracking import MlflowClient

    c = MlflowClient(spec.tracking.uri)
    v = c.get_model_version("tiny-yolo", "1")
    assert v.run_id == trial_runs(spec)[best].info.run_id  # logged from the trial's own run
    assert v.tags["study"] == "tiny" and v.tags["trial"] == str(best) and v.tags["imgsz"] == "64"
    assert v.tags["quantization"] == "none"
    assert float(v.tags["val_map50_95"]) == pytest.approx(metrics["map50_95"], rel=1e-5)
    assert float(v.tags["ort_speedup"]) == pytest.approx(metrics["ort_speedup"], rel=1e-5)
    assert float(v.tags["size_mb"]) == pytest.approx(metrics["size_mb"], rel=1e-5)
    card = v.description
    assert card.startswith(f"# tiny-yolo v1: trial {best} of study `tiny`")
    assert f"| mAP50-95 (val) | {metrics['map50_95']:.4g} |" in card
    assert f'--register tiny-yolo --pick "{RULE}"' in card and 'load_model("models:/tiny-yolo/1")' in card

    other = next(n for n in trials if trials[n]["state"] == "COMPLETE" and n != best)
    again = _cli("pareto", str(study), "--register", "tiny-yolo", "--trial", str(other), cwd=study.parent)
    assert again.returncode == 0, again.stderr
    assert again.stderr == "" and again.stdout.startswith(f"registered trial {other} of tiny as models:/tiny-yolo/2")
    assert c.get_model_version("tiny-yolo", "2").tags["trial"] == str(other)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--pick", "fastest please"], "--pick 'fastest please': expected 'max METRIC' or 'min METRIC'"),
        (["--pick", "max ort_speedup where map50_95 >= 2 * baseline"], "none of the"),
        (["--trial", "99"], "--trial 99: no such trial in study 'tiny'"),
        (["--trial", "0", "--pick", "max map50"], "exactly one of --trial N or --pick RULE"),
    ],
)
def test_a_bad_choice_is_one_line_and_exit_2(study, capsys, argv, words):
    assert main(["pareto", str(study), "--register", "tiny-yolo", *argv]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1 and words in cap.err, cap.err
