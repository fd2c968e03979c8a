"""The web UI's issue-12 API (Diagnose, DHCP probe, move, traffic, the unused
filter and deleting several networks, drift) against a fake host: what each
route asks fcnetd, what it answers, who may call it, and bad input refused
with a 400 naming the field before anything reaches fcnetd."""

import asyncio
import json
import os
import tempfile
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fcnetd.bus import DBusError, Variant
from webui import app as appmod
from webui.app import COOKIE, App
from webui.config import WebConfig
from webui import hosts
from webui.hosts import Host

TAP_DOWN = {"Check": "tap.up", "Result": "fail", "Detail": "TAP fctap1 is down",
            "Hint": "ip link set dev fctap1 up"}
SAMPLES = [{"Time": 1000.0 + 10 * i, "ReceiveBytes": 100.0 * i, "TransmitBytes": 50.0, "ReceivePackets": 2.0,
            "TransmitPackets": 1.0} for i in range(3)]


def network(net_id, name, vms=0, bridge="fcbr0"):
    return {"id": net_id, "name": name, "bridge": bridge, "vlan": 0, "type": "bridge", "host": "node1",
            "created": f"2026-01-0{len(net_id)}T00:00:00Z", "origin": "manual", "description": "", "mode": "bridge",
            "subnet": "", "gateway": "", "dhcp": False, "vm_count": vms, "status": "active", "path": f"/n/{net_id}"}


class FakeHost(Host):
    """A Host whose fcnetd is a table of answers; records each call."""

    def __init__(self):
        super().__init__("node1", "unused", lambda event: None)
        self.available, self.error, self.conn = True, "", object()
        self.networks = {"a": network("a", "busy", vms=2), "bb": network("bb", "idle-1"),
                         "ccc": network("ccc", "idle-2")}
        self.by_path = {n["path"]: i for i, n in self.networks.items()}
        self.calls = []
        self.answers = {}

    async def run(self):
        self.tried.set()
        await asyncio.Event().wait()

    async def m(self, member, signature="", *body):
        self.calls.append((member, signature, body))
        answer = self.answers.get(member)
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            answer = answer(*body)
            return await answer if asyncio.iscoroutine(answer) else answer
        return answer


def run(test):
    """test(client, host, sign_in) inside a live web UI on a fake host."""
    async def main():
        users = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump({"users": {r: {"hash": f"hash-of-{r}", "role": r} for r in ("admin", "viewer")}}, users)
        users.close()
        web = App(WebConfig(users=users.name))
        host = FakeHost()
        web.hosts = [host]
        client = TestClient(TestServer(web.make()))
        await client.start_server()

        def sign_in(role="admin"):
            sid, session = web.sessions.create(role, role, f"hash-of-{role}")  # as the users file has them
            client.session.cookie_jar.update_cookies({COOKIE: sid})
            return {"X-CSRF-Token": session.csrf}
        try:
            await test(client, host, sign_in)
        finally:
            await client.close()
            os.unlink(users.name)
    asyncio.run(main())


async def answer(resp):
    return resp.status, await resp.json()


def test_diagnose_is_open_to_viewers_and_shows_each_check_with_its_hint():
    async def t(client, host, sign_in):
        sign_in("viewer")
        host.answers["Diagnose"] = ([TAP_DOWN],)
        status, body = await answer(await client.get("/api/networks/node1/a/diagnose"))
        assert status == 200 and body["checks"] == [
            {"check": "tap.up", "result": "fail", "detail": "TAP fctap1 is down", "hint": "ip link set dev fctap1 up"}]
        host.answers["DiagnoseVm"] = ([TAP_DOWN],)
        status, body = await answer(await client.get("/api/vms/node1/vm-1/diagnose?nic=eth1"))
        assert status == 200 and body["checks"][0]["check"] == "tap.up"
        assert host.calls == [("Diagnose", "s", ("a",)), ("DiagnoseVm", "ss", ("vm-1", "eth1"))]
    run(t)


