"""A child that ends with the process that started it (gRPC- and NATS-free: the trainer's
export child arms it too, and the gRPC-free cores may import it).

`exit_with_parent` is called first thing in a child whose parent set PARENT_PID_VARIABLE to its
own pid: the embedded stack's services (common/stack.py), the trainer's export process.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

# Set by the stack in each service's environment: the pid the service must not outlive.
PARENT_PID_VARIABLE = "OPENAUTOGLM_PARENT_PID"
PR_SET_PDEATHSIG = 1
PARENT_POLL_SECONDS = 1.0


def exit_with_parent() -> None:
    """Called first thing in a service the stack started: SIGTERM this process when the stack's
    process dies, even by SIGKILL, as a pod's containers end with the pod. Linux arms the kernel's
    parent-death signal; elsewhere a daemon thread polls the parent pid."""
    parent = os.environ.get(PARENT_PID_VARIABLE)
    if not parent:
        return
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    else:
        def watch() -> None:
            while os.getppid() == int(parent):
                time.sleep(PARENT_POLL_SECONDS)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
    if os.getppid() != int(parent):  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)
