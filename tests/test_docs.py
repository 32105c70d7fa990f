"""The documentation builds without broken links, and every problem `type` URI lands in it."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from django_idempotency.exceptions import IdempotencyError
from django_idempotency.options import OPTIONS, SETTING_PREFIX, setting_name

ROOT = Path(__file__).resolve().parent.parent


class PageIndex(HTMLParser):
    """Collect a built page's canonical URL and the ids of its elements."""

    def __init__(self) -> None:
        super().__init__()
        self.canonical_url: str | None = None
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "link" and attributes.get("rel") == "canonical":
            self.canonical_url = attributes.get("href")
        if attributes.get("id"):
            self.ids.add(str(attributes["id"]))


def problem_error_classes(cls: type[IdempotencyError] = IdempotencyError) -> list[type]:
    """Return the error class and all its subclasses, each of which has a problem `type` URI."""
    return [cls, *(sub for child in cls.__subclasses__() for sub in problem_error_classes(child))]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the site strictly (any warning fails) once, and return its directory."""
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return site_dir


@pytest.fixture(scope="module")
def pages_by_url(site: Path) -> dict[str, PageIndex]:
    """Index every built page by its canonical URL (mkdocs.yml's site_url plus its path)."""
    pages = {}
    for html in site.rglob("*.html"):
        page = PageIndex()
        page.feed(html.read_text())
        if page.canonical_url:
            pages[page.canonical_url] = page
    return pages


def test_docs__build_strictly(site: Path) -> None:
    assert (site / "errors" / "index.html").exists()
    assert (site / "changelog" / "index.html").exists()
    assert (site / "security" / "index.html").exists()


@pytest.mark.parametrize("error", problem_error_classes(), ids=lambda cls: cls.__name__)
def test_docs__problem_type_uri_has_its_anchor_in_the_built_site(
    error: type[IdempotencyError], pages_by_url: dict[str, PageIndex]
) -> None:
    page_url, _, anchor = error().type_uri.partition("#")

    assert page_url in pages_by_url, f"no built page has the canonical URL {page_url}"
    assert anchor in pages_by_url[page_url].ids


def settings_reference() -> dict[str, tuple[str, str]]:
    """Return each ``## IDEMPOTENCY_*`` section of docs/settings.md as (default, per view)."""
    sections: dict[str, tuple[str, str]] = {}
    text = (ROOT / "docs" / "settings.md").read_text()
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        name = section.split("\n", 1)[0].strip()
        if not name.startswith(SETTING_PREFIX):
            continue
        default = re.search(r"^- \*\*Default:\*\* `([^`]*)`", section, re.MULTILINE)
        per_view = re.search(r"^- \*\*Per view:\*\* (\S+)", section, re.MULTILINE)
        assert default, f"{name} lacks its Default line"
        assert per_view, f"{name} lacks its Per view line"
        sections[name] = (default.group(1), per_view.group(1).rstrip(";"))
    return sections


def test_docs__the_settings_reference_lists_every_option_with_the_tables_default() -> None:
    documented = settings_reference()

    assert list(documented) == [setting_name(name) for name in OPTIONS]
    for name, option in OPTIONS.items():
        default, per_view = documented[setting_name(name)]
        assert eval(default, {"timedelta": timedelta}) == option.default, name
        assert per_view == ("no" if option.view is None else f"`{name}`"), name