def test_diagnose_of_an_unknown_vm_is_a_404_with_fcnetds_words():
    async def t(client, host, sign_in):
        sign_in("viewer")
        host.answers["DiagnoseVm"] = DBusError("org.fcnetd.Network1.Error.NoSuchVm", "no VM vm-9 is attached")
        status, body = await answer(await client.get("/api/vms/node1/vm-9/diagnose"))
        assert (status, body["code"], body["error"]) == (404, "NoSuchVm", "no VM vm-9 is attached")
    run(t)


def test_the_dhcp_probe_is_for_admins_and_passes_its_timeout():
    async def t(client, host, sign_in):
        headers = sign_in("viewer")
        status, body = await answer(await client.post("/api/networks/node1/a/probe", json={}, headers=headers))
        assert status == 403 and host.calls == []
        headers = sign_in("admin")
        probe = {**TAP_DOWN, "Check": "dhcp.probe", "Result": "ok", "Servers": [
            {"Mac": "02:00:00:00:00:01", "Server": "192.0.2.1", "Address": "192.0.2.50", "Subnet": "192.0.2.0/24",
             "Router": ""}]}
        host.answers["ProbeDhcp"] = ([probe],)
        status, body = await answer(await client.post("/api/networks/node1/a/probe", json={"timeout_ms": 3000},
                                                      headers=headers))
        assert status == 200 and body["checks"][0]["servers"][0]["address"] == "192.0.2.50"
        (member, sig, (net, opts)), = host.calls
        assert (member, sig, net, opts["timeout_ms"].value) == ("ProbeDhcp", "sa{sv}", "a", 3000)
    run(t)


@pytest.mark.parametrize("body,field,says", [
    ({"timeout_ms": 60000}, "timeout_ms", "from 100 to 8000"),
    ({"timeout_ms": "soon"}, "timeout_ms", "must be a whole number"),
    ({"timeout_ms": True}, "timeout_ms", "a boolean must be"),
    ([1], "", "must be a JSON object, not an array"),
    ({"isolation": "yes"}, "isolation", "isolation: must be true or false, not text"),
    ({"isolation": 1}, "isolation", "isolation: must be true or false, not a number"),
    ({"dhcp": [True], "isolation": True}, "dhcp", "dhcp: must be true or false, not an array"),
    ({"dhcp": False}, "dhcp", "asks for no probe"),
    ({"isolation": False, "dhcp": False}, "dhcp", "asks for no probe"),
    ({"isolation": True, "timeout_ms": 9000}, "timeout_ms", "from 100 to 8000"),
])
def test_bad_probe_input_is_a_400_naming_the_field(body, field, says):
    async def t(client, host, sign_in):
        headers = sign_in()
        status, answered = await answer(await client.post("/api/networks/node1/a/probe", json=body,
                                                          headers=headers))
        assert status == 400 and answered["field"] == field and says in answered["error"]
        assert host.calls == []
    run(t)


BRIDGE_UP = {"Check": "bridge.up", "Result": "ok", "Detail": "bridge fcbr0 is up", "Hint": ""}
LEAK = {"Check": "vlan.isolation", "Result": "fail",
        "Detail": "sent from probe port fcprobe0042b (MAC 02:fc:00:00:00:01) in bridge fcbr0 VLAN 10: a broadcast and "
                  "a unicast to 02:fc:00:00:00:02 (EtherType 0x88b5, nonce 00112233): VLAN 20 saw the broadcast (a "
                  "port in VLAN 10 saw the broadcast)",
        "Hint": "Something joins VLAN 10 to VLAN 20: a port of bridge fcbr0 that is a member of both (`bridge vlan "
                "show`), a device or VM that bridges two ports, or beyond the uplink a switch that does."}
NO_SERVER = {"Check": "dhcp.probe", "Result": "warn", "Detail": "no DHCP server answered", "Hint": "start one",
             "Servers": []}


