"""The network detail page while fcnetd stops and starts again: the banner
saying fcnetd is not running goes once it is back, without a reload (it
used to stay, above data that had refreshed)."""

import subprocess

import pytest
from playwright.sync_api import expect

from tests.webstack import PASSWORDS, Stack, seed_registry

pytestmark = pytest.mark.browser

SEED = seed_registry([("lab-net", "fcbr1", 0, "2026-01-03T10:00:00Z")], [("vm-d", "lab-net")])


@pytest.fixture(scope="module")
def stack():
    s = Stack(registry=SEED)
    yield s
    s.close()


@pytest.fixture
def detail(browser, stack):
    """The detail page of lab-net, signed in as admin."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    page.goto(stack.url + "/login")
    page.fill("#username", "admin")
    page.fill("#password", PASSWORDS["admin"])
    page.click("button[type=submit]")
    page.click("tr[data-name='lab-net'] a.name")
    expect(page.locator("#d-name")).to_have_text("lab-net")
    yield page
    ctx.close()


def busctl(stack, *args):
    subprocess.run(["busctl", f"--address={stack.bus.address}", "call", "org.fcnetd.Network1",
                    "/org/fcnetd/Network1", "org.fcnetd.Network1.Manager", *args],
                   capture_output=True, text=True, check=True)


def test_banner_goes_when_fcnetd_returns(detail, stack, shot):
    banner = detail.locator("#d-gone")
    expect(detail.locator("#vms tbody tr")).to_have_count(1)
    expect(banner).to_be_hidden()
    stack.daemon.stop()
    expect(banner).to_be_visible(timeout=10000)
    expect(banner).to_contain_text("fcnetd is not running")
    shot(detail, "20-detail-fcnetd-stopped")
    stack.daemon.start()
    busctl(stack, "AttachVm", "ssqa{sv}", "vm-e", "fcbr1", "0", "0")  # changed while the page looked away
    expect(detail.locator("#vms tbody tr")).to_have_count(2, timeout=10000)
    expect(banner).to_be_hidden(timeout=10000)
    shot(detail, "21-detail-fcnetd-back")


def test_banner_says_when_the_network_is_deleted(detail, stack):
    busctl(stack, "DetachVm", "ss", "vm-d", "eth0")
    busctl(stack, "DetachVm", "ss", "vm-e", "eth0")
    expect(detail.locator("#no-vms")).to_be_visible(timeout=5000)
    busctl(stack, "DeleteNetwork", "s", "lab-net")
    expect(detail.locator("#d-gone")).to_have_text("This network was deleted.", timeout=5000)
