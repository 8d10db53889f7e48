"""Unapply and reapply each of our migrations on its own, in one platform process.

Run by tests/test_migrations.py on a scratch database, as
``manage.py shell -c "from tests.migration_steps import main; main()"`` with
DATABASE_URL pointing at it: one Django start-up for the whole walk instead of three
``manage.py migrate`` processes per migration (about 2 s each).

In the order ``migrate`` applies them, each migration N of our apps is applied, then its
app is migrated back to N's predecessor in the same app (N-1, or ``zero``), then to N
again. Walking in plan order means nothing that depends on N is applied yet, so going
back unapplies exactly N. Prints one JSON object a line: ``{"step": "app.name"}`` when N
went back and forth, or ``{"failed": "app.name", "while": ..., "error": ...}`` and exits 1.
"""

from __future__ import annotations

import json
import sys

from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder

OUR_APPS = ("domains", "delivery", "reputation")


def plan(loader: MigrationLoader) -> list[tuple[str, str]]:
    """Every migration of our apps, in the order a full ``migrate`` applies them."""
    ordered: list[tuple[str, str]] = []
    for leaf in sorted(loader.graph.leaf_nodes()):
        for node in loader.graph.forwards_plan(leaf):
            if node[0] in OUR_APPS and node not in ordered:
                ordered.append(node)
    return ordered


def predecessor(loader: MigrationLoader, node: tuple[str, str]) -> str:
    """The migration of the same app that N depends on, or ``zero`` for the first."""
    same_app = [key[1] for key in loader.graph.node_map[node].parents if key[0] == node[0]]
    if len(same_app) > 1:  # a merge migration: "back one step" has no single target
        raise RuntimeError(f"{node[0]}.{node[1]} merges {same_app}; step it by hand")
    return same_app[0] if same_app else "zero"


def migrate(app: str, target: str) -> None:
    call_command("migrate", app, target, verbosity=0, skip_checks=True, interactive=False)


def main() -> None:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    recorder = MigrationRecorder(connection)
    for app, name in plan(loader):
        label = f"{app}.{name}"
        stage = "applying it"
        try:
            migrate(app, name)
            stage = f"unapplying it (migrate {app} {predecessor(loader, (app, name))})"
            migrate(app, predecessor(loader, (app, name)))
            if (app, name) in recorder.applied_migrations():
                raise RuntimeError("still recorded as applied after migrating back")
            stage = f"applying it again (migrate {app} {name}) after unapplying it"
            migrate(app, name)
        except Exception as exc:  # reported with the migration's name, then exit 1
            print(json.dumps({"failed": label, "while": stage, "error": repr(exc)}))
            sys.exit(1)
        print(json.dumps({"step": label}), flush=True)
