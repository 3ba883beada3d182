"""Reviewer accounts: a users file of scrypt-hashed passwords, and the login check the app uses.

Off loopback the app refuses to start without one (anyone who reaches the port could otherwise write
training data). One account per line, `name:scrypt$n$r$p$salt$hash` (salt and hash base64), `#`
comments allowed. Add or replace an account with
    python -m review.users add USERS_FILE NAME          (asks for the password twice)
    echo secret | python -m review.users add USERS_FILE NAME --password-stdin
The login name becomes the reviewer id written with every decision.
"""
from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import os
import re
import secrets
import sys
from pathlib import Path

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # ~16 MiB and ~50 ms per check on one core
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class UsersFileError(ValueError):
    """A users file that cannot be used; the message names the line."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$n$r$p$salt$hash` for `password` (a fresh 16-byte salt unless given)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(stored: str, password: str) -> bool:
    """Constant-time comparison of scrypt(password) with a stored hash; False for a malformed hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt, validate=True), n=int(n),
                                r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def load_users(path: str | Path) -> dict[str, str]:
    """name -> stored hash; UsersFileError for a missing/empty file or a malformed line."""
    path = Path(path)
    if not path.is_file():
        raise UsersFileError(f"{path}: users file not found (create one with `python -m review.users add "
                             f"{path} NAME`)")
    users: dict[str, str] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not _NAME.fullmatch(name) or not stored.startswith("scrypt$") or stored.count("$") != 5:
            raise UsersFileError(f"{path}:{line_no}: expected `name:scrypt$n$r$p$salt$hash` "
                                 "(passwords are never stored in clear; use `python -m review.users add`)")
        users[name] = stored
    if not users:
        raise UsersFileError(f"{path}: no accounts")
    return users


class Authenticator:
    """The login check for gr.Blocks.launch(auth=...): (name, password) -> bool.

    An unknown name is checked against a dummy hash, so the answer takes as long as for a known one.
    """

    def __init__(self, users: dict[str, str]) -> None:
        self.users = dict(users)
        self._dummy = hash_password(secrets.token_hex(16))

    def __call__(self, name: str, password: str) -> bool:
        stored = self.users.get(name)
        ok = verify_password(stored or self._dummy, password)
        return ok and stored is not None


def add_user(path: str | Path, name: str, password: str) -> None:
    """Add or replace `name` in the users file (created with mode 0600), keeping every other line."""
    if not _NAME.fullmatch(name):
        raise UsersFileError(f"user name {name!r}: use 1-64 letters, digits or _ . @ -")
    if len(password) < 8:
        raise UsersFileError("password: at least 8 characters")
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    lines = [line for line in lines if line.partition(":")[0].strip() != name]
    lines.append(f"{name}:{hash_password(password)}")
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m review.users", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add or replace an account")
    add.add_argument("file", type=Path)
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    args = parser.parse_args(argv)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return 2
    try:
        add_user(args.file, args.name, password)
    except UsersFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.name} saved in {args.file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
