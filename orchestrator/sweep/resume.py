"""Stopping cleanly and picking up after a driver that could not: signals, and the trials it left RUNNING.

Running the same command again resumes a study, so a stop must leave nothing half-told: a signal becomes a
KeyboardInterrupt the loop answers by re-queueing its running trials, and a driver that died without that
chance (SIGKILL, a lost node) has its trials failed and re-queued by the next one.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..search import (
    ATTR_BASELINE,
    ATTR_INTENDED,
    ATTR_RATIOS,
    ATTR_RETRY_OF,
    ATTR_WARM_START,
    STUDY_ORPHAN_FAILURES,
    intended_params,
)
from .results import record_failure


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM and SIGINT raise KeyboardInterrupt while inside; yields the event they also set.

    SIGTERM (``ray job stop``, a scheduler, kill) should stop like Ctrl-C, running trials re-queued and the resume
    hint printed, not end the process at once as Ray's own handler does. SIGINT too: a shell starts background
    jobs with SIGINT ignored, and ``kill -INT`` must still stop cleanly. The event is for the loop: a
    KeyboardInterrupt some library swallows must not keep it running. Outside the main thread (where Python
    allows no handler) nothing is installed and the event is never set.
    """
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def interrupt(signum, frame):
            stop.set()
            raise KeyboardInterrupt

        previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def fail_and_requeue(study: Any, number: int, reason: str, *, requeue: bool = True, handle: Any = None) -> None:
    """Tell a RUNNING trial FAIL with ``reason`` and (unless told not to) enqueue its parameters again.

    ``handle`` is the ``optuna.Trial`` this driver asked; a trial left RUNNING by a dead driver has none, and
    Optuna offers no public way to write to it (``Study.tell`` takes a number but no attributes): its reason
    goes to the study's ``orphan_failures`` record, which :func:`.search.failure_reason` reads.
    """
    from optuna.trial import TrialState

    t = study.get_trials(deepcopy=False)[number]
    if handle is not None:
        record_failure(handle, reason)
    else:
        orphans = dict(study.user_attrs.get(STUDY_ORPHAN_FAILURES) or {})
        orphans[str(number)] = reason
        study.set_user_attr(STUDY_ORPHAN_FAILURES, orphans)
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    if not requeue:
        return
    attrs = {ATTR_RETRY_OF: number}
    for origin in (ATTR_BASELINE, ATTR_WARM_START, ATTR_RATIOS):  # a retry keeps its origin and ratios
        if t.user_attrs.get(origin) is not None:
            attrs[origin] = t.user_attrs[origin]
    params = intended_params(t)
    study.enqueue_trial(params, user_attrs={**attrs, ATTR_INTENDED: params})


def recover_orphans(study: Any, view: Any) -> None:
    """Trials left RUNNING by a dead driver: FAIL with the reason, parameters tried again.

    A driver killed while asking leaves a trial with only part of its parameters: it never ran, so it is
    not retried (the sampler asks anew); a baseline or warm start still has all of its own. ``view`` reports
    each one (anything with ``event(str)``).
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    names = set().union(*(intended_params(t) for t in trials)) if trials else set()
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        if names and set(intended_params(t)) >= names:
            fail_and_requeue(study, t.number, "the driver stopped before this trial finished; retried as a new trial")
            view.event(f"trial {t.number} was left running by a stopped driver: marked FAIL, parameters enqueued again")
        else:
            why = "the driver stopped while this trial's parameters were being asked; not retried (never ran)"
            fail_and_requeue(study, t.number, why, requeue=False)
            view.event(f"trial {t.number} was left half-asked by a stopped driver: marked FAIL")
