"""The dashboard: its JSON endpoint over HTTP, and the page in a real headless Chromium."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.conftest import new_api_key
from tests.factories import recipients, submit
from tests.support import Stack, wait_for
from tests.worker.test_dispatch import setup_workspace, wait_final

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Each call rings 0.5 s and talks 2 s; four at a time, forty recipients take ten rounds.
SLOW_CARRIER = {"rules": [{"pattern": "*", "ring_seconds": 0.5, "talk_seconds": 2.0}]}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """Headless Chromium driven by chromedriver, both on loopback, with no way off the host."""
    # Missing Chromium fails the run (make install provides it); it is never a skip.
    for binary in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(binary), f"{binary} is missing: run `make install`"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        # Every host name other than loopback fails to resolve: nothing can reach the internet.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--remote-debugging-address=127.0.0.1",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(argument)
    service = Service(
        executable_path=CHROMEDRIVER,
        service_args=["--allowed-ips=127.0.0.1"],
        log_output=str(Path(tmp_path_factory.mktemp("chromedriver")) / "chromedriver.log"),
    )
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def open_dashboard(browser: webdriver.Chrome, stack: Stack, api_key: str) -> None:
    """A fresh tab state (no stored key), then the page with the key in the fragment."""
    browser.get(f"{stack.api_url}/healthz")
    browser.execute_script("window.sessionStorage.clear()")
    browser.get(f"{stack.api_url}/dashboard#key={api_key}")


def bar_percent(browser: webdriver.Chrome, batch_id: str) -> int | None:
    """The percentage the batch's progress bar shows, or None while its row is not there."""
    try:
        row = browser.find_element(By.CSS_SELECTOR, f'tr[data-batch-id="{batch_id}"]')
        bar = row.find_element(By.CSS_SELECTOR, '[role="progressbar"]')
        value = bar.get_attribute("aria-valuenow")
        width = bar.find_element(By.CSS_SELECTOR, ".bar-fill").value_of_css_property("width")
    except (NoSuchElementException, StaleElementReferenceException):
        return None
    assert value is not None and width, "the bar shows no value"
    return int(value)


def row_text(browser: webdriver.Chrome, batch_id: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, f'tr[data-batch-id="{batch_id}"]').text)


