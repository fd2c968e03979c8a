"""Issue 9, item 13: one rule decides what is valid for the config, the API
and the registry loader, so ordinary inputs cannot produce a registry the
daemon refuses, and a refused file stops start-up with a clean message,
never a Python traceback."""

import json
import os
import uuid

import pytest

from fcnetd.registry import read_registry

from .harness import Client, Daemon, folded_registry, wait_for


def refused_start(ns, bus, tmp_path, config, content: str) -> str:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / "registry.json").write_text(content)
    d = Daemon(ns, bus, str(state), config)
    with pytest.raises(AssertionError, match="exited with 1"):
        d.start(timeout=20)
    assert (state / "registry.json").read_text() == content
    return d.output()


def test_a_bridge_outside_the_name_rule_is_refused_by_the_config(ns, bus, tmp_path):
    """`br+lan` used to be allowed, auto-create a network named `br+lan` on
    the first AttachVm, and then the daemon refused its own registry."""
    config = tmp_path / "fcnetd.toml"
    config.write_text('[daemon]\nhost = "node1"\n[bridges."br+lan"]\ncreate = true\n')
    d = Daemon(ns, bus, str(tmp_path / "state"), str(config))
    with pytest.raises(AssertionError, match="exited with 1"):
        d.start(timeout=20)
    out = d.output()
    assert "[bridges.'br+lan']" in out and "must not contain '+'" in out and "A-Z a-z 0-9 . _ -" in out, out
    assert "Traceback" not in out, out
    assert ns.link("br+lan") is None


def test_every_name_a_valid_bridge_auto_creates_survives_a_restart(ns, bus, tmp_path):
    config = tmp_path / "fcnetd.toml"
    config.write_text('[daemon]\nhost = "node1"\n[bridges."br.lan_1-x"]\ncreate = true\n')
    d = Daemon(ns, bus, str(tmp_path / "state"), str(config)).start()
    try:
        Client(bus.address).call("AttachVm", "ssqa{sv}", "vm-1", "br.lan_1-x", 0, {})
        assert d.stop() == 0
        again = Daemon(ns, bus, str(tmp_path / "state"), str(config)).start()
        assert Client(bus.address).call("GetNetwork", "s", "br.lan_1-x")[0]["VmCount"] == 1
        again.stop()
    finally:
        d.stop()


def test_a_wrongly_typed_field_in_a_hand_edit_is_set_aside_and_nothing_is_lost(daemon, client):
    """`"created": 0` used to be accepted by the parser, then emptied the
    daemon's memory; the next AttachVm wrote a registry without the rest."""
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {})
    client.call("AttachVm", "ssqa{sv}", "vm-2", "fcbr1", 0, {})
    path = daemon.state_dir + "/registry.json"
    data = folded_registry(daemon.state_dir)
    data["networks"][0]["created"] = 0
    with open(path + ".edit", "w") as f:
        json.dump(data, f)
    os.rename(path + ".edit", path)
    wait_for(lambda: any(n.startswith("registry.json.bad-") for n in os.listdir(daemon.state_dir)),
             what="bad hand edit kept aside")
    client.call("AttachVm", "ssqa{sv}", "vm-3", "fcbr0", 0, {})

    stored = read_registry(daemon.state_dir)[0]
    assert sorted(vm for vm, _ in stored.attachments) == ["vm-1", "vm-2", "vm-3"]
    assert "created: 0 must be an RFC 3339 UTC timestamp" in daemon.output()


@pytest.mark.parametrize("schema", [
    pytest.param("true"),
    pytest.param("0"),
    pytest.param("-5"),
])
def test_a_schema_that_is_not_a_version_refuses_start(ns, bus, tmp_path, config, schema):
    out = refused_start(ns, bus, tmp_path, config, '{"schema": %s, "networks": [], "attachments": []}' % schema)
    assert "schema: " in out and "integer >= 1" in out and "Traceback" not in out, out


@pytest.mark.parametrize("content,rule", [
    pytest.param("[" * 100_000, "nested too deeply"),
    pytest.param('{"schema": 1, "networks": {}}', "must be a list of JSON objects"),
    ('{"schema": 1, "networks": [5]}', "must be a JSON object"),
    ('{"schema": 1, "networks": [], "attachments": [{"vm_id": "vm-1", "nic": "eth0", "network_id": "%s", '
     '"attached": "2026-01-01T00:00:00Z", "colour": "red"}]}' % uuid.uuid4(), "unknown field 'colour'"),
])
def test_a_malformed_registry_refuses_start_with_a_clean_message(ns, bus, tmp_path, config, content, rule):
    out = refused_start(ns, bus, tmp_path, config, content)
    assert rule in out and "Traceback" not in out, out[-2000:]
