"""Annotator sign-in: a YAML users file with salted, hashed tokens (never the tokens themselves).

    python -m racq.ui.users annotations/users.yaml ana --admin    # adds ana, prints her new token once
    python app.py --set users_file=annotations/users.yaml          # sign-in now asks for the token

File format (one entry per annotator; role is "annotator" or "admin", default "annotator"):

    ana:
      role: admin
      token: pbkdf2_sha256$200000$<salt, hex>$<PBKDF2-HMAC-SHA256 of the token, hex>
    bob:
      token: pbkdf2_sha256$200000$...

`hash_token("the-token")` gives the `token:` value. Tokens are compared in constant time. Without a
users file (the default) anyone signs in with just a name, which suits a single trusted machine.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sys
from pathlib import Path

import yaml

SCHEME = "pbkdf2_sha256"
ITERATIONS = 200_000
ROLES = ("annotator", "admin")


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
        users[str(name).strip()] = {"role": role, "token": token}
    return users


def check_sign_in(users: dict[str, dict] | None, name: str, token: str = "") -> str:
    """The role to sign `name` in with. users None: auth is off and everyone is an annotator."""
    name = (name or "").strip()
    if not name:
        raise SignInError("type your name to sign in")
    if users is None:
        return "annotator"
    entry = users.get(name)
    # Same message for an unknown name and a wrong token: the page does not confirm who exists.
    if entry is None or not verify_token(token or "", entry["token"]):
        raise SignInError("unknown name or wrong token")
    return entry["role"]


def add_user(path: str | Path, name: str, role: str = "annotator", token: str | None = None) -> str:
    """Add or replace `name` in the users file; returns the token in clear (shown once, never stored)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    path = Path(path)
    data = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}
    token = token or secrets.token_urlsafe(12)
    data[name] = {"role": role, "token": hash_token(token)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    return token


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    admin = "--admin" in args
    args = [a for a in args if a != "--admin"]
    if len(args) != 2:
        print("usage: python -m racq.ui.users USERS.yaml NAME [--admin]", file=sys.stderr)
        return 2
    token = add_user(args[0], args[1], "admin" if admin else "annotator")
    print(f"{args[1]} added to {args[0]}; token (give it to them, it is not stored): {token}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
