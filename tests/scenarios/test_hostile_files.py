"""Small files that once made a command allocate without bound now end in one line, fast and in bounded memory.

Each hostile file is built here (tests/hostile.py), a few KB: a checkpoint whose layer table says
``width_multiple: 12`` (7 GB before its refusal), ``nc: 10**9`` or a 10000 kernel (single allocations of
20-770 GB); an ONNX file with YOLOv5's signature and 2,000,000 output rows (23 GB in ``val``), one claiming
2**29 floats it does not store, one asking 2**40 of ConstantOfShape. Where memory is the point the CLI runs
in a subprocess under an address-space limit (so a regression fails its allocation instead of taking the
machine down) and its own peak RSS, from ``wait4``, is asserted. Issue 27.
"""

from __future__ import annotations

import copy
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hostile import (
    checkpoint_with_yaml,
    onnx_constant_of_shape,
    onnx_external_data,
    onnx_initializer_without_data,
    onnx_rows_from_pixels,
    onnx_symbolic_rows,
    onnx_two_million_rows,
)

from orchestrator.cli import main
from orchestrator.faults import fault_line
from orchestrator.yolo.checkpoint import save_checkpoint
from orchestrator.yolo.yaml_check import LayerTableError, check_against_state, check_layer_table

# Address space for the child: importing torch maps its CUDA libraries (3 GiB is too little to start), and a
# refusal needs well under 1.5 GB resident; a regression then fails its allocation rather than the machine.
ADDRESS_SPACE = 6 << 30
PEAK_MB = 1536
# The refusals themselves take well under a second; a CLI start imports torch, torchvision and ONNX Runtime,
# 2-4 s on a quiet machine and up to 9 s on a busy two-core one.
SECONDS = 15


@dataclass(frozen=True)
class Outcome:
    code: int
    err: str
    seconds: float
    peak_mb: float


