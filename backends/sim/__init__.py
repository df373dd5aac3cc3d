"""Simulators of the two upstreams: real aiohttp servers with scripted answers and named faults.

Tests, benchmarks and the ``demo`` command all use them::

    from backends.sim import CerebrasSim, Fault, LlamaCppSim, Script

    local = LlamaCppSim(Script(content="Hi!"), tokens_per_s=None)
    base = await local.start()            # "http://127.0.0.1:PORT/v1"
    local.push_faults(Fault.cut_after(3))  # the next chat request dies after 3 tokens
    ...
    await local.stop()

They depend only on the stdlib, aiohttp, orjson and attrs, never on the gateway.
"""

from backends.sim.cerebras import CerebrasSim
from backends.sim.common import (
           Fault,
           RecordedRequest,
           Script,
           estimate_prompt_tokens,
           tokenize,
)
from backends.sim.llamacpp import LlamaCppSim

__all__ = ["CerebrasSim", "Fault", "LlamaCppSim", "RecordedRequest", "Script",
           "estimate_prompt_tokens", "tokenize"]