def test_an_isolation_leak_into_vlan_20_is_shown_with_its_hint():
    async def t(client, host, sign_in):
        headers = sign_in("admin")
        host.answers["ProbeIsolation"] = ([BRIDGE_UP, LEAK],)
        status, body = await answer(await client.post("/api/networks/node1/a/probe", json={"isolation": True},
                                                      headers=headers))
        assert status == 200 and [c["check"] for c in body["checks"]] == ["bridge.up", "vlan.isolation"]
        leak = body["checks"][1]
        assert leak["result"] == "fail" and "VLAN 20 saw the broadcast" in leak["detail"]
        assert leak["hint"].startswith("Something joins VLAN 10 to VLAN 20")
        (member, sig, (net, opts)), = host.calls
        assert (member, sig, net, opts["timeout_ms"].value) == ("ProbeIsolation", "sa{sv}", "a", 1000), \
            "fcnetd's own default wait, 1 s, unless asked"
        host.calls.clear()
        await client.post("/api/networks/node1/a/probe", json={"isolation": True, "timeout_ms": 2500}, headers=headers)
        (_, _, (_, opts)), = host.calls
        assert opts["timeout_ms"].value == 2500
    run(t)


def test_viewers_cannot_run_the_isolation_probe():
    async def t(client, host, sign_in):
        headers = sign_in("viewer")
        for body in ({"isolation": True}, {"isolation": True, "dhcp": True}):
            status, answered = await answer(await client.post("/api/networks/node1/a/probe", json=body,
                                                              headers=headers))
            assert status == 403 and "viewers" in answered["error"]
        assert host.calls == []
    run(t)


def test_both_probes_run_at_once_and_each_check_is_listed_once():
    async def t(client, host, sign_in):
        headers = sign_in("admin")
        both_running = asyncio.Event()
        started = []

        async def probe(rows, net, opts):
            started.append(opts["timeout_ms"].value)
            if len(started) == 2:
                both_running.set()
            await asyncio.wait_for(both_running.wait(), 5)  # one waits for the other: they overlap
            return (rows,)
        host.answers["ProbeDhcp"] = lambda net, opts: probe([BRIDGE_UP, NO_SERVER], net, opts)
        host.answers["ProbeIsolation"] = lambda net, opts: probe([BRIDGE_UP, LEAK], net, opts)
        status, body = await answer(await client.post("/api/networks/node1/a/probe",
                                                      json={"dhcp": True, "isolation": True}, headers=headers))
        assert status == 200
        assert [c["check"] for c in body["checks"]] == ["bridge.up", "dhcp.probe", "vlan.isolation"]
        assert body["checks"][1]["servers"] == [] and body["checks"][2]["result"] == "fail"
        assert sorted(started) == [1000, 2000], "each probe with fcnetd's own default wait"
    run(t)


def test_a_probe_refused_by_fcnetd_is_the_answer_even_when_the_other_ran():
    async def t(client, host, sign_in):
        headers = sign_in("admin")
        host.answers["ProbeDhcp"] = ([BRIDGE_UP, NO_SERVER],)
        host.answers["ProbeIsolation"] = DBusError("org.freedesktop.DBus.Error.InvalidArgs",
                                                   "timeout_ms: 50 is out of range: 100 to 30000 (milliseconds)")
        status, body = await answer(await client.post("/api/networks/node1/a/probe",
                                                      json={"dhcp": True, "isolation": True}, headers=headers))
        assert (status, body["code"], body["field"]) == (400, "InvalidArgs", "timeout_ms")
    run(t)


def test_an_fcnetd_without_the_isolation_probe_says_so():
    async def t(client, host, sign_in):
        headers = sign_in("admin")
        host.answers["ProbeIsolation"] = DBusError("org.freedesktop.DBus.Error.UnknownMethod", "no ProbeIsolation")
        status, body = await answer(await client.post("/api/networks/node1/a/probe", json={"isolation": True},
                                                      headers=headers))
        assert status == 501 and body["error"] == ("fcnetd on host node1 has no isolation probe (it is older than "
                                                   "this web UI)")
    run(t)


def test_move_calls_movevm_with_the_actor_and_names_the_network():
    async def t(client, host, sign_in):
        headers = sign_in()
        host.answers["MoveVm"] = ("/n/bb",)
        status, body = await answer(await client.post("/api/vms/node1/vm-1/move", headers=headers,
                                                      json={"bridge": "fcbr0", "vlan": "20"}))
        assert (status, body["name"]) == (200, "idle-1")
        (member, sig, (vm, nic, bridge, vlan, opts)), = host.calls
        assert (member, sig, vm, nic, bridge, vlan) == ("MoveVm", "sssqa{sv}", "vm-1", "eth0", "fcbr0", 20)
        assert opts["actor"] == Variant("s", "admin")
    run(t)


