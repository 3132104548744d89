"""What every benchmark script shares: where the assets are, and the arguments that name them."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ORCHESTRATOR_ASSETS", REPO.parent / "shared" / "assets"))


def add_asset_args(p: argparse.ArgumentParser, imgsz: int = 320) -> None:
    """--weights, --data and --imgsz, defaulting to the shared yolov5n and coco128."""
    p.add_argument("--weights", default=str(ASSETS / "yolov5n.pt"))
    p.add_argument("--data", default=str(ASSETS / "coco128.yaml"))
    p.add_argument("--imgsz", type=int, default=imgsz)


class TreeCPU:
    """CPU seconds of a process and all its descendants, sampled from /proc while it runs.

    Why not ``getrusage(RUSAGE_CHILDREN)``: Ray's workers are killed, never waited for, so their time never reaches
    it (a 5 s busy Ray task read as 2.9 s for the whole run). A process seen at a sample keeps its last reading; one
    that lives less than ``every`` seconds between samples is missed (Ray workers live for the whole run).
    """

    def __init__(self, pid: int, every: float = 0.5) -> None:
        import threading

        self.pid, self.every, self.seen = pid, every, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        ticks = os.sysconf("SC_CLK_TCK")
        parent, cpu = {}, {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
            parent[int(entry)] = int(fields[1])
            cpu[(int(entry), fields[19])] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime; starttime
        tree = {self.pid}
        changed = True
        while changed:
            changed = False
            for pid, ppid in parent.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    changed = True
        for (pid, start), seconds in cpu.items():
            if pid in tree:
                self.seen[(pid, start)] = seconds

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.seen.values())
