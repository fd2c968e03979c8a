"""The Networks pages in headless Chromium against the real web UI, the real
daemon and a real dbus-daemon (issue 5). Runs in file order: later tests
build on the state earlier ones leave, as a user's session would."""

import re
import subprocess
import time

import pytest
from playwright.sync_api import expect

from tests.webstack import PASSWORDS, Stack, seed_registry

pytestmark = pytest.mark.browser

SEED = seed_registry(
    [("fcbr0-vlan-10", "fcbr0", 10, "2026-01-01T10:00:00Z"), ("fcbr0-vlan-20", "fcbr0", 20, "2026-01-02T10:00:00Z"),
     ("lab-net", "fcbr1", 0, "2026-01-03T10:00:00Z"), ("fcbr0-vlan-30", "fcbr0", 30, "2026-01-04T10:00:00Z")],
    [("vm-a", "fcbr0-vlan-20"), ("vm-b", "fcbr0-vlan-20"), ("vm-c", "fcbr0-vlan-20"), ("vm-d", "lab-net")])


@pytest.fixture(scope="module")
def stack():
    s = Stack(registry=SEED)
    yield s
    s.close()


@pytest.fixture(scope="module")
def admin(browser, stack):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and "403" not in m.text and "401" not in m.text
            and "409" not in m.text and "400" not in m.text and page.errors.append(m.text))
    yield page
    ctx.close()


