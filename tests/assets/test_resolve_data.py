"""resolve_data: names, shipped yamls, ``download:`` through a real local HTTP server, the large-download guard."""

from __future__ import annotations

import pytest
import yaml
from local_server import coco_subset, files_under, zip_bytes

from orchestrator.assets import resolve_data
from orchestrator.errors import DataError, DownloadError
from orchestrator.yolo.data import load_data_config


def _datasets(cache):
    return cache / "datasets"


def test_existing_dataset_is_used_without_download(cache, coco128_yaml, server):
    assert resolve_data(coco128_yaml) == coco128_yaml
    assert not server.hits and files_under(cache) == []


def test_name_found_in_assets_folder_before_shipped(cache, assets, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_ASSETS", str(assets))
    assert resolve_data("coco128.yaml") == assets / "coco128.yaml"
    assert resolve_data("coco128") == assets / "coco128.yaml"
    assert files_under(cache) == []


def test_shipped_coco128_downloads_through_mirror(cache, coco128_zip, server, monkeypatch):
    server.serve("coco128.zip", coco128_zip)
    monkeypatch.setenv("ORCHESTRATOR_DOWNLOAD_BASE", server.base)
    got = resolve_data("coco128.yaml", progress=True)
    assert got == _datasets(cache) / "coco128.yaml"
    # the zip's coco128/ folder became the yaml's path; nothing else was left behind
    names = files_under(_datasets(cache))
    assert "coco128.yaml" in names and "coco128/LICENSE" in names
    assert all(n == "coco128.yaml" or n.startswith("coco128/") for n in names)
    assert not [n for n in names if ".partial" in n or n.endswith(".part") or ".download" in n]
    cfg = load_data_config(got)
    assert len(cfg.val) == 6 and len(cfg.names) == 80 and cfg.root == (_datasets(cache) / "coco128").resolve()
    assert all(p.is_file() for p in cfg.val)
    # second call: nothing fetched again
    assert resolve_data("coco128") == got and server.hits["/coco128.zip"] == 1


def test_official_coco128_url_is_the_github_assets_release():
    from orchestrator.assets.datasets import SHIPPED

    spec = yaml.safe_load((SHIPPED / "coco128.yaml").read_text())
    assert spec["download"] == "https://github.com/ultralytics/assets/releases/download/v0.0.0/coco128.zip"
    assert spec["path"] == "coco128" and len(spec["names"]) == 80


@pytest.mark.parametrize("case", ["truncated", "404", "no_images_labels", "not_a_zip"])
def test_failed_dataset_download_leaves_nothing(case, cache, coco128_zip, server, monkeypatch):
    if case == "truncated":
        server.serve("coco128.zip", coco128_zip, truncate=True)
    elif case == "no_images_labels":
        server.serve("coco128.zip", zip_bytes({"coco128/README.txt": b"nothing here\n"}))
    elif case == "not_a_zip":
        server.serve("coco128.zip", b"<html>login</html>")
    monkeypatch.setenv("ORCHESTRATOR_DOWNLOAD_BASE", server.base)
    expected = DataError if case == "no_images_labels" else DownloadError
    with pytest.raises(expected) as e:
        resolve_data("coco128.yaml", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and f"{server.base}/coco128.zip" in msg
    assert {"truncated": "truncated", "404": "HTTP 404", "no_images_labels": "images/ and labels/"}.get(
        case, "not a zip archive"
    ) in msg
    if expected is DownloadError:
        assert f"so that {_datasets(cache) / 'coco128'} exists, or put coco128.yaml" in msg
    assert files_under(cache) == [] and not any(_datasets(cache).iterdir())


def test_user_yaml_with_download_url_and_differently_named_zip_folder(cache, tmp_path, coco128_zip, server):
    url = server.serve("somezip.zip", coco128_zip)
    data = tmp_path / "proj" / "mydata.yaml"
    data.parent.mkdir()
    data.write_text(yaml.safe_dump({"path": "sets/mine", "train": "images/train2017", "val": "images/train2017",
                                    "names": {0: "person"}, "download": url}))  # fmt: skip
    assert resolve_data(data, progress=False) == data
    assert len(list((tmp_path / "proj" / "sets" / "mine" / "labels" / "train2017").glob("*.txt"))) >= 5
    assert sorted(p.name for p in (tmp_path / "proj" / "sets").iterdir()) == ["mine"]
    assert files_under(cache) == []


def test_yaml_whose_val_is_not_in_the_archive_is_refused(cache, tmp_path, coco128_zip, server):
    url = server.serve("coco128.zip", coco128_zip)
    data = tmp_path / "d.yaml"
    data.write_text(yaml.safe_dump({"path": "d", "train": "images/train2017", "val": "images/val2017",
                                    "names": ["a"], "download": url}))  # fmt: skip
    with pytest.raises(DataError, match=r"d\.yaml: val: images/val2017 not found"):
        resolve_data(data, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["d.yaml"]


def test_script_in_download_is_never_run(cache, tmp_path):
    data = tmp_path / "s.yaml"
    marker = tmp_path / "ran"
    data.write_text(yaml.safe_dump({"path": "s", "train": "a", "val": "a", "names": ["x"],
                                    "download": f"import pathlib; pathlib.Path({str(marker)!r}).touch()"}))  # fmt: skip
    with pytest.raises(DataError, match="scripts in data yamls are never run"):
        resolve_data(data)
    assert not marker.exists()


def test_missing_dataset_without_download_and_unknown_names(cache, tmp_path):
    data = tmp_path / "n.yaml"
    data.write_text("path: nowhere\ntrain: a\nval: a\nnames: [x]\n")
    with pytest.raises(DataError, match=r"dataset folder .*nowhere not found and the yaml has no 'download:'"):
        resolve_data(data)
    with pytest.raises(DataError, match=r"voc\.yaml: no such data yaml .*shipped: coco\.yaml, coco128\.yaml"):
        resolve_data("voc.yaml")


def test_coco_is_refused_without_consent_before_any_byte(cache, server, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_DOWNLOAD_BASE", server.base)
    with pytest.raises(DataError) as e:
        resolve_data("coco.yaml")
    msg = str(e.value)
    assert "\n" not in msg and "about 20 GB" in msg and "--yes" in msg and "ORCHESTRATOR_ALLOW_LARGE_DOWNLOADS=1" in msg
    assert "GB free under" in msg and str(_datasets(cache)) in msg
    assert not server.hits and files_under(cache) == []


def test_undeclared_large_file_is_refused_at_its_content_length(cache, tmp_path, server, monkeypatch):
    monkeypatch.setattr("orchestrator.assets.datasets.LARGE_BYTES", 1000)
    url = server.serve("big.zip", b"\0" * 5000)
    data = tmp_path / "b.yaml"
    data.write_text(yaml.safe_dump({"path": "b", "train": "a", "val": "a", "names": ["x"], "download": url}))
    with pytest.raises(DataError, match="download needs consent"):
        resolve_data(data, progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name not in ("b.yaml", "cache")]


def _fake_coco(assets) -> dict[str, bytes]:
    """Small stand-ins for the three official COCO archives, in their real layouts."""
    train = coco_subset(assets, "train2017", 4)
    val = coco_subset(assets, "val2017", 3)
    labels = {f"coco/{k}": v for k, v in {**train, **val}.items() if k.startswith("labels/")}
    for split, files in (("train2017", train), ("val2017", val)):
        listing = "".join(f"./{k}\n" for k in files if k.startswith("images/"))
        labels[f"coco/{split}.txt"] = listing.encode()
    return {
        "coco2017labels.zip": zip_bytes(labels),
        "train2017.zip": zip_bytes({k[len("images/") :]: v for k, v in train.items() if k.startswith("images/")}),
        "val2017.zip": zip_bytes({k[len("images/") :]: v for k, v in val.items() if k.startswith("images/")}),
    }


@pytest.mark.parametrize("consent", ["argument", "env"])
def test_coco_with_consent_follows_the_official_layout(consent, cache, assets, server, monkeypatch):
    for name, body in _fake_coco(assets).items():
        server.serve(name, body)
    monkeypatch.setenv("ORCHESTRATOR_DOWNLOAD_BASE", server.base)
    if consent == "env":
        monkeypatch.setenv("ORCHESTRATOR_ALLOW_LARGE_DOWNLOADS", "1")
    got = resolve_data("coco.yaml", allow_large=consent == "argument", progress=False)
    cfg = load_data_config(got)
    assert (len(cfg.train), len(cfg.val)) == (4, 3) and all(p.is_file() for p in cfg.train + cfg.val)
    assert cfg.root == (_datasets(cache) / "coco").resolve()
    assert sorted(server.hits) == ["/coco2017labels.zip", "/train2017.zip", "/val2017.zip"]
    assert not [n for n in files_under(_datasets(cache)) if n.endswith((".zip", ".part"))]


def test_download_entry_sha256_and_dir_are_checked(cache, tmp_path, coco128_zip, server):
    url = server.serve("c.zip", coco128_zip)
    data = tmp_path / "c.yaml"
    entry = {"url": url, "sha256": "0" * 64}
    data.write_text(yaml.safe_dump({"path": "c", "train": "images/train2017", "val": "images/train2017",
                                    "names": ["x"], "download": [entry]}))  # fmt: skip
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        resolve_data(data, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["c.yaml"]
    entry["dir"] = "../outside"
    data.write_text(yaml.safe_dump({"path": "c", "train": "a", "val": "a", "names": ["x"], "download": [entry]}))
    with pytest.raises(DataError, match=r"download\[0\]: 'dir' must be a folder inside the dataset root"):
        resolve_data(data, progress=False)
    assert server.hits["/c.zip"] == 1
