import asyncio
import errno
import json
import os
import uuid

import pytest

from fcnetd import registry as registry_mod
from fcnetd.errors import FcnetError
from fcnetd.model import Attachment, Network
from fcnetd.registry import Lock, Registry, RegistryError, Snapshot, parse, serialize


def net(bridge="fcbr0", vlan=0, name=""):
    return Network.new(name, bridge, vlan, "node1", "manual")


def loaded(path) -> Registry:
    reg = Registry(str(path))
    reg.load()
    return reg


def same(a: Registry, b: Registry) -> bool:
    return a.networks == b.networks and a.attachments == b.attachments


def run(coro):
    return asyncio.run(coro)


def test_changes_are_journaled_and_read_back(tmp_path):
    reg = loaded(tmp_path)
    n = net()

    async def go():
        await reg.commit(reg.change("add_network", n))
        await reg.commit(reg.change("add_attachment", Attachment("vm-1", "eth0", n.id, "web")))
    run(go())
    assert not os.path.exists(reg.path), "a change is an append, not a rewrite of registry.json"
    assert os.stat(reg.journal.path).st_mode & 0o777 == 0o600
    again = loaded(tmp_path)
    assert same(again, reg)
    assert again.by_name["fcbr0"] == n and list(again.by_network[n.id]) == [("vm-1", "eth0")]
    reg.save_now()  # folded: the snapshot holds it all and the journal is empty
    assert os.path.getsize(reg.journal.path) == 0 and os.stat(reg.path).st_mode & 0o777 == 0o600
    assert same(loaded(tmp_path), reg)


def test_schema_1_file_of_the_previous_fcnetd_loads_unchanged(tmp_path):
    n = net()
    att = Attachment("vm-1", "eth0", n.id, "web", "02:fc:00:00:00:01")
    (tmp_path / "registry.json").write_text(json.dumps(
        {"schema": 1, "networks": [n.to_dict()], "attachments": [att.to_dict()]}))
    reg = loaded(tmp_path)
    assert reg.networks == {n.id: n} and reg.attachments == {att.key: att} and reg.seq == 0


def test_missing_file_is_an_empty_registry(tmp_path):
    assert loaded(tmp_path).networks == {}


@pytest.mark.parametrize("text,why", [
    ("", "not valid JSON"), ("[]", "no schema"), ('{"schema": 3}', "newer"),
    ('{"schema": true}', "schema: True must be an integer"), ('{"schema": 0}', "schema: 0 must be"),
    ('{"schema": -5}', "schema: -5 must be"), ('{"schema": "1"}', "must be an integer"),
    ('{"schema": 1, "seq": -1}', "seq: -1 must be"), ('{"schema": 1, "networks": {}}', "must be a list"),
    ('{"schema": 1, "networks": [7]}', "JSON object"),
    ('{"schema": 1, "networks": [{"id": 1}]}', "invalid record"),
    ('[' * 100000 + ']' * 100000, "nested too deeply"),
])
def test_bad_files_are_refused(text, why):
    with pytest.raises(RegistryError, match=why):
        parse(text, "registry.json")


def test_dangling_attachment_is_refused():
    n = net()
    data = {"schema": 1, "networks": [n.to_dict()],
            "attachments": [Attachment("vm-1", "eth0", str(uuid.uuid4()), "").to_dict()]}
    with pytest.raises(RegistryError, match="unknown network"):
        parse(json.dumps(data), "r")


def test_duplicate_key_is_refused():
    a, b = net(), net(name="other")
    data = {"schema": 1, "networks": [a.to_dict(), b.to_dict()], "attachments": []}
    with pytest.raises(RegistryError, match="share host, bridge and VLAN"):
        parse(json.dumps(data), "r")


def test_concurrent_commits_share_appends(tmp_path, monkeypatch):
    reg = loaded(tmp_path)
    appends = []
    real = reg.journal.append

    def counting(payload):
        appends.append(payload)
        real(payload)
    monkeypatch.setattr(reg.journal, "append", counting)

    async def burst():
        async def one(i):
            await reg.commit(reg.change("add_network", net(vlan=i + 1)))
        await asyncio.gather(*(one(i) for i in range(50)))
    run(burst())
    assert 1 <= len(appends) <= 3, f"{len(appends)} appends for 50 commits"
    assert len(loaded(tmp_path).networks) == 50