def sign_in(page, base, user, password):
    page.goto(base + "/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("button[type=submit]")


def names(page):
    return page.locator("#networks tbody tr td:first-child").all_inner_texts()


def busctl(stack, *args):
    return subprocess.run(["busctl", f"--address={stack.bus.address}", "call", "org.fcnetd.Network1",
                           "/org/fcnetd/Network1", "org.fcnetd.Network1.Manager", *args],
                          capture_output=True, text=True, check=True).stdout


def test_sign_in(admin, stack, shot):
    sign_in(admin, stack.url, "admin", "wrong-password")
    assert admin.locator("p.error").inner_text() == "Wrong user name or password."
    shot(admin, "01-sign-in-refused")
    sign_in(admin, stack.url, "admin", PASSWORDS["admin"])
    admin.wait_for_selector("#networks tbody tr")
    assert admin.url.endswith("/networks")
    assert admin.locator("#count").inner_text() == "(4)"
    shot(admin, "02-networks")


def test_networks_table_newest_first_with_guide_columns(admin):
    headers = admin.locator("#networks thead th:visible").all_inner_texts()
    assert [h.replace("↕", "").strip() for h in headers][:6] == \
        ["Network Name", "Bridge", "VLAN ID", "Mode", "Attached VMs", "Created"]
    assert names(admin) == ["fcbr0-vlan-30", "lab-net", "fcbr0-vlan-20", "fcbr0-vlan-10"]
    lab = admin.locator("tr[data-name='lab-net'] td").all_inner_texts()
    assert lab[1:5] == ["fcbr1", "", "bridge", "1"], "an untagged network shows an empty VLAN ID"
    csp = admin.request.get(admin.url).headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp


def test_create_valid_network(admin, stack, shot):
    admin.click("#create-open")
    assert admin.locator("#c-name").get_attribute("placeholder") == "fcbr0"
    admin.fill("#c-vlan", "")
    admin.fill("#c-description", "Shared services (DNS, NTP)")
    admin.select_option("#c-bridge", "fcbr0")
    shot(admin, "03-create-dialog")
    admin.click("#create-form button[type=submit]")
    admin.wait_for_selector("tr[data-name='fcbr0']")
    assert "Network fcbr0 created." in admin.locator("#toasts").inner_text()
    assert not admin.locator("#create-dialog").is_visible()
    assert names(admin)[0] == "fcbr0"
    shot(admin, "04-created")


@pytest.mark.parametrize("vlan,name,message", [
    ("4095", "", "VLAN ID: 4095 is out of range: 1-4094"),
    ("0", "", "VLAN ID: 0 is out of range: 1-4094"),
    ("", "bad name!", "Network name: use letters, digits"),
])
def test_create_refused_in_the_browser(admin, vlan, name, message):
    admin.click("#create-open")
    admin.fill("#c-name", name)
    admin.fill("#c-vlan", vlan)
    admin.click("#create-form button[type=submit]")
    assert message in admin.locator("#create-error").inner_text()
    assert admin.locator("#create-dialog").is_visible()
    admin.keyboard.press("Escape")


@pytest.mark.parametrize("bridge,vlan,name,message", [
    ("fcbr0", "", "", "network fcbr0 already uses bridge fcbr0 untagged on node1"),
    ("fcbr2", "", "fcbr0", "a network named 'fcbr0' already exists"),
    ("fcbr1", "40", "", "this kernel has no bridge VLAN filtering"),
])
def test_create_refused_by_the_daemon_shows_its_message(admin, shot, bridge, vlan, name, message):
    admin.click("#create-open")
    admin.select_option("#c-bridge", bridge)
    admin.fill("#c-name", name)
    admin.fill("#c-vlan", vlan)
    admin.click("#create-form button[type=submit]")
    admin.wait_for_selector("#create-error:visible")
    assert message in admin.locator("#create-error").inner_text()
    assert message in admin.locator("#toasts").inner_text()
    shot(admin, "05-create-refused-" + re.sub(r"\W+", "-", message)[:30])
    admin.keyboard.press("Escape")


def test_server_side_validation_is_authoritative(admin):
    """What the browser cannot send through the form, the server still refuses."""
    result = admin.evaluate("""async () => {
        const csrf = document.querySelector('meta[name=csrf-token]').content;
        const post = (body) => fetch('/api/networks', {method: 'POST', body: JSON.stringify(body),
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}}).then(async r => [r.status, await r.json()]);
        return [await post({bridge: 'eth0', vlan: ''}), await post({bridge: 'fcbr0', vlan: 4095}),
                await post({bridge: 'a/b', vlan: 5})];
    }""")
    (s1, b1), (s2, b2), (s3, b3) = result
    assert s1 == 400 and "not in fcnetd's allow-list" in b1["error"]
    assert s2 == 400 and b2["field"] == "vlan"
    assert s3 == 400 and b3["error"].startswith("bridge:")


def test_auto_created_network_appears_live(admin, stack, shot):
    assert "fcbr2" not in names(admin)
    started = time.monotonic()
    busctl(stack, "AttachVm", "ssqa{sv}", "vm-live", "fcbr2", "0", "1", "vm_name", "s", "web-dev")
    admin.wait_for_selector("tr[data-name='fcbr2']", timeout=1000)
    assert time.monotonic() - started < 1.5
    assert names(admin)[0] == "fcbr2"
    row = admin.locator("tr[data-name='fcbr2'] td").all_inner_texts()
    assert row[4] == "1"
    shot(admin, "06-auto-created-live")


def test_search_filter_and_sort(admin, shot):
    cells = admin.locator("#networks tbody tr td:first-child")
    admin.fill("#search", "lab")
    expect(cells).to_have_text(["lab-net"])
    admin.fill("#search", "20")
    expect(cells).to_have_text(["fcbr0-vlan-20"])
    admin.fill("#search", "")
    admin.select_option("#type", "vlan")
    expect(cells).to_have_text(["fcbr0-vlan-30", "fcbr0-vlan-20", "fcbr0-vlan-10"])
    shot(admin, "07-filter-vlan")
    admin.select_option("#type", "bridge")
    expect(cells).to_have_text(["fcbr2", "fcbr0", "lab-net"])
    admin.select_option("#type", "")
    admin.click("#sort-vms")
    expect(admin.locator("#networks tbody tr td").first).to_have_text("fcbr0-vlan-20")
    counts = [int(t) for t in admin.locator("#networks tbody tr td:nth-child(5)").all_inner_texts()]
    assert counts == sorted(counts, reverse=True) and counts[0] == 3
    assert admin.locator("#sort-vms").locator("xpath=..").get_attribute("aria-sort") == "descending"
    admin.click("#sort-vms")
    expect(admin.locator("#networks tbody tr td:nth-child(5)").first).to_have_text("0")
    counts = [int(t) for t in admin.locator("#networks tbody tr td:nth-child(5)").all_inner_texts()]
    assert counts == sorted(counts)
    shot(admin, "08-sorted-by-vms")
    admin.click("#sort-vms")  # back to newest first


def test_detail_page_lists_vms_and_follows_vm_start(admin, stack, shot):
    admin.click("tr[data-name='fcbr2'] a.name")
    admin.wait_for_selector("#vms tbody tr")
    facts = dict(zip(admin.locator("dl.facts dt").all_inner_texts(), admin.locator("dl.facts dd").all_inner_texts()))
    assert facts["Bridge"] == "fcbr2" and facts["VLAN ID"] == "None (untagged)"
    assert facts["Status"] == "active" and facts["Origin"].startswith("auto")
    assert facts["Mode"] == "bridge" and facts["Subnet"] == "—" and facts["Gateway"] == "—"
    vm = admin.locator("#vms tbody tr td").all_inner_texts()
    assert vm[:4] == ["web-dev", "vm-live", "eth0", "—"], "a VM on a bridge network has no address from fcnetd"
    assert vm[5] == "stopped" and vm[6] == "—"
    tap = busctl(stack, "CreateTap", "ssa{sv}", "vm-live", "eth0", "0").split('"')[1]
    expect(admin.locator("#vms tbody tr td:nth-child(7)")).to_have_text(tap, timeout=1500)
    assert admin.locator("#vms tbody tr td:nth-child(6)").inner_text() == "running"
    shot(admin, "09-detail-running")
    busctl(stack, "DeleteTap", "ss", "vm-live", "eth0")
    expect(admin.locator("#vms tbody tr td:nth-child(6)")).to_have_text("stopped", timeout=1500)
    admin.click("text=← Networks")
    admin.wait_for_selector("#networks tbody tr")


def test_delete_refused_while_vms_are_attached(admin, shot):
    admin.click("tr[data-name='fcbr0-vlan-20'] button.danger-outline")
    dialog = admin.locator("#delete-dialog")
    assert dialog.is_visible()
    assert admin.locator("#delete-title").inner_text() == "Cannot Delete Network"
    assert admin.locator("#delete-text").inner_text() == "Network has 3 attached VMs. Remove VMs first."
    assert admin.locator("#delete-confirm").is_disabled()
    shot(admin, "10-delete-refused")
    admin.keyboard.press("Escape")
    assert not dialog.is_visible()


def test_delete_refused_by_the_daemon_when_the_page_is_stale(admin, stack):
    """The page thinks lab-net is free, the daemon knows better: its word wins."""
    busctl(stack, "AttachVm", "ssqa{sv}", "vm-late", "fcbr1", "0", "0")
    status, body = admin.evaluate("""async () => {
        const csrf = document.querySelector('meta[name=csrf-token]').content;
        const id = document.querySelector("tr[data-name='lab-net'] button.danger-outline").dataset.id;
        const r = await fetch('/api/networks/node1/' + id, {method: 'DELETE', headers: {'X-CSRF-Token': csrf}});
        return [r.status, await r.json()];
    }""")
    assert status == 409 and body["error"] == "Network has 2 attached VMs. Remove VMs first."


def test_delete_succeeds_and_leaves_the_bridge(admin, stack, shot):
    admin.click("tr[data-name='fcbr0-vlan-30'] button.danger-outline")
    text = admin.locator("#delete-text").inner_text()
    assert text.startswith("Are you sure you want to delete fcbr0-vlan-30? This will remove the network from "
                           "the registry, not affect the Linux bridge")
    shot(admin, "11-delete-confirm")
    admin.click("#delete-confirm")
    admin.wait_for_selector("tr[data-name='fcbr0-vlan-30']", state="detached")
    assert "Network fcbr0-vlan-30 deleted." in admin.locator("#toasts").inner_text()
    assert stack.ns.link("fcbr0") is not None
    assert admin.errors == [], admin.errors


def test_network_deleted_elsewhere_vanishes_live(admin, stack):
    busctl(stack, "DeleteNetwork", "s", "fcbr0-vlan-10")
    admin.wait_for_selector("tr[data-name='fcbr0-vlan-10']", state="detached", timeout=1000)


def create_in_dialog(admin, bridge, mode, subnet):
    admin.click("#create-open")
    admin.select_option("#c-bridge", bridge)
    admin.select_option("#c-mode", mode)
    admin.fill("#c-subnet", subnet)
    admin.click("#create-form button[type=submit]")


@pytest.mark.parametrize("subnet,message,where", [
    ("10.0.0/24", "Subnet: write an IPv4 network such as 10.213.5.0/24, or leave it empty.", "browser"),
    ("10.0.0.5/24", "subnet: 10.0.0.5/24 has host bits set; did you mean 10.0.0.0/24?", "daemon"),
    ("10.0.0.0/30", "subnet: 10.0.0.0/30 has prefix /30; it must be an IPv4 network like 10.213.0.0/24, "
                    "prefix /16 to /29", "daemon"),
])
def test_create_nat_with_a_bad_subnet_shows_the_error(admin, shot, subnet, message, where):
    create_in_dialog(admin, "fcbr0", "nat", subnet)
    admin.wait_for_selector("#create-error:visible")
    assert admin.locator("#create-error").inner_text() == message
    assert admin.locator("#create-dialog").is_visible()
    if where == "daemon":  # the daemon's words, as the web UI got them
        assert message in admin.locator("#toasts").inner_text()
        shot(admin, "14-create-bad-subnet")
    admin.keyboard.press("Escape")


def test_create_bridge_network_with_a_subnet_shows_it(admin, stack, shot):
    busctl(stack, "DeleteNetwork", "s", "fcbr0")
    admin.wait_for_selector("tr[data-name='fcbr0']", state="detached")
    create_in_dialog(admin, "fcbr0", "bridge", "192.0.2.0/24")
    admin.wait_for_selector("tr[data-name='fcbr0']")
    assert admin.locator("tr[data-name='fcbr0'] td").all_inner_texts()[3] == "bridge"
    admin.click("tr[data-name='fcbr0'] a.name")
    admin.wait_for_selector("#d-subnet:has-text('192.0.2.0/24')")
    facts = dict(zip(admin.locator("dl.facts dt").all_inner_texts(), admin.locator("dl.facts dd").all_inner_texts()))
    assert (facts["Mode"], facts["Subnet"], facts["Gateway"]) == ("bridge", "192.0.2.0/24", "—")
    admin.click("text=← Networks")
    admin.wait_for_selector("#networks tbody tr")
    busctl(stack, "DeleteNetwork", "s", "fcbr0")
    admin.wait_for_selector("tr[data-name='fcbr0']", state="detached")


def test_create_nat_network_shows_mode_subnet_and_gateway(admin, shot):
    create_in_dialog(admin, "fcbr0", "nat", "10.213.77.0/24")
    try:
        admin.wait_for_selector("tr[data-name='fcbr0']", timeout=5000)
    finally:
        admin.keyboard.press("Escape")
    assert admin.locator("tr[data-name='fcbr0'] td").all_inner_texts()[3] == "nat"
    shot(admin, "15-created-nat")
    admin.click("tr[data-name='fcbr0'] a.name")
    admin.wait_for_selector("#d-subnet:has-text('10.213.77.0/24')")
    facts = dict(zip(admin.locator("dl.facts dt").all_inner_texts(), admin.locator("dl.facts dd").all_inner_texts()))
    assert (facts["Mode"], facts["Gateway"]) == ("nat (DHCP on)", "10.213.77.1")
    admin.click("text=← Networks")
    admin.wait_for_selector("#networks tbody tr")


def test_viewer_cannot_change_anything(browser, stack, shot):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    sign_in(page, stack.url, "viewer", PASSWORDS["viewer"])
    page.wait_for_selector("#networks tbody tr")
    assert page.locator("#create-open").count() == 0
    assert page.locator("button.danger-outline").count() == 0
    assert page.locator("a.button", has_text="View").count() > 0
    shot(page, "12-viewer")
    status = page.evaluate("""async () => {
        const csrf = document.querySelector('meta[name=csrf-token]').content;
        const r = await fetch('/api/networks', {method: 'POST', body: JSON.stringify({bridge: 'fcbr0', vlan: ''}),
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}});
        return r.status;
    }""")
    assert status == 403
    ctx.close()


def test_requests_without_csrf_token_are_refused(admin):
    status = admin.evaluate("""async () => (await fetch('/api/networks', {method: 'POST',
        body: JSON.stringify({bridge: 'fcbr1', vlan: ''}), headers: {'Content-Type': 'application/json'}})).status""")
    assert status == 403


def test_session_cookie_flags(admin):
    cookie = next(c for c in admin.context.cookies() if c["name"] == "fcnetd_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def test_sign_out(admin, stack, shot):
    admin.click("#sign-out")
    admin.wait_for_url("**/login")
    shot(admin, "13-signed-out")
    admin.goto(stack.url + "/networks")
    assert admin.url.endswith("/login")
