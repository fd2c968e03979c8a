"""With several hosts configured, the Networks page gains a Host column and
the Create dialog a host select that lists each host's own bridges."""

import subprocess

import pytest
from playwright.sync_api import expect

from tests.webstack import PASSWORDS, Stack, start_webui

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    stack = Stack()
    webcfg = stack.second_host(str(tmp_path_factory.mktemp("node2")), bridges="br7")
    proc, url = start_webui(stack.users, subprocess.DEVNULL, config=webcfg)
    yield url
    proc.terminate()
    proc.wait(10)
    stack.close()


def signed_in(browser, url: str):
    """A page of the Networks list, signed in as admin."""
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(url + "/login")
    page.fill("#username", "admin")
    page.fill("#password", PASSWORDS["admin"])
    page.click("button[type=submit]")
    page.wait_for_selector("#networks")
    return page


def test_host_column_and_host_select(browser, two_hosts, shot):
    page = signed_in(browser, two_hosts)
    page.click("#create-open")
    expect(page.locator("#c-host")).to_be_visible()
    assert page.locator("#c-host option").all_inner_texts() == ["node1", "node2"]
    page.select_option("#c-host", "node2")
    expect(page.locator("#c-bridge option")).to_have_text(["br7"])
    page.click("#create-form button[type=submit]")
    page.wait_for_selector("tr[data-name='br7']")
    page.click("#create-open")
    page.select_option("#c-host", "node1")
    expect(page.locator("#c-bridge option")).to_have_text(["fcbr0", "fcbr1", "fcbr2"])
    page.select_option("#c-bridge", "fcbr1")
    page.click("#create-form button[type=submit]")
    page.wait_for_selector("tr[data-name='fcbr1']")
    expect(page.locator("th.host-col")).to_be_visible()
    rows = {r.locator("td").nth(0).inner_text(): r.locator("td").nth(1).inner_text()
            for r in page.locator("#networks tbody tr").all()}
    assert rows == {"br7": "node2", "fcbr1": "node1"}
    shot(page, "14-several-hosts")
    page.context.close()


def test_a_late_bridge_list_keeps_the_bridge_the_user_chose(browser, two_hosts):
    """Choosing a host asks for its bridges; an answer that came after the
    user had picked a bridge reset the pick to the first bridge, and the
    dialog created fcbr0 where the user had chosen fcbr1 (seen as a flaky
    wait for fcbr1's row in the test above)."""
    page = signed_in(browser, two_hosts)
    page.click("#create-open")
    expect(page.locator("#c-bridge option")).to_have_text(["fcbr0", "fcbr1", "fcbr2"])
    held = []

    def hold(route):
        held.append(route)
    page.route("**/api/bridges?*", hold)
    with page.expect_request("**/api/bridges?*"):
        page.select_option("#c-host", "node1")  # asks again; the answer is held
    page.select_option("#c-bridge", "fcbr1")
    shown = int(page.locator("#c-bridge").get_attribute("data-answer"))
    held[0].continue_()
    expect(page.locator("#c-bridge")).to_have_attribute("data-answer", str(shown + 1))
    page.unroute("**/api/bridges?*", hold)
    assert page.locator("#c-bridge").input_value() == "fcbr1"
    page.context.close()
