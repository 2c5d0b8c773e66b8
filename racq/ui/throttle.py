"""Failure throttles for sign-in: after `limit` failures for one key within `window_s`, that key is refused
until the oldest of those failures leaves the window.

    names = Throttle(5, 15 * 60)          # per typed name
    clients = Throttle(20, 15 * 60)       # per client address
    if names.wait_s("ana") or clients.wait_s("10.0.0.7"): refuse without checking the token
    names.fail("ana"); clients.fail("10.0.0.7")   # after a wrong token
    names.clear("ana")                    # after a right one

Why two keys: per name stops guessing one person's token from many addresses, per address stops one
client from trying many names. The clock is injectable so tests move time forward instead of sleeping.
State is in memory (a restart forgets it), shared by every session of the app, and thread-safe.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable


class Throttle:
    """Sliding-window failure counter per key. limit <= 0 turns it off (nothing is ever refused)."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000):
        self.limit, self.window_s, self.clock, self.max_keys = int(limit), float(window_s), clock, max_keys
        self._fails: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> collections.deque | None:
        """The key's failure times still inside the window (expired ones dropped; None when none left)."""
        q = self._fails.get(key)
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if q is not None and not q:
            del self._fails[key]
            return None
        return q

    def wait_s(self, key: str) -> float:
        """Seconds until `key` may try again; 0.0 when it may try now."""
        if self.limit <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            q = self._recent(key, now)
            if q is None or len(q) < self.limit:
                return 0.0
            return max(0.0, q[-self.limit] + self.window_s - now)

    def fail(self, key: str) -> None:
        """Count one failure for `key` now."""
        if self.limit <= 0:
            return
        with self._lock:
            now = self.clock()
            q = self._recent(key, now)
            if q is None:
                if len(self._fails) >= self.max_keys:
                    self._prune(now)
                q = self._fails[key] = collections.deque(maxlen=self.limit)
            q.append(now)

    def clear(self, key: str) -> None:
        """Forget `key`'s failures (a successful sign-in)."""
        with self._lock:
            self._fails.pop(key, None)

    def _prune(self, now: float) -> None:
        """Bound memory under a flood of distinct keys: drop expired keys, then the oldest ones."""
        for key in list(self._fails):
            self._recent(key, now)
        while len(self._fails) >= self.max_keys:
            self._fails.pop(next(iter(self._fails)))


class SignInGuard:
    """The two sign-in throttles together; users.check_sign_in consults it before any hashing."""

    def __init__(self, per_name: Throttle, per_client: Throttle):
        self.per_name, self.per_client = per_name, per_client

    @classmethod
    def from_config(cls, cfg, clock: Callable[[], float] = time.monotonic) -> "SignInGuard":
        window = float(cfg.signin_throttle_minutes) * 60
        return cls(Throttle(cfg.signin_max_failures_per_name, window, clock),
                   Throttle(cfg.signin_max_failures_per_client, window, clock))

    def refusal(self, name: str, client: str | None) -> str | None:
        """The message to show when this name or this client is throttled, else None."""
        wait = self.per_name.wait_s(name)
        if wait:
            return f"too many failed sign-ins for this name: try again in {_minutes(wait)} min"
        wait = self.per_client.wait_s(client) if client else 0.0
        if wait:
            return f"too many failed sign-ins from your address: try again in {_minutes(wait)} min"
        return None

    def failed(self, name: str, client: str | None) -> None:
        self.per_name.fail(name)
        if client:
            self.per_client.fail(client)

    def succeeded(self, name: str) -> None:
        # The address keeps its failures: one valid account must not reset guessing at the others.
        self.per_name.clear(name)


def _minutes(seconds: float) -> int:
    return max(1, -int(-seconds // 60))  # rounded up, never "0 min"
