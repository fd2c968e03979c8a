"""Three hosts in one page, two of them over SSH (tests/sshstack.py: real
sshd, dbus-daemon and fcnetd per host), in real Chromium: all hosts' networks
listed with a Host column and a host filter; a network created on node2 from
the dialog; a VM attached there with fcnetctl --host seen live; node2 losing
its sshd, then its fcnetd, shown unavailable within seconds while node1 and
node3 keep working, and back with what changed meanwhile, all without a
reload of the page."""

import json

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ARGS
from tests.prereq import require
from tests.sshstack import SshStack, ssh_missing
from tests.system.harness import fcnetctl, folded_registry
from tests.webstack import PASSWORDS

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def stack():
    require("browser (ssh hosts)", ssh_missing())
    s = SshStack()
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser(stack):
    """Chromium in the client namespace, where the web UI listens."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=stack.chromium(), args=ARGS)
        yield b
        b.close()


def signed_in(browser, url: str):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(url + "/login")
    page.fill("#username", "admin")
    page.fill("#password", PASSWORDS["admin"])
    page.click("button[type=submit]")
    page.wait_for_selector("#networks")
    page.evaluate("window.sameDocument = true")  # gone if the page is ever reloaded
    return page


def row(page, name: str):
    return page.locator(f"#networks tbody tr[data-name='{name}']")


def cells(page, name: str) -> list[str]:
    return row(page, name).locator("td").all_inner_texts()


def not_reloaded(page) -> None:
    assert page.evaluate("window.sameDocument === true"), "the page was reloaded"


def test_three_hosts_a_network_made_on_node2_and_a_vm_attached_over_ssh_seen_live(browser, stack, shot):
    fcnetctl(stack.bus1.address, "create", "fcbr0", "--name", "web-node1")
    stack.fcnetctl(stack.node3, "create", "fcbr0", "--name", "web-node3")
    page = signed_in(browser, stack.url)
    expect(page.locator("#answered")).to_have_text("3 of 3 hosts answered")
    expect(row(page, "web-node1")).to_be_visible()
    expect(row(page, "web-node3")).to_be_visible()
    assert cells(page, "web-node3")[1] == "node3"
    page.click("#create-open")
    assert page.locator("#c-host option").all_inner_texts() == ["node1", "node2", "node3"]
    page.select_option("#c-host", "node2")
    expect(page.locator("#c-bridge option")).to_have_text(["fcbr0", "fcbr1", "fcbr2", "fcbr3"])
    page.fill("#c-name", "web-node2")
    page.click("#create-form button[type=submit]")
    expect(row(page, "web-node2")).to_be_visible()
    assert cells(page, "web-node2")[1:3] == ["node2", "fcbr0"]
    assert cells(page, "web-node2")[5] == "0"
    stack.fcnetctl(stack.node2, "attach", "vm-7", "fcbr0", "--vm-name", "web-7")
    expect(row(page, "web-node2").locator("td").nth(5)).to_have_text("1")
    page.select_option("#host-filter", "node2")
    expect(page.locator("#networks tbody tr")).to_have_count(1)
    expect(page.locator("#count")).to_have_text("(1)")
    page.select_option("#host-filter", "")
    expect(page.locator("#networks tbody tr")).to_have_count(3)
    not_reloaded(page)
    shot(page, "15-three-hosts-over-ssh")
    page.context.close()


def test_node2_losing_sshd_then_fcnetd_while_the_page_is_open(browser, stack, shot):
    node2_bus = stack.node2.bus.address  # root on node2 itself
    fcnetctl(node2_bus, "create", "fcbr1", "--name", "before-node2")
    page = signed_in(browser, stack.url)
    expect(row(page, "before-node2")).to_be_visible()

    stack.node2.stop_sshd()
    down = page.locator("#networks tbody tr.host-down[data-host='node2']")
    expect(down).to_be_visible(timeout=5000)
    expect(down).to_contain_text("node2 is unavailable: ssh ")
    expect(down).to_contain_text("last seen ")
    expect(row(page, "before-node2")).to_have_count(0)
    expect(page.locator("#answered")).to_have_text("2 of 3 hosts answered")
    expect(page.locator("#host-filter option[value='node2']")).to_have_text("node2 (unavailable)")
    shot(page, "16-node2-sshd-stopped")
    # node1 and node3 keep working, from the same page
    page.click("#create-open")
    expect(page.locator("#c-host option[value='node2']")).to_be_disabled()
    page.select_option("#c-host", "node3")
    expect(page.locator("#c-bridge option")).to_have_text(["fcbr0", "fcbr1", "fcbr2", "fcbr3"])
    page.select_option("#c-bridge", "fcbr1")
    page.fill("#c-name", "node3-meanwhile")
    page.click("#create-form button[type=submit]")
    expect(row(page, "node3-meanwhile")).to_be_visible()
    fcnetctl(stack.bus1.address, "create", "fcbr1", "--name", "node1-meanwhile")
    expect(row(page, "node1-meanwhile")).to_be_visible()
    # node2 changes meanwhile, then its sshd is back
    fcnetctl(node2_bus, "delete", "before-node2")
    fcnetctl(node2_bus, "create", "fcbr2", "--name", "after-sshd")
    stack.node2.start_sshd()
    expect(row(page, "after-sshd")).to_be_visible(timeout=20000)
    expect(row(page, "before-node2")).to_have_count(0)
    expect(down).to_have_count(0)
    expect(page.locator("#answered")).to_have_text("3 of 3 hosts answered")

    # now its fcnetd stops; an admin edits its registry meanwhile
    fcnetctl(node2_bus, "create", "fcbr3", "--name", "kept-node2")
    expect(row(page, "kept-node2")).to_be_visible()
    registry = folded_registry(stack.node2.daemon.state_dir)
    stack.node2.daemon.stop()
    expect(down).to_contain_text("fcnetd is not running on this host's bus", timeout=5000)
    expect(row(page, "after-sshd")).to_have_count(0)
    expect(row(page, "node3-meanwhile")).to_be_visible()
    registry["networks"] = [n for n in registry["networks"] if n["name"] != "after-sshd"]
    with open(f"{stack.node2.daemon.state_dir}/registry.json", "w") as f:
        json.dump(registry, f)
    stack.node2.daemon.start()
    expect(row(page, "kept-node2")).to_be_visible(timeout=20000)
    expect(row(page, "after-sshd")).to_have_count(0)
    expect(down).to_have_count(0)
    not_reloaded(page)
    shot(page, "17-node2-back")
    page.context.close()