@pytest.mark.parametrize("body,field,says", [
    ({"bridge": "fcbr0", "vlan": "x"}, "vlan", "vlan: 'x' is out of range"),
    ({"bridge": "fcbr0", "vlan": 70000}, "vlan", "out of range"),
    ({"bridge": 5}, "bridge", "bridge: must be text, not a number"),
    ({"bridge": "fcbr0", "nic": ["eth0"]}, "nic", "nic: must be text, not an array"),
])
def test_bad_move_input_is_a_400_naming_the_field(body, field, says):
    async def t(client, host, sign_in):
        headers = sign_in()
        status, answered = await answer(await client.post("/api/vms/node1/vm-1/move", json=body, headers=headers))
        assert status == 400 and answered["field"] == field and says in answered["error"], answered
        assert host.calls == []
    run(t)


def test_move_refused_by_fcnetd_names_its_field_and_viewers_cannot_move():
    async def t(client, host, sign_in):
        headers = sign_in("viewer")
        status, _ = await answer(await client.post("/api/vms/node1/vm-1/move", json={"bridge": "x"},
                                                   headers=headers))
        assert status == 403 and host.calls == []
        headers = sign_in("admin")
        host.answers["MoveVm"] = DBusError("org.freedesktop.DBus.Error.InvalidArgs", "nic: 'eth 0' is not a name")
        status, body = await answer(await client.post("/api/vms/node1/vm-1/move", headers=headers,
                                                      json={"bridge": "fcbr0", "nic": "eth 0"}))
        assert (status, body["field"]) == (400, "nic")
    run(t)


def test_traffic_comes_as_columns_oldest_first_for_a_network_or_a_vm():
    async def t(client, host, sign_in):
        sign_in("viewer")
        host.answers["GetTraffic"] = (SAMPLES,)
        status, body = await answer(await client.get("/api/networks/node1/a/traffic?seconds=600"))
        assert status == 200 and body["time"] == [1000.0, 1010.0, 1020.0]
        assert body["receive_bytes"] == [0.0, 100.0, 200.0] and body["transmit_packets"] == [1.0] * 3
        status, body = await answer(await client.get("/api/networks/node1/a/traffic?vm=vm-1"))
        (_, _, (_, opts)), (_, _, (_, vm_opts)) = host.calls
        assert {k: v.value for k, v in opts.items()} == {"seconds": 600}
        assert {k: v.value for k, v in vm_opts.items()} == {"seconds": 3600, "vm": "vm-1", "nic": "eth0"}
    run(t)


@pytest.mark.parametrize("query,field", [("seconds=7200", "seconds"), ("seconds=-1", "seconds"),
                                         ("seconds=1e3", "seconds")])
def test_bad_traffic_input_is_a_400_naming_the_field(query, field):
    async def t(client, host, sign_in):
        sign_in("viewer")
        status, body = await answer(await client.get(f"/api/networks/node1/a/traffic?{query}"))
        assert status == 400 and body["field"] == field and "10 to 3600" in body["error"]
        assert host.calls == []
    run(t)


def test_traffic_from_an_fcnetd_without_history_says_so():
    async def t(client, host, sign_in):
        sign_in("viewer")
        host.answers["GetTraffic"] = DBusError("org.freedesktop.DBus.Error.UnknownMethod", "no GetTraffic")
        status, body = await answer(await client.get("/api/networks/node1/a/traffic"))
        assert status == 501 and "keeps no traffic history" in body["error"]
    run(t)


def test_the_unused_filter_lists_networks_without_vms():
    async def t(client, host, sign_in):
        sign_in("viewer")
        status, body = await answer(await client.get("/api/networks?unused=1"))
        assert status == 200 and sorted(n["name"] for n in body["items"]) == ["idle-1", "idle-2"]
        status, body = await answer(await client.get("/api/networks?unused=maybe"))
        assert status == 400 and body["field"] == "unused"
    run(t)


