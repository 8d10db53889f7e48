"""Migrations are reversible and safe on a live database (deploy/README.md, "Upgrades").

Reversible: on a scratch database of the test's own (SQLite: a temp file; PostgreSQL: a
new database in the suite's test cluster, dropped afterwards) the real ``manage.py
migrate`` runs in a subprocess: everything forward, each of our apps to ``zero`` and
forward again; then every migration of our apps (all of them: 15-25 s a database, in one
process), is unapplied and reapplied on its own (tests/migration_steps.py). A failure
names the migration.

Safe on a live database: an upgrade runs ``migrate`` while the old release still serves
(new code first, then the database, then the processes). ``UNSAFE`` below says which
operations hurt the old release or lock a busy table on PostgreSQL; every migration of
ours that has one is in ``ALLOWLIST`` with the reason and what an operator does about it,
and deploy/README.md names each of them.

For a new index on an existing table, PostgreSQL's ``CREATE INDEX CONCURRENTLY`` keeps
writes going: sendmsg/migration_operations.py's ``AddIndexConcurrently`` (in a migration
with ``atomic = False``) builds it so there and plainly on SQLite, as
delivery/migrations/0015_event_tenant_time.py does. Existing migrations are not
rewritten (see ``ALLOWLIST``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from django.conf import settings
from django.db import migrations, models
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState

from tests.conftest import platform_env
from tests.migration_steps import OUR_APPS, plan
from tests.peers.processes import REPO_ROOT, manage_py

# -- the rules -------------------------------------------------------------------------------

# What goes wrong when the operation runs on a live PostgreSQL while the old release's
# processes still serve. "Existing table": created by an earlier migration (a table
# created in the same migration is empty and unknown to the old code).
UNSAFE = {
    "drop-or-rename": "RemoveField, DeleteModel, RenameField, RenameModel or AlterModelTable: "
    "the old code still reads and writes the old column or table and fails",
    "column-type": "AlterField changing a column's type: the table is rewritten under an "
    "ACCESS EXCLUSIVE lock (reads and writes wait), and old code may write what the new "
    "type refuses (a longer varchar is the exception: metadata only)",
    "set-not-null": "AlterField making a column NOT NULL: the table is scanned under an "
    "ACCESS EXCLUSIVE lock, and old code that writes NULL fails",
    "alter-column": "AlterField changing another database attribute (unique, index, "
    "foreign key, primary key): an index or constraint is built under a lock",
    "not-null-without-db-default": "AddField NOT NULL without db_default on an existing "
    "table: Django's default= only fills the existing rows and is then dropped from the "
    "column, so the old code's INSERTs, which do not name the column, fail",
    "index-locks-writes": "AddIndex, AddConstraint, unique/index_together or an indexed "
    "AddField (a ForeignKey is indexed) on an existing table, not CONCURRENTLY: writes to "
    "the table wait until the index is built (on a big table, minutes; reads too if the "
    "migration's transaction also altered the table)",
    "runsql-irreversible": "RunSQL without reverse_sql: cannot be rolled back",
    "runpython-irreversible": "RunPython without reverse_code: cannot be rolled back",
    "unreviewed": "an operation this test does not know yet: classify it in "
    "tests/test_migrations.py",
}

# Upgrading an installation across one of these needs a maintenance window: stop web,
# SMTP and workers, migrate, start them (deploy/README.md, "Upgrades"). A fresh install
# needs none (every table is empty). All of them predate this test and the first tagged
# release; they are not rewritten, since an installation that has applied a migration
# never runs its new version. New migrations follow the rules instead.
ALLOWLIST: dict[str, dict[str, str]] = {
    # Old code's INSERTs fail until its processes are restarted with the new release.
    "domains.0004_tls_policy": {
        "not-null-without-db-default": "domain.require_tls: adding a domain fails",
    },
    "domains.0005_tenant_list_unsubscribe": {
        "not-null-without-db-default": "tenant.list_unsubscribe: creating tenants fails",
    },
    "domains.0008_tenant_suspension_reason": {
        "not-null-without-db-default": "tenant.suspended_reason: creating tenants fails",
    },
    "delivery.0003_message_tags_idempotency": {
        "not-null-without-db-default": "message.metadata and tags: accepting mail fails",
    },
    "delivery.0009_event_bounce_class_reason": {
        "not-null-without-db-default": "event.bounce_class and reason: every accept and "
        "delivery outcome writes an event, so accepting and relaying fail",
    },
    "delivery.0010_webhook_notices": {
        "not-null-without-db-default": "webhookdelivery.kind: webhook fan-out fails",
    },
    "delivery.0011_message_unsubscribe_alter_event_type": {
        "not-null-without-db-default": "message.unsubscribe: accepting mail fails",
    },
    "delivery.0012_apikey_role": {
        "not-null-without-db-default": "apikey.role: creating API keys fails",
    },
    "reputation.0006_dailystats_deferred": {
        "not-null-without-db-default": "dailystats.deferred: adding up daily counts fails",
    },
    # An index built while the table takes no writes: the time grows with the table.
    "delivery.0004_alter_event_type_message_message_tenant_time": {
        "index-locks-writes": "message (tenant, created_at): accepting mail waits",
    },
    "delivery.0007_message_log": {
        "index-locks-writes": "message (created_at) where the body is kept; the same "
        "transaction added a column (ACCESS EXCLUSIVE), so reads of messages wait too",
    },
    "delivery.0013_message_log_indexes": {
        "index-locks-writes": "recipient (tenant, state, updated_at, message), the "
        "biggest table: accepting mail and delivery outcomes wait",
    },
    "delivery.0014_message_log_lookup": {
        "index-locks-writes": "recipient (tenant, lower(address), message), the biggest "
        "table: accepting mail and delivery outcomes wait",
    },
    "reputation.0005_suppression_source_event": {
        "index-locks-writes": "suppression.source_event, a ForeignKey: suppression is "
        "locked (ACCESS EXCLUSIVE) and event writes wait (the constraint) until the index "
        "on suppression is built",
    },
}

# Operations that are fine on a live database whatever they carry.
SAFE = (
    migrations.CreateModel,
    migrations.AlterModelOptions,
    migrations.AlterModelManagers,
    migrations.RemoveIndex,
    migrations.RemoveConstraint,
    migrations.RenameIndex,
)
DROP_OR_RENAME = (
    migrations.RemoveField,
    migrations.DeleteModel,
    migrations.RenameField,
    migrations.RenameModel,
    migrations.AlterModelTable,
)
# Field attributes that never reach the database (Django keeps no database default for
# default=; a comment is metadata).
NOT_IN_DATABASE = {"default", "db_comment"}


def migration_label(app: str, name: str) -> str:
    return f"{app}.{name}"


def findings(loader: MigrationLoader) -> dict[str, set[str]]:
    """The UNSAFE rules each migration of our apps breaks (migrations breaking none left
    out)."""
    found: dict[str, set[str]] = {}
    for app, name in plan(loader):
        state = loader.project_state((app, name), at_end=False)
        migration = loader.graph.nodes[(app, name)]
        created: set[str] = set()  # tables new in this migration
        rules: set[str] = set()
        for operation in migration.operations:
            rules |= operation_rules(app, operation, state, created)
            operation.state_forwards(app, state)
        if rules:
            found[migration_label(app, name)] = rules
    return found


def operation_rules(app: str, op: Operation, state: ProjectState, created: set[str]) -> set[str]:
    if isinstance(op, migrations.SeparateDatabaseAndState):
        return {
            rule
            for inner in op.database_operations
            for rule in operation_rules(app, inner, state, created)
        }
    # django.contrib.postgres.operations, sendmsg/migration_operations.py
    if type(op).__name__.endswith("Concurrently"):
        return set()
    if isinstance(op, migrations.CreateModel):
        created.add(op.name_lower)
    if isinstance(op, SAFE):
        return set()
    if isinstance(op, DROP_OR_RENAME):
        return {"drop-or-rename"}
    if isinstance(op, migrations.RunSQL):
        return set() if op.reversible else {"runsql-irreversible"}
    if isinstance(op, migrations.RunPython):
        return set() if op.reversible else {"runpython-irreversible"}
    existing = getattr(op, "model_name_lower", getattr(op, "name_lower", None)) not in created
    if isinstance(op, migrations.AddField):
        return add_field_rules(op.field) if existing else set()
    if isinstance(op, migrations.AlterField):
        return alter_field_rules(state.models[app, op.model_name_lower].fields[op.name], op.field)
    if isinstance(
        op,
        migrations.AddIndex
        | migrations.AddConstraint
        | migrations.AlterUniqueTogether
        | migrations.AlterIndexTogether,
    ):
        return {"index-locks-writes"} if existing else set()
    return {"unreviewed"}


def add_field_rules(field: models.Field) -> set[str]:
    if field.many_to_many:  # a new table, no column
        return set()
    rules = set()
    if not field.null and field.db_default is models.NOT_PROVIDED:
        rules.add("not-null-without-db-default")
    if field.db_index or field.unique or field.primary_key:
        rules.add("index-locks-writes")
    return rules


def alter_field_rules(old: models.Field, new: models.Field) -> set[str]:
    """What changes in the database when ``old`` becomes ``new``: nothing when only
    choices, help texts and the like change."""

    def in_database(field: models.Field) -> tuple[str, dict]:
        _, path, _, kwargs = field.deconstruct()
        ignored = set(field.non_db_attrs) | NOT_IN_DATABASE
        return path, {k: v for k, v in kwargs.items() if k not in ignored}

    (old_path, old_kwargs), (new_path, new_kwargs) = in_database(old), in_database(new)
    if (old_path, old_kwargs) == (new_path, new_kwargs):
        return set()
    rules = set()
    type_keys = ("max_length", "max_digits", "decimal_places", "db_collation")
    if old_path != new_path or any(old_kwargs.get(k) != new_kwargs.get(k) for k in type_keys):
        longer_varchar = (
            old_path == new_path == "django.db.models.CharField"
            and (old.max_length or 0) < (new.max_length or 0)
            and all(old_kwargs.get(k) == new_kwargs.get(k) for k in type_keys[1:])
        )
        if not longer_varchar:
            rules.add("column-type")
    if old.null and not new.null:
        rules.add("set-not-null")
    other = {
        k
        for k in old_kwargs.keys() | new_kwargs.keys()
        if k not in (*type_keys, "null") and old_kwargs.get(k) != new_kwargs.get(k)
    }
    if other:
        rules.add("alter-column")
    return rules


def test_every_unsafe_operation_is_allowlisted_with_a_reason():
    """No migration does something unsafe on a live database unless ALLOWLIST says why
    and what an operator does; an entry whose migration no longer breaks its rule goes."""
    found = findings(MigrationLoader(None, ignore_no_migrations=True))
    allowed = {label: set(rules) for label, rules in ALLOWLIST.items()}
    unlisted = [
        f"{label}: {rule}: {UNSAFE[rule]}"
        for label, rules in sorted(found.items())
        for rule in sorted(rules - allowed.get(label, set()))
    ]
    stale = [
        f"{label}: {rule}"
        for label, rules in sorted(allowed.items())
        for rule in sorted(rules - found.get(label, set()))
    ]
    assert not unlisted, (
        "unsafe on a live database (make it safe, or add it to ALLOWLIST with the reason "
        "and list it in deploy/README.md):\n" + "\n".join(unlisted)
    )
    assert not stale, "ALLOWLIST entries that no longer apply:\n" + "\n".join(stale)
    assert all(reason.strip() for rules in ALLOWLIST.values() for reason in rules.values())


def test_the_rules_catch_what_they_describe():
    """The checker itself: each kind of unsafe operation is found (otherwise an empty
    finding list would prove nothing)."""
    old = models.CharField(max_length=20, null=True)
    assert alter_field_rules(old, models.CharField(max_length=20, null=True, choices=[])) == set()
    assert alter_field_rules(old, models.CharField(max_length=40, null=True)) == set()
    assert alter_field_rules(old, models.CharField(max_length=10, null=True)) == {"column-type"}
    assert alter_field_rules(old, models.TextField(null=True)) == {"column-type"}
    assert alter_field_rules(old, models.CharField(max_length=20)) == {"set-not-null"}
    assert alter_field_rules(old, models.CharField(max_length=20, null=True, unique=True)) == {
        "alter-column"
    }
    assert add_field_rules(models.BooleanField(default=False)) == {"not-null-without-db-default"}
    assert add_field_rules(models.BooleanField(db_default=False)) == set()
    assert add_field_rules(models.IntegerField(null=True, db_index=True)) == {"index-locks-writes"}
    state = ProjectState()
    index = models.Index(fields=["name"], name="x")
    assert operation_rules("a", migrations.AddIndex("m", index), state, set()) == {
        "index-locks-writes"
    }
    assert operation_rules("a", migrations.AddIndex("m", index), state, {"m"}) == set()
    assert operation_rules("a", migrations.RemoveField("m", "f"), state, set()) == {
        "drop-or-rename"
    }
    assert operation_rules("a", migrations.RunSQL("SELECT 1"), state, set()) == {
        "runsql-irreversible"
    }
    assert operation_rules("a", migrations.RunPython(print), state, set()) == {
        "runpython-irreversible"
    }
    assert operation_rules("a", migrations.AlterModelTableComment("m", "c"), state, set()) == {
        "unreviewed"
    }


def test_deploy_readme_names_every_migration_needing_a_maintenance_window():
    upgrades = (REPO_ROOT / "deploy" / "README.md").read_text().split("## Upgrades", 1)[1]
    upgrades = upgrades.split("\n## ", 1)[0]
    missing = [label for label in ALLOWLIST if label.split("_", 1)[0] not in upgrades]
    assert not missing, f"deploy/README.md's Upgrades section does not name {missing}"


# -- a scratch database and the real manage.py -----------------------------------------------


class ScratchDatabase:
    """An empty database of its own next to the suite's: a temp file on SQLite, a new
    database in the suite's PostgreSQL cluster (created and dropped through its server)."""

    def __init__(self, tmp_path: Path) -> None:
        db = settings.DATABASES["default"]
        self.sqlite = db["ENGINE"].endswith("sqlite3")
        if self.sqlite:
            self.path = tmp_path / "scratch.sqlite3"
            self.url = f"sqlite:///{self.path}"
        else:
            self.server = {"host": db["HOST"], "port": db["PORT"], "user": db["USER"]}
            self.name = f"sendmsg_migrations_{uuid.uuid4().hex[:12]}"
            self.url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{self.name}"

    def _server(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(dbname="postgres", autocommit=True, **self.server) as conn:
            conn.execute(sql)

    def create(self) -> None:
        if not self.sqlite:
            self._server(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        if not self.sqlite:
            self._server(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def query(self, sql: str) -> list[tuple]:
        if self.sqlite:
            with closing(sqlite3.connect(self.path)) as conn:
                return conn.execute(sql).fetchall()
        import psycopg

        with psycopg.connect(dbname=self.name, **self.server) as conn:
            return conn.execute(sql).fetchall()

    def schema(self) -> set[str]:
        """Tables, columns and indexes of our apps, as "table", "table.column",
        "table index name"."""
        if self.sqlite:
            tables = [
                row[0] for row in self.query("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            columns = [
                (table, row[0])
                for table in tables
                for row in self.query(f"SELECT name FROM pragma_table_info('{table}')")
            ]
            indexes = self.query(
                "SELECT tbl_name, name FROM sqlite_master WHERE type = 'index' "
                "AND name NOT LIKE 'sqlite_autoindex_%'"
            )
        else:
            tables = [
                row[0]
                for row in self.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ]
            columns = self.query(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public'"
            )
            indexes = self.query(
                "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'public'"
            )
        ours = tuple(f"{app}_" for app in OUR_APPS)
        return {
            *(t for t in tables if t.startswith(ours)),
            *(f"{t}.{c}" for t, c in columns if t.startswith(ours)),
            *(f"{t} index {i}" for t, i in indexes if t.startswith(ours)),
        }

    def our_schedules(self) -> list[tuple]:
        """The django-q2 schedules our migrations add (their func is one of our apps')."""
        where = " OR ".join(f"func LIKE '{app}.%'" for app in OUR_APPS)
        return sorted(self.query(f"SELECT name, func FROM django_q_schedule WHERE {where}"))

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``manage.py *args`` on this database, as a platform process runs it."""
        env = {**platform_env(), "DATABASE_URL": self.url}
        return subprocess.run(
            manage_py(*args),
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def migrate(self, *args: str) -> str:
        """``manage.py migrate *args``; fails naming the migration it was working on."""
        done = self.manage("migrate", "--no-input", *args)
        if done.returncode != 0:
            steps = re.findall(r"^\s*((?:Una|A)pplying \S+)", done.stdout, re.MULTILINE)
            at = steps[-1] if steps else "before the first migration"
            pytest.fail(
                f"manage.py migrate {' '.join(args)} failed while {at}:\n"
                f"{done.stdout[-2000:]}{done.stderr[-3000:]}",
                pytrace=False,
            )
        return done.stdout

    def unapplied(self) -> list[str]:
        """``showmigrations --plan`` lines not marked applied ([X])."""
        shown = self.manage("showmigrations", "--plan")
        assert shown.returncode == 0, shown.stderr
        lines = [line for line in shown.stdout.splitlines() if line.strip()]
        assert len(lines) > 30, shown.stdout  # the whole plan, not an error message
        return [line for line in lines if not line.startswith("[X]")]

    def recorded(self) -> set[str]:
        """Migrations of our apps the django_migrations table records as applied."""
        rows = self.query("SELECT app, name FROM django_migrations")
        return {migration_label(app, name) for app, name in rows if app in OUR_APPS}


@pytest.fixture
def scratch_db(tmp_path: Path) -> Iterator[ScratchDatabase]:
    db = ScratchDatabase(tmp_path)
    db.create()
    try:
        yield db
    finally:
        db.drop()


@pytest.fixture(scope="module")
def our_migrations() -> set[str]:
    return {
        migration_label(*node) for node in plan(MigrationLoader(None, ignore_no_migrations=True))
    }


def test_our_apps_migrate_to_zero_and_forward_again(scratch_db, our_migrations):
    """What an operator rolling back everything of ours does: ``migrate domains zero``
    (delivery and reputation depend on domains, so Django unapplies them first; one
    command instead of one per app keeps this test's processes few), then forward.
    Nothing of ours is left behind at zero; forward again gives the same tables, columns,
    indexes and schedules."""
    scratch_db.migrate()
    assert scratch_db.recorded() == our_migrations
    schema, schedules = scratch_db.schema(), scratch_db.our_schedules()
    assert {"delivery_message", "delivery_recipient.address"} <= schema
    assert len(schedules) >= 4, schedules  # rechecks, sweeper, webhooks, retention, ...

    unapplying = scratch_db.migrate("domains", "zero")
    assert {app for app in OUR_APPS if f"Unapplying {app}." in unapplying} == set(OUR_APPS)
    assert scratch_db.recorded() == set()
    assert scratch_db.schema() == set(), "left behind after migrating to zero"
    assert scratch_db.our_schedules() == [], "schedules left behind at zero"

    scratch_db.migrate()
    assert scratch_db.unapplied() == []
    assert scratch_db.recorded() == our_migrations
    assert scratch_db.schema() == schema
    assert scratch_db.our_schedules() == schedules


def test_each_migration_unapplies_and_reapplies_on_its_own(scratch_db, our_migrations):
    """Rolling back one release is ``migrate <app> <previous>``: every single migration of
    our apps goes back and forth (tests/migration_steps.py), then a full migrate leaves
    nothing unapplied."""
    walk = scratch_db.manage(
        "shell", "-c", "from tests.migration_steps import main; main()", timeout=300
    )
    reports = [json.loads(line) for line in walk.stdout.splitlines() if line.startswith("{")]
    failed = [report for report in reports if "failed" in report]
    assert not failed and walk.returncode == 0, (
        f"{failed[0]['failed']} fails while {failed[0]['while']}: {failed[0]['error']}"
        if failed
        else walk.stdout[-2000:] + walk.stderr[-3000:]
    )
    assert [report["step"] for report in reports] == [
        migration_label(*node) for node in plan(MigrationLoader(None, ignore_no_migrations=True))
    ]
    assert {report["step"] for report in reports} == our_migrations
    scratch_db.migrate()
    assert scratch_db.unapplied() == []


def test_no_model_change_lacks_a_migration(scratch_db):
    """``makemigrations --check``: a model changed without its migration would have the
    next upgrade (or the operator's own makemigrations) invent one."""
    done = scratch_db.manage("makemigrations", "--check", "--dry-run")
    assert done.returncode == 0, f"missing migrations:\n{done.stdout}{done.stderr[-3000:]}"
    assert "No changes detected" in done.stdout
