"""`openautoglm up` supervises its children: one that exits unexpectedly is started again with
the same command, port and data, after a backoff that doubles up to a cap, and each restart is
printed and logged; Ctrl-C/SIGTERM still stops everything."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from openautoglm.common import stack as stack_module
from openautoglm.common.server import wait_serving
from openautoglm.common.stack import EmbeddedStack
from openautoglm.common.tls import MeshIdentity


def test_a_process_that_keeps_exiting_is_restarted_with_a_doubling_capped_backoff(tmp_path, monkeypatch):
    monkeypatch.setattr(stack_module, "RESTART_DELAY_MAX", 1.0)
    stack = EmbeddedStack(tmp_path)
    stack.log_dir.mkdir(parents=True)
    reported: list[tuple[str, int, float]] = []

    async def run() -> None:
        stack._spawn("flaky", ["sh", "-c", "exit 3"], dict(os.environ))
        supervisor = asyncio.create_task(stack.supervise(lambda *event: reported.append(event)))
        await asyncio.sleep(4.5)
        stack._stopping = True
        await supervisor

    asyncio.run(run())
    assert [name for name, _, _ in reported] == ["flaky"] * len(reported)
    assert all(code == 3 for _, code, _ in reported)
    delays = [delay for _, _, delay in reported]
    assert delays[:3] == [0.5, 1.0, 1.0]  # doubling, capped (at 1 s here)
    assert len(reported) >= 3 and len(reported) - 1 <= stack.restarts["flaky"] <= len(reported)


def _children(pid: int) -> dict[str, int]:
    """The `up` process's children by service name (or `nats`)."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    children = {}
    for line in out.splitlines():
        child, args = line.strip().split(" ", 1)
        name = "nats" if "nats-server" in args else args.split(" serve ", 1)[1].split()[0]
        children[name] = int(child)
    return children


class Output:
    """Everything a process prints, collected by a thread (a blocking readline cannot time out)."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(proc.stdout), daemon=True)
        self._thread.start()

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in " ".join("".join(self.lines).split()):
                return
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not printed within {timeout}s:\n{''.join(self.lines)}")


@pytest.mark.parametrize("victims", [("gateway",), ("trainer", "nats")])
def test_up_restarts_killed_children_on_their_ports_and_still_stops_cleanly(tmp_path, victims):
    proc = subprocess.Popen([sys.executable, "-m", "openautoglm.cli", "up", "--data-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "300"})
    output = Output(proc)
    after: dict[str, int] = {}
    try:
        output.wait_for("Ctrl-C stops", 180)
        endpoints = json.loads((tmp_path / "stack.json").read_text())["endpoints"]
        before = _children(proc.pid)
        for victim in victims:
            os.kill(before[victim], signal.SIGKILL)
        for victim in victims:
            output.wait_for(f"{victim} exited with code -9; restarting it", 30)
        operator = MeshIdentity(tmp_path / "tls", "operator").channel_credentials()

        async def serving_again() -> float:
            started = time.monotonic()
            for name in ("gateway", "prompt-generator", "gnn-scheduler", "evaluator", "trainer"):
                await wait_serving(endpoints[name], 60, credentials=operator, peer=name)
            return time.monotonic() - started

        asyncio.run(serving_again())
        after = _children(proc.pid)
        assert set(after) == set(before)
        up_log = (tmp_path / "logs" / "up.log").read_text()
        for victim in victims:
            assert after[victim] != before[victim]
            assert f"{victim} exited with code -9; restarting it" in up_log
        assert json.loads((tmp_path / "stack.json").read_text())["endpoints"] == endpoints  # same ports
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)
    printed = "".join(output.lines)
    assert proc.returncode == 0, printed
    assert "stopped:" in printed
    for child in after.values():
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)