def dashboard_data(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/dashboard/data", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["batches"])


def test_page_shows_a_running_batch_progressing_to_complete(make_stack, browser):
    stack = make_stack(sandbox=SLOW_CARRIER)
    client, agent_id, number_id = setup_workspace(stack)
    api_key = str(client.headers["x-api-key"])
    response = submit(
        client,
        agent_id,
        number_id,
        recipients(16, "+1415555", 100),
        call_name="dashboard watch",
        target_concurrency_limit=4,
    )
    assert response.status_code == 200, response.text
    batch_id = response.json()["id"]

    open_dashboard(browser, stack, api_key)
    assert browser.title == "Switchboard dashboard"
    first = wait_for(
        lambda: (lambda p: (p,) if p is not None else None)(bar_percent(browser, batch_id)),
        15,
        what="the batch's row on the page",
    )[0]
    assert first < 100, f"the batch already looks done at {first}%"
    assert "dashboard watch" in row_text(browser, batch_id)
    # The key left the address bar once the page stored it.
    assert "key=" not in browser.current_url
    # The page refreshes itself: the same bar, read again, has moved on.
    second = wait_for(
        lambda: (lambda p: p if p is not None and p > first else None)(
            bar_percent(browser, batch_id)
        ),
        20,
        what=f"the bar to move past {first}%",
    )
    assert first < second
    running = browser.find_element(By.CSS_SELECTOR, f'tr[data-batch-id="{batch_id}"]')
    assert running.get_attribute("data-status") == "in_progress"

    batch = wait_final(client, batch_id, timeout=120)
    assert batch["status"] == "completed"
    wait_for(
        lambda: (
            bar_percent(browser, batch_id) == 100
            and browser.find_element(
                By.CSS_SELECTOR, f'tr[data-batch-id="{batch_id}"]'
            ).get_attribute("data-status")
            == "completed"
        ),
        10,
        what="the bar to reach 100% and the row to say completed",
        describe=lambda: row_text(browser, batch_id),
    )
    fill = browser.find_element(By.CSS_SELECTOR, f'tr[data-batch-id="{batch_id}"] .bar-fill')
    assert fill.get_attribute("style") == "width: 100%;"
    completed = browser.find_element(
        By.CSS_SELECTOR, f'tr[data-batch-id="{batch_id}"] [data-recipient-status="completed"]'
    )
    assert completed.get_attribute("data-count") == "16"
    assert "16 / 16" in row_text(browser, batch_id)
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_page_with_a_wrong_key_says_so_and_shows_no_batches(stack: Stack, browser):
    client, agent_id, number_id = setup_workspace(stack)
    response = submit(client, agent_id, number_id, recipients(1, "+1415555", 300))
    assert response.status_code == 200, response.text

    open_dashboard(browser, stack, "sb_not-a-key")
    error = wait_for(
        lambda: (lambda e: e if e.is_displayed() else None)(browser.find_element(By.ID, "error")),
        10,
        what="the error message",
    )
    assert "Invalid API key" in error.text
    assert browser.find_element(By.ID, "key-form").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "tr[data-batch-id]") == []

    # The form takes a valid key, and the page then shows the workspace's batch.
    browser.find_element(By.ID, "key-input").send_keys(str(client.headers["x-api-key"]))
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait_for(
        lambda: browser.find_elements(
            By.CSS_SELECTOR, f'tr[data-batch-id="{response.json()["id"]}"]'
        ),
        10,
        what="the batch's row after entering a valid key",
    )
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_page_is_public_and_carries_no_data(stack: Stack):
    with stack.raw_client() as raw:
        page = raw.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert "/dashboard/data" in page.text
    assert "batch_" not in page.text


def test_data_needs_a_key_and_counts_recipients_by_status(stack: Stack):
    client, agent_id, number_id = setup_workspace(stack)
    people = recipients(4, "+1415555", 400)
    # A number given twice is kept in the batch as cancelled (duplicate) and dialed once.
    people.append({**people[0], "id": "repeat"})
    older = submit(client, agent_id, number_id, people, call_name="older")
    assert older.status_code == 200, older.text
    wait_final(client, older.json()["id"], timeout=60)
    newer = submit(client, agent_id, number_id, recipients(2, "+1415555", 410), call_name="newer")
    assert newer.status_code == 200, newer.text
    wait_final(client, newer.json()["id"], timeout=60)

    with stack.raw_client() as raw:
        assert raw.get("/dashboard/data").status_code == 401
        assert raw.get("/dashboard/data", headers={"x-api-key": "sb_wrong"}).status_code == 401
        bearer = raw.get(
            "/dashboard/data", headers={"Authorization": f"Bearer {client.headers['x-api-key']}"}
        )
        assert bearer.status_code == 200

    batches = dashboard_data(client)
    assert [b["name"] for b in batches] == ["newer", "older"]
    newest, oldest = batches
    assert oldest == {
        "id": older.json()["id"],
        "name": "older",
        "status": "completed",
        "paused": False,
        "paused_reason": None,
        "created_at_unix": oldest["created_at_unix"],
        "total_calls_scheduled": 5,
        "total_calls_dispatched": 4,
        "total_calls_finished": 4,
        "retry_count": 0,
        "total_recipients": 5,
        "final_recipients": 5,
        "recipients_by_status": {"completed": 4, "cancelled": 1},
    }
    assert newest["recipients_by_status"] == {"completed": 2}
    assert newest["final_recipients"] == newest["total_recipients"] == 2
    assert [b["id"] for b in dashboard_data(client, limit=1)] == [newer.json()["id"]]
    # Another workspace sees none of these.
    with stack.client(new_api_key(stack)) as other:
        assert dashboard_data(other) == []
