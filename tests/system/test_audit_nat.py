"""Audit trail (issue 11, found in review) with the real daemon: every change fcnetd
makes on the host is one entry, drift repairs of nat networks included."""

import json
import os
import signal

from .guestnet import dnsmasq_pids, internet  # noqa: F401 (fixture)
from .harness import Daemon, v, wait_for
from .test_audit import journal  # noqa: F401 (fixture)


def test_a_nat_gateway_put_back_by_a_reconcile_is_in_the_audit_trail(ns, internet, bus, tmp_path,
                                                                                   config, journal, client):
    """The reconcile's NAT step (NatPlane.converge) adds a missing gateway
    address to the host, rebuilds the nft table, restarts dnsmasq and turns
    forwarding on again, and counts each as drift; each is recorded as
    drift-repaired (it was not: only bridge and TAP repairs were)."""
    d = Daemon(ns, bus, str(tmp_path / "state"), config).start()
    try:
        client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {"mode": v("s", "nat")})
        gateway = client.call("GetNetwork", "s", "fcbr0")[0]["Gateway"]

        def addresses():
            out = ns.ip("-j", "addr", "show").stdout
            return {a["local"]: link["ifname"] for link in json.loads(out) for a in link.get("addr_info", [])}
        port = addresses()[gateway]
        ns.ip("addr", "del", f"{gateway}/24", "dev", port)  # behind fcnetd's back
        journal.read()
        journal.entries.clear()
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: gateway in addresses(), what="the reload's reconcile to put the gateway back")
        # a second reload: its entry comes after everything the first one's reconcile recorded
        d.proc.send_signal(signal.SIGHUP)
        entries = wait_for(lambda: [e for e in journal.read() if e["FCNETD_ACTION"] == "config-reloaded"][1:]
                           and list(journal.entries), what="the second reload's entry")
        assert f"nat network fcbr0: gateway {gateway}/24 was missing on {port}; added" in d.output()
        actions = [(e["FCNETD_ACTION"], e.get("FCNETD_NETWORK")) for e in entries]
        assert ("drift-repaired", "fcbr0") in actions, f"the gateway put back on the host is not recorded: {actions}"
    finally:
        d.stop()
        for pid in dnsmasq_pids(d.state_dir):
            os.kill(pid, signal.SIGKILL)
