"""The lease and the signal handling in isolation (no Ray, an in-memory Optuna study)."""

from __future__ import annotations

import os
import signal
import time
from types import SimpleNamespace

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.search import STUDY_LEASE
from orchestrator.sweep.dispatch import _keep_sigterm
from orchestrator.sweep.lease import Lease
from orchestrator.sweep.resume import stop_on_signals


def _study():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study()


def test_a_lease_taken_over_is_reported_by_the_next_beat_and_not_released():
    study, spec = _study(), SimpleNamespace(name="s")
    lease = Lease.acquire(study, spec)
    assert lease.beat() is None and study.user_attrs[STUDY_LEASE]["token"] == lease.record["token"]
    other = {"host": "elsewhere", "pid": 1, "token": "other", "beat": time.time()}
    study.set_user_attr(STUDY_LEASE, other)
    assert lease.beat() == other
    lease.release()
    assert study.user_attrs[STUDY_LEASE] == other
    with pytest.raises(OrchestratorError, match="being run by another driver"):
        Lease.acquire(study, spec)  # a recent beat from another host: alive


def test_sigterm_inside_stops_like_ctrl_c_and_the_handlers_come_back():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(KeyboardInterrupt):
        with stop_on_signals() as stop:
            with _keep_sigterm():  # as around ray.init: Ray's handler replaced ours, ours comes back
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs here at the latest
    assert stop.is_set()
    assert {sig: signal.getsignal(sig) for sig in before} == before
