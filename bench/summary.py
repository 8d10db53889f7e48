"""The machine-readable summary each bench writes with --json FILE, and bench/suite.py reads.

One JSON object a bench run:

    {
      "bench": "submission",            # the script's name
      "database": "sqlite",             # sqlite | postgres | any (no database)
      "size": "-n 2000 -c 20 -k 100, 3 rounds",
      "checks_passed": true,            # the bench's own checks: nothing lost, no errors
      "problems": [],                   # what failed, in words
      "results": [                      # the headline figures, one a comparison
        {
          "what": "SMTP accept",
          "figure": 369.2, "unit": "msgs/s",
          "baseline": "Postfix", "baseline_figure": 635.7,
          "ratio": 0.58,                # figure / baseline_figure
          "higher_is_better": true,
          "floor": {"on": "ratio", "op": ">=", "value": 0.5},   # or null
          "floor_met": true             # or null without a floor
        }
      ]
    }

The text output of each bench is unchanged; the file is written in addition.
"""

from __future__ import annotations

import argparse
import json
import operator
from pathlib import Path
from typing import Any

OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt, ">": operator.gt}


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        metavar="FILE",
        type=Path,
        default=None,
        help="also write the headline figures to FILE as JSON (read by bench/suite.py)",
    )


def result(
    what: str,
    figure: float | None,
    unit: str,
    *,
    baseline: str | None = None,
    baseline_figure: float | None = None,
    higher_is_better: bool = True,
    floor: tuple[str, str, float] | None = None,
    ratio: float | None = None,
) -> dict[str, Any]:
    """One headline figure and its baseline. ``floor`` is (on, op, value), ``on`` being
    "ratio" or "figure": e.g. ("ratio", ">=", 0.5), ("figure", "<", 50). ``ratio`` is
    figure / baseline_figure unless the bench gives its own (e.g. the median of per-round
    ratios)."""
    if ratio is None and figure is not None and baseline_figure:
        ratio = figure / baseline_figure
    met = None
    floor_dict = None
    if floor is not None:
        on, op, value = floor
        floor_dict = {"on": on, "op": op, "value": value}
        subject = ratio if on == "ratio" else figure
        met = None if subject is None else bool(OPS[op](subject, value))
    return {
        "what": what,
        "figure": figure,
        "unit": unit,
        "baseline": baseline,
        "baseline_figure": baseline_figure,
        "ratio": ratio,
        "higher_is_better": higher_is_better,
        "floor": floor_dict,
        "floor_met": met,
    }


def write(
    path: Path | None,
    *,
    bench: str,
    database: str,
    size: str,
    checks_passed: bool,
    results: list[dict[str, Any]],
    problems: list[str] | None = None,
) -> None:
    """Write the summary to ``path`` (nothing when --json was not given)."""
    if path is None:
        return
    data = {
        "bench": bench,
        "database": database,
        "size": size,
        "checks_passed": checks_passed,
        "problems": problems or [],
        "results": results,
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
