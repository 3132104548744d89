"""Two ONNX Runtime sessions in one process, timed alone and interleaved, with and without thread spinning.

    .venv/bin/python bench/bench_ort_sessions.py [--runs 30] [--threads 2]

Why ``open_session`` turns spinning off: a trial times its model against the baseline's session run by run,
and a pool that busy-waits after its run steals the cores the other session needs.
"""

from __future__ import annotations

import argparse
import sys

from common import REPO, add_asset_args

sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_asset_args(p)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)

    from orchestrator.deploy.export import onnx_bytes
    from orchestrator.deploy.ort_runtime import onnxruntime, time_sessions
    from orchestrator.yolo.checkpoint import load_checkpoint

    ort = onnxruntime()
    onnx = onnx_bytes(load_checkpoint(a.weights).model.float().eval(), imgsz=a.imgsz)

    def session(spin: bool):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = a.threads, 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        return ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])

    print(f"| spinning | alone ms | interleaved ms (model / baseline) |  ({a.threads} threads, imgsz {a.imgsz})")
    print("|---|---|---|")
    for spin in (True, False):
        s, b = session(spin), session(spin)
        alone = time_sessions(s, None, a.imgsz, runs=a.runs, warmup=5)
        pair = time_sessions(s, b, a.imgsz, runs=a.runs, warmup=5)
        print(f"| {'on' if spin else 'off'} | {alone.ms:.2f} | {pair.ms:.2f} / {pair.baseline_ms:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
