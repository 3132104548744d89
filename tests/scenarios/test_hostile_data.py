"""Hostile dataset files are named in one line each, and the same by ``check``, ``val`` and ``finetune``.

Each file is built here from a few coco128 images (tests/hostile.py): a JPEG cut short (libjpeg decoded it grey
below the cut and printed an anonymous "Premature end of JPEG file"), an image listed but missing (OpenCV printed
its own ``[ WARN ]`` line), a val split without one labelled object (mAP 0 whatever the model), a label path that
is a folder (the image became a background silently), ``a.jpg`` and ``a.png`` sharing ``a.txt``, an ONNX file
whose every output is +inf or NaN (0.12 mAP50), a damaged label cache, ``finetune`` without a usable val image.
Where what reaches the terminal is the point, the CLI runs in a subprocess and its whole stderr is compared.
Issue 27 ("Low").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import yaml
from data_subsets import copied_splits
from hostile import onnx_constant_output, truncated_jpeg

from orchestrator.cli import main
from orchestrator.yolo.labels import label_path

LEAKS = ("Premature end of JPEG", "Corrupt JPEG", "[ WARN", "Traceback")


@pytest.fixture
def ds(tmp_path: Path, monkeypatch, assets: Path) -> Path:
    """``ds/data.yaml`` over 3 train and 3 val coco128 images (copies, with their labels), and ``ds/study.yaml``."""
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "cache"))
    data = copied_splits(assets, tmp_path / "ds", train=3, val=3)
    study = {"name": "hostile", "model": str(assets / "yolov5n.pt"), "data": str(data), "imgsz": 64}
    (data.parent / "study.yaml").write_text(yaml.safe_dump(study))
    return data.parent


def _images(ds: Path, split: str) -> list[Path]:
    return sorted((ds / "images" / split).iterdir())


def _cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m orchestrator *argv``: what a user's terminal gets, C libraries' own writes to stderr included."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *argv], cwd=cwd, capture_output=True, text=True, timeout=300,
        env=dict(os.environ),
    )  # fmt: skip


def _weights(ds: Path) -> str:
    return yaml.safe_load((ds / "study.yaml").read_text())["model"]


def _val(ds: Path, *more: str) -> list[str]:
    return ["val", "--weights", _weights(ds), "--data", str(ds / "data.yaml"), "--imgsz", "64", *more]


def _finetune(ds: Path, epochs: str = "0") -> list[str]:
    return [
        "finetune", "--weights", _weights(ds), "--data", str(ds / "data.yaml"), "--imgsz", "64", "--epochs", epochs,
        "--batch", "2", "--workers", "0", "--out", str(ds / "out.pt"),
    ]  # fmt: skip


def test_a_truncated_jpeg_is_named_and_skipped_by_check_val_and_finetune_alike(ds: Path, tmp_path: Path):
    """Cut short, it is skipped by the label scan with one line naming it; libjpeg says nothing of its own."""
    cut = _images(ds, "val")[0]
    truncated_jpeg(cut, cut)
    why = f"{cut}: truncated JPEG (no end-of-image marker; a copy cut short?); skipped"
    check = _cli(["check", str(ds / "study.yaml")], tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stderr == f"warning: {ds}/data.yaml: val: 1 data problems, 1 of 3 images skipped; first: {why}\n"
    val = _cli([*_val(ds), "--json"], tmp_path)
    assert val.returncode == 0, val.stderr
    assert val.stderr == f"warning: 1 data problem(s), images skipped or rows dropped: {why}\n"
    assert yaml.safe_load(val.stdout)["images"] == 2
    finetune = _cli([*_finetune(ds), "--json"], tmp_path)
    assert finetune.returncode == 0, finetune.stderr
    assert finetune.stderr == check.stderr  # the same words as check


def test_a_missing_image_is_named_once_without_opencvs_warning(ds: Path, capfd):
    """A list file naming an image that is not there: our line names it; OpenCV's ``[ WARN ]`` line is silenced
    (captured at the file descriptor, where OpenCV writes)."""
    listed = [*map(str, _images(ds, "val")), str(ds / "images" / "val" / "gone.jpg")]
    (ds / "val.txt").write_text("\n".join(listed) + "\n")
    doc = yaml.safe_load((ds / "data.yaml").read_text())
    (ds / "data.yaml").write_text(yaml.safe_dump(dict(doc, val=str(ds / "val.txt"))))
    assert main(["check", str(ds / "study.yaml")]) == 0
    err = capfd.readouterr().err
    assert err == (
        f"warning: {ds}/data.yaml: val: 1 data problems, 1 of 4 images skipped; first: "
        f"{ds}/images/val/gone.jpg: no such file; skipped\n"
    )


def test_a_val_split_without_one_labelled_object_is_warned(ds: Path, capfd):
    for label in (ds / "labels" / "val").iterdir():
        label.write_text("")
    assert main(["check", str(ds / "study.yaml")]) == 0
    why = (
        f"warning: {ds}/data.yaml: val: none of its 3 usable images has a labelled object: every mAP on it is 0, "
        "whatever the model\n"
    )
    assert capfd.readouterr().err == why
    assert main([*_val(ds), "--json"]) == 0
    assert capfd.readouterr().err == why


def test_a_label_path_that_is_a_folder_skips_its_image_by_name(ds: Path, capfd):
    label = label_path(_images(ds, "train")[0])
    label.unlink()
    label.mkdir()
    assert main(["check", str(ds / "study.yaml")]) == 0
    assert capfd.readouterr().err == (
        f"warning: {ds}/data.yaml: train: 1 data problems, 1 of 3 images skipped; first: "
        f"{label}: label path is a folder; image skipped\n"
    )


def test_two_images_sharing_one_label_file_are_named_together(ds: Path, capfd):
    jpg = _images(ds, "train")[0]
    png = jpg.with_suffix(".png")
    assert cv2.imwrite(str(png), cv2.imread(str(jpg)))
    assert main(["check", str(ds / "study.yaml")]) == 0
    assert capfd.readouterr().err == (
        f"warning: {ds}/data.yaml: train: {label_path(jpg)}: is the label file of {jpg} and {png}; both images use "
        "its boxes\n"
    )
    png.unlink()
    val_jpg = _images(ds, "val")[0]  # val says so in check's words
    val_png = val_jpg.with_suffix(".png")
    assert cv2.imwrite(str(val_png), cv2.imread(str(val_jpg)))
    assert main([*_val(ds), "--json"]) == 0
    assert capfd.readouterr().err == (
        f"warning: {ds}/data.yaml: val: {label_path(val_jpg)}: is the label file of {val_jpg} and {val_png}; both "
        "images use its boxes\n"
    )


@pytest.mark.parametrize("value", [float("inf"), float("nan")], ids=["+inf", "NaN"])
def test_an_onnx_file_whose_every_output_is_not_finite_is_refused(ds: Path, tmp_path: Path, value: float):
    onnx = onnx_constant_output(tmp_path / "broken.onnx", value)
    out = _cli(["val", "--weights", str(onnx), "--data", str(ds / "data.yaml"), "--imgsz", "64"], tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    kind = "+inf" if value > 0 else "NaN"
    assert out.stderr == (
        f"error: {onnx}: every output value is {kind} (for a 64x64 input): not a working detector\n"
    ), out.stderr


@pytest.mark.parametrize(
    "damage, why",
    [(b"", "an empty file"), (b"PK\x03\x04 not a zip at all", "BadZipFile: File is not a zip file")],
    ids=["empty", "PK-not-a-zip"],
)
def test_a_damaged_label_cache_is_rebuilt_with_one_note(ds: Path, tmp_path: Path, capfd, damage: bytes, why: str):
    assert main(["check", str(ds / "study.yaml")]) == 0 and capfd.readouterr().err == ""
    caches = sorted((tmp_path / "cache" / "labels").glob("*.npz"))
    assert len(caches) == 2  # one per split
    caches[0].write_bytes(damage)
    assert main(["check", str(ds / "study.yaml")]) == 0
    assert capfd.readouterr().err == f"note: {caches[0]}: damaged label cache ({why}); labels scanned again\n"
    assert main(["check", str(ds / "study.yaml")]) == 0 and capfd.readouterr().err == ""  # rewritten


def test_finetune_without_a_usable_val_image_is_one_line(ds: Path, tmp_path: Path):
    for image in _images(ds, "val"):
        image.write_bytes(b"\x00not an image")
    out = _cli(_finetune(ds, epochs="1"), tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    first = _images(ds, "val")[0]
    assert out.stderr == (
        f"error: {ds}/data.yaml: val: no usable images (3 problems, first: {first}: unreadable image (corrupt or "
        "not an image); skipped)\n"
    )
    assert not (ds / "out.pt").exists()


def test_nothing_leaks_to_stderr_from_every_hostile_file_at_once(ds: Path, tmp_path: Path):
    """All of the above in one dataset, through the CLI: only our own lines, none of the libraries'."""
    train, val = _images(ds, "train"), _images(ds, "val")
    truncated_jpeg(train[0], train[0])
    truncated_jpeg(val[0], val[0])
    label_path(train[1]).unlink()
    label_path(train[1]).mkdir()
    (ds / "list.txt").write_text(f"{val[1]}\n{val[2]}\n{ds}/images/val/gone.jpg\n")
    doc = yaml.safe_load((ds / "data.yaml").read_text())
    (ds / "data.yaml").write_text(yaml.safe_dump(dict(doc, val=[str(ds / "list.txt"), str(val[0])])))
    for argv in (["check", str(ds / "study.yaml")], [*_val(ds), "--json"], [*_finetune(ds), "--json"]):
        out = _cli(argv, tmp_path)
        assert out.returncode == 0, out.stderr
        assert not any(leak in out.stderr for leak in LEAKS), out.stderr
        assert all(line.startswith("warning: ") for line in out.stderr.splitlines()), out.stderr
