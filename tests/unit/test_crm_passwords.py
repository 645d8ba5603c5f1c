"""Argon2id password hashing: salted, verifiable, and a wrong or missing user never passes."""

from __future__ import annotations

from crm.passwords import hash_password, needs_rehash, verify_password


def test_hash_is_argon2id_salted_and_verifies() -> None:
    first, second = hash_password("agent1-demo"), hash_password("agent1-demo")
    assert first.startswith("$argon2id$")
    assert first != second  # a fresh salt each time
    assert "agent1-demo" not in first
    assert verify_password(first, "agent1-demo")
    assert verify_password(second, "agent1-demo")
    assert not needs_rehash(first)


def test_wrong_password_and_garbage_hash_fail() -> None:
    stored = hash_password("supervisor-demo")
    assert not verify_password(stored, "supervisor-dem0")
    assert not verify_password(stored, "")
    assert not verify_password("not-a-hash", "supervisor-demo")


def test_unknown_user_is_refused_even_with_the_dummy_password() -> None:
    assert not verify_password(None, "hotline-no-such-user")
    assert not verify_password(None, "anything")
