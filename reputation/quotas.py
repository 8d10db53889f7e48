"""Limits shared by every process, spent in memory: permits leased from a counter row.

A limit (a tenant's messages per clock hour, a new domain's messages per day) is one
counter row per owner and period. A process takes permits from it in blocks
(``SENDMSG_QUOTA_LEASE``, at most a hundredth of the limit) with one statement, and
spends them in memory, so a message costs no statement while the process holds
permits. The lease is written in the accept's own transaction and the block credited
when it commits, so together the processes never pass the limit. The counter holds
what was handed out: a process that stops with unspent permits leaves them counted
(stricter, never looser).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Model

from sendmsg import read_cache, sql


def lease_size(limit: int) -> int:
    """Permits a process takes at once: one when nothing may be kept (tests), else up to
    a hundredth of the limit, so one process never holds much of a small one."""
    if read_cache.ttl() <= 0:
        return 1
    return max(1, min(settings.SENDMSG_QUOTA_LEASE, limit // 100))


@dataclass
class _Share:
    period: Any
    limit: int
    tokens: int = 0  # permits leased and not spent yet
    spent: bool = False  # the period's counter reached the limit: no more leases


class Quotas:
    """This process's permits for one kind of limit, per owner, for the current period
    and limit (a new period or a changed limit starts afresh).

    ``model`` has an ``owner`` foreign key, a ``period`` field (unique together) and a
    ``count``; ``current_period`` says which period it is now.
    """

    def __init__(self, model: type[Model], owner: str, period: str, current_period: Callable):
        self.model, self.owner, self.period = model, owner, period
        self.current_period = current_period
        self._lock = threading.Lock()
        self._shares: dict[int, _Share] = {}

    def _share(self, owner_id: int, limit: int, period) -> _Share:
        share = self._shares.get(owner_id)
        if share is None or share.period != period or share.limit != limit:
            share = self._shares[owner_id] = _Share(period, limit)
        return share

    def may_have(self, owner_id: int, limit: int) -> bool:
        """Whether a permit may be had: from memory when this process holds some or knows
        the period is spent, else from the counter (one statement, once per lease)."""
        period = self.current_period()
        with self._lock:
            share = self._share(owner_id, limit, period)
            if share.tokens:
                return True
            if share.spent:
                return False
        row = sql.fetch_one(self._read_sql, [owner_id, self._db_period(period)])
        return row is None or row[0] < limit

    def take(self, owner_id: int, limit: int) -> bool:
        """Spend one permit; call inside the accept transaction (a lease is credited
        when it commits). A lease that crosses the limit gives back at once what it
        could not grant, so a refusal leaves the counter as it was."""
        period = self.current_period()
        with self._lock:
            share = self._share(owner_id, limit, period)
            if share.tokens:
                share.tokens -= 1
                return True
            if share.spent:
                return False
        size = lease_size(limit)
        db_period = self._db_period(period)
        handed_out = sql.fetch_one(self._lease_sql, [owner_id, db_period, size])[0]
        granted = min(size, max(0, limit - (handed_out - size)))
        if granted < size:  # at the limit: the counter keeps only what was handed out
            sql.execute(self._give_back_sql, [size - granted, owner_id, db_period])
        if granted == 0:
            with self._lock:
                share.spent = True  # true whether or not this transaction commits
            return False
        if granted > 1 or granted < size:
            credit = partial(self._credit, owner_id, share, granted - 1, granted < size)
            transaction.on_commit(credit)
        return True

    def _credit(self, owner_id: int, share: _Share, tokens: int, spent: bool) -> None:
        with self._lock:
            if self._shares.get(owner_id) is share:
                share.tokens += tokens
                share.spent = share.spent or spent

    def clear(self) -> None:
        with self._lock:
            self._shares.clear()

    def _db_period(self, period) -> Any:
        return sql.db_value(self.model, self.period, period)

    @cached_property
    def _read_sql(self) -> str:
        return (
            f"SELECT {sql.column(self.model, 'count')} FROM {sql.table(self.model)} "
            f"WHERE {sql.column(self.model, self.owner)} = %s "
            f"AND {sql.column(self.model, self.period)} = %s"
        )

    @cached_property
    def _give_back_sql(self) -> str:
        count = sql.column(self.model, "count")
        return (
            f"UPDATE {sql.table(self.model)} SET {count} = {count} - %s "
            f"WHERE {sql.column(self.model, self.owner)} = %s "
            f"AND {sql.column(self.model, self.period)} = %s"
        )

    @cached_property
    def _lease_sql(self) -> str:
        """One statement that creates the period's counter or adds a lease to it,
        race-free, and answers how many permits are handed out now, this lease included."""
        counter, count = sql.table(self.model), sql.column(self.model, "count")
        keys = f"{sql.column(self.model, self.owner)}, {sql.column(self.model, self.period)}"
        return (
            f"INSERT INTO {counter} ({keys}, {count}) VALUES (%s, %s, %s) "
            f"ON CONFLICT ({keys}) DO UPDATE SET {count} = {counter}.{count} + excluded.{count} "
            f"RETURNING {count}"
        )
