"""SQLite writers take turns through the lock file beside the database."""

from __future__ import annotations

import fcntl

import pytest
from django.db import transaction

from sendmsg.write_turn import lock_path, write_turn

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(lock_path() is None, reason="the turns are SQLite's (a file database)"),
]


def held_by_someone() -> bool:
    """Whether another holder has the turn now (a second open file cannot lock it)."""
    with open(lock_path(), "a") as other:
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(other, fcntl.LOCK_UN)
        return False


def test_a_writer_holds_the_turn_for_its_block_and_nested_blocks_share_it():
    assert not held_by_someone()
    with write_turn():
        assert held_by_someone()
        with write_turn():  # re-entrant: no second wait on its own turn
            assert held_by_someone()
        assert held_by_someone()
    assert not held_by_someone()


def test_no_turn_is_taken_inside_a_transaction():
    with transaction.atomic(), write_turn():
        assert not held_by_someone()  # waiting here could deadlock with the holder
