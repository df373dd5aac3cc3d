"""Stream watchdogs and hedged dispatch.

:func:`watched` wraps one backend's chunk stream: no delta (content, reasoning or a tool call;
headers and role chunks don't count) within ``first_token_timeout_s`` of sending the request,
or a gap of more than ``stall_timeout_s`` between deltas, closes the upstream and raises
:class:`backends.BackendUnavailable` with ``failure`` ``ttft`` or ``stall``; a prefill whose
progress says it will miss the first-token budget raises at once with ``slow_prefill``.

:func:`race` is hedged dispatch: start the primary; if it has produced no delta after
``hedge_after_s``, start the secondary too; whichever produces a delta first wins, and the
other is cancelled at once (its upstream connection closed).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Callable

import attrs

from backends import Backend, BackendError, BackendUnavailable, Chunk, Clock, Progress
from backends.clock import Timer
from routing.splice import is_delta


async def watched(backend: Backend, chunks: AsyncIterator[Chunk],
                  abandon: Callable[[float], str | None] | None = None,
                  switchable: Callable[[], bool] = lambda: True, *, clock: Clock) -> AsyncIterator[Chunk]:
    """``chunks`` under the first-token and stall watchdogs. A backend that reports prefill
    progress (llama.cpp's ``prompt_progress``) is judged by it before its first token: a prefill
    that keeps progressing is not a stall, and one whose ETA runs past ``first_token_timeout_s``
    (or that ``abandon(eta_s)`` rejects, naming why) fails at once with ``failure="slow_prefill"``
    instead of after the whole timeout, if ``switchable()`` says another backend could take the
    request; if none could, a slow answer beats none, and a progressing prefill is waited for.
    Chunks that only carried progress are not passed on."""
    cfg = backend.cfg
    started = clock()
    dog = _Watchdog(asyncio.get_running_loop(), clock, started + cfg.first_token_timeout_s, cfg.stall_timeout_s)
    failure, limit = "ttft", cfg.first_token_timeout_s
    role: Chunk | None = None  # a silent progress chunk's role, for the first chunk the client gets
    # try/finally rather than contextlib.aclosing: the same close, without its two coroutines.
    try:
        while True:
            # The watchdog bites only while we wait on the upstream, never across the yield
            # below: time the client takes to accept a chunk must not count against it.
            task = dog.watch()
            cancelling = task.cancelling()
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if not dog.bit or task.uncancel() > cancelling:
                    raise  # not ours, or someone else cancelled too: a real cancellation
                what = "first token" if failure == "ttft" else "next token"
                raise BackendUnavailable(backend.name, f"{backend.name} sent no {what} within {limit:g}s",
                                         status=504, failure=failure) from None
            finally:
                dog.task = None
            if failure == "ttft":  # prefill progress and its silent chunks come before the first delta only
                if chunk.progress is not None:
                    _judge_prefill(backend, chunk.progress, clock(), started, dog, abandon, switchable)
                if chunk.silent:
                    role = role or chunk
                    continue
                if role is not None:
                    yield role._replace(silent=False)
                    role = None
            if is_delta(chunk.data):
                dog.move(clock() + cfg.stall_timeout_s)
                failure, limit = "stall", cfg.stall_timeout_s
            yield chunk
    finally:
        dog.stop()
        await chunks.aclose()  # type: ignore[attr-defined]  # the upstream, at once


def _judge_prefill(backend: Backend, p: Progress, now: float, started: float, dog: _Watchdog,
                   abandon: Callable[[float], str | None] | None, switchable: Callable[[], bool]) -> None:
    cfg = backend.cfg
    done, left = p.processed - p.cache, p.total - p.processed
    if left <= 0:
        dog.move(now + cfg.stall_timeout_s)  # prefill is over: the first token is a decode away
        return
    if done <= 0 or p.time_ms <= 0:
        return  # no rate yet (the first reading comes before the first batch)
    eta = left / (done / (p.time_ms / 1000))
    why = None
    if now + eta > started + cfg.first_token_timeout_s:
        why = f"its first token would come after {now + eta - started:.0f}s (first_token_timeout_s is " \
              f"{cfg.first_token_timeout_s:g})"
    elif abandon is not None:
        why = abandon(eta)
    if why and switchable():
        raise BackendUnavailable(backend.name, f"{backend.name} is processing a {p.total}-token prompt; {why}",
                                 status=504, failure="slow_prefill")
    # Progressing (in time, or with nowhere else to go): a stall only if the readings stop for
    # longer than the rest should take.
    dog.move(now + eta + cfg.stall_timeout_s)


class _Watchdog:
    """One timer per stream, not one per chunk (``asyncio.timeout`` would arm and cancel a timer
    for every token). Moving the deadline later is an assignment; the timer, when it fires
    early, re-arms itself for the current deadline, and it only cancels a task that is waiting
    on the upstream at that moment. Deadlines and the timer are both on the injected clock.

    The timer is armed at most ``horizon`` ahead (the stall timeout): the first delta's stall
    deadline then falls after it, and a stream arms one timer, not a first-token timer that the
    first delta cancels and replaces."""

    __slots__ = ("loop", "clock", "deadline", "horizon", "task", "bit", "_handle", "_at")

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock, deadline: float,
                 horizon: float = float("inf")) -> None:
        self.loop = loop
        self.clock = clock
        self.horizon = horizon
        self._at = 0.0  # the deadline the armed timer was set for
        self.deadline = deadline
        self.task: asyncio.Task[object] | None = None
        self.bit = False
        self._handle: Timer | None = None

    def move(self, deadline: float) -> None:
        self.deadline = deadline
        if self._handle is not None and deadline < self._at:
            # Earlier than the armed timer (a stall timeout shorter than the first-token one).
            self._handle.cancel()
            self._arm()

    def _arm(self) -> None:
        now = self.clock()
        self._at = min(self.deadline, now + self.horizon)
        self._handle = self.clock.call_later(self._at - now, self._fire)

    def watch(self) -> asyncio.Task[object]:
        """Called before each read: the current task is the one to cancel if time runs out."""
        # With the loop given: on Python 3.11 current_task() looks the running loop up again
        # otherwise, most of its cost, and this runs before every upstream read.
        task = self.task = asyncio.current_task(self.loop)  # type: ignore[assignment]
        assert task is not None
        if self._handle is None:
            self._arm()
        return task

    def _fire(self) -> None:
        self._handle = None
        if self.task is None:
            return  # not reading now: watch() re-arms at the next read
        if self.clock() < self.deadline:
            self._arm()
            return
        self.bit = True
        self.task.cancel()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


@attrs.define
class Hedge:
    started: bool = False
    winner: str | None = None
    loser_chunks: int = 0  # chunks the losing side produced before it was cancelled


async def race(primary: Backend, secondary: Backend, open_stream: Callable[[Backend], AsyncIterator[Chunk]],
               hedge_after_s: float, hedge: Hedge, on_failure: Callable[[str, BackendError], None],
               *, clock: Clock) -> tuple[str, AsyncIterator[Chunk]]:
    """Returns the winner's name and its stream (buffered chunks first). Raises the error of the
    last backend standing if none produces a delta. The hedge's moment is a timer on ``clock``
    (the app's one clock), waited on alongside the primary's first chunks."""
    streams: dict[str, AsyncIterator[Chunk]] = {}
    pending: dict[str, asyncio.Future[Chunk]] = {}
    seen: dict[str, list[Chunk]] = {primary.name: [], secondary.name: []}
    error: BackendError | None = None
    due: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    timer = clock.call_later(hedge_after_s, lambda: due.done() or due.set_result(None))

    def start(backend: Backend) -> None:
        streams[backend.name] = open_stream(backend)
        pending[backend.name] = asyncio.ensure_future(anext(streams[backend.name]))

    start(primary)
    winner: str | None = None
    try:
        while winner is None:
            waiting = [*pending.values()] if hedge.started else [*pending.values(), due]
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if due in done and not hedge.started:
                hedge.started = True
                start(secondary)
                if len(done) == 1:
                    continue
            for name in [n for n, task in pending.items() if task in done]:
                task = pending.pop(name)
                try:
                    chunk = task.result()
                except StopAsyncIteration:
                    winner = name  # ended without a delta: nothing better will come from it
                    break
                except BackendError as exc:
                    if error is not None:
                        on_failure(error.backend, error)
                    error = exc
                    continue
                seen[name].append(chunk)
                if is_delta(chunk.data):
                    winner = name
                    break
                pending[name] = asyncio.ensure_future(anext(streams[name]))
            if winner is None and not pending and (hedge.started or error is not None):
                assert error is not None
                raise error
    finally:
        timer.cancel()
        due.cancel()
        for name, task in pending.items():
            if name != winner:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        for name, stream in streams.items():
            if name != winner:
                hedge.loser_chunks = len(seen[name])
                await stream.aclose()  # type: ignore[attr-defined]
    if error is not None and error.backend != winner:
        on_failure(error.backend, error)
    if hedge.started:
        hedge.winner = winner
    return winner, _chain(seen[winner], streams[winner])


async def _chain(first: list[Chunk], rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    async with contextlib.aclosing(rest):  # type: ignore[type-var]
        for chunk in first:
            yield chunk
        async for chunk in rest:
            yield chunk
