"""int8 graph forms against the float ONNX: speed (interleaved, per thread count), mAP, what runs in int8.

    .venv/bin/python bench/bench_int8.py [--weights yolov5n.pt] [--data coco128.yaml] [--imgsz 320 640]
        [--forms u8s8 u8s8-fh s8s8 u8s8-pt u8s8-pt-rr u8s8-conv u8s8-rr ...] [--methods minmax percentile]
        [--threads 1 2] [--runs 30] [--calib-images 128] [--val-images 64] [--profile-top 8] [--unfused]
        [--sensitivity FORM] [--save DIR] [--json]

For each image size: the float ONNX of the model and, for each form x calibration method, its int8 QDQ file
(``orchestrator.deploy.quantize``, calibrated on that many train images). Each file is scored on the data's val
split through ONNX Runtime with our validator, and timed in ONNX Runtime interleaved run by run against the float
file (``time_sessions``: batch 1, intra-op threads as given, medians of per-pair ratios). The ORT-optimized graph
gives the op counts (int8 kernels, Q/DQ convert nodes, float convs, float Sigmoid/Mul nodes) and ORT's profiler
at 1 thread the share of kernel time in int8 and in SiLU (Sigmoid + Mul, int8 or float, Detect decode aside).
Prints a markdown table (and, with --profile-top, the top op types of each file's profile).

Forms: u8s8 uint8 activations / int8 weights, s8s8 int8 both; -pt per-tensor weights (else per channel);
-fh the Detect output convs float; -conv only Conv quantized (SiLU stays float); -rr 7-bit weights; -f0 the
first layer (model.0, the 6x6 conv on the image, and its SiLU) float.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from common import ASSETS, REPO

sys.path.insert(0, str(REPO))

FORMS: dict[str, dict] = {
    "u8s8": {},
    "u8s8-fh": {"float_head": True},
    "s8s8": {"activations": "s8"},
    "s8s8-fh": {"activations": "s8", "float_head": True},
    "u8s8-pt": {"per_channel": False},
    "u8s8-pt-fh": {"per_channel": False, "float_head": True},
    "u8s8-conv": {"op_types": ("Conv",)},
    "u8s8-conv-fh": {"op_types": ("Conv",), "float_head": True},
    "u8s8-rr": {"reduce_range": True},
    "u8s8-rr-fh": {"reduce_range": True, "float_head": True},
    "u8s8-pt-rr": {"per_channel": False, "reduce_range": True},
    "u8s8-f0": {"float_layers": (0,)},
    "u8s8-pt-f0": {"per_channel": False, "float_layers": (0,)},
    "u8s8-fh-f0": {"float_head": True, "float_layers": (0,)},
}
BASE = {
    "per_channel": True,
    "float_head": False,
    "activations": "u8",
    "op_types": None,
    "reduce_range": False,
    "float_layers": (),
}


SILU_OPS = frozenset({"Sigmoid", "Mul", "QLinearSigmoid", "QLinearMul", "QuickGelu"})  # QuickGelu: fused float


def silu_share(nodes, decode: set[str]) -> float:
    """Kernel-time share of the model's SiLUs (their Sigmoid and Mul, int8 or float, fused or not); the Detect
    decode's Sigmoid and Mul nodes (named in ``decode``, float in every form) are not SiLUs."""
    whole = sum(n.ms for n in nodes) or 1.0
    return sum(n.ms for n in nodes if n.op in SILU_OPS and n.name not in decode) / whole


def no_qdq_fusion(so) -> None:
    """ORT session option: leave DequantizeLinear -> op -> QuantizeLinear as it is (float ops on int8 values)."""
    so.add_session_config_entry("session.disable_quant_qdq", "1")


