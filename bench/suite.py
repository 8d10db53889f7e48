"""Every benchmark, on SQLite then on PostgreSQL, summed up in one table.

    .venv/bin/python bench/suite.py [--quick] [--database sqlite|postgres|both]
                                    [--only NAME ...] [--out DIR] [--strict]

(`make bench` runs it with the defaults: every bench, both databases, the sizes below.)

Runs each bench script of this directory as a subprocess with --json FILE, one after
the other (never two at once: they share the machine's cores), streams its own text
output, then reads the JSON summaries (bench/summary.py) and prints ONE markdown table:
bench, database, our figure, the baseline measured in the same run, its figure, the
ratio (our figure / baseline figure) and the floor, met or not.

| NAME | what | baseline | database |
|---|---|---|---|
| submission | SMTP accept (`--postfix`) | Postfix; bare aiosmtpd | each |
| api_send | REST send API | bare DRF endpoint; one committed row | each |
| e2e_relay | accept -> relay -> sink | Postfix | each (SQLite 1 worker, PostgreSQL 4) |
| domain_check | full DNS health check | its slowest query | none: run once, shown as "any" |
| throttle | the gate's decision | a dictionary lookup | each |
| message_log | the log's pages at 1,000,000 messages | one message's page | each |

Each bench starts its own throwaway platform and, on PostgreSQL, its own throwaway
cluster (`--database postgres`: bench/database.py, fsync on), so the runs share nothing.

Exit status: 1 if any bench's own checks failed (mail lost or sent twice, an error or a
refusal, a page that did not answer 200), or a bench crashed, wrote no summary or ran past
its time limit; else 0. A floor not met is printed in the table and listed under it, but
does not change the exit status (the figures move with the machine's load; the checks do
not); --strict makes a floor not met exit 1 too.

Bounds: every bench bounds its own load by a count and a time limit; the suite also gives
each bench run a wall-clock limit, past which it sends the bench SIGINT (the bench then
stops its processes by their PIDs, as on Ctrl-C) and, if it has not ended 120 s later,
SIGKILL, both by the bench's PID. All traffic stays on 127.0.0.1.

The JSON summaries and each bench's output are kept in --out (default: a new temp dir,
printed at the end), with the table as table.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DISPLAY = {"sqlite": "SQLite", "postgres": "PostgreSQL", "any": "any"}
KILL_GRACE = 120.0  # seconds between SIGINT and SIGKILL for a bench past its limit


@dataclass
class Bench:
    name: str
    full: list[str]
    quick: list[str]
    limit: float  # wall-clock seconds for one full run (a quick run gets a third, >= 300 s)
    per_database: bool = True
    by_database: dict[str, list[str]] = field(default_factory=dict)


BENCHES = [
    Bench(
        "submission",
        ["-n", "2000", "-c", "20", "-k", "100", "--rounds", "3", "--postfix"],
        ["-n", "300", "-c", "10", "-k", "100", "--rounds", "1", "--postfix"],
        limit=900,
    ),
    Bench(
        "api_send",
        ["-n", "2000", "-c", "10", "--rounds", "3"],
        ["-n", "300", "-c", "10", "--rounds", "1"],
        limit=900,
    ),
    Bench(
        "e2e_relay",
        ["-n", "3000", "-c", "20", "--rounds", "2"],
        ["-n", "500", "-c", "10", "--rounds", "1"],
        limit=1500,
        by_database={"sqlite": ["--workers", "1"], "postgres": ["--workers", "4"]},
    ),
    Bench("domain_check", ["--runs", "20"], ["--runs", "5"], limit=300, per_database=False),
    Bench(
        "throttle",
        ["-n", "200000", "--rounds", "3", "--events", "1000000"],
        ["-n", "20000", "--rounds", "1", "--events", "50000"],
        limit=1200,
    ),
    Bench(
        "message_log",
        ["-n", "1000000", "--gets", "20", "--build-limit", "1200"],
        ["-n", "50000", "--gets", "5"],
        limit=2400,
    ),
]
NAMES = [b.name for b in BENCHES]


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def run_bench(argv: list[str], log_path: Path, limit: float) -> tuple[int | None, str]:
    """Run one bench, its output streamed (indented) and logged; returns its exit status
    (None if it had to be killed) and a note ("" or what happened)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

        def pump() -> None:
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, b""):
                log.write(line)
                log.flush()
                sys.stdout.write("    " + line.decode(errors="replace"))
                sys.stdout.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        note = ""
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            note = f"ran past the suite's limit of {limit:.0f} s; stopped"
            proc.send_signal(signal.SIGINT)  # the bench's finally blocks stop its processes
            try:
                proc.wait(timeout=KILL_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
                note += " (killed)"
        except KeyboardInterrupt:
            # Ctrl-C reached the bench too (same process group): let it clean up.
            try:
                proc.wait(timeout=KILL_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
            raise
        finally:
            reader.join(timeout=10)
    return (None if note else proc.returncode), note


def fmt_number(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.1f}"
    if abs(value) >= 0.01:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def fmt_floor(result: dict) -> str:
    floor = result.get("floor")
    if not floor:
        return "–"
    op = {">=": "≥", "<=": "≤"}.get(floor["op"], floor["op"])
    what = "ratio" if floor["on"] == "ratio" else result["unit"]
    value = f"{floor['value']:.2f}" if floor["on"] == "ratio" else f"{floor['value']:g}"
    text = f"{what} {op} {value}" if floor["on"] == "ratio" else f"{op} {value} {what}"
    met = result.get("floor_met")
    if met is None:
        return f"{text}: no figure"
    return f"{text}: met" if met else f"**{text}: NOT met**"


def table(runs: list[dict]) -> tuple[list[str], list[str]]:
    """The markdown table's lines, and the floors not met (in words)."""
    lines = [
        "| bench | database | our figure | baseline | baseline figure | ratio | floor |",
        "|---|---|---|---|---|---|---|",
    ]
    missed: list[str] = []
    for run in runs:
        summary = run.get("summary")
        if summary is None or not summary.get("results"):
            lines.append(
                f"| {run['name']} | {DISPLAY.get(run['database'], run['database'])} "
                f"| **FAILED: {run['failure']}** | | | | |"
            )
            continue
        database = DISPLAY.get(summary.get("database"), run["database"])
        for result in summary["results"]:
            figure = f"{fmt_number(result['figure'])} {result['unit']}"
            base_figure = (
                f"{fmt_number(result['baseline_figure'])} {result['unit']}"
                if result.get("baseline_figure") is not None
                else "–"
            )
            what = result["what"]
            if not summary["checks_passed"]:
                what += " **(checks FAILED)**"
            lines.append(
                f"| {what} | {database} | {figure} | {result.get('baseline') or '–'} | "
                f"{base_figure} | {fmt_ratio(result.get('ratio'))} | {fmt_floor(result)} |"
            )
            if result.get("floor") and result.get("floor_met") is False:
                missed.append(f"{result['what']} vs {result['baseline']} on {database}")
    return lines, missed


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="small sizes: the whole suite in a few minutes"
    )
    p.add_argument("--database", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument(
        "--only",
        action="append",
        choices=NAMES,
        metavar="NAME",
        help=f"run only this bench (repeatable): {', '.join(NAMES)}",
    )
    p.add_argument("--out", type=Path, default=None, help="directory for the JSON files and logs")
    p.add_argument("--strict", action="store_true", help="a floor not met also exits 1")
    args = p.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="sendmsg-bench-suite-"))
    out.mkdir(parents=True, exist_ok=True)
    databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    chosen = [b for b in BENCHES if not args.only or b.name in args.only]
    plan: list[tuple[Bench, str]] = []
    for database in databases:
        for bench in chosen:
            if bench.per_database:
                plan.append((bench, database))
            elif database == databases[0]:
                plan.append((bench, "any"))

    started = time.monotonic()
    load_start = load_average()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"sendmsg bench suite, {'quick' if args.quick else 'full'} sizes, {when}; "
        f"{os.cpu_count()} cores ({cpu_model()}); load average {load_start}; "
        f"{len(plan)} bench runs; output in {out}",
        flush=True,
    )
    runs: list[dict] = []
    interrupted = False
    for bench, database in plan:
        argv = [sys.executable, str(ROOT / "bench" / f"{bench.name}.py")]
        argv += bench.quick if args.quick else bench.full
        if bench.per_database:
            argv += ["--database", database, *bench.by_database.get(database, [])]
        json_path = out / f"{bench.name}-{database}.json"
        json_path.unlink(missing_ok=True)
        argv += ["--json", str(json_path)]
        limit = max(300.0, bench.limit / 3) if args.quick else bench.limit
        shown = " ".join(["bench/" + Path(argv[1]).name, *argv[2:-2]])
        load = load_average()
        print(f"\n== {bench.name} ({database}): {shown}   [load average {load}]", flush=True)
        t0 = time.monotonic()
        run: dict = {"name": bench.name, "database": database, "argv": shown, "load": load}
        try:
            code, note = run_bench(argv, out / f"{bench.name}-{database}.log", limit)
        except KeyboardInterrupt:
            code, note, interrupted = None, "interrupted", True
        run["seconds"] = time.monotonic() - t0
        run["exit"] = code
        summary = None
        if json_path.exists():
            summary = json.loads(json_path.read_text())
        run["summary"] = summary
        if note:
            run["failure"] = note
        elif summary is None:
            run["failure"] = f"exit status {code}, no summary written"
        elif not summary["checks_passed"]:
            run["failure"] = "; ".join(summary["problems"]) or f"checks failed (exit {code})"
        elif code != 0 and all(r.get("floor_met") is not False for r in summary["results"]):
            run["failure"] = f"exit status {code}"
        runs.append(run)
        print(
            f"== {bench.name} ({database}) done in {run['seconds']:.0f} s"
            + (f": FAILED: {run['failure']}" if run.get("failure") else ""),
            flush=True,
        )
        if interrupted:
            break

    lines, missed = table(runs)
    failed = [r for r in runs if r.get("failure")]
    minutes = (time.monotonic() - started) / 60
    report = [
        f"{when}, {'quick' if args.quick else 'full'} sizes, {os.cpu_count()} cores "
        f"({cpu_model()}), load average {load_start} at the start, {load_average()} at "
        f"the end; {minutes:.0f} minutes in all.",
        "",
        *lines,
        "",
        "Ratio = our figure / the baseline's, measured in the same run: for rates (msgs/s, "
        "req/s) higher is better, for times (ms, µs, s) lower is better. PostgreSQL: a "
        "throwaway cluster with fsync on. SMTP accept's bare aiosmtpd baseline stores in "
        "SQLite on both databases.",
        "",
        "Sizes (and the load average when each started):",
        "",
    ]
    for run in runs:
        size = (run["summary"] or {}).get("size") if run.get("summary") else None
        report.append(
            f"- {run['name']} ({run['database']}): `{run['argv']}`"
            + (f" ({size})" if size else "")
            + f"; {run['seconds']:.0f} s; load {run['load']}"
        )
    report.append("")
    if missed:
        report.append("Floors NOT met: " + "; ".join(missed) + ".")
    else:
        report.append("Floors: every floor met." if runs else "Nothing ran.")
    if failed:
        report.append(
            "Checks FAILED: "
            + "; ".join(f"{r['name']} ({r['database']}): {r['failure']}" for r in failed)
            + "."
        )
    else:
        report.append("Checks: every bench's own checks passed.")
    text = "\n".join(report) + "\n"
    (out / "table.md").write_text(text)
    print("\n" + text)
    print(f"JSON summaries and logs: {out}")
    if interrupted:
        return 130
    if failed or (args.strict and missed):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
