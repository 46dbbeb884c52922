"""No process of the service outlives it.

Paddle Serving forks helpers: its Go HTTP gateway, the worker processes of process ops, and the
sync manager those use. A forked child inherits the parent's signal handlers (so SIGTERM sets a
flag in a process that never reads it) and has nothing tying its life to the parent's (so after
SIGKILL of the server it lives on, holding the ports). :func:`guard_children` fixes both for every
child forked after it is called: in each child, right after ``fork()``, SIGTERM and SIGINT get
their default action back and Linux's parent-death signal is set to SIGKILL.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_installed = False
_forking_pid = 0  # set just before each fork, read in the child


def _set_parent_death_signal(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent thread exits (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def _before_fork() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _in_forked_child() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    _set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != _forking_pid:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)


def guard_children() -> None:
    """Make every child this process forks from now on die with it (idempotent).

    Call it once at the entry point, before the pipeline starts. Children must be forked by the
    main thread: the parent-death signal fires when the forking thread exits.
    """
    global _installed
    if _installed:
        return
    os.register_at_fork(before=_before_fork, after_in_child=_in_forked_child)
    _installed = True
    logger.debug("forked children die with pid %d", os.getpid())