def full_once(reg, monkeypatch):
    """The next journal append fails as a full disk fails it, having
    written half of its bytes first."""
    real = reg.journal.append
    state = {"failed": False}

    def append(payload):
        if state["failed"]:
            return real(payload)
        state["failed"] = True
        if reg.journal.fd < 0:
            reg.journal.open()
        os.write(reg.journal.fd, payload[:len(payload) // 2])
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        finally:
            os.ftruncate(reg.journal.fd, reg.journal.size)  # what Journal.append does on failure
    monkeypatch.setattr(reg.journal, "append", append)


def test_a_failed_write_fails_every_caller_of_the_batch_and_memory_equals_disk(tmp_path, monkeypatch):
    """Item 3: one transient ENOSPC during two concurrent first attachments
    must fail both (the second depends on the first's network), leave memory
    equal to disk, and let the next write produce a registry that loads."""
    reg = loaded(tmp_path)
    kept = net("fcbr1")
    run(reg.commit(reg.change("add_network", kept)))
    full_once(reg, monkeypatch)
    n = net()

    async def two_first_attachments():
        first = reg.change("add_network", n)
        a = reg.change("add_attachment", Attachment("vm-1", "eth0", n.id))
        b = reg.change("add_attachment", Attachment("vm-2", "eth0", n.id))
        return await asyncio.gather(reg.commit(first), reg.commit(a), reg.commit(b), return_exceptions=True)
    results = run(two_first_attachments())
    assert all(isinstance(r, FcnetError) and "No space left" in str(r) for r in results), results
    assert reg.networks == {kept.id: kept} and reg.attachments == {} and reg.by_network == {kept.id: {}}
    assert same(loaded(tmp_path), reg)
    run(reg.commit(reg.change("add_network", net("fcbr2"))))  # space is back
    assert same(loaded(tmp_path), reg) and len(reg.networks) == 2


def test_undo_of_a_delete_cannot_bring_back_a_taken_name(tmp_path, monkeypatch):
    """Item 3: a failed DeleteNetwork undone while a new network took its
    name: both are undone, newest first, so the names stay unique."""
    reg = loaded(tmp_path)
    old = net(name="web")
    run(reg.commit(reg.change("add_network", old)))
    full_once(reg, monkeypatch)
    new = net("fcbr1", name="web")

    async def go():
        d = reg.change("remove_network", old)
        c = reg.change("add_network", new)
        return await asyncio.gather(reg.commit(d), reg.commit(c), return_exceptions=True)
    assert all(isinstance(r, FcnetError) for r in run(go()))
    assert reg.by_name == {"web": old} and reg.networks == {old.id: old}
    assert same(loaded(tmp_path), reg)


def test_a_caller_of_a_later_batch_is_not_failed_by_an_earlier_failure(tmp_path, monkeypatch):
    reg = loaded(tmp_path)
    full_once(reg, monkeypatch)
    failed = reg.change("add_network", net())
    with pytest.raises(FcnetError):
        run(reg.commit(failed))
    ok = reg.change("add_network", net("fcbr1"))
    run(reg.commit(ok))
    with pytest.raises(FcnetError):  # still reported as failed when asked again
        run(reg.commit(failed))
    assert [n.bridge for n in loaded(tmp_path).networks.values()] == ["fcbr1"]


def test_a_torn_last_line_was_never_acknowledged_and_is_dropped(tmp_path):
    reg = loaded(tmp_path)
    n = net()
    run(reg.commit(reg.change("add_network", n)))
    reg.close()
    with open(reg.journal.path, "ab") as f:
        f.write(b'{"seq": 2, "op": "add_netw')  # a crash mid-append
    again = loaded(tmp_path)
    assert again.networks == {n.id: n}
    m = net("fcbr1")
    run(again.commit(again.change("add_network", m)))  # appends after the good part
    assert set(loaded(tmp_path).networks) == {n.id, m.id}


def test_a_bad_line_inside_the_journal_is_refused(tmp_path):
    reg = loaded(tmp_path)
    run(reg.commit(reg.change("add_network", net())))
    reg.close()
    with open(reg.journal.path, "ab") as f:
        f.write(b'garbage\n{"seq": 9, "op": "remove_network", "id": "x"}\n')
    with pytest.raises(RegistryError, match="line 2 is not a journal record"):
        loaded(tmp_path)


def test_compaction_folds_the_journal_while_changes_go_on(tmp_path, monkeypatch):
    monkeypatch.setattr(registry_mod, "COMPACT_MIN_BYTES", 0)
    reg = loaded(tmp_path)

    async def go():
        for i in range(40):
            await reg.commit(reg.change("add_network", net(vlan=i + 1)))
        while reg._compacting is not None:
            await reg._compacting
    run(go())
    snap = parse(open(reg.path).read(), "r")
    assert len(snap.networks) >= 1 and os.path.getsize(reg.journal.path) < 40 * 200
    assert same(loaded(tmp_path), reg) and len(reg.networks) == 40


def test_a_crash_between_snapshot_and_journal_cut_replays_nothing_twice(tmp_path):
    reg = loaded(tmp_path)
    n = net()
    run(reg.commit(reg.change("add_network", n)))
    reg._write_snapshot(reg._durable_snapshot())  # the snapshot, then the crash: journal not cut
    reg.close()
    again = loaded(tmp_path)
    assert again.networks == {n.id: n} and again.seq == 1


def test_a_hand_edit_is_a_change_to_the_snapshot_it_was_made_from(tmp_path):
    """README: the journal's changes after the edit's seq are applied on
    top of the edit; one that no longer fits is skipped and reported."""
    reg = loaded(tmp_path)
    a, b = net(name="a"), net("fcbr1", name="b")
    run(reg.commit(reg.change("add_network", a)))
    reg.save_now()
    edited = parse(open(reg.path).read(), "r")  # the admin opens registry.json (seq 1) ...
    run(reg.commit(reg.change("add_network", b)))  # ... fcnetd goes on meanwhile ...
    run(reg.commit(reg.change("add_attachment", Attachment("vm-1", "eth0", a.id))))
    renamed = Network(**{**a.to_dict(), "name": "renamed"})
    assert reg.take_edit(Snapshot({a.id: renamed}, {}, edited.seq)) == []  # ... and renames network a
    assert reg.by_name.keys() == {"renamed", "b"} and list(reg.attachments) == [("vm-1", "eth0")]
    assert same(loaded(tmp_path), reg)

    base = parse(open(reg.path).read(), "r")  # the edit was written back at once
    run(reg.commit(reg.change("add_attachment", Attachment("vm-2", "eth0", b.id))))
    without_b = Snapshot({a.id: renamed}, {("vm-1", "eth0"): reg.attachments[("vm-1", "eth0")]}, base.seq)
    skipped = reg.take_edit(without_b)  # an edit that removes b, made before vm-2 was attached to it
    assert len(skipped) == 1 and "vm-2/eth0 names unknown network" in skipped[0]
    assert list(reg.networks) == [a.id] and list(reg.attachments) == [("vm-1", "eth0")]
    assert same(loaded(tmp_path), reg)


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


def test_serialize_round_trips(tmp_path):
    n = net()
    snap = Snapshot({n.id: n}, {("vm", "eth0"): Attachment("vm", "eth0", n.id)}, 7)
    again = parse(serialize(snap).decode(), "r")
    assert again == snap


def test_a_failed_cut_after_a_failed_append_is_made_before_the_next_append(tmp_path, monkeypatch):
    """A half-written group whose ftruncate failed too must not end up in the
    middle of the journal (the next start would refuse the file)."""
    from fcnetd import journal as journal_mod
    reg = loaded(tmp_path)
    run(reg.commit(reg.change("add_network", net())))
    real_write, real_truncate = os.write, os.ftruncate
    calls = {"write": 0}

    def half_write(fd, data):
        calls["write"] += 1
        if calls["write"] == 1:
            real_write(fd, bytes(data)[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    def no_truncate(fd, size):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(journal_mod.os, "write", half_write)
    monkeypatch.setattr(journal_mod.os, "ftruncate", no_truncate)
    with pytest.raises(FcnetError):
        run(reg.commit(reg.change("add_network", net("fcbr1"))))
    monkeypatch.setattr(journal_mod.os, "ftruncate", real_truncate)
    run(reg.commit(reg.change("add_network", net("fcbr2"))))
    reg.close()
    assert sorted(n.bridge for n in loaded(tmp_path).networks.values()) == ["fcbr0", "fcbr2"]
