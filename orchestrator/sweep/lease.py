"""The driver's lease on a study: one driver at a time, wherever the drivers run.

Two drivers telling the same Optuna study would each re-queue the other's running trials as orphans. The lease
is a record in the study's own attributes (:data:`~orchestrator.search.STUDY_LEASE`), so it lives wherever the
storage does; a driver proves it is alive by its pid on the same host, or by a recent heartbeat on another.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

from ..errors import OrchestratorError
from ..search import STUDY_LEASE
from ..study.spec import StudySpec

LEASE_STALE_S = 90.0  # a driver on another host that has not beaten for this long is presumed dead
HEARTBEAT_S = 10.0


class Lease:
    """This driver's hold on one study: taken once, renewed by :meth:`beat`, let go by :meth:`release`."""

    def __init__(self, study: Any, record: dict[str, Any]):
        self.study = study
        self.record = record
        self.last_beat = time.monotonic()

    @classmethod
    def acquire(cls, study: Any, spec: StudySpec) -> Lease:
        """Take the study, or raise when another live driver holds it (or takes it in the same instant)."""
        mine = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "beat": time.time()}
        cur = study.user_attrs.get(STUDY_LEASE)
        if cur and _alive(cur):
            raise OrchestratorError(
                f"study {spec.name!r} is being run by another driver (pid {cur['pid']} on {cur['host']}): "
                "wait for it to end or stop it, then run this command again"
            )
        study.set_user_attr(STUDY_LEASE, mine)
        time.sleep(0.3)  # two drivers starting together: the last writer wins, the other sees it here
        if (study.user_attrs.get(STUDY_LEASE) or {}).get("token") != mine["token"]:
            raise OrchestratorError(f"study {spec.name!r} was just taken by another driver: not running it twice")
        return cls(study, mine)

    def due(self) -> bool:
        """Whether a heartbeat is owed (the storage is not written on every pass of the loop)."""
        return time.monotonic() - self.last_beat > HEARTBEAT_S

    def beat(self) -> dict[str, Any] | None:
        """Renew the lease; returns the other driver's record instead when it was taken over (stop then)."""
        self.last_beat = time.monotonic()
        cur = self.study.user_attrs.get(STUDY_LEASE) or {}
        if cur.get("token") != self.record["token"]:
            return cur
        self.record["beat"] = time.time()
        self.study.set_user_attr(STUDY_LEASE, self.record)
        return None

    def release(self) -> None:
        """Let the study go, unless another driver already holds it; a storage gone away is left to go stale."""
        try:
            if (self.study.user_attrs.get(STUDY_LEASE) or {}).get("token") == self.record["token"]:
                self.study.set_user_attr(STUDY_LEASE, None)
        except Exception:  # the storage went away: the lease goes stale by itself
            pass


def _alive(record: dict[str, Any]) -> bool:
    if record.get("host") == socket.gethostname():
        try:
            os.kill(int(record["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return int(record["pid"]) != os.getpid()  # our own pid: a lease an earlier run here failed to release
    return time.time() - float(record.get("beat", 0)) < LEASE_STALE_S
