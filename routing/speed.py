"""What each backend's speed has been, learned from what it reported; and its predicted time to
first token. Pure: readings come in as plain values.

llama-server reports ``timings`` on every answer (``prompt_per_second``, ``predicted_per_second``,
``cache_n``, ``prompt_n``); any backend's time to first token is measured by the router. Each is
a moving average, so a server that gets slower (a bigger model loaded, another user on the box)
is seen within a few requests.

Predicted TTFT = the uncached prompt tokens / the prefill speed, times the requests already in
flight plus this one (llama-server shares its batch between slots: measured on 2 cores, one
stream got 66 tokens/s and four got 24 each), or the measured TTFT for a backend that reports no
prefill speed (a cloud). ``None`` until something was measured.

    speed = Speed()
    speed.observe_timings({"prompt_per_second": 520.0, "predicted_per_second": 41.0, ...})
    speed.predict_ttft(uncached_tokens=30_000, in_flight=1)     # about 115 s
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

ALPHA = 0.3  # weight of the newest reading in each moving average


def _ema(old: float | None, new: float) -> float:
    return new if old is None else old + ALPHA * (new - old)


@attrs.define
class Speed:
    prefill_tps: float | None = None
    decode_tps: float | None = None
    cache_ratio: float | None = None  # cache_n / (cache_n + prompt_n): how well prefixes are reused
    ttft_s: float | None = None
    readings: int = 0

    def observe_timings(self, timings: Mapping[str, Any]) -> None:
        def number(key: str) -> float | None:
            value = timings.get(key)
            return float(value) if isinstance(value, (int, float)) and value > 0 else None

        prompt_n, cache_n = number("prompt_n") or 0.0, number("cache_n") or 0.0
        # A prefill of a handful of tokens (a warm cache) says nothing about prefill speed.
        if (tps := number("prompt_per_second")) is not None and prompt_n >= 64:
            self.prefill_tps = _ema(self.prefill_tps, tps)
        if (tps := number("predicted_per_second")) is not None:
            self.decode_tps = _ema(self.decode_tps, tps)
        if prompt_n + cache_n:
            self.cache_ratio = _ema(self.cache_ratio, cache_n / (prompt_n + cache_n))
        self.readings += 1

    def observe_ttft(self, seconds: float) -> None:
        self.ttft_s = _ema(self.ttft_s, seconds)

    def predict_ttft(self, uncached_tokens: int, in_flight: int) -> float | None:
        if self.prefill_tps:
            return uncached_tokens / self.prefill_tps * (1 + in_flight)
        return self.ttft_s

    def report(self, in_flight: int) -> dict[str, Any]:
        def r(x: float | None, n: int = 1) -> float | None:
            return None if x is None else round(x, n)

        return {"prefill_tps": r(self.prefill_tps), "decode_tps": r(self.decode_tps),
                "cache_hit_ratio": r(self.cache_ratio, 3), "ttft_s": r(self.ttft_s, 3), "in_flight": in_flight,
                "predicted_ttft_s_10k_tokens": r(self.predict_ttft(10_000, in_flight), 2)}
