"""The admin end to end in a real headless Chromium: log in, filter, open a record, act on it.

Needs the system browser (Debian: ``apt-get install chromium chromium-driver``). Without it
the test is skipped with the reason; with ``IDEMPOTENCY_REQUIRE_SERVICES=1`` (CI) it fails.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from django_idempotency.models import IdempotencyKey
from tests.factories import IdempotencyKeyFactory

REQUIRE_SERVICES = os.environ.get("IDEMPOTENCY_REQUIRE_SERVICES") == "1"
# A name is looked up on PATH; a path must exist and be executable.
CHROMIUM = shutil.which(os.environ.get("IDEMPOTENCY_CHROMIUM", "chromium"))
CHROMEDRIVER = shutil.which(os.environ.get("IDEMPOTENCY_CHROMEDRIVER", "chromedriver"))
CHANGELIST = "/admin/django_idempotency/idempotencykey/"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def chromium_problem() -> str | None:
    """Return why the headless browser cannot run, or None when it can."""
    missing = [
        name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not path
    ]
    if missing:
        return (
            f"needs a headless Chromium: {' and '.join(missing)} not found on PATH "
            "(Debian: apt-get install chromium chromium-driver)"
        )
    return None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """A headless Chromium driven by Selenium through the system chromedriver."""
    problem = chromium_problem()
    if problem:
        if REQUIRE_SERVICES:
            pytest.fail(f"{problem}; IDEMPOTENCY_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(problem)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def click_and_load(browser: object, element: object) -> None:
    """Click ``element`` and wait until the page it leads to has replaced the current one.

    Without the wait, the next ``find_element`` can still see the old page (its message list,
    its rows) and then fail with a stale element once the new page arrives. The old page is
    recognised by a mark set on its ``window``, which a navigation drops; no element of the old
    page is touched while it is torn down (Chromium can answer such a call with an "unhandled
    inspector error" instead of a stale element). Errors while the page is between documents
    are retried until the new one is complete.
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.wait import WebDriverWait

    assert isinstance(browser, WebDriver)
    assert isinstance(element, WebElement)
    mark = uuid.uuid4().hex
    browser.execute_script("window.idempotencyPageMark = arguments[0];", mark)
    element.click()

    def new_page_loaded(driver: WebDriver) -> bool:
        page = driver.execute_script(
            "return [window.idempotencyPageMark || null, document.readyState];"
        )
        return bool(page == [None, "complete"])

    WebDriverWait(browser, 30, ignored_exceptions=(WebDriverException,)).until(new_page_loaded)


def lines_of(browser: object, element: object) -> int:
    """Return how many lines the browser laid ``element``'s text out on."""
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    script = """
        const range = document.createRange();
        range.selectNodeContents(arguments[0]);
        const tops = new Set([...range.getClientRects()].map(rect => Math.round(rect.top)));
        return tops.size;
    """
    return int(browser.execute_script(script, element))


def test_admin_browser__log_in_filter_open_and_release(
    browser: object, live_server: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.select import Select

    assert isinstance(browser, WebDriver)
    url = str(live_server.url)  # type: ignore[attr-defined]
    User.objects.create_superuser("operator", "operator@example.com", "correct horse")
    stuck = IdempotencyKeyFactory.create(
        key=f"stuck-{uuid.uuid4()}",
        in_flight=True,
        expires_at=timezone.now() + timedelta(minutes=1),
    )
    done = IdempotencyKeyFactory.create(
        key="done-key",
        response_headers=[["Content-Type", "application/json"], ["Set-Cookie", "sid=SECRET"]],
        response_body=b'{"order":"<b>42</b>"}',
    )

    # Log in.
    browser.get(f"{url}/admin/login/?next={CHANGELIST}")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys("correct horse")
    click_and_load(browser, browser.find_element(By.CSS_SELECTOR, "input[type=submit]"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert {row.find_element(By.CSS_SELECTOR, "th a").text for row in rows} == {
        stuck.key,
        "done-key",
    }
    # At 1400 px each date and each key stays on one line, and the census heads the list.
    for selector in ("td.field-created_at", "td.field-expires_at", "th.field-key"):
        for cell in browser.find_elements(By.CSS_SELECTOR, f"#result_list tbody {selector}"):
            assert lines_of(browser, cell) == 1, (selector, cell.text)
    assert "In flight" in browser.find_element(By.CSS_SELECTOR, ".idempotency-census").text

    # Filter to in-flight keys.
    click_and_load(
        browser,
        browser.find_element(By.CSS_SELECTOR, '#changelist-filter a[href="?state=in_flight"]'),
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert [row.find_element(By.CSS_SELECTOR, "th a").text for row in rows] == [stuck.key]

    # Open a completed record: its preview is escaped and its cookie hidden.
    browser.get(f"{url}{CHANGELIST}?q=done-key")
    click_and_load(browser, browser.find_element(By.LINK_TEXT, "done-key"))
    preview = browser.find_element(By.CSS_SELECTOR, "pre.idempotency-preview").text
    assert '"order": "<b>42</b>"' in preview
    assert not browser.find_elements(By.CSS_SELECTOR, "pre.idempotency-preview b")
    assert "SECRET" not in browser.page_source
    assert done.token in browser.page_source
    assert not browser.find_elements(By.NAME, "_save")

    # Open the stuck record and release it from its page.
    browser.get(f"{url}{CHANGELIST}?state=in_flight")
    click_and_load(browser, browser.find_element(By.LINK_TEXT, stuck.key))
    assert stuck.token in browser.page_source
    button = browser.find_element(By.CSS_SELECTOR, 'button[value="release_keys"]')
    # Styled as the admin's own object tools beside it, not a bare browser button.
    assert button.value_of_css_property("border-radius") == "15px"
    assert button.value_of_css_property("text-transform") == "uppercase"
    click_and_load(browser, button)
    # Asked first, with what it causes.
    assert "will run the view again" in browser.find_element(By.ID, "content").text
    click_and_load(browser, browser.find_element(By.CSS_SELECTOR, 'input[type="submit"]'))
    assert (
        "Released 1 idempotency key." in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    )
    assert not IdempotencyKey.objects.filter(pk=stuck.pk).exists()

    # Run an action from the list: expire the completed record now.
    browser.find_element(
        By.CSS_SELECTOR, f'input[name="_selected_action"][value="{done.pk}"]'
    ).click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("expire_keys")
    click_and_load(browser, browser.find_element(By.CSS_SELECTOR, 'button[name="index"]'))
    click_and_load(browser, browser.find_element(By.CSS_SELECTOR, 'input[type="submit"]'))
    assert (
        "Expired 1 idempotency key." in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    )
    done.refresh_from_db()
    assert done.expires_at <= timezone.now()
