"""Prunable layer names and groups on the real yolov5n, and ratio-map validation."""

from __future__ import annotations

import copy

import pytest

from orchestrator.errors import PruningError
from orchestrator.prune import apply_ratios, conv_layers, prunable_groups, uniform_ratios, validate_ratios

STAGES = ["backbone.P1", "backbone.P2", "backbone.P3", "backbone.P4", "backbone.P5", "neck", "head"]
DETECT_OUT = ["model.24.m.0", "model.24.m.1", "model.24.m.2"]


def _flat(groups: dict[str, list[str]]) -> list[str]:
    return [c for v in groups.values() for c in v]


def test_layer_names_are_module_paths(yolov5n):
    convs = conv_layers(yolov5n)
    assert len(convs) == 60  # every nn.Conv2d, Detect's three output convs included
    assert "model.6.m.0.cv1.conv" in convs and "model.0.conv" in convs
    groups = prunable_groups(yolov5n, "layer")
    assert list(groups) == list(convs) and all(v == [k] for k, v in groups.items())


@pytest.mark.parametrize("method", ["unstructured", "structured"])
@pytest.mark.parametrize("granularity", ["layer", "block", "stage"])
def test_groups_partition_the_convs(yolov5n, granularity, method):
    groups = prunable_groups(yolov5n, granularity, method=method)
    flat = _flat(groups)
    expected = [c for c in conv_layers(yolov5n) if method == "unstructured" or c not in DETECT_OUT]
    assert sorted(flat) == sorted(expected) and len(flat) == len(set(flat))


def test_blocks_and_stages(yolov5n):
    blocks = prunable_groups(yolov5n, "block")
    assert list(blocks)[:3] == ["model.0", "model.1", "model.2"] and "model.11" not in blocks  # Upsample: no conv
    assert blocks["model.24"] == DETECT_OUT
    assert "model.24" not in prunable_groups(yolov5n, "block", method="structured")
    stages = prunable_groups(yolov5n, "stage")
    assert list(stages) == STAGES
    assert stages["backbone.P1"] == ["model.0.conv"]  # stride 2
    assert stages["backbone.P3"][0] == "model.3.conv" and stages["backbone.P5"][-1] == "model.9.cv2.conv"
    assert stages["neck"][0] == "model.10.conv" and stages["head"] == DETECT_OUT


def test_structured_layers_tie_residual_convs(yolov5n):
    groups = prunable_groups(yolov5n, "layer", method="structured")
    # Bottleneck residual adds tie a C3's cv1 to each of its Bottlenecks' cv2 (backbone C3s have shortcuts).
    assert groups["model.2.cv1.conv"] == ["model.2.cv1.conv", "model.2.m.0.cv2.conv"]
    assert groups["model.6.cv1.conv"] == ["model.6.cv1.conv"] + [f"model.6.m.{i}.cv2.conv" for i in range(3)]
    # neck C3s have shortcut=False: no ties there
    assert groups["model.13.cv1.conv"] == ["model.13.cv1.conv"]
    assert groups["model.13.m.0.cv2.conv"] == ["model.13.m.0.cv2.conv"]
    assert len(groups) == 60 - 3 - 1 - 2 - 3 - 1


def test_names_are_stable_after_pruning(yolov5n):
    m = copy.deepcopy(yolov5n)
    apply_ratios(m, {"model.6": 0.5}, method="structured", granularity="block")
    for g in ("layer", "block", "stage"):
        assert prunable_groups(m, g, method="structured") == prunable_groups(yolov5n, g, method="structured")


def test_exclude(yolov5n):
    groups = prunable_groups(yolov5n, "block", ["model.0", "neck", "model.24.m.1"])
    assert "model.0" not in groups and "model.10" not in groups and "model.23" not in groups
    assert groups["model.24"] == ["model.24.m.0", "model.24.m.2"]
    assert list(uniform_ratios(yolov5n, 0.2, "stage")) == STAGES
    with pytest.raises(PruningError, match=r"exclude: 'model\.6\.cv9\.conv' names no layer.*model\.6\.cv1\.conv"):
        prunable_groups(yolov5n, "layer", ["model.6.cv9.conv"])


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan"), "0.3", True, None])
def test_bad_ratio_names_the_key(yolov5n, bad):
    with pytest.raises(PruningError) as e:
        validate_ratios(yolov5n, {"model.0.conv": 0.2, "model.6.cv1.conv": bad})
    msg = str(e.value)
    assert "model.6.cv1.conv" in msg and "[0, 1)" in msg and "\n" not in msg


def test_unknown_key_lists_close_matches(yolov5n):
    with pytest.raises(PruningError) as e:
        validate_ratios(yolov5n, {"model.6.m.0.cv1.cnv": 0.3})
    msg = str(e.value)
    assert "'model.6.m.0.cv1.cnv' names no layer group" in msg and "model.6.m.0.cv1.conv" in msg
    with pytest.raises(PruningError, match="it is a block name: use granularity 'block'"):
        validate_ratios(yolov5n, {"model.6": 0.3})
    with pytest.raises(PruningError, match="close matches: backbone.P4"):
        validate_ratios(yolov5n, {"backbone.p4": 0.3}, "stage")
    with pytest.raises(PruningError, match="never structurally pruned"):
        validate_ratios(yolov5n, {"model.24.m.0": 0.3}, method="structured")
    with pytest.raises(PruningError, match="tied to model.4.cv1.conv"):
        validate_ratios(yolov5n, {"model.4.m.1.cv2.conv": 0.3}, method="structured")
    with pytest.raises(PruningError, match="granularity must be one of"):
        prunable_groups(yolov5n, "channel")
