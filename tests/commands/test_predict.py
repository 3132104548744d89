"""``orchestrator predict`` through the CLI: annotated images, COCO records that score val's mAP, one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.cli import main
from orchestrator.yolo.coco_map import coco_ground_truth
from orchestrator.yolo.data import load_data_config
from orchestrator.yolo.labels import scan_labels

VAL_THRESHOLDS = ("--conf", "0.001", "--iou", "0.6")  # what `orchestrator val` runs NMS with


def _cli(*argv: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, ORCHESTRATOR_CACHE=str(cwd / "cache"))
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def _val_images(tmp_path: Path, assets: Path, n: int) -> list[Path]:
    """The first ``n`` coco128 val images, copied (the assets folder is never written into)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    files = sorted((assets / "coco128" / "images" / "val2017").glob("*.jpg"))[:n]
    return [Path(shutil.copy(f, folder / f.name)) for f in files]


def test_a_folder_with_a_broken_file_annotates_the_rest(tmp_path, assets, yolov5n_pt):
    photos = _val_images(tmp_path, assets, 3)
    (photos[0].parent / "broken.jpg").write_bytes(b"not a jpeg")
    (photos[0].parent / "notes.txt").write_text("not an image: passed over")
    out = tmp_path / "out"
    r = _cli("predict", "--weights", str(yolov5n_pt), "--source", str(photos[0].parent), "--imgsz", "224",
             "--out", str(out), "--json", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    warnings = r.stderr.strip().splitlines()
    assert len(warnings) == 1 and "broken.jpg: unreadable image" in warnings[0], r.stderr
    assert sorted(p.name for p in out.glob("*.jpg")) == sorted(p.name for p in photos)
    records = json.loads((out / "predictions.json").read_text())
    assert records and {tuple(sorted(d)) for d in records} == {("bbox", "category_id", "image_id", "score")}
    assert {d["image_id"] for d in records} <= {int(p.stem) for p in photos}
    assert min(d["score"] for d in records) >= 0.25  # the default threshold, as detect.py's
    assert f"{len(records)} boxes" in r.stdout
    for p in photos:  # same size as the original, with boxes drawn on it
        before, after = Image.open(p).convert("RGB"), Image.open(out / p.name).convert("RGB")
        assert after.size == before.size
        drawn = np.abs(np.asarray(after, np.int16) - np.asarray(before, np.int16)).max(axis=2) > 60
        boxes = [d for d in records if d["image_id"] == int(p.stem)]
        assert (drawn.mean() > 0.002) == bool(boxes)


def test_a_glob_and_a_single_image(tmp_path, monkeypatch, capsys, assets, yolov5n_pt):
    photos = _val_images(tmp_path, assets, 3)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--weights", str(yolov5n_pt), "--source", str(photos[0].parent / "*[59].jpg"),
                 "--imgsz", "224", "--out", "globbed"]) == 0  # fmt: skip
    assert capsys.readouterr().err == ""
    assert sorted(p.name for p in (tmp_path / "globbed").iterdir()) == [p.name for p in photos if p.stem[-1] in "59"]
    assert main(["predict", "--weights", str(yolov5n_pt), "--source", str(photos[1]), "--imgsz", "224"]) == 0
    assert [p.name for p in (tmp_path / "runs" / "predict").iterdir()] == [photos[1].name]


@pytest.mark.parametrize(
    "source, words",
    [
        ("nowhere/x.jpg", "no such image, folder or glob"),
        ("nothing-*.png", "the pattern matches no image"),
        ("coco128.yaml:valid", "unknown split 'valid'"),
        ("only-broken", "no usable image (1 unreadable or refused)"),
    ],
)
def test_nothing_usable_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, yolov5n_pt, source, words):
    """In-process (the subprocess cases above hold the CLI's wiring): the line and the code main() gives."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "only-broken").mkdir()
    (tmp_path / "only-broken" / "a.png").write_bytes(b"\x89PNG broken")
    assert main(["predict", "--weights", str(yolov5n_pt), "--source", source, "--imgsz", "224"]) == 2
    cap = capsys.readouterr()
    last = cap.err.strip().splitlines()[-1]
    assert cap.out == "" and last.startswith("error: ") and words in last, cap.err


def _coco_map(records: Path, coco128_yaml: Path) -> float:
    """mAP50-95 of a predictions.json by pycocotools itself, against the val labels (ids: the file stems)."""
    from pycocotools.cocoeval import COCOeval

    cfg = load_data_config(coco128_yaml, need=("val",))
    images = scan_labels(cfg.val, cfg.nc)
    gt = coco_ground_truth(images.labels, images.shapes, [int(f.stem) for f in images.files], cfg.nc)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(str(records)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def _predict_and_val(tmp_path: Path, weights: Path, coco128_yaml: Path) -> tuple[float, float]:
    """(pycocotools' mAP50-95 of predict's JSON over the val split, `orchestrator val`'s), at imgsz 320."""
    out = tmp_path / f"pred-{weights.stem}"
    r = _cli("predict", "--weights", str(weights), "--source", f"{coco128_yaml}:val", "--imgsz", "320",
             "--out", str(out), "--json", *VAL_THRESHOLDS, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("*.jpg"))) == 64 and r.stdout.startswith("64 annotated images")
    v = _cli("val", "--weights", str(weights), "--data", str(coco128_yaml), "--imgsz", "320", "--json", cwd=tmp_path)
    assert v.returncode == 0, v.stderr
    return _coco_map(out / "predictions.json", coco128_yaml), json.loads(v.stdout)["map50_95"]


@pytest.mark.slow
def test_the_json_scores_what_val_scores(tmp_path, yolov5n_pt, coco128_yaml):
    predicted, validated = _predict_and_val(tmp_path, yolov5n_pt, coco128_yaml)
    assert predicted == pytest.approx(validated, abs=0.002)
    assert validated == pytest.approx(0.3132, abs=0.002)  # REFERENCE.md: pycocotools on official predictions


@pytest.mark.slow
def test_the_int8_onnx_json_scores_what_val_scores(tmp_path, yolov5n_pt, coco128_yaml):
    onnx = tmp_path / "yolov5n.int8.onnx"
    r = _cli("export", "--weights", str(yolov5n_pt), "--int8", "--data", str(coco128_yaml), "--imgsz", "320",
             "--calib-images", "16", "--out", str(onnx), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    predicted, validated = _predict_and_val(tmp_path, onnx, coco128_yaml)
    assert predicted == pytest.approx(validated, abs=0.002)
    assert 0.2 < validated < 0.3132 + 0.01  # int8 costs a little accuracy, never gains much
