"""The ledger: one SQLite row per finished request (served, failed or cancelled).

stdlib ``sqlite3`` in WAL mode, one connection owned by one worker thread, so writes never block
the event loop and never interleave. Rows are group-committed: whatever finished while the
writer was busy goes into its next transaction, so a burst of requests costs one commit and one
wake-up of the event loop, not one each. ``add`` resolves once its row is committed; with WAL and
``synchronous=NORMAL`` a committed row survives the process being killed (``kill -9``), so only
requests still in flight are lost.

A ledger that cannot be opened or written at start-up raises :class:`LedgerError`. A write that
fails later is retried with the next one and counted (``/health`` shows it); rows are never
dropped silently.

    ledger = await Ledger.open("data/ledger.sqlite3")
    await ledger.add(row)              # a future: done once the row is committed
    await ledger.query(sql, params)    # read-only helpers for /stats and the budget
    await ledger.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sqlite3
import threading
from typing import Any, Mapping, Sequence

log = logging.getLogger("gateway.ledger")

# (column, SQL type): the row schema. Columns are only ever added, so old ledgers keep working.
COLUMNS = (
    ("id", "TEXT"), ("ts", "REAL"), ("started", "REAL"), ("status", "TEXT"), ("stream", "INTEGER"),
    ("strategy", "TEXT"), ("route_reason", "TEXT"), ("classification", "TEXT"), ("served_by", "TEXT"),
    ("first_backend", "TEXT"), ("ttft_s", "REAL"), ("duration_s", "REAL"),
    ("failover_reason", "TEXT"), ("failover_phase", "TEXT"), ("hedge", "TEXT"), ("error", "TEXT"),
    ("local_prompt", "INTEGER"), ("local_completion", "INTEGER"), ("local_cached", "INTEGER"),
    ("local_reasoning", "INTEGER"), ("local_estimated", "INTEGER"),
    ("cloud_prompt", "INTEGER"), ("cloud_completion", "INTEGER"), ("cloud_cached", "INTEGER"),
    ("cloud_reasoning", "INTEGER"), ("cloud_estimated", "INTEGER"),
    ("local_cost", "REAL"), ("cloud_cost", "REAL"), ("local_at_cloud_price", "REAL"), ("savings", "REAL"),
    # Routing v2: the scorer's P(complex) and who decided, escalation, the runaway guard, the judge.
    ("complexity", "REAL"), ("class_source", "TEXT"), ("class_reasons", "TEXT"), ("escalated_by", "TEXT"),
    ("guard", "TEXT"),
    ("judge_backend", "TEXT"), ("judge_label", "TEXT"), ("judge_s", "REAL"), ("judge_prompt", "INTEGER"),
    ("judge_completion", "INTEGER"), ("judge_cost", "REAL"),
    # Pools (issue #14): the tier columns above sum a tier's backends; this keeps each one, as
    # JSON {name: {tier, prompt, completion, cached, reasoning, cost, estimated}}.
    ("usage_by_backend", "TEXT"),
    # The API the request came in on (issue #15): openai | anthropic.
    ("api", "TEXT"),
)
NAMES = tuple(name for name, _ in COLUMNS)


class LedgerError(Exception):
    """The ledger cannot be opened or written."""


class Ledger:
    def __init__(self, path: str) -> None:
        self.path = path
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._db: sqlite3.Connection | None = None
        self._unwritten: list[tuple[Any, ...]] = []  # rows whose write failed, retried next time
        self.write_errors = 0
        # Rows waiting for the writer, with the futures to resolve once they are committed.
        # Shared with the writer thread: _lock guards the queue and the writer's running flag.
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._lock = threading.Lock()
        self._writing = False
        self._insert_sql = f"INSERT INTO requests ({', '.join(NAMES)}) VALUES ({', '.join('?' * len(NAMES))})"

    @classmethod
    async def open(cls, path: str) -> Ledger:
        ledger = cls(path)
        try:
            await ledger._run(ledger._open)
        except (sqlite3.Error, OSError) as exc:
            ledger._pool.shutdown(wait=False)
            raise LedgerError(f"cannot open the ledger at {path!r}: {exc}") from exc
        return ledger

    def add(self, row: Mapping[str, Any]) -> asyncio.Future[None]:
        """Queue one row; the future is done once it is committed (or kept for a retry after a
        failed write, which is counted and logged: rows are never dropped)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        with self._lock:
            self._queue.append((tuple(map(row.get, NAMES)), done))  # map: no Python step per column
            start = not self._writing
            self._writing = True
        if start:
            self._pool.submit(self._drain, loop)
        return done

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._run(self._select, sql, tuple(params))

    async def close(self) -> None:
        """Write what is queued, then close. Waits for pending writes (the shutdown flush)."""
        if self._db is not None:
            await self._run(self._flush_and_close)
        self._pool.shutdown(wait=True)

    @property
    def pending(self) -> int:
        return len(self._unwritten)

    # --- on the ledger thread -------------------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _open(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"CREATE TABLE IF NOT EXISTS requests ({', '.join(f'{n} {t}' for n, t in COLUMNS)})")
        have = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
        for name, kind in COLUMNS:
            if name not in have:
                db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")
        db.execute("CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts)")
        # Prove we can write now, not at the first request: a read-only file or a full disk is
        # a start-up error, not a silent loss later.
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        self._db = db

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit queued rows in groups until the queue is empty."""
        while True:
            with self._lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._writing = False
                    return
            self._unwritten.extend(values for values, _ in batch)
            try:
                self._write_pending()
            except sqlite3.Error as exc:
                self.write_errors += 1
                log.error("ledger write failed (%s); %d row(s) kept in memory for the next try",
                          exc, len(self._unwritten))
            except Exception:  # never leave the waiters hanging: they are resolved below either way
                log.exception("ledger writer failed; %d row(s) kept in memory", len(self._unwritten))
            try:
                loop.call_soon_threadsafe(_resolve, batch)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more

    def _write_pending(self) -> None:
        assert self._db is not None
        with self._db:  # one transaction: all pending rows, or none
            self._db.execute("BEGIN")
            self._db.executemany(self._insert_sql, self._unwritten)
        self._unwritten.clear()

    def _select(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        assert self._db is not None
        return self._db.execute(sql, params).fetchall()

    def _flush_and_close(self) -> None:
        assert self._db is not None
        with self._lock:  # rows queued after the last drain started (normally none)
            batch, self._queue = self._queue, []
        self._unwritten.extend(values for values, _ in batch)
        if self._unwritten:
            try:
                self._write_pending()
            except sqlite3.Error as exc:
                log.error("ledger: %d row(s) could not be written at shutdown: %s", len(self._unwritten), exc)
        self._db.close()
        self._db = None


def _resolve(batch: list[tuple[tuple[Any, ...], asyncio.Future[None]]]) -> None:
    for _, done in batch:
        if not done.done():  # its waiter may have been cancelled
            done.set_result(None)
