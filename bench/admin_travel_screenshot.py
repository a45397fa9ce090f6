#!/usr/bin/env python
"""The README's screenshot of the admin page's "Travel times" panel, with a real learned profile.

Serves the monolith on the Manhattan midtown map (temporary SQLite database), learns travel times
from the real 2016 taxi sample exactly as ``routing traffic learn --trips ... --format nyc-kaggle``
does, signs in to ``/admin`` in Debian's Chromium and captures the panel:

    .venv/bin/python bench/admin_travel_screenshot.py [--out docs/admin-travel-times.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from gnn_model.eta.trips import read_trips  # noqa: E402
from tests.e2e.live_server import live_server  # noqa: E402
from travel_times.learn import learn_profile  # noqa: E402

DATA = REPO.parent / "shared" / "data"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/admin-travel-times.png")
    args = ap.parse_args()
    trips = read_trips(DATA / "trip_requests" / "nyc_taxi_2016_kaggle_sample_jan_apr.csv.gz", "nyc-kaggle")
    with tempfile.TemporaryDirectory() as tmp, live_server(Path(tmp), DATA / "road_networks" / "manhattan_midtown.osm.pbf") as server:  # fmt: skip
        c = server.container
        result = learn_profile(c.graph.snapshot.graph, trips)
        result.metrics["timezone"] = "America/New_York"
        c.maps.save_learned_profile(c.graph.map.id, result.version, result.onnx_model, result.metrics,
                                    source="trips", timezone="America/New_York")  # fmt: skip
        c.graph.refresh()
        token = c.tokens.create("dispatcher", name="docs-screenshot", rate_per_s=0)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{server.url}/admin")
            page.fill("input[name=token]", token)
            page.click("#login-form button[type=submit]")
            expect(page.locator("#tp-version")).to_have_text(result.version, timeout=30_000)
            panel = page.get_by_test_id("travel-times")
            panel.scroll_into_view_if_needed()
            out = REPO / args.out
            out.parent.mkdir(parents=True, exist_ok=True)
            panel.screenshot(path=str(out))
            browser.close()
        print(f"{out}: profile {result.version}, held-back GNN {result.metrics['holdout']['gnn']}")


if __name__ == "__main__":
    main()
