"""The image cache under a budget: streamed, disk-cached and RAM-cached images give the same digits."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from orchestrator.yolo.data import load_data_config
from orchestrator.yolo.image_cache import CacheSettings, TrainImages, ram_count, resized_bytes
from orchestrator.yolo.train import finetune
from orchestrator.yolo.val import ValSet, validate

IMGSZ = 128
TINY = CacheSettings("auto", 100_000 / 1e9)  # 100 kB: less than the split, so auto streams
PARTIAL = CacheSettings("ram", 100_000 / 1e9)  # ram: the images that fit 100 kB, the rest streamed


@pytest.fixture(scope="module")
def data(coco128_yaml):
    d = load_data_config(coco128_yaml)
    return replace(d, train=d.train[:8], val=d.val[:8])


def test_sizes_and_counts():
    sizes = resized_bytes(np.array([[480, 640], [640, 427]]), 640)
    assert sizes.tolist() == [480 * 640 * 3, 640 * 427 * 3]
    assert ram_count([10, 10, 10], CacheSettings("auto", 25e-9)) == 0  # does not fit: stream everything
    assert ram_count([10, 10, 10], CacheSettings("auto", 30e-9)) == 3
    assert ram_count([10, 10, 10], CacheSettings("ram", 25e-9)) == 2
    assert ram_count([10, 10, 10], CacheSettings("disk", 1.0)) == 0
    with pytest.raises(ValueError, match="cache mode"):
        CacheSettings("ssd")


def test_train_images_stay_within_the_budget(data, tmp_path):
    full = TrainImages(data, IMGSZ, cache_dir=tmp_path)
    assert full.store.mode == "ram" and len(full.cached) == len(full)
    streamed = TrainImages(data, IMGSZ, cache=TINY, cache_dir=tmp_path)
    assert streamed.store.mode == "stream" and streamed.cached is None
    part = TrainImages(data, IMGSZ, cache=PARTIAL, cache_dir=tmp_path)
    assert part.store.mode == "ram+stream" and 0 < len(part.cached) < len(part)
    assert part.store.ram_bytes <= PARTIAL.budget_gb * 1e9
    for i in range(len(full)):
        assert np.array_equal(full.image(i), streamed.image(i)) and np.array_equal(full.image(i), part.image(i))


def test_disk_cache_writes_npy_and_reads_them_back(data, tmp_path):
    disk = TrainImages(data, IMGSZ, cache=CacheSettings("disk"), cache_dir=tmp_path)
    assert disk.store.mode == "disk"
    first = [disk.image(i) for i in range(len(disk))]
    files = sorted((tmp_path / "images").rglob("*.npy"))
    assert len(files) == len(disk)
    again = TrainImages(data, IMGSZ, cache=CacheSettings("disk"), cache_dir=tmp_path)
    assert all(np.array_equal(a, again.image(i)) for i, a in enumerate(first))


def test_unusable_cache_folder_streams_with_one_warning(data, tmp_path, capfd):
    blocked = tmp_path / "a-file"  # a file where the cache folder should be: nothing can be written under it
    blocked.write_text("")
    ti = TrainImages(data, IMGSZ, cache=CacheSettings("disk"), cache_dir=blocked)
    err = capfd.readouterr().err.strip().splitlines()
    assert ti.store.mode == "stream" and len(err) == 1 and "streaming" in err[0]


@pytest.mark.parametrize("workers", [0, 1])
def test_streamed_val_set_scores_as_the_cached_one(yolov5n, data, workers):
    cached = ValSet(data, IMGSZ, 4)
    streamed = ValSet(data, IMGSZ, 4, cache=TINY, workers=workers)
    part = ValSet(data, IMGSZ, 4, cache=PARTIAL)
    assert len(streamed.cached) == 0 and len(cached.cached) == 2
    assert part.cache_info()["val_cache_ram_gb"] <= PARTIAL.budget_gb
    ref = validate(yolov5n, cached)
    for vs in (streamed, part):
        r = validate(yolov5n, vs)
        assert (r.map50_95, r.map50, r.precision, r.recall) == (ref.map50_95, ref.map50, ref.precision, ref.recall)


def test_streamed_finetune_trains_the_same_weights(yolov5n, data):
    import copy

    def run(cache, workers):
        torch.manual_seed(0)
        vs = ValSet(data, IMGSZ, 4, cache=cache)
        r = finetune(copy.deepcopy(yolov5n), data, 1, imgsz=IMGSZ, batch=4, workers=workers, cache=cache, val_set=vs)
        return r

    ref, streamed = run(None, 0), run(TINY, 1)
    assert streamed.metrics.map50_95 == ref.metrics.map50_95
    a, b = ref.model.state_dict(), streamed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
