"""``--exit-with-parent``: a process started by a harness stops when that harness goes away.

``methtrader chaos run`` and ``bench chaos`` start scratch ``run`` and ``fake-bybit`` processes;
if the harness is SIGKILLed it cannot stop them, and they would trade and write on with nobody
watching. Started with ``--exit-with-parent``, such a process watches its parent and sends
itself SIGTERM (its clean stop: ``run`` stops its job consumer and records the stop) once the
parent is gone.

A thread polls the parent pid rather than ``PR_SET_PDEATHSIG``: that signal fires when the
forking *thread* ends, and the chaos runner starts processes from lane threads.
"""

from __future__ import annotations

import os
import signal
import threading
import time

POLL_S = 0.5


def exit_with_parent(poll_s: float = POLL_S) -> None:
    """Send this process SIGTERM once its parent is gone (at once when it is gone already)."""
    parent = os.getppid()

    def stop() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    if parent == 1:
        stop()
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        stop()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
