"""Migration operations that keep a live database serving (deploy/README.md, "Upgrades").

An upgrade runs ``migrate`` while the old release still serves, so a new index on an
existing table must not hold its writes for the minutes a big table takes:
``AddIndexConcurrently`` builds it with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL
(the migration sets ``atomic = False``: PostgreSQL refuses that inside a transaction)
and with a plain ``CREATE INDEX`` on SQLite, where one host's processes take turns at the
database anyway. Django's own operation of that name runs on PostgreSQL only.
tests/test_migrations.py holds every migration to these rules.
"""

from __future__ import annotations

from django.db import migrations


class AddIndexConcurrently(migrations.AddIndex):
    """``AddIndex`` that does not block writes on PostgreSQL (and is undone likewise)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.add_index(model, self.index, **_concurrently(schema_editor))

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.remove_index(model, self.index, **_concurrently(schema_editor))

    def describe(self) -> str:
        return super().describe() + " (concurrently on PostgreSQL)"


def _concurrently(schema_editor) -> dict:
    if schema_editor.connection.vendor != "postgresql":
        return {}
    if schema_editor.atomic_migration:
        raise ValueError("AddIndexConcurrently needs a migration with atomic = False")
    return {"concurrently": True}
