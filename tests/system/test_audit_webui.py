"""The web UI passes its signed-in user as the actor of the changes it makes;
fcnetd records it with the web UI process's own credentials."""

from fcnetd.audit import SOCKET_ENV
from tests.webstack import NOBODY, HttpUser, Stack

from .test_audit import Journal


def test_a_network_made_in_the_web_ui_is_recorded_with_the_signed_in_user(tmp_path, monkeypatch):
    journal = Journal(str(tmp_path / "journal.socket"))
    monkeypatch.setenv(SOCKET_ENV, journal.path)
    stack = Stack()
    try:
        admin = HttpUser(stack.url, "admin")
        status, _ = admin.json("POST", "/api/networks", {"bridge": "fcbr1", "vlan": ""})
        assert status == 201
        [entry] = journal.wait(1, "the creation's entry")
        assert (entry["FCNETD_ACTION"], entry["FCNETD_NETWORK"], entry["FCNETD_ACTOR"]) == \
            ("network-created", "fcbr1", "admin")
        assert (entry["FCNETD_CALLER_UID"], entry["FCNETD_CALLER_PID"]) == (str(NOBODY), str(stack.webui.pid))
        status, listed = admin.json("GET", "/api/networks")
        [net] = [n for n in listed["items"] if n["name"] == "fcbr1"]
        status, _ = admin.json("DELETE", f"/api/networks/{net['host']}/{net['id']}")
        assert status == 200
        entry = journal.wait(2, "the deletion's entry")[1]
        assert (entry["FCNETD_ACTION"], entry["FCNETD_NETWORK"], entry["FCNETD_ACTOR"]) == \
            ("network-deleted", "fcbr1", "admin")
    finally:
        stack.close()
        journal.sock.close()
