"""The documentation site: `mkdocs build --strict` passes, fails on a broken link or a missing API
reference, and the built site renders in a headless Chromium (skipped where no Chromium is installed).

One strict build of the real site (about 5 s) is shared by the module's tests; the two failing builds
use a one-page site with the same plugins (about 3 s each).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_site", ROOT / "tools" / "check_site.py")
check_site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_site)


def _mkdocs_build(config: Path, site_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site_dir)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site_dir = tmp_path_factory.mktemp("docs-site") / "site"
    done = _mkdocs_build(ROOT / "mkdocs.yml", site_dir)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}{done.stderr}"
    return site_dir


def test_strict_build_has_guides_and_api_reference(site):
    assert (site / "index.html").is_file()
    for guide in sorted((ROOT / "docs").glob("*.md")):
        page = site / f"{guide.stem}.html"
        assert page.is_file(), f"{guide.name} has no page in the site (missing from mkdocs.yml's nav?)"
    layers = (site / "api" / "layers.html").read_text(encoding="utf-8")
    assert 'id="zhyper.layers.zlinear.ZLinear"' in layers
    assert "modulated per sample" in layers  # ZLinear's docstring, rendered by mkdocstrings
    model = (site / "api" / "model.html").read_text(encoding="utf-8")
    assert 'id="zhyper.model.ZhyperModel.from_pretrained"' in model
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    assert any(doc["location"].startswith("api/layers.html") for doc in index["docs"])


def test_every_api_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        assert f"api/{page.name}" in nav, f"docs/api/{page.name} is not in mkdocs.yml's nav"


def _one_page_site(tmp_path: Path, text: str) -> Path:
    """A site with the real mkdocs.yml's theme and plugins and one page of `text`; returns its config."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text(text, encoding="utf-8")
    config.update(docs_dir=str(tmp_path / "docs"), nav=["index.md"])
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            plugin["mkdocstrings"]["handlers"]["python"]["paths"] = [str(ROOT)]
    path = tmp_path / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.parametrize("text, message", [
    ("# Page\n\nSee [the guide](no-such-guide.md).\n", "no-such-guide.md"),
    ("# Page\n\n::: zhyper.layers.zlinear.NoSuchLayer\n", "zhyper.layers.zlinear.NoSuchLayer"),
], ids=["broken-link", "missing-reference"])
def test_strict_build_fails_on(tmp_path, text, message):
    done = _mkdocs_build(_one_page_site(tmp_path, text), tmp_path / "site")
    assert done.returncode != 0, "the strict build passed a broken page"
    assert message in done.stdout + done.stderr


def test_site_renders_in_headless_chromium(site, tmp_path):
    chromium = check_site.find_chromium()
    if chromium is None:
        pytest.skip(check_site.missing_chromium_message())
    failures = check_site.check_site(site, tmp_path / "shots", chromium)
    assert failures == []
    for shot in ("home.png", "api_zlinear.png", "search.png"):
        assert (tmp_path / "shots" / shot).stat().st_size > 10_000, f"{shot} looks empty"