def run_limited(argv: list[str], cwd: Path) -> Outcome:
    """``python -m orchestrator *argv`` under :data:`ADDRESS_SPACE`; its exit code, stderr, time and peak RSS."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    err_file = cwd / f".stderr-{len(list(cwd.glob('.stderr-*')))}"
    env = dict(os.environ, ORCHESTRATOR_CACHE=str(cwd / ".cache"))
    with err_file.open("w+") as err:
        t = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *argv],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            preexec_fn=limit,
        )
        while True:  # wait4: this child's own peak RSS (RUSAGE_CHILDREN would mix in every earlier child)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t > 120:
                proc.kill()
            time.sleep(0.02)
        seconds = time.monotonic() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return Outcome(proc.returncode, err.read(), seconds, usage.ru_maxrss / 1024)


def assert_one_line(out: Outcome, file: Path, *fragments: str) -> None:
    assert out.code == 2, out.err
    assert out.err.count("\n") == 1 and out.err.startswith(f"error: {file}: "), out.err
    assert "Traceback" not in out.err
    for f in fragments:
        assert f in out.err
    assert out.seconds < SECONDS, f"{out.seconds:.1f} s"
    assert out.peak_mb < PEAK_MB, f"peak RSS {out.peak_mb:.0f} MB"


@pytest.fixture(scope="module")
def ours_pt(yolov5n, tmp_path_factory) -> Path:
    """yolov5n in our format (layer table + state dict): the table is what a crafted file edits."""
    return save_checkpoint(yolov5n, tmp_path_factory.mktemp("ours") / "yolov5n.pt")


@pytest.fixture(scope="module")
def ours(ours_pt: Path) -> dict:
    return torch.load(ours_pt, map_location="cpu", weights_only=False)


def _row(section: str, index: int, arg: int, value):
    def edit(y: dict) -> None:
        y[section][index][3][arg] = value

    return edit


# ------------------------------------------------------------------------------------ checkpoints, through the CLI
CHECKPOINTS = {
    # the cases: each built the model (7 GB, or an allocation of 20-770 GB) before refusing
    "width_multiple-12": (lambda y: y.update(width_multiple=12), "width_multiple=12: expected a number above 0"),
    "width_multiple-1000": (lambda y: y.update(width_multiple=1000), "width_multiple=1000"),
    "depth_multiple-1000": (lambda y: y.update(depth_multiple=1000), "depth_multiple=1000"),
    "nc-10**9": (lambda y: y.update(nc=10**9), "nc=1000000000: expected a whole number of classes"),
    "kernel-10000": (_row("backbone", 1, 1, 10000), "layer 1: argument 10000 of Conv: expected numbers up to 64"),
}


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_a_checkpoint_whose_layer_table_would_exhaust_memory_is_refused_before_building(
    ours_pt: Path, tmp_path: Path, case: str
):
    edit, expected = CHECKPOINTS[case]
    bad = checkpoint_with_yaml(ours_pt, tmp_path / f"{case}.pt", edit)
    out = run_limited(["layers", "--weights", str(bad), "--granularity", "stage"], tmp_path)
    assert_one_line(out, bad, "refused to load: ", expected)


# ------------------------------------------------- layer tables within the limits that do not fit their tensors
TABLES = {
    # 428 M parameters (1.7 GB) if built: within every per-number limit, refused by the count
    "wider": (lambda y: y.update(width_multiple=3.9), "describes 428,302,245 parameters, above the limit"),
    # a table deeper than its tensors reads as a depth-pruned model (prune/depth.py): the stored depth is built;
    # one shallower than its tensors leaves weights that fit no layer
    "shallower": (lambda y: y.update(depth_multiple=0.2), "stored weights model.4.m.1.cv1.conv fit no layer"),
    "more classes": (lambda y: y.update(nc=81), "model.24.m.0.weight is (255, 64, 1, 1), the table makes (258,"),
    "other kernel": (
        _row("backbone", 1, 1, 5),
        "model.1.conv.weight is (32, 16, 3, 3), the table makes (32, 16, 5, 5",
    ),
    "narrower": (lambda y: y.update(width_multiple=0.125), "model.0.conv.weight is (16, 3, 6, 6), the table makes (8,"),
    "upsample x64": (_row("head", 1, 1, 64), "layer 12: Concat of maps of different sizes"),
    "string width": (_row("backbone", 0, 0, "64"), "the layer table does not build"),
}


@pytest.mark.parametrize("case", TABLES)
def test_a_layer_table_that_does_not_fit_its_tensors_is_refused_on_meta(ours: dict, case: str):
    """Checked on the meta device and by arithmetic on shapes: nothing is allocated, even if the check regressed."""
    edit, expected = TABLES[case]
    y = copy.deepcopy(ours["yaml"])
    edit(y)
    with pytest.raises(LayerTableError) as e:
        check_layer_table(y)
        check_against_state(y, ours["state_dict"])
    assert expected in str(e.value)


def test_the_shipped_tables_pass_their_own_tensors(ours: dict):
    t = time.perf_counter()
    check_layer_table(ours["yaml"])
    check_against_state(ours["yaml"], ours["state_dict"])
    assert time.perf_counter() - t < 1.0


# ---------------------------------------------------------------------------------------- ONNX files, in val
ONNX = {
    "2,000,000 rows": (onnx_two_million_rows, "output 'output0' has 2,000,000 rows, more than the 504"),
    "2,000,000 rows, symbolic": (onnx_symbolic_rows, "output 'output0' has 2,000,000 rows, more than the 504"),
    "rows from the pixels": (onnx_rows_from_pixels, "85) for a 64x64 input (at most 504 rows)"),
    "2**29 floats, none stored": (onnx_initializer_without_data, "claims 536,870,912 elements"),
    "ConstantOfShape 2**40": (onnx_constant_of_shape, "ONNX Runtime failed running it"),
}


@pytest.mark.parametrize("case", ONNX)
def test_an_onnx_file_that_would_exhaust_memory_in_val(tmp_path: Path, coco128_yaml: Path, case: str):
    make, expected = ONNX[case]
    bad = make(tmp_path / "bad.onnx")
    out = run_limited(["val", "--weights", str(bad), "--data", str(coco128_yaml), "--imgsz", "64"], tmp_path)
    assert_one_line(out, bad, expected)


@pytest.mark.parametrize("case", ["2**29 floats, none stored", "ConstantOfShape 2**40"])
def test_an_onnx_file_that_would_exhaust_memory_in_measure(tmp_path: Path, case: str):
    make, expected = ONNX[case]
    bad = make(tmp_path / "bad.onnx")
    out = run_limited(["measure", "--weights", str(bad), "--imgsz", "64", "--runs", "2", "--warmup", "1"], tmp_path)
    assert_one_line(out, bad, expected)


@pytest.mark.parametrize("location", ["/etc/passwd", "../../../etc/passwd", "/proc/self/environ", "link.bin"])
def test_onnx_external_data_outside_the_folder_is_one_line(tmp_path: Path, coco128_yaml: Path, location, capsys):
    """ORT refuses these too, with a traceback; the file is refused before any session reads a byte."""
    if location == "link.bin":
        (tmp_path / "link.bin").symlink_to("/etc/passwd")
    bad = onnx_external_data(tmp_path / "bad.onnx", location)
    for argv in (["val", "--data", str(coco128_yaml)], ["measure", "--runs", "2"]):
        code = main([*argv, "--weights", str(bad), "--imgsz", "64"])
        err = capsys.readouterr().err
        assert (code, err) == (
            2,
            f"error: {bad}: initializer 'w' keeps its data in {location!r}, which is not a file inside the model's "
            "folder\n",
        )


# ------------------------------------------------------------------------------- allocator failures, one line
ALLOCATOR = {
    "cpu": (
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
            "to allocate 1000000000000 bytes. Error code 12 (Cannot allocate memory)"
        ),
        "out of memory (an allocation of 1,000.0 GB failed): ",
    ),
    "cuda": (
        type("OutOfMemoryError", (RuntimeError,), {})(
            "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 139.8 GiB"
        ),
        "out of memory (an allocation of 20.00 GiB failed): ",
    ),
    "onnxruntime": (
        RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested buffer"),
        "out of memory: ",
    ),
}


@pytest.mark.parametrize("case", ALLOCATOR)
def test_allocator_failures_are_one_line_faults(case: str, monkeypatch, capsys):
    """torch raises a RuntimeError, not MemoryError, when its allocator gives up: the CLI says so in one line."""
    error, expected = ALLOCATOR[case]
    assert fault_line(error).startswith(expected)
    assert fault_line(RuntimeError("shape mismatch")) is None

    def boom(args):
        raise error

    import orchestrator.commands.layers as layers

    monkeypatch.setattr(layers, "run", boom)
    assert main(["layers", "--weights", "x.pt"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {expected}") and err.count("\n") == 1
