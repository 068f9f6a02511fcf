"""Blocking work a stopping service may leave behind.

`asyncio.to_thread` runs on the loop's default executor, which `asyncio.run` joins when the
loop closes; concurrent.futures' threads are joined again at interpreter exit. Either way, a
service stopped while such work runs (an ONNX export, a test-split prediction: a minute under
load) stays alive until it ends, past any grace a supervisor gives it. Work whose caller retries
when the service goes away runs here instead, on a daemon thread that exit does not wait for.
"""
from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def run_detached(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on a new daemon thread (with this task's context, so its spans keep their
    parent); its result or exception, awaited. Cancelling the await abandons the work."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def work() -> None:
        try:
            result = context.run(fn, *args)
        except BaseException as err:  # handed to the awaiting task, as to_thread would
            _deliver(loop, future, None, err)
        else:
            _deliver(loop, future, result, None)

    threading.Thread(target=work, daemon=True, name=f"detached-{getattr(fn, '__name__', 'work')}").start()
    return await future


def _deliver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    def settle() -> None:
        if future.done():  # the await was cancelled: the result goes nowhere
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop closed meanwhile: nobody is waiting any more
        pass
