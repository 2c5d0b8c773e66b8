"""Annotator sign-in: a YAML users file with salted, hashed tokens (never the tokens themselves).

    racq users add ana --admin --file annotations/users.yaml    # adds ana, prints her new token once
    racq app --set users_file=annotations/users.yaml             # sign-in now asks for the token

File format (one entry per annotator; role is "annotator" or "admin", default "annotator"):

    ana:
      role: admin
      token: pbkdf2_sha256$200000$<salt, hex>$<PBKDF2-HMAC-SHA256 of the token, hex>
    bob:
      token: pbkdf2_sha256$200000$...

`hash_token("the-token")` gives the `token:` value. Tokens are compared in constant time, and an
unknown name costs the same PBKDF2 work as a wrong token (against a dummy hash), so neither the message
nor the time taken tells who exists. With a SignInGuard (racq.ui.throttle) repeated failures for a name
or from an address are refused for a while without hashing anything. Without a users file (the
default) anyone signs in with just a name, which suits a single trusted machine.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from pathlib import Path

import yaml

from racq.store.candidates import MAX_NAME_CHARS

SCHEME = "pbkdf2_sha256"
ITERATIONS = 200_000
ROLES = ("annotator", "admin")
MAX_TOKEN_CHARS = 256  # issued tokens are 16 characters; anything this long is refused before hashing


class SignInError(ValueError):
    """The name/token pair is not accepted; the message is safe to show."""


def hash_token(token: str, salt: str | None = None, iterations: int = ITERATIONS) -> str:
    """`pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>` for the users file."""
    if not token:
        raise ValueError("empty token")
    salt = salt or secrets.token_hex(16)
    digest = hashlib.pbkdf2_hmac("sha256", token.encode("utf-8"), bytes.fromhex(salt), iterations)
    return f"{SCHEME}${iterations}${salt}${digest.hex()}"


def verify_token(token: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, _ = stored.split("$")
        if scheme != SCHEME:
            return False
        return hmac.compare_digest(hash_token(token or "-", salt, int(iterations)), stored)
    except (ValueError, AttributeError):
        return False


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash of a random token in the same scheme and iterations, made once: what an unknown name is
    checked against, so that it takes as long as a wrong token for a real name."""
    return hash_token(secrets.token_urlsafe(16))


def load_users(path: str | Path) -> dict[str, dict]:
    """{name: {"role", "token"}}; raises ValueError naming the file and the bad entry."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the users file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of name -> {{role, token}}")
    users = {}
    for name, entry in data.items():
        entry = entry or {}
        role = entry.get("role", "annotator") if isinstance(entry, dict) else None
        token = entry.get("token") if isinstance(entry, dict) else None
        if role not in ROLES or not isinstance(token, str) or not token.startswith(SCHEME + "$"):
            raise ValueError(f"{path}: entry {name!r} needs role in {ROLES} and a token made by hash_token()")
        if not 0 < len(str(name).strip()) <= MAX_NAME_CHARS:  # such a name could never sign in
            raise ValueError(f"{path}: the name {str(name)[:40]!r} is {len(str(name).strip())} characters; "
                             f"names are 1-{MAX_NAME_CHARS}")
        users[str(name).strip()] = {"role": role, "token": token}
    return users


def check_sign_in(users: dict[str, dict] | None, name: str, token: str = "", guard=None,
                  client: str | None = None) -> str:
    """The role to sign `name` in with. users None: auth is off and everyone is an annotator.

    guard: a racq.ui.throttle.SignInGuard; while it refuses this name or this client address nothing is
    hashed. Its failures count unknown names and wrong tokens alike (so throttling confirms nothing)."""
    name = (name or "").strip()
    if not name:
        raise SignInError("type your name to sign in")
    if len(name) > MAX_NAME_CHARS:
        raise SignInError(f"your name is {len(name)} characters; names are 1-{MAX_NAME_CHARS} characters")
    if users is None:
        return "annotator"
    refusal = guard.refusal(name, client) if guard is not None else None
    if refusal:
        raise SignInError(refusal)
    token = token or ""
    if len(token) > MAX_TOKEN_CHARS:  # cannot be a token we issued: refused before any hashing
        _failed(guard, name, client)
        raise SignInError(f"the token is {len(token)} characters; tokens are at most {MAX_TOKEN_CHARS}")
    entry = users.get(name)
    # Same message and the same PBKDF2 work for an unknown name and a wrong token: neither the page nor
    # the time it takes confirms who exists.
    if not verify_token(token, entry["token"] if entry is not None else _dummy_hash()) or entry is None:
        _failed(guard, name, client)
        raise SignInError("unknown name or wrong token")
    if guard is not None:
        guard.succeeded(name)
    return entry["role"]


def _failed(guard, name: str, client: str | None) -> None:
    if guard is not None:
        guard.failed(name, client)


def add_user(path: str | Path, name: str, role: str = "annotator", token: str | None = None) -> str:
    """Add or replace `name` in the users file; returns the token in clear (shown once, never stored)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    if not 0 < len(name.strip()) <= MAX_NAME_CHARS or (token and len(token) > MAX_TOKEN_CHARS):
        raise ValueError(f"names are 1-{MAX_NAME_CHARS} characters and tokens at most {MAX_TOKEN_CHARS}")
    path = Path(path)
    data = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}
    token = token or secrets.token_urlsafe(12)
    data[name] = {"role": role, "token": hash_token(token)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    return token