def sensitivity(f: bytes, calib, vs, method: str, cache: Path, layers: int, form: str) -> None:
    """mAP of ``form`` with each ``model.N`` layer kept float in turn (the Detect layer aside), on stderr."""
    from orchestrator.deploy.onnx_val import validate_onnx_bytes
    from orchestrator.deploy.quantize import Int8Options, quantize_int8

    def score(**kw) -> float:
        options = Int8Options(method, len(calib), **{**BASE, **FORMS[form], **kw})
        return validate_onnx_bytes(quantize_int8(f, calib, options, ranges=cache), vs, threads=2).map50_95

    base = score()
    print(f"sensitivity {form} {method}: all int8 {base:.4f}", file=sys.stderr, flush=True)
    for i in range(layers):
        m = score(float_layers=(i,))
        print(f"sensitivity {form} {method}: model.{i} float {m:.4f} ({m - base:+.4f})", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(ASSETS / "yolov5n.pt"))
    p.add_argument("--data", default=str(ASSETS / "coco128.yaml"))
    p.add_argument("--imgsz", type=int, nargs="+", default=[320])
    p.add_argument("--forms", nargs="*", default=["u8s8", "u8s8-pt", "u8s8-pt-f0"], choices=FORMS)
    p.add_argument("--methods", nargs="+", default=["percentile"], choices=("minmax", "percentile", "entropy"))
    p.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--calib-images", type=int, default=128)
    p.add_argument("--val-images", type=int, default=64, help="the first N of the val split")
    p.add_argument("--profile-runs", type=int, default=10)
    p.add_argument("--profile-top", type=int, default=0, help="print each file's N costliest op types")
    p.add_argument(
        "--sensitivity", default=None, choices=FORMS, help="also: mAP of this form with each layer kept float"
    )
    p.add_argument(
        "--unfused",
        action="store_true",
        help="also score each int8 file with ORT's QDQ fusion off (float kernels on the quantized values: the "
        "quantization's own error, without the int8 kernels')",
    )
    p.add_argument("--save", default=None, help="folder to write each file to (IMGSZ-VARIANT.onnx)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import onnx

    from orchestrator.deploy.export import onnx_bytes
    from orchestrator.deploy.onnx_val import validate_onnx_bytes
    from orchestrator.deploy.ort_graph import op_times, optimized_ops, precision_shares, profile_nodes
    from orchestrator.deploy.ort_runtime import open_session, session_forward, time_sessions
    from orchestrator.deploy.quantize import Int8Options, calibration_images, decode_nodes, quantize_int8
    from orchestrator.yolo.checkpoint import load_model
    from orchestrator.yolo.data import load_data_config
    from orchestrator.yolo.val import ValSet, validate_forward

    model = load_model(args.weights).eval()
    cfg = load_data_config(args.data)
    cfg = dataclasses.replace(cfg, val=cfg.val[: args.val_images])
    rows: list[dict] = []
    for imgsz in args.imgsz:
        f = onnx_bytes(model, imgsz=imgsz)
        decode = set(decode_nodes(onnx.load_from_string(f)))
        vs = ValSet(cfg, imgsz, 32)
        calib = calibration_images(cfg.train, imgsz, args.calib_images)
        files: dict[str, bytes] = {"float": f}
        info: dict[str, dict] = {"float": {"form": "float", "method": "-", "calib_s": 0.0}}
        tmp = Path(tempfile.mkdtemp(prefix="bench-int8-"))
        for method in args.methods:
            # calibrate once per method (every tensor's range), then each form reuses the ranges
            cache = tmp / f"{imgsz}-{method}.json"
            t = time.perf_counter()
            quantize_int8(f, calib, Int8Options(method, len(calib), **BASE), ranges=cache)
            calib_s = time.perf_counter() - t
            print(f"[{imgsz}] {method}: calibrated in {calib_s:.0f} s", file=sys.stderr, flush=True)
            for form in args.forms:
                name = f"{form} {method}"
                options = Int8Options(method, len(calib), **{**BASE, **FORMS[form]})
                files[name] = quantize_int8(f, calib, options, ranges=cache)
                info[name] = {"form": form, "method": method, "calib_s": calib_s}
            if args.sensitivity:
                sensitivity(f, calib, vs, method, cache, len(model.model) - 1, args.sensitivity)
        for name, b in files.items():
            if args.save:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                (Path(args.save) / f"{imgsz}-{name.replace(' ', '-')}.onnx").write_bytes(b)
            r = {"imgsz": imgsz, "variant": name, **info[name], "onnx_mb": len(b) / 1e6}
            r["map50_95"] = validate_onnx_bytes(b, vs, threads=2).map50_95
            if args.unfused and name != "float":
                sess = open_session(b, threads=2, configure=no_qdq_fusion)
                r["map50_95_unfused"] = validate_forward(session_forward(sess), vs).map50_95
            ops = optimized_ops(b)
            r["int8_nodes"] = sum(ops.int8.values())
            r["convert_nodes"] = sum(ops.convert.values())
            r["float_convs"] = ops.float_convs
            nodes = profile_nodes(b, imgsz, threads=1, runs=args.profile_runs)
            # float Sigmoid and Mul nodes that ran, a fused float SiLU (QuickGelu) counting two; the decode's aside
            r["float_silu_nodes"] = sum(
                2 if n.op == "QuickGelu" else 1
                for n in nodes
                if n.op in ("Sigmoid", "Mul", "QuickGelu") and n.precision == "float" and n.name not in decode
            )
            prof = op_times(nodes)
            r["profile_ms"] = sum(x.ms for x in prof)
            r["int8_share"] = precision_shares(prof).get("int8", 0.0)
            r["convert_share"] = precision_shares(prof).get("convert", 0.0)
            r["silu_share"] = silu_share(nodes, decode)
            r["profile"] = [dataclasses.asdict(x) for x in prof[: max(args.profile_top, 8)]]
            rows.append(r)
            unfused = f" (QDQ unfused {r['map50_95_unfused']:.4f})" if "map50_95_unfused" in r else ""
            print(f"[{imgsz}] {name}: mAP50-95 {r['map50_95']:.4f}{unfused}", file=sys.stderr, flush=True)
        by_name = {r["variant"]: r for r in rows if r["imgsz"] == imgsz}
        for threads in args.threads:
            base = open_session(f, threads=threads)
            for name, b in files.items():
                if name == "float":
                    continue
                t = time_sessions(
                    open_session(b, threads=threads), base, imgsz, runs=args.runs, warmup=args.warmup, threads=threads
                )
                by_name[name][f"ms_{threads}t"] = t.ms
                by_name[name][f"float_ms_{threads}t"] = t.baseline_ms
                by_name[name][f"speedup_{threads}t"] = t.speedup
            fl = [by_name[n][f"float_ms_{threads}t"] for n in files if n != "float"]
            by_name["float"][f"ms_{threads}t"] = sorted(fl)[len(fl) // 2] if fl else None
            by_name["float"][f"speedup_{threads}t"] = 1.0
    if args.json:
        print(json.dumps({"runs": args.runs, "rows": rows}))
        return 0
    float_map = {r["imgsz"]: r["map50_95"] for r in rows if r["variant"] == "float"}
    ths = args.threads
    print(
        f"batch 1, ONNX Runtime CPU, {args.calib_images} calibration images (train), {args.val_images} val images; "
        f"ms: medians of {args.runs} runs interleaved with the float file; x: median per-pair speed-up"
    )
    unfused = any("map50_95_unfused" in r for r in rows)
    head = ["imgsz", "variant", "mAP50-95", "vs float"] + ["QDQ unfused"] * unfused
    head += [f"{k} {t}t" for t in ths for k in ("ms", "x")]
    head += ["int8 / Q-DQ / float conv / float SiLU nodes", "int8 time", "SiLU time", "calib s"]
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    for r in rows:
        d = r["map50_95"] - float_map[r["imgsz"]]
        cells = [str(r["imgsz"]), r["variant"], f"{r['map50_95']:.4f}", "-" if r["variant"] == "float" else f"{d:+.4f}"]
        if unfused:
            cells.append(f"{r['map50_95_unfused']:.4f}" if "map50_95_unfused" in r else "-")
        for t in ths:
            cells += [f"{r[f'ms_{t}t']:.1f}", f"{r[f'speedup_{t}t']:.2f}x"]
        cells += [
            f"{r['int8_nodes']} / {r['convert_nodes']} / {r['float_convs']} / {r['float_silu_nodes']}",
            f"{r['int8_share']:.0%}",
            f"{r['silu_share']:.0%}",
            f"{r['calib_s']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")
    if args.profile_top:
        for r in rows:
            top = ", ".join(
                f"{x['op']} ({x['precision']}, {x['nodes']}) {x['ms']:.1f} ms {x['share']:.0%}"
                for x in r["profile"][: args.profile_top]
            )
            print(f"\n{r['imgsz']} {r['variant']}, 1 thread, {r['profile_ms']:.1f} ms of kernels: {top}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
