"""run_detached: blocking work a stopping service may leave behind (common/detached.py)."""
from __future__ import annotations

import contextvars
import subprocess
import sys
import textwrap

import pytest

from openautoglm.common.detached import run_detached

# A service's last moments: a blocking call still running when its main coroutine returns.
STOPPING = textwrap.dedent("""
    import asyncio, sys, time
    from openautoglm.common.detached import run_detached

    async def main(how):
        work = asyncio.create_task(run_detached(time.sleep, 120) if how == "detached" else asyncio.to_thread(time.sleep, 120))
        await asyncio.sleep(0.5)
        work.cancel()
        print("stopped", flush=True)

    asyncio.run(main(sys.argv[1]))
""")


def test_a_process_exits_with_detached_work_still_running_where_to_thread_would_keep_it():
    done = subprocess.run([sys.executable, "-c", STOPPING, "detached"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "stopped", done.stderr
    # The same with asyncio.to_thread waits for the 120 s sleep (asyncio.run joins its executor).
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", STOPPING, "to_thread"], capture_output=True, text=True, timeout=10)


async def test_results_exceptions_and_the_callers_context_go_through():
    assert await run_detached(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        await run_detached(lambda: 1 / 0)
    marker = contextvars.ContextVar("marker", default="unset")
    marker.set("caller's")
    assert await run_detached(marker.get) == "caller's"  # spans keep their parent the same way
