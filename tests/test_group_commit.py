"""The listeners' group commit (sendmsg/group_commit.py) on the test database: items that
wait together reach their batch function in one call and are committed together; when
that call fails, each item is tried alone, so a bad one fails only itself."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, OperationalError, connection, transaction

from sendmsg.group_commit import GroupCommitExecutor
from tests.database_locks import write_lock_held

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def executor() -> Iterator[GroupCommitExecutor]:
    executor = GroupCommitExecutor()
    yield executor
    executor.submit(lambda: connection.close()).result(timeout=10)  # its thread's own


class Batches:
    """A batch function that stores groups by name and records each call's items."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, names: list[str]) -> list[object]:
        self.calls.append(list(names))
        with transaction.atomic():
            Group.objects.bulk_create([Group(name=name) for name in names if name != "refused"])
        return [ValueError("refused alone") if name == "refused" else name for name in names]


def submitted_together(executor: GroupCommitExecutor, fn, items: list[str]) -> list:
    """Submit ``items`` while the executor's thread is busy, so they wait together."""
    busy, release = threading.Event(), threading.Event()
    executor.submit(lambda: (busy.set(), release.wait(10)))
    assert busy.wait(10)
    futures = [executor.submit_batched(fn, item) for item in items]
    release.set()
    outcomes = []
    for future in futures:
        try:
            outcomes.append(future.result(timeout=10))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def test_items_waiting_together_are_stored_in_one_call(executor):
    batches = Batches()
    outcomes = submitted_together(executor, batches, ["a", "refused", "b", "c"])
    assert batches.calls == [["a", "refused", "b", "c"]]
    assert outcomes[0] == "a" and outcomes[2:] == ["b", "c"]
    assert isinstance(outcomes[1], ValueError) and str(outcomes[1]) == "refused alone"
    assert sorted(Group.objects.values_list("name", flat=True)) == ["a", "b", "c"]


def test_a_failing_batch_is_tried_one_item_at_a_time(executor):
    Group.objects.create(name="taken")
    batches = Batches()
    outcomes = submitted_together(executor, batches, ["a", "taken", "b"])
    # The batch's INSERT broke on the taken name and was rolled back whole; alone, the
    # others are stored, and only the taken name gets the database's error.
    assert batches.calls == [["a", "taken", "b"], ["a"], ["taken"], ["b"]]
    assert outcomes[0] == "a" and outcomes[2] == "b"
    assert isinstance(outcomes[1], IntegrityError)
    assert sorted(Group.objects.values_list("name", flat=True)) == ["a", "b", "taken"]


def short_lock_timeout() -> None:
    """Give up on a lock after half a second (on the executor's own connection)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA busy_timeout = 500")
        else:
            cursor.execute("SET lock_timeout = '500ms'")


def test_a_database_failure_fails_the_items_at_once(executor):
    """A lock timeout is no fault of one item: tried one at a time, each would wait for
    the lock again; every item gets the error after one wait."""
    executor.submit(short_lock_timeout).result(timeout=10)
    batches = Batches()
    with write_lock_held(Group):
        outcomes = submitted_together(executor, batches, ["a", "b", "c"])
    assert len(batches.calls) <= 1  # none on SQLite: there the group's BEGIN waits
    assert all(isinstance(outcome, OperationalError) for outcome in outcomes), outcomes
    assert not Group.objects.exists()
    assert submitted_together(executor, batches, ["d"]) == ["d"]  # and the thread goes on
