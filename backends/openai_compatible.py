"""Any OpenAI-compatible cloud (Z.ai's GLM API, OpenRouter, vLLM...): the base of the cloud kinds.

It drops the llama.cpp extras that clients (and our own failover) may send, which such clouds tend
to reject, and renames a streamed ``reasoning`` to ``reasoning_content``, the name Cline reads.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from backends.base import HTTPBackend

# llama.cpp sampling/server extras that clients such as Cline or our own failover may send;
# OpenAI-compatible clouds tend to reject them.
LLAMACPP_EXTRAS = frozenset({
    "top_k", "min_p", "typical_p", "repeat_penalty", "repeat_last_n", "mirostat", "mirostat_tau",
    "mirostat_eta", "cache_prompt", "id_slot", "n_probs", "samplers", "timings_per_token",
    "return_progress", "chat_template_kwargs", "grammar", "json_schema", "n_predict",
    "dry_multiplier", "xtc_probability", "xtc_threshold", "ignore_eos", "reasoning_format",
})


def _rename_reasoning(container: dict[str, Any]) -> bool:
    if "reasoning" in container:
        container["reasoning_content"] = container.pop("reasoning")
        return True
    return False


class OpenAICompatible(HTTPBackend):
    """Any OpenAI-compatible cloud (Z.ai's GLM API, OpenRouter, vLLM...).

    Drops llama.cpp-only extras and maps a ``reasoning`` field to ``reasoning_content``, the
    name Cline and llama.cpp use; everything else passes through.
    """

    kind: ClassVar[str] = "openai"

    def upstream_body(self, body: Mapping[str, Any], stream: bool) -> dict[str, Any]:
        out = super().upstream_body(body, stream)
        for key in LLAMACPP_EXTRAS.intersection(out):
            del out[key]
        return out

    def normalise_chunk(self, data: dict[str, Any]) -> bool:
        changed = False
        for choice in data.get("choices") or ():
            delta = choice.get("delta")
            if delta and _rename_reasoning(delta):
                changed = True
        return changed

    def normalise_completion(self, data: dict[str, Any]) -> dict[str, Any]:
        for choice in data.get("choices") or ():
            message = choice.get("message")
            if isinstance(message, dict):
                _rename_reasoning(message)
        return data
