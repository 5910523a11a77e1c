"""Open the built documentation site in a real headless Chromium and check that it renders.

    .venv/bin/python tools/check_site.py                  # build into a temporary folder, then check
    .venv/bin/python tools/check_site.py --site site      # check an already built site (bash make.sh docs)

Three checks, each with a screenshot in --out (default site-check/): the home page (title, heading,
the navigation's "API reference"), the API page of ZLinear (its heading and docstring, rendered by
mkdocstrings) and the search box (typing "ZLinear" lists a result on the API page; the search runs
in the page's web worker, so the site is served over HTTP on 127.0.0.1), and a fourth without a
screenshot: site/index.html opened as a file reaches the ZLinear page by its link, as a reader
without a server does.

The browser is Debian's Chromium (`apt-get install chromium`), driven by the playwright package (the
docs extra); set ZHYPER_CHROMIUM to use another Chromium binary. Exit status: 0 all checks passed,
1 a check failed, 2 skipped because no Chromium was found (the message says where it looked).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
TIMEOUT_MS = 20_000


def find_chromium() -> str | None:
    """The Chromium binary to drive: $ZHYPER_CHROMIUM, else the first of CANDIDATES on PATH."""
    given = os.environ.get("ZHYPER_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_chromium_message() -> str:
    where = os.environ.get("ZHYPER_CHROMIUM") or f"{', '.join(CANDIDATES)} on PATH"
    return (f"no Chromium found (looked for {where}); install Debian's package with "
            "`apt-get install chromium` or set ZHYPER_CHROMIUM to a Chromium binary")


def build_site(site_dir: Path) -> None:
    """`mkdocs build --strict` of the repository's mkdocs.yml into site_dir."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site_dir)]  # --quiet would pass warnings
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mkdocs build --strict failed ({done.returncode}):\n{done.stdout}{done.stderr}")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@contextmanager
def served(site_dir: Path):
    """The folder served over HTTP on 127.0.0.1 (a free port); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _expect(ok: bool, what: str, failures: list[str]) -> None:
    if not ok:
        failures.append(what)


def check_home(page, base: str, out: Path, failures: list[str]) -> None:
    page.goto(base + "index.html", wait_until="load")
    page.wait_for_selector("h1", timeout=TIMEOUT_MS)
    _expect("zhyper" in page.title(), f"home: title {page.title()!r} lacks 'zhyper'", failures)
    heading = page.locator("article h1").first.inner_text().replace("¶", "").strip()
    _expect(heading == "zhyper", f"home: the page's heading is {heading!r}, not 'zhyper'", failures)
    nav = page.locator("nav.md-nav--primary").first.inner_text()
    _expect("API reference" in nav, "home: the navigation has no 'API reference'", failures)
    _expect(page.locator("a[href*='api/layers.html']").count() > 0, "home: no link to the ZLinear API page", failures)
    page.screenshot(path=str(out / "home.png"), full_page=False)


def check_zlinear_page(page, base: str, out: Path, failures: list[str]) -> None:
    page.goto(base + "api/layers.html", wait_until="load")
    heading = page.locator("[id='zhyper.layers.zlinear.ZLinear']")
    heading.first.wait_for(timeout=TIMEOUT_MS)
    _expect("ZLinear" in heading.first.inner_text(), "ZLinear page: the class heading does not name ZLinear", failures)
    body = page.locator("article").first.inner_text()
    _expect("modulated per sample" in body, "ZLinear page: the class docstring is not rendered", failures)
    _expect("adapter_dtype" in body, "ZLinear page: the parameters are not rendered", failures)
    heading.first.scroll_into_view_if_needed()
    page.screenshot(path=str(out / "api_zlinear.png"), full_page=False)


def check_search(page, base: str, out: Path, failures: list[str]) -> None:
    page.goto(base + "index.html", wait_until="load")
    box = page.locator("input.md-search__input")
    _expect(box.count() == 1, "search: no search box in the header", failures)
    box.click()  # on a narrow screen the box opens from an icon in the header; at 1280 px it is in the header
    # a query typed while the worker still builds the index is dropped: wait until it says it is ready
    page.wait_for_function("document.querySelector('.md-search-result__meta').textContent.trim()"
                           " !== 'Initializing search'", timeout=TIMEOUT_MS)
    box.press_sequentially("ZLinear", delay=30)  # keystrokes: the search listens to keyup, not to a set value
    results = page.locator(".md-search-result__item")
    results.first.wait_for(timeout=TIMEOUT_MS)
    links = [results.nth(i).locator("a").first.get_attribute("href") or "" for i in range(results.count())]
    _expect(any("api/layers.html" in link for link in links), f"search: no result on the ZLinear API page in {links}",
            failures)
    page.screenshot(path=str(out / "search.png"), full_page=False)


def check_as_file(page, base: str, out: Path, failures: list[str]) -> None:
    """site/index.html opened as a file (base is a file:// URL): its link leads to the rendered ZLinear page."""
    page.goto(base + "index.html", wait_until="load")
    page.locator("article a[href*='api/layers.html']").first.click()
    page.wait_for_load_state("load")
    heading = page.locator("[id='zhyper.layers.zlinear.ZLinear']")
    _expect(heading.count() == 1, f"as a file: the ZLinear heading is not on {page.url}", failures)


# (check, served): served over HTTP, where a script error fails the check, or opened as files, where the
# search's script is expected to fail (it needs a server) and the other pages must read all the same
CHECKS = ((check_home, True), (check_zlinear_page, True), (check_search, True), (check_as_file, False))


def check_site(site_dir: Path, out: Path, chromium: str) -> list[str]:
    """Run every check on the site in site_dir with the Chromium binary; returns the failures (empty: all pass)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    errors: list[str] = []
    with served(site_dir) as http_base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            pages = {flag: browser.new_page(viewport={"width": 1280, "height": 900}) for flag in (True, False)}
            pages[True].on("pageerror", lambda exc: errors.append(str(exc)))
            bases = {True: http_base, False: site_dir.resolve().as_uri() + "/"}
            for check, is_served in CHECKS:
                page = pages[is_served]
                page.set_default_timeout(TIMEOUT_MS)
                try:
                    check(page, bases[is_served], out, failures)
                except PlaywrightError as exc:  # a selector that never appeared, a page that did not load
                    failures.append(f"{check.__name__}: {exc}")
                    page.screenshot(path=str(out / f"{check.__name__}-failed.png"))
        finally:
            browser.close()
    return failures + [f"a script error on a served page: {e}" for e in errors]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, help="a built site (default: build one into a temporary folder)")
    parser.add_argument("--out", type=Path, default=Path("site-check"), help="where the screenshots go")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print(f"SKIPPED: {missing_chromium_message()}")
        return 2
    with tempfile.TemporaryDirectory(prefix="zhyper-site-") as tmp:
        site = args.site
        if site is None:
            site = Path(tmp) / "site"
            build_site(site)
        failures = check_site(site, args.out, chromium)
    for failure in failures:
        print(f"FAILED: {failure}")
    if not failures:
        print(f"ok: home page, ZLinear API page and search render in {chromium} (served and as files); "
              f"screenshots in {args.out}/")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
