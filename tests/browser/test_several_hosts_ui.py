"""With several hosts configured, the Networks page gains a Host column and
the Create dialog a host select that lists each host's own bridges."""

import os
import subprocess

import pytest
from playwright.sync_api import expect

from fcnetd.testbus import PrivateBus
from tests.system.harness import REPO, Daemon, Netns
from tests.webstack import NOBODY, PASSWORDS, Stack, free_port, webui_command

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    stack = Stack()
    work = tmp_path_factory.mktemp("node2")
    ns2, bus2 = Netns(), PrivateBus().start()
    cfg2 = work / "node2.toml"
    cfg2.write_text('[daemon]\nhost = "node2"\n[bridges.br7]\ncreate = true\n')
    d2 = Daemon(ns2, bus2, str(work / "state"), str(cfg2)).start()
    webcfg = os.path.join(stack.dir, "webui.toml")
    with open(webcfg, "w") as f:
        f.write(f'[hosts.node1]\nbus = "{stack.bus.address}"\n[hosts.node2]\nbus = "{bus2.address}"\n')
    port = free_port()
    import grp
    proc = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={grp.getgrnam('fcnet').gr_gid}",
                             "--clear-groups", *webui_command(), "--config", webcfg,
                             "--listen", f"127.0.0.1:{port}", "--users", stack.users],
                            env={**os.environ, "PYTHONPATH": REPO}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    import time
    import urllib.request
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    d2.stop()
    bus2.stop()
    ns2.delete()
    stack.close()


def test_host_column_and_host_select(browser, two_hosts, shot):
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(two_hosts + "/login")
    page.fill("#username", "admin")
    page.fill("#password", PASSWORDS["admin"])
    page.click("button[type=submit]")
    page.wait_for_selector("#networks")
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
