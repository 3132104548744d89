"""Offline through the CLI: ``orchestrator val --weights yolov5s.pt`` fails with one line and exit code 2."""

from __future__ import annotations

import time

from local_server import files_under

from orchestrator import cli


def test_val_with_official_name_offline_exits_2_with_one_line(cache, coco128_yaml, closed_port, monkeypatch, capsys):
    monkeypatch.setenv("ORCHESTRATOR_DOWNLOAD_BASE", f"http://127.0.0.1:{closed_port}")
    start = time.perf_counter()
    code = cli.main(["val", "--weights", "yolov5s.pt", "--data", str(coco128_yaml), "--imgsz", "64"])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith(f"error: cannot download http://127.0.0.1:{closed_port}/yolov5s.pt: ")
    assert str(cache / "weights" / "yolov5s.pt") in err[-1]
    assert elapsed < 10
    assert files_under(cache / "weights") == []
