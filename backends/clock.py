"""The one clock: readings, timers and sleeps from a single source, injected everywhere.

    clock = SystemClock()              # the app's: time.monotonic and the running loop's timers
    clock()                            # now, in seconds
    handle = clock.call_later(2.0, fn) # fn() two clock-seconds from now; handle.cancel()
    await clock.sleep(0.5)

    fake = ManualClock()               # tests and simulations: time moves only when told
    fake.advance(30)                   # runs the timers that fall due, in order

The watchdog, the hedge and the supervisor's retry waits all go through ``call_later`` and
``sleep``, so a test on a :class:`ManualClock` sees a 30-second first-token timeout fire without
waiting 30 seconds, and a clock reading never disagrees with the timer that was armed from it
(two clocks, ``time.monotonic`` and ``loop.time()``, once did).

A plain ``Callable[[], float]`` still works where only readings are needed; :func:`as_clock`
gives it the running loop's timers.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Callable, Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def __call__(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...

    async def sleep(self, delay: float) -> None: ...


class LoopTimers:
    """Readings from ``now``; timers and sleeps on the running event loop (real time)."""

    __slots__ = ("now",)

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(delay)


class SystemClock(LoopTimers):
    """``time.monotonic`` with the running loop's timers: the app's clock."""

    __slots__ = ()
    # Read on every chunk: the builtin itself, not a Python-level call that forwards to it.
    __call__ = staticmethod(time.monotonic)  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__(time.monotonic)


def as_clock(clock: Callable[[], float]) -> Clock:
    """``clock`` if it is a whole :class:`Clock`, else its readings with the loop's timers."""
    if hasattr(clock, "call_later") and hasattr(clock, "sleep"):
        return clock  # type: ignore[return-value]
    return LoopTimers(clock)


class _ManualTimer:
    __slots__ = ("at", "callback", "cancelled")

    def __init__(self, at: float, callback: Callable[[], None]) -> None:
        self.at, self.callback, self.cancelled = at, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told (:meth:`advance`, :meth:`run_until_idle`), or, with
    ``sleep_advances`` (the default), when someone sleeps: a sleep then jumps time forward by
    its length and fires the timers on the way. That is right while one task at a time waits
    on the clock (a retry's backoff, a cooldown); tests that race timers against each other
    set ``sleep_advances=False`` and move time themselves."""

    def __init__(self, start: float = 1000.0, *, sleep_advances: bool = True) -> None:
        self.now = start
        self.sleep_advances = sleep_advances
        self.slept: list[float] = []  # every sleep asked for, in order
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = _ManualTimer(self.now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.at, next(self._seq), timer))
        return timer

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        if self.sleep_advances:
            self.advance(delay)
            await asyncio.sleep(0)
            return
        woken = asyncio.get_running_loop().create_future()
        timer = self.call_later(delay, lambda: woken.done() or woken.set_result(None))
        try:
            await woken
        finally:
            timer.cancel()

    def advance(self, seconds: float) -> None:
        """Move time forward, firing each timer that falls due at its own moment."""
        end = self.now + max(0.0, seconds)
        while self._timers and self._timers[0][0] <= end:
            at, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, at)
            timer.callback()
        self.now = end

    def next_due(self) -> float | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    async def run_until_idle(self, task: asyncio.Future[object], *, settle: int = 50,
                             limit_s: float = 3600.0) -> None:
        """Drive ``task`` to its end with no real waiting: whenever the loop has settled (no
        socket work; ``settle`` turns of the loop), jump to the next timer. For socket-free
        tests (scripted backends), where settling means everyone is waiting on the clock."""
        deadline = self.now + limit_s
        while not task.done():
            for _ in range(settle):
                await asyncio.sleep(0)
                if task.done():
                    return
            due = self.next_due()
            if due is None or due > deadline:
                raise AssertionError(f"stuck: nothing due on the clock within {limit_s:g}s and the task waits")
            self.advance(due - self.now)
