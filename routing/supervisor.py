"""The supervisor: runs one request under the watchdog and yields its typed events.

The loop is thin on purpose. It opens a backend's stream (hedged when configured), relays the
chunks through :class:`routing.splice.Splice`, feeds what it measured back into the backend
states, and on a failure asks the pure :class:`routing.flow.Flow` what to do next: it only
waits and opens what it is told to.

    supervision = Supervision(router, route, body)
    async with contextlib.aclosing(supervision.events()) as events:
        async for event in events: ...
    supervision.epilogue()      # what a stream closed early still owed (its Usage)
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, AsyncIterator, Mapping

import attrs

from backends import Backend, BackendError, BackendRejected, Chunk
from routing.events import BEFORE_FIRST_TOKEN, Event, Failed, Finished, Hedged, Serving, Started, Switched, Usage
from routing.flow import Flow
from routing.splice import Splice
from routing.watch import Hedge, race, watched

if TYPE_CHECKING:
    from routing.router import Route, Router

log = logging.getLogger("routing")


class Supervision:
    """One request's run. Not shared: the handler that asked for it is its only reader."""

    def __init__(self, router: Router, route: Route, body: Mapping[str, Any]) -> None:
        self.router = router
        self.route = route
        self.body = body
        self.splice = Splice()
        self.served: list[str] = []
        self.used: set[str] = set()  # backends whose Usage was yielded
        self.current: str | None = None  # the backend being read from
        self._owed: list[Event] = []

    def epilogue(self) -> list[Event]:
        """The events a stream closed early (the client left) could not yield: the Usage of the
        backend it was reading from, estimated from what the client had received."""
        owed, self._owed = self._owed, []
        return owed

    async def events(self) -> AsyncIterator[Event]:
        router, route, splice = self.router, self.route, self.splice
        cfg, states, clock = router.cfg, router.states, router.clock
        started = clock()
        if not route.features.prompt.settled:
            # The new text the decision only bounded is counted on the loop's next turn, which
            # comes once this request waits for its upstream (for its answer, or for a new
            # connection to open): time the client waits anyway, not time to its first byte.
            clock.call_later(0.0, route.features.prompt.exact)
        flow = Flow(route.decision, cfg, tiers=router.tiers, prefill=router.prefill, started=started,
                    rand=router.rand)
        step = flow.first()
        request: Mapping[str, Any] = self.body
        reason = route.reason
        ttft_s: float | None = None
        while True:
            name = step.target
            assert name is not None
            reason = step.reason or reason
            flow.sent(name)
            yield Started(name, reason, flow.attempt)
            attempt_started = clock()
            states.started(name, attempt_started)
            busy = self.current = name
            states.in_flight[busy] += 1
            error: BackendError | None = None
            try:
                chunks, hedged = await self._open(name, request, first=flow.attempt == 1)
                if hedged is not None:
                    # The losing side consumed its prompt (estimated): free when local lost, a
                    # cost when the cloud did, never a saving.
                    yield hedged
                    loser = hedged.primary if hedged.winner != hedged.primary else hedged.secondary
                    yield self._usage(loser, None)
                    if hedged.winner != name:
                        flow.won(hedged.winner)
                        name = self.current = hedged.winner
                        yield Started(name, reason, flow.attempt)
                serving = name in self.served  # a continuation by a backend that served before
                try:  # closed as contextlib.aclosing would, without its two coroutines
                    async for chunk in chunks:
                        for out in splice.accept(chunk):
                            yield out
                        if chunk.limits is not None:
                            # A response's rate-limit readings, on its first chunk: read once
                            # that chunk has gone to the client (backends.HeaderReadings).
                            states.observe_limits(name, chunk.limits)
                        if not serving and splice.delivered:
                            serving = True
                            self.served.append(name)
                            now = clock()
                            states.speeds[name].observe_ttft(now - attempt_started)
                            if ttft_s is None:
                                ttft_s = now - started
                            yield Serving(name)
                        if "timings" in chunk.data and chunk.data["timings"]:  # llama.cpp's, on its last chunk
                            states.speeds[name].observe_timings(chunk.data["timings"])
                finally:
                    await chunks.aclose()  # type: ignore[attr-defined]
            except (GeneratorExit, asyncio.CancelledError):
                # The client left: what this backend consumed is still owed to accounting.
                if self.current is not None and self.current not in self.used:
                    self._owed.append(self._usage(self.current, splice.usage, partial=True))
                raise
            except BackendError as exc:
                error = exc
                name = self.current or name
            finally:
                states.in_flight[busy] -= 1
            if error is None:
                yield self._usage(name, splice.usage)
                self._succeeded(name)
                yield Finished(name, tuple(self.served), ttft_s)
                return
            phase = splice.phase
            now = clock()
            if error.status == 429 and error.retry_after is None:
                # A 429 that names no wait (no retry-after, no exhausted window) hit a limit we
                # cannot see: it is as good as a retry-after of the cooldown routing will apply.
                error.retry_after = cfg.cooldown_s
            step = flow.failed(error, phase, has_content=bool(splice.content), now=now,
                               usable=router.usable, recovers_at=router.recovers_at)
            if step.blame:
                states.failed(name, error, now)
            log.info("attempt %d on %s failed (%s): %s", flow.attempt, name, phase, error)
            if step.rejected:
                yield Failed(error, tuple(self.served), ttft_s)  # the request itself is wrong
                return
            spent = None
            # A rejection (a 4xx before any stream) consumed nothing; a failure mid-answer did.
            if phase != BEFORE_FIRST_TOKEN and name not in self.used and not isinstance(error, BackendRejected):
                spent = self._usage(name, splice.usage, partial=True)
                yield spent
            failure = error.failure or ("cut" if phase != BEFORE_FIRST_TOKEN else "unavailable")
            yield Switched(name, step.target, failure, phase, step.method, error.message, step.delay_s)
            if step.delay_s:
                await router.sleep(step.delay_s)
                if step.recheck and not router.usable(step.target):  # type: ignore[arg-type]
                    step = attrs.evolve(step, error=error)
            if step.error is not None:
                yield Failed(step.error, tuple(self.served), ttft_s)
                return
            splice.switch(spent.usage if spent is not None else None)
            if step.method in ("prefill", "instruction"):
                request = router.backends[step.target].continuation_request(  # type: ignore[index]
                    self.body, splice.text, step.method == "prefill", cfg.continue_prompt)
            elif step.method == "restart":
                request = self.body

    async def _open(self, name: str, request: Mapping[str, Any],
                    first: bool) -> tuple[AsyncIterator[Chunk], Hedged | None]:
        router, decision = self.router, self.route.decision
        clock = router.clock

        def abandon(eta_s: float) -> str | None:
            """Give up a prefill whose ETA is far past what another candidate takes."""
            margin = router.cfg.prefill_margin_s
            others = [router.states.speeds[n].ttft_s for n in decision.candidates if n != name]
            best = min((t for t in others if t is not None), default=None)
            if margin and best is not None and eta_s > best + margin:
                return f"its prefill needs {eta_s:.0f}s more, another backend answers in {best:.1f}s"
            return None

        def switchable() -> bool:
            return any(n != name and router.usable(n) for n in (*decision.candidates, *decision.reserve))

        def open_stream(backend: Backend) -> AsyncIterator[Chunk]:
            return watched(backend, backend.stream(request), abandon, switchable, clock=clock)

        # A hedge races the first choice of the local tier with the first of the cloud's.
        tier = router.tiers[name]
        other = next((n for n in decision.candidates if router.tiers[n] != tier), None)
        if first and router.cfg.hedge_after_s > 0 and other is not None and tier == "local" and router.usable(other):
            hedge = Hedge()
            winner, chunks = await race(router.backends[name], router.backends[other], open_stream,
                                        router.cfg.hedge_after_s, hedge,
                                        lambda n, exc: router.states.failed(n, exc, clock()), clock=clock)
            if not hedge.started:
                return chunks, None
            return chunks, Hedged(name, other, winner)
        return open_stream(router.backends[name]), None

    def _usage(self, name: str, reported: Mapping[str, Any] | None, partial: bool = False) -> Usage:
        """What one backend consumed: its own usage if it said, else an estimate (marked)."""
        self.used.add(name)
        if reported:
            return Usage(name, dict(reported), estimated=False)
        prompt = self.route.features.prompt_tokens
        completion = 0
        if partial and name == self.current:
            counter = self.router.counter
            completion = counter.count(self.splice.text) + counter.count("".join(self.splice.reasoning))
        return Usage(name, {"prompt_tokens": prompt, "completion_tokens": completion,
                            "total_tokens": prompt + completion}, estimated=True)

    def _succeeded(self, name: str) -> None:
        router, features = self.router, self.route.features
        now = router.clock()
        router.states.succeeded(name, now)
        if name not in self.served:
            self.served.append(name)
        if router.cfg.sticky:
            # The conversation stays with the server that began the answer, also after another
            # rescued it mid-answer: that one holds the prefix in its cache, and one stall must
            # not move a conversation's every later turn to the paid cloud. If it keeps failing,
            # its circuit breaker takes it out of the choice.
            keeper = self.served[0] if self.served else name
            router.states.sticky.set(features.conversation_key, keeper, now, features.prompt_tokens)
