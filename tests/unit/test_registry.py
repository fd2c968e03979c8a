import asyncio
import json
import os
import uuid

import pytest

from fcnetd.model import Attachment, Network
from fcnetd.registry import Lock, Registry, RegistryError, parse, serialize


def net(bridge="fcbr0", vlan=0, name=""):
    return Network.new(name, bridge, vlan, "node1", "manual")


def test_round_trip(tmp_path):
    reg = Registry(str(tmp_path))
    n = net()
    reg.add_network(n)
    reg.add_attachment(Attachment("vm-1", "eth0", n.id, "web"))
    reg.save_now()
    assert os.stat(reg.path).st_mode & 0o777 == 0o600
    again = Registry(str(tmp_path))
    again.load()
    assert again.networks == reg.networks and again.attachments == reg.attachments
    assert again.by_name["fcbr0"] == n and list(again.by_network[n.id]) == [("vm-1", "eth0")]


def test_missing_file_is_an_empty_registry(tmp_path):
    reg = Registry(str(tmp_path))
    reg.load()
    assert reg.networks == {}


@pytest.mark.parametrize("text,why", [
    ("", "not valid JSON"), ("[]", "no schema"), ('{"schema": 2}', "newer"),
    ('{"schema": 1, "networks": [{"id": 1}]}', "invalid record"),
])
def test_bad_files_are_refused(text, why):
    with pytest.raises(RegistryError, match=why):
        parse(text, "registry.json")


def test_dangling_attachment_is_refused():
    n = net()
    data = json.loads(serialize(type("S", (), {"networks": {n.id: n}, "attachments": {}})()))
    data["attachments"] = [Attachment("vm-1", "eth0", str(uuid.uuid4()), "").to_dict()]
    with pytest.raises(RegistryError, match="unknown network"):
        parse(json.dumps(data), "r")


def test_duplicate_key_is_refused():
    a, b = net(), net(name="other")
    data = {"schema": 1, "networks": [a.to_dict(), b.to_dict()], "attachments": []}
    with pytest.raises(RegistryError, match="share host, bridge and VLAN"):
        parse(json.dumps(data), "r")


def test_concurrent_commits_share_writes(tmp_path, monkeypatch):
    reg = Registry(str(tmp_path))
    writes = []
    import fcnetd.registry as r
    real = r.write_atomic

    def counting(path, payload, mode=0o600):
        writes.append(payload)
        return real(path, payload, mode)
    monkeypatch.setattr(r, "write_atomic", counting)

    async def burst():
        async def one(i):
            reg.add_network(net(vlan=i + 1))
            await reg.commit()
        await asyncio.gather(*(one(i) for i in range(50)))
    asyncio.run(burst())
    assert 1 <= len(writes) <= 3, f"{len(writes)} writes for 50 commits"
    assert len(json.loads(writes[-1])["networks"]) == 50


def test_failed_write_raises_and_keeps_the_old_file(tmp_path, monkeypatch):
    reg = Registry(str(tmp_path))
    reg.add_network(net())
    reg.save_now()
    before = open(reg.path).read()

    def full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("fcnetd.registry.write_atomic", full)
    reg.add_network(net("fcbr1"))
    with pytest.raises(Exception, match="cannot write .*No space left"):
        asyncio.run(reg.commit())
    assert open(reg.path).read() == before


def test_lock_is_exclusive(tmp_path):
    a, b = Lock(str(tmp_path)), Lock(str(tmp_path))
    a.acquire()
    try:
        with pytest.raises(RegistryError, match=f"pid {os.getpid()}"):
            b.acquire()
    finally:
        a.release()
    b.acquire()
    b.release()
