"""The annotation database handle: one SQLite file, WAL, a fresh connection per call, one writer at a time.

    from racq.store import open_db
    db = open_db("annotations/racq.db")      # creates the folder, applies pending migrations

Why a connection per call: the Gradio app calls us from many worker threads, and a sqlite3 connection
must not be shared between threads mid-transaction. Opening one costs ~0.1 ms. Writes additionally
take a process-wide lock (one per database file) so threads queue in Python instead of spinning on
SQLite's busy handler; other processes (the CLI next to the app) are covered by `busy_timeout`.
Every write runs in one `BEGIN IMMEDIATE` transaction: it lands whole or not at all.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import sqlite_utils

from racq.store.errors import StoreError
from racq.store.migrations import migrate

BUSY_TIMEOUT_S = 30.0

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _write_lock(path: Path) -> threading.Lock:
    key = str(path)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


# Python str that SQLite cannot take: a lone surrogate ("\ud800"), which is what undecodable bytes become
# (and what a JSON client may send as "\ud800"). sqlite3 raises UnicodeEncodeError, not sqlite3.Error.
_ERRORS = (sqlite3.Error, UnicodeEncodeError)


def _explain(path: Path, exc: Exception) -> StoreError:
    if isinstance(exc, UnicodeEncodeError):
        bad = ascii(exc.object[exc.start:exc.end])  # ascii(): the message itself must be encodable
        err = StoreError(f"{path}: text holds {bad}, which is not a valid Unicode character (bytes that "
                         f"were not UTF-8?); nothing from this operation was saved")
        err.__cause__ = exc
        return err
    msg = str(exc)
    if "full" in msg:
        hint = "the disk (or the database's size cap) is full; free space and retry"
    elif "locked" in msg or "busy" in msg:
        hint = f"another process held the database for over {BUSY_TIMEOUT_S:.0f} s"
    elif "readonly" in msg or "read-only" in msg:
        hint = "the database file or its folder is not writable"
    else:
        hint = "SQLite refused the write"
    err = StoreError(f"{path}: {msg} ({hint}); nothing from this operation was saved")
    err.__cause__ = exc
    return err


@dataclass(frozen=True)
class Store:
    """Where the database lives plus per-connection settings. Cheap to copy; holds no connection."""

    path: Path
    # Extra PRAGMAs run on every connection, e.g. {"max_page_count": 5000} to cap the file's size
    # (the tests use that cap to produce a real "database or disk is full").
    pragmas: dict = field(default_factory=dict, compare=False)

    def _connect(self) -> sqlite_utils.Database:
        # isolation_level=None: no implicit transactions from the driver; we open them explicitly.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            # FULL: a COMMIT returns only after the WAL is fsynced, so an acknowledged vote survives a
            # power cut. Set explicitly because the default depends on how SQLite was built (NORMAL in
            # WAL mode may lose the last commits). Costs ~1 fsync per vote: fine for human-paced writes.
            conn.execute("PRAGMA synchronous=FULL")
            for name, value in self.pragmas.items():
                conn.execute(f"PRAGMA {name}={int(value) if isinstance(value, bool) else value}")
            return sqlite_utils.Database(conn, execute_plugins=False)
        except BaseException:
            conn.close()
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite_utils.Database]:
        """A connection for reads (WAL: sees the last committed state, never blocks writers)."""
        try:
            db = self._connect()
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from exc
        try:
            yield db
        except _ERRORS as exc:
            raise _explain(self.path, exc) from exc
        finally:
            db.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """One atomic write: lock, BEGIN IMMEDIATE, yield, COMMIT; any error rolls everything back."""
        with _write_lock(self.path):
            try:
                db = self._connect()
            except sqlite3.Error as exc:
                raise _explain(self.path, exc) from exc
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                if db.conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.conn.execute("ROLLBACK")
                if isinstance(exc, _ERRORS):
                    raise _explain(self.path, exc) from exc
                raise
            finally:
                db.close()


def open_db(path: str | Path | None = None, *, pragmas: dict | None = None) -> Store:
    """Open (or create) the annotation database at `path` (default: config.DB_PATH) and migrate it."""
    if path is None:
        from racq.config import DB_PATH
        path = DB_PATH
    path = Path(path).expanduser().resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder for {path}: {exc}") from exc
    store = Store(path, dict(pragmas or {}))
    with _write_lock(path):
        try:
            db = store._connect()
        except sqlite3.Error as exc:
            raise _explain(path, exc) from exc
        try:
            db.enable_wal()  # persistent in the file; readers and the writer stop blocking each other
            migrate(db)
        except sqlite3.Error as exc:
            raise _explain(path, exc) from exc
        finally:
            db.close()
    return store


# ------------------------------------------------------------------ small helpers shared by modules
def dumps(value) -> str | None:
    """Canonical JSON (sorted keys) so equal settings compare equal as text in UNIQUE constraints."""
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


def loads(text: str | None):
    return None if text is None else json.loads(text)


def one(db: sqlite_utils.Database, sql: str, params=()) -> dict | None:
    return next(iter(db.query(sql, params)), None)


def annotator_id(db: sqlite_utils.Database, name: str) -> int:
    row = one(db, "SELECT id FROM annotators WHERE name = ?", [name])
    if row is None:
        raise StoreError(f"unknown annotator {name!r}; add them first (add_annotator)")
    return row["id"]
