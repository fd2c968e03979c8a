"""The users file as systemd-tmpfiles makes it on a host: empty at first,
0640 root:fcnet, kept so by every rewrite; an unreadable file is explained."""

import os

import pytest

from webui.users import UserError, UserStore


def test_an_empty_file_has_no_users_and_says_how_to_add_one(tmp_path):
    path = tmp_path / "webui-users.json"
    path.write_text("")                     # what `f ... 0640 root fcnet` makes
    store = UserStore(str(path))
    assert store.load() == {}
    assert "fcnetd-webui user add NAME --role admin" in store.startup_note()
    store.add("alice", "long-enough-pw", "admin")
    assert store.startup_note() is None


def test_a_rewrite_keeps_the_files_owner_and_mode(tmp_path):
    path = tmp_path / "webui-users.json"
    path.write_text("")
    os.chmod(path, 0o640)
    if os.geteuid() == 0:
        os.chown(path, 0, 4242)             # a group the writer is not in, as fcnet is root's
    before = os.stat(path)
    store = UserStore(str(path))
    store.add("alice", "long-enough-pw", "admin")
    store.passwd("alice", "another-long-pw")
    after = os.stat(path)
    assert (after.st_mode & 0o777, after.st_uid, after.st_gid) == (0o640, before.st_uid, before.st_gid)


def test_an_unreadable_file_is_explained_and_refuses_sign_in(tmp_path, monkeypatch):
    path = tmp_path / "webui-users.json"
    path.write_text("")
    store = UserStore(str(path))

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(UserError, match="cannot read it as uid .* 0640 root:fcnet"):
        store.load()
    assert "every sign-in is refused" in store.startup_note()
    assert store.authenticate("alice", "long-enough-pw") is None
