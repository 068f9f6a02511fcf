"""How the embedded stack starts its processes: without forking a gRPC process, and so that they
end with the process that started them, even when it is SIGKILLed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path


# A stand-in for `openautoglm up`: gRPC live in it (as the stack's own health checks make it),
# a Python child that arms its own parent-death signal, and nats-server wrapped to have it armed.
PARENT = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import grpc
    from openautoglm.common.stack import nats_server_binary, spawn, with_parent_death_signal
    from openautoglm.common.net import free_port

    forks = []
    os.register_at_fork(before=lambda: forks.append(1))
    server = grpc.server(__import__("concurrent.futures").futures.ThreadPoolExecutor(1))
    server.add_insecure_port("127.0.0.1:0")
    server.start()
    logs = Path(sys.argv[1])
    service = spawn([sys.executable, "-c", "from openautoglm.common.stack import exit_with_parent; "
                     "exit_with_parent(); import time; time.sleep(120)"], dict(os.environ), logs / "service.log")
    nats = spawn(with_parent_death_signal([nats_server_binary(), "-a", "127.0.0.1", "-p", str(free_port())]),
                 dict(os.environ), logs / "nats.log")
    print(json.dumps({"service": service.pid, "nats": nats.pid, "forks": len(forks)}), flush=True)
    time.sleep(120)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its exit status is left


def test_children_start_without_a_fork_and_end_with_a_killed_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        assert line, "the parent script did not start its children"
        started = json.loads(line)
        # vfork runs no fork handlers: gRPC's would restart its poller in the child, which could
        # abort it before exec (grpc/grpc#43055).
        assert started["forks"] == 0
        time.sleep(1.0)  # the children are running (and have armed their signals)
        assert _alive(started["service"]) and _alive(started["nats"])
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (_alive(started["service"]) or _alive(started["nats"])):
            time.sleep(0.1)
        assert not _alive(started["service"]), "the service outlived the killed parent"
        assert not _alive(started["nats"]), "nats-server outlived the killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in ("service", "nats"):
            if "started" in locals() and _alive(started[pid]):
                os.kill(started[pid], signal.SIGKILL)
