"""A screenshot of a `dupmae-eval report` page as a browser shows it, with one cell expanded.

Drives the system Chromium (Debian's `chromium` package) through Playwright; nothing is downloaded.
Prints the browser's console errors (none expected) and exits 1 if there were any.

    .venv/bin/python scripts/report_screenshot.py runs/demo/report.html docs/report-demo.png \
        --expand scifact minilm

Needs `pip install playwright` and `apt-get install chromium` (or --chromium PATH).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("output", type=Path, help="PNG to write")
    parser.add_argument("--expand", nargs=2, metavar=("DATASET", "CONDITION"), default=None,
                        help="the cell to open before the screenshot (default: none)")
    parser.add_argument("--measure", default=None, help="the measure to show (default: the first)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1500, help="the height of the picture (the page is cut there)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = parser.parse_args()
    if not args.chromium:
        parser.error("no Chromium found; apt-get install chromium, or give --chromium PATH")

    from playwright.sync_api import sync_playwright

    errors = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height}, device_scale_factor=1)
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(args.report.resolve().as_uri())
        page.wait_for_load_state("load")
        if args.measure:
            page.click(f'nav.measures button:text-is("{args.measure}")')
        if args.expand:
            dataset, condition = args.expand
            page.locator(f'section.measure:visible td[data-row="{dataset}"][data-column="{condition}"] summary').click()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.output), full_page=False)
        browser.close()
    for error in errors:
        print(f"console error: {error}", file=sys.stderr)
    print(f"wrote {args.output} ({len(errors)} console errors)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
