"""Time to first chart: how long the dashboard's Sensitivity and Budget pages take to draw on a
real run, opened by deep link in headless Chromium as a user would.

Makes the run first (`mixprec run` on the config's model), serves it with `mixprec dashboard`,
and opens each page `repeats` times in fresh browser sessions: the first opening finds the
server's caches empty (the model and table load), later ones find them warm. Writes
experiments/results/bench_dashboard.md.

Run: .venv/bin/python experiments/bench_dashboard.py [--config CONFIG.toml]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from study import header, load_config, parse_args, publish

from mixprec.config import parse_config
from mixprec.dashboard import browser
from mixprec.markdown import frame_markdown
from mixprec.pipeline import run_pipeline

DEFAULTS = {"model": "minilm", "schemes": ["w:int8", "w:mxfp6_e2m3", "w:int4_g128", "w:nvfp4",
            "w:mxfp4"], "estimators": ["fisher"], "budgets": ["4.5bits", "5bits", "6bits"],
            "calib_batches": 2, "repeats": 3}  # fmt: skip
PAGES = ("Sensitivity", "Budget")


def make_run(config: dict[str, object], store: Path) -> float:
    """The run the pages show (plans measured, as `mixprec run` leaves them); its seconds."""
    started = time.monotonic()
    run = {"model": config["model"], "output": str(store / "run"),
           "schemes": config["schemes"], "estimators": config["estimators"],
           "levels": ["layer"], "budgets": config["budgets"], "methods": ["ilp", "uniform"],
           "exports": ["json"], "calib_batches": config["calib_batches"]}  # fmt: skip
    run_pipeline(parse_config(run), say=lambda _: None, progress=False)
    return time.monotonic() - started


def first_charts(store: Path, repeats: int) -> pd.DataFrame:
    """Seconds from opening each page to its chart, per opening (fresh browser sessions)."""
    rows = []
    with browser.served(store, store / "dashboard.log") as url:
        for attempt in range(repeats):
            for name in PAGES:
                with browser.chromium() as page:
                    seconds = browser.open_page(page, url, "run", name)
                    errors = page.locator('[data-testid="stException"]').count()
                if errors:
                    raise RuntimeError(f"the {name} page shows an error: {store}/dashboard.log")
                rows.append({"page": name, "opening": attempt + 1, "seconds": seconds})
    return pd.DataFrame(rows)


def main() -> int:
    args = parse_args("bench_dashboard", __doc__.splitlines()[0])
    config = load_config(args.config, DEFAULTS)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mixprec-bench-dashboard-") as folder:
        store = Path(folder)
        made = make_run(config, store)
        timings = first_charts(store, int(config["repeats"]))
    summary = pd.DataFrame([
        {"page": name, "first opening s (server caches empty)": float(part["seconds"].iloc[0]),
         "later openings, median s": statistics.median(part["seconds"].iloc[1:])
         if len(part) > 1 else float("nan")}
        for name, part in timings.groupby("page", sort=False)
    ])  # fmt: skip
    what = (
        f"The run: `mixprec run` on {config['model']}, {len(config['schemes'])} schemes, "
        f"estimators {', '.join(config['estimators'])}, layer level, budgets "
        f"{', '.join(config['budgets'])}, ILP and uniform plans, measured (made in {made:.0f} s). "
        f"Each page opened {config['repeats']} times by its deep link (`?run=run&page=NAME`) "
        "in a fresh headless Chromium session; the time runs "
        "from the request to the page's Plotly chart appearing (the heatmap; the plan's bars)."
    )
    text = (header("Dashboard: time to first chart", args, time.monotonic() - started, what)
            + "## Summary\n\n" + frame_markdown(summary, digits=3) + "\n\n"
            + "## Every opening\n\n" + frame_markdown(timings, digits=3) + "\n")  # fmt: skip
    return publish(args.out, text)


if __name__ == "__main__":
    sys.exit(main())
