"""The median of several `bench/run.py` results, as issue 6 asks its targets to be read (runs swing 10-15 %).

    python bench/median.py bench/results/A.json bench/results/B.json bench/results/C.json

Prints, per figure, the median and the runs' values: the ratios to the baseline, the p99 of the one-process balance
reads over the baseline's, the scale-out factors and the batches' usage entries per second."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

BASELINE = "baseline: bare Strawberry, memory"


def _figures(run: dict[str, Any]) -> dict[str, float]:
    by_scenario = {figure["scenario"]: figure for figure in run["figures"]}
    baseline_p99 = by_scenario[BASELINE]["p99_ms"]
    found = {f"ratio {name}": value for name, value in run["ratios"].items()}
    for database in ("sqlite", "postgresql"):
        read = by_scenario.get(f"{database}: balance read")
        if read is not None:
            found[f"p99 over the baseline's, {database}: balance read"] = read["p99_ms"] / baseline_p99
    found.update({f"scale-out {name}": value for name, value in run["scale_out"].items()})
    found.update({f"entries/s {name}": figure["entries_per_second"] for name, figure in by_scenario.items()
                  if figure.get("entries_per_second")})
    return found


def main(paths: list[str]) -> None:
    runs = [_figures(json.loads(Path(path).read_text())) for path in paths]
    print(f"median of {len(runs)} runs: {', '.join(Path(path).stem for path in paths)}")
    for name in runs[0]:
        values = [run[name] for run in runs if name in run]
        shown = ", ".join(f"{value:,.2f}" for value in values)
        print(f"  {name:<78} {statistics.median(values):>10,.2f}   ({shown})")


if __name__ == "__main__":
    main(sys.argv[1:])
