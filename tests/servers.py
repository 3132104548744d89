"""Local servers that tests start (``orchestrator ui``/``dashboard``): a free port, who listens, a clean stop."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path


def listening(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp: nothing is connected to)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if state == "0A" and int(p, 16) == port:  # 0A = LISTEN
            out.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return out


def stop(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """End a server this test started (SIGTERM: it stops what it started itself), killed if it hangs."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
