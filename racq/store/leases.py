"""Named leases in the database: "one X at a time" across processes and hosts that share the file.

    from racq.store.leases import LeaseHeld, acquire_lease, held_lease, release_lease
    lease = acquire_lease(db, "round")          # raises LeaseHeld naming the holder and since when
    release_lease(db, lease)

    with held_lease(db, "round") as lease:      # acquire, renew every 10 s in a thread, release
        train()

Why a lease and not a lock: a threading.Lock only covers one process, so the app and
`racq train dpo --from-votes` could train the same round name at once; and a lock file outlives a
SIGKILLed holder. A lease row names its holder (host:pid:uuid) and expires unless renewed. It is free
when there is no row (released), when it has expired (no heartbeat within the TTL), or when its pid
is gone on this very host (a killed process frees it at once, without waiting for the TTL).
Acquiring is one BEGIN IMMEDIATE transaction: two processes can never both win.
Times are ISO-8601 UTC text with milliseconds (they sort as they compare), like the rest of the schema.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

from racq.store.db import Store, one
from racq.store.errors import StoreError

log = logging.getLogger(__name__)

LEASE_TTL_S = 60.0  # a holder that has not renewed for this long is taken to be gone
HEARTBEAT_S = 10.0  # how often held_lease renews: several renewals fit in one TTL


class LeaseHeld(StoreError):
    """Someone else holds the lease; .holder is its row (holder, pid, host, acquired_at, ...)."""

    def __init__(self, name: str, row: dict):
        self.name, self.holder = name, dict(row)
        super().__init__(f"the {name!r} lease is held by pid {row['pid']} on host {row['host']} since "
                         f"{row['acquired_at']} (last heartbeat {row['heartbeat_at']}, expires "
                         f"{row['expires_at']} unless renewed)")


class LeaseLost(StoreError):
    """Renewing failed: the lease expired and someone else took it (or it was released)."""


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str  # host:pid:uuid, unique per acquisition
    pid: int
    host: str
    acquired_at: str
    expires_at: str


def iso(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists here (a zombie, killed but not yet reaped, does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): trust kill(0)


def why_free(row: dict | None, now: str | None = None) -> str | None:
    """None when the lease row is held by a live holder, else why it is free."""
    if row is None:
        return "released"
    if row["expires_at"] <= (now or iso()):
        return f"expired at {row['expires_at']} (no heartbeat)"
    if row["host"] == socket.gethostname() and not pid_alive(int(row["pid"])):
        return f"pid {row['pid']} on host {row['host']} no longer exists"
    return None


def lease_row(conn, name: str) -> dict | None:
    """The lease's row inside an open connection or transaction (None when released)."""
    return one(conn, "SELECT * FROM leases WHERE name = ?", [name])


def get_lease(db: Store, name: str) -> dict | None:
    """The lease row plus "free": None while held by a live holder, else why it is free."""
    with db.read() as conn:
        row = lease_row(conn, name)
    return None if row is None else {**row, "free": why_free(row)}


def acquire_lease(db: Store, name: str, ttl_s: float = LEASE_TTL_S) -> Lease:
    """Take the lease or raise LeaseHeld; one BEGIN IMMEDIATE transaction (db.write)."""
    host, pid = socket.gethostname(), os.getpid()
    holder = f"{host}:{pid}:{uuid.uuid4().hex}"
    with db.write() as conn:
        row = lease_row(conn, name)
        if row is not None and why_free(row) is None:
            raise LeaseHeld(name, row)
        now = time.time()
        conn.execute("INSERT OR REPLACE INTO leases (name, holder, pid, host, acquired_at, heartbeat_at, "
                     "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [name, holder, pid, host, iso(now), iso(now), iso(now + ttl_s)])
    return Lease(name, holder, pid, host, iso(now), iso(now + ttl_s))


def renew_lease(db: Store, lease: Lease, ttl_s: float = LEASE_TTL_S) -> str:
    """Push the expiry ttl_s ahead; returns the new expiry. Raises LeaseLost if it is no longer ours."""
    now = time.time()
    with db.write() as conn:
        n = conn.execute("UPDATE leases SET heartbeat_at = ?, expires_at = ? WHERE name = ? AND holder = ?",
                         [iso(now), iso(now + ttl_s), lease.name, lease.holder]).rowcount
    if n != 1:
        raise LeaseLost(f"the {lease.name!r} lease of {lease.holder} was taken over or released")
    return iso(now + ttl_s)


def release_lease(db: Store, lease: Lease) -> bool:
    """Give the lease back (only if still ours); returns whether a row was removed."""
    with db.write() as conn:
        return conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?",
                            [lease.name, lease.holder]).rowcount == 1


def _heartbeat(db: Store, lease: Lease, ttl_s: float, every_s: float, stop: threading.Event) -> None:
    while not stop.wait(every_s):
        try:
            renew_lease(db, lease, ttl_s)
        except LeaseLost as e:
            log.error("%s; the work under it goes on but is no longer exclusive", e)
            return
        except StoreError as e:  # a busy or full disk: try again at the next beat, before the TTL runs out
            log.warning("could not renew the %r lease: %s", lease.name, e)


@contextlib.contextmanager
def held_lease(db: Store, name: str, ttl_s: float = LEASE_TTL_S, every_s: float = HEARTBEAT_S) -> Iterator[Lease]:
    """Acquire (or raise LeaseHeld), renew in a daemon thread while the block runs, release after it."""
    lease = acquire_lease(db, name, ttl_s)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(db, lease, ttl_s, every_s, stop),
                            name=f"racq-lease-{name}", daemon=True)
    beat.start()
    try:
        yield lease
    finally:
        stop.set()
        beat.join(timeout=every_s + 5)
        try:
            release_lease(db, lease)
        except StoreError as e:  # it will expire on its own within the TTL
            log.warning("could not release the %r lease: %s", name, e)
