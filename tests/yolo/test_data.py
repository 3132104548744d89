"""Data yaml, label scanning (problems, cache), image loading, letterbox and rect batch shapes."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from orchestrator.errors import DataError
from orchestrator.yolo import labels as labels_mod
from orchestrator.yolo.data import letterbox, load_data_config, load_image, rect_batch_shapes
from orchestrator.yolo.labels import label_path, scan_labels


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "cache"))


def _small_set(assets: Path, root: Path, n: int = 4) -> list[Path]:
    """Copy the first ``n`` real val images and labels into ``root/images`` and ``root/labels``."""
    src = assets / "coco128" / "images" / "val2017"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    out = []
    for f in sorted(src.glob("*.jpg"))[:n]:
        shutil.copy(f, root / "images" / f.name)
        lb = label_path(f)
        if lb.is_file():
            shutil.copy(lb, root / "labels" / lb.name)
        out.append(root / "images" / f.name)
    return out


def test_real_coco128_yaml(coco128_yaml, assets):
    cfg = load_data_config(coco128_yaml)
    assert cfg.root == (assets / "coco128").resolve()
    assert len(cfg.val) == 64 and len(cfg.train) == 128
    assert cfg.nc == 80 and len(cfg.names) == 80 and cfg.names[0] == "person" and cfg.names[79] == "toothbrush"
    assert all(p.parent.name == "val2017" for p in cfg.val)
    assert list(cfg.val) == sorted(cfg.val, key=str)


def test_yaml_forms_list_file_list_and_names_list(tmp_path, assets):
    imgs = _small_set(assets, tmp_path / "ds")
    (tmp_path / "ds" / "val.txt").write_text("".join(f"./images/{p.name}\n" for p in imgs[:2]))
    y = tmp_path / "d.yaml"
    y.write_text("path: ds\ntrain: [images, val.txt]\nval: val.txt\nnames: [a, b]\n")
    cfg = load_data_config(y)
    assert cfg.val == tuple(p.resolve() for p in imgs[:2])
    assert len(cfg.train) == 4  # repeats across entries are dropped
    assert cfg.names == ("a", "b") and cfg.nc == 2


def test_yaml_without_val_names_file_and_key(tmp_path):
    y = tmp_path / "noval.yaml"
    y.write_text("path: .\ntrain: images\nnames: {0: a}\n")
    with pytest.raises(DataError, match=r"noval\.yaml: val: missing"):
        load_data_config(y)


def test_yaml_pointing_nowhere(tmp_path):
    y = tmp_path / "nowhere.yaml"
    y.write_text("path: /does/not/exist\nval: images/val\nnames: [a]\n")
    with pytest.raises(DataError, match=r"nowhere\.yaml: val: /does/not/exist/images/val does not exist"):
        load_data_config(y)
    # `orchestrator val` needs only val: a missing train split is tolerated there, not by default.
    y.write_text(f"path: {tmp_path}\ntrain: nope\nval: {tmp_path}\nnames: [a]\n")
    (tmp_path / "x.jpg").write_bytes(b"")
    assert load_data_config(y, need=("val",)).train == ()
    with pytest.raises(DataError, match="train: .*nope does not exist"):
        load_data_config(y)


def test_yaml_bad_names_and_nc(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"")
    y = tmp_path / "d.yaml"
    y.write_text(f"path: {tmp_path}\nval: .\nnames: [a, b]\nnc: 3\n")
    with pytest.raises(DataError, match=r"d\.yaml: nc: 3 does not match the 2 names"):
        load_data_config(y)
    y.write_text(f"path: {tmp_path}\nval: .\nnames: {{0: a, 2: b}}\n")
    with pytest.raises(DataError, match=r"d\.yaml: names: keys must be 0..1"):
        load_data_config(y)


def test_label_path():
    assert label_path(Path("/d/images/train/a.b.jpg")) == Path("/d/labels/train/a.b.txt")
    assert label_path(Path("/images/x/images/y/a.png")) == Path("/images/x/labels/y/a.txt")
    assert label_path(Path("/d/pics/a.jpg")) == Path("/d/pics/a.txt")
    # the string fast path keeps Path's rules: relative roots, dot files, a folder named like a file
    assert label_path(Path("images/a.jpg")) == Path("labels/a.txt")
    assert label_path(Path("/d/images/.jpg")) == Path("/d/labels/.jpg.txt")
    assert label_path(Path("/d/images/..jpg")) == Path("/d/labels/..txt")
    assert label_path(Path("/d/images.v2/a")) == Path("/d/images.v2/a.txt")


def test_first_scan_shows_progress_on_a_terminal_only(tmp_path, coco128_yaml, monkeypatch):
    import io
    import sys

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    files = load_data_config(coco128_yaml).val[:4]
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    scan_labels(files, 80, tmp_path / "a")
    assert "checking 4 images and labels" in tty.getvalue()
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    scan_labels(files, 80, tmp_path / "b")
    assert pipe.getvalue() == ""


def test_scan_real_val_labels(coco128_yaml):
    cfg = load_data_config(coco128_yaml)
    li = scan_labels(cfg.val, cfg.nc)
    assert li.problems == ()
    assert len(li.files) == 64 and li.instances == 440
    assert li.shapes.shape == (64, 2) and li.shapes.max() == 512
    assert all(lb.dtype == np.float32 and lb.shape[1] == 5 for lb in li.labels)


def test_bad_labels_and_images_are_counted_named_and_skipped(tmp_path, assets):
    imgs = _small_set(assets, tmp_path / "ds", n=6)
    lbl = [label_path(p) for p in imgs]
    lbl[0].write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n")  # second line has 4 numbers
    imgs[1].write_bytes(b"this is not a jpeg")
    lbl[2].write_text("80 0.5 0.5 0.2 0.2\n")  # class id >= nc
    lbl[3].write_text("3 1.7 0.5 0.2 0.2\n")  # not normalised
    lbl[4].write_text("3 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n2 0.1 0.1 0.1 0.1\n")  # duplicate row: kept once
    lbl[5].unlink()  # no label file: a background image
    li = scan_labels(imgs, nc=80)
    assert li.files == (imgs[4], imgs[5])
    assert [len(lb) for lb in li.labels] == [2, 0]
    text = "\n".join(li.problems)
    assert f"{lbl[0]}:2: expected 5 numbers (class cx cy w h), found 4; image skipped" in text
    assert f"{imgs[1]}: unreadable image" in text
    assert f"{lbl[2]}:1: class 80 is not an integer in 0..79" in text
    assert f"{lbl[3]}:1: coordinates outside [0, 1]" in text
    assert f"{lbl[4]}: 1 duplicate label rows removed" in text
    assert len(li.problems) == 5


def test_scan_cache_is_reused_and_invalidated(tmp_path, assets, monkeypatch):
    imgs = _small_set(assets, tmp_path / "ds")
    first = scan_labels(imgs, nc=80)
    caches = list((tmp_path / "cache" / "labels").glob("*.npz"))
    assert len(caches) == 1
    assert not any(p.suffix == ".npz" for p in (tmp_path / "ds").rglob("*"))  # nothing in the dataset folder

    def boom(*a, **k):
        raise AssertionError("rescanned although nothing changed")

    monkeypatch.setattr(labels_mod, "_check_one", boom)
    second = scan_labels(imgs, nc=80)
    assert second.files == first.files and second.problems == first.problems
    np.testing.assert_array_equal(second.shapes, first.shapes)
    for a, b in zip(first.labels, second.labels):
        np.testing.assert_array_equal(a, b)
    monkeypatch.undo()
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "cache"))
    label_path(imgs[0]).write_text("0 0.5 0.5 0.2 0.2\n")  # a changed label file is read again
    third = scan_labels(imgs, nc=80)
    assert len(third.labels[0]) == 1


def test_unwritable_cache_is_not_an_error(tmp_path, assets):
    imgs = _small_set(assets, tmp_path / "ds", n=2)
    blocker = tmp_path / "file"
    blocker.write_text("")
    li = scan_labels(imgs, nc=80, cache_dir=blocker)  # cannot mkdir under a file
    assert len(li.files) == 2


def test_load_image_long_side_and_interpolation(coco128_yaml):
    path = load_data_config(coco128_yaml).val[0]
    orig = cv2.imread(str(path))
    im, (h0, w0), (h, w) = load_image(path, 320)
    assert (h0, w0) == orig.shape[:2] and max(h, w) == 320
    assert h == int(np.ceil(h0 * 320 / max(h0, w0)))
    np.testing.assert_array_equal(im, cv2.resize(orig, (w, h), interpolation=cv2.INTER_AREA))
    im, _, (h, w) = load_image(path, 640)
    np.testing.assert_array_equal(im, cv2.resize(orig, (w, h), interpolation=cv2.INTER_LINEAR))
    # what the scan could read and now cannot: the file, or the highest folder that is gone
    with pytest.raises(DataError, match="^/no: dataset folder gone"):
        load_image(Path("/no/such/file.jpg"), 320)
    with pytest.raises(DataError, match=f"^{path.parent}/gone.jpg: no such file"):
        load_image(path.parent / "gone.jpg", 320)


def test_letterbox_pads_evenly_and_never_upscales_when_asked():
    img = np.full((100, 200, 3), 7, np.uint8)
    out, ratio, (dw, dh) = letterbox(img, (160, 224), scaleup=False)
    assert out.shape == (160, 224, 3) and ratio == (1.0, 1.0) and (dw, dh) == (12.0, 30.0)
    assert (out[:30] == 114).all() and (out[30:130, 12:212] == 7).all() and (out[130:] == 114).all()
    out, ratio, (dw, dh) = letterbox(img, 320)  # scale up to fit, odd pad: extra pixel at the bottom
    assert out.shape == (320, 320, 3) and ratio == (1.6, 1.6) and dh == 80
    out, _, (dw, dh) = letterbox(np.zeros((101, 200, 3), np.uint8), (160, 224), scaleup=False)
    assert dh == 29.5 and (out[:29] == 114).all() and (out[29:130, 12:212] == 0).all() and (out[130:] == 114).all()


def test_rect_batch_shapes():
    shapes = np.array([[240, 320], [300, 320], [320, 240], [320, 320]])  # (h, w), sorted by h/w
    s = rect_batch_shapes(shapes, 320, batch=2)
    # batch 0: widest h/w 0.9375 -> ceil(0.9375*10+0.5)=10 -> 320 high, 11 -> 352 wide; batch 1 has h/w 1 -> square
    np.testing.assert_array_equal(s, [[320, 352], [352, 352]])
    s = rect_batch_shapes(np.array([[480, 640]]), 640, batch=1)
    np.testing.assert_array_equal(s, [[512, 672]])