def test_deleting_several_networks_reports_each_result():
    async def t(client, host, sign_in):
        headers = sign_in()

        def delete(net_id, options):
            assert options["actor"].value == "admin", "the signed-in user is the audit entry's actor"
            if net_id == "a":
                raise DBusError("org.fcnetd.Network1.Error.NetworkInUse",
                                "Network has 2 attached VMs. Remove VMs first.")
            return ()
        host.answers["DeleteNetworkWithOptions"] = delete
        status, body = await answer(await client.post("/api/networks/delete", headers=headers, json={"networks": [
            {"host": "node1", "id": "bb"}, {"host": "node1", "id": "a"}, {"id": "ccc"}]}))
        assert status == 200 and body["deleted"] == 2
        assert [(r["name"], r["ok"], r.get("code")) for r in body["results"]] == [
            ("idle-1", True, None), ("busy", False, "NetworkInUse"), ("idle-2", True, None)]
        assert "Remove VMs first" in body["results"][1]["error"]
    run(t)


def test_a_host_whose_fcnetd_predates_delete_with_options_is_asked_without_them():
    async def t(client, host, sign_in):
        headers = sign_in()
        host.answers["DeleteNetworkWithOptions"] = DBusError("org.freedesktop.DBus.Error.UnknownMethod", "no such")
        host.answers["DeleteNetwork"] = ()
        status, body = await answer(await client.delete("/api/networks/node1/bb", headers=headers))
        assert status == 200 and body == {"deleted": "bb"}
        assert [c[0] for c in host.calls[-2:]] == ["DeleteNetworkWithOptions", "DeleteNetwork"]
    run(t)


@pytest.mark.parametrize("body,field,says", [
    ({}, "networks", "must be a list of {host, id} objects, not null"),
    ({"networks": []}, "networks", "not an empty array"),
    ({"networks": [{"host": "node1", "id": "bb"}, 5]}, "networks[1]", "must be an object with host and id"),
    ({"networks": [{"host": "node9", "id": "bb"}]}, "networks[0].host", "no host 'node9'"),
    ({"networks": [{"id": 7}]}, "networks[0].id", "networks[0].id: must be text, not a number"),
    ({"networks": [{"id": ""}]}, "networks[0].id", "must name a network"),
    ({"networks": [{"id": "x"}] * 501}, "networks", "at most 500 at once, not 501"),
])
def test_bad_delete_many_input_is_a_400_naming_the_field_and_deletes_nothing(body, field, says):
    async def t(client, host, sign_in):
        headers = sign_in()
        status, answered = await answer(await client.post("/api/networks/delete", json=body, headers=headers))
        assert status == 400 and answered["field"] == field and says in answered["error"], answered
        assert host.calls == []
    run(t)


def test_viewers_cannot_delete_several():
    async def t(client, host, sign_in):
        headers = sign_in("viewer")
        status, _ = await answer(await client.post("/api/networks/delete", headers=headers,
                                                   json={"networks": [{"id": "bb"}]}))
        assert status == 403 and host.calls == []
    run(t)


def test_a_drift_shows_on_the_networks_it_names_in_the_table_and_the_detail():
    async def t(client, host, sign_in):
        sign_in("viewer")
        host.drifts["bb"] = (time.monotonic(), {"what": "tap-bridge", "detail": "TAP fctap1 put back on fcbr0",
                                                "time": "2026-01-01T00:00:00Z"})
        status, body = await answer(await client.get("/api/networks"))
        drifts = {n["name"]: n.get("drift") for n in body["items"]}
        assert drifts["idle-1"]["detail"] == "TAP fctap1 put back on fcbr0" and drifts["busy"] is None
        host.answers["GetNetwork"] = ({"Id": "bb", "Name": "idle-1", "ReceiveRate": 5.0, "TransmitRate": 7.0},)
        status, body = await answer(await client.get("/api/networks/node1/bb"))
        assert body["drift"]["what"] == "tap-bridge" and (body["receive_rate"], body["transmit_rate"]) == (5.0, 7.0)
    run(t)


def test_probe_timeout_stays_inside_a_host_call():
    assert appmod.PROBE_MS_MAX / 1000 < hosts.CALL_SECONDS
