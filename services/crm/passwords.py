"""Password hashing with Argon2id (argon2-cffi defaults, RFC 9106 low-memory profile).

Hashing costs ~0.1 s of CPU on purpose; callers on the event loop run these in a thread so
a login never stalls websocket pushes.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()
#: verified against when the username is unknown, so timing does not reveal which users exist.
_DUMMY_HASH = _hasher.hash("hotline-no-such-user")


def hash_password(password: str) -> str:
    """An encoded Argon2id hash (salt and parameters included)."""
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when `password` matches; a missing user costs the same time and returns False."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(stored_hash)
