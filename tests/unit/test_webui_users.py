import os

import pytest

from webui.sessions import Sessions
from webui.users import UserError, UserStore, hash_password, verify_password


def test_scrypt_round_trip_and_salted():
    a, b = hash_password("correct horse"), hash_password("correct horse")
    assert a != b and a.startswith("scrypt$")
    assert verify_password("correct horse", a) and not verify_password("wrong", a)
    assert not verify_password("x", "md5$nope")


def test_user_store(tmp_path):
    store = UserStore(str(tmp_path / "users.json"))
    store.add("alice", "long-enough-pw", "admin")
    assert os.stat(store.path).st_mode & 0o777 == 0o600
    assert store.authenticate("alice", "long-enough-pw") == "admin"
    assert store.authenticate("alice", "wrong-password") is None
    assert store.authenticate("nobody", "long-enough-pw") is None
    store.passwd("alice", "another-long-pw")
    assert store.authenticate("alice", "another-long-pw") == "admin"
    store.delete("alice")
    assert store.load() == {}


@pytest.mark.parametrize("name,password,role,message", [
    ("Bad Name", "long-enough-pw", "admin", "name:"),
    ("bob", "short", "admin", "password: must be at least 10"),
    ("bob", "long-enough-pw", "root", "role: must be one of admin, viewer"),
])
def test_bad_users_are_explained(tmp_path, name, password, role, message):
    with pytest.raises(UserError, match=message):
        UserStore(str(tmp_path / "u.json")).add(name, password, role)


def test_sessions_expire_and_end():
    s = Sessions(idle=0.05, maximum=10)
    sid, sess = s.create("alice", "viewer")
    assert s.get(sid) is sess and not sess.admin
    assert sess.csrf_ok(sess.csrf) and not sess.csrf_ok("x") and not sess.csrf_ok(None)
    import time
    time.sleep(0.08)
    assert s.get(sid) is None
    sid, _ = s.create("bob", "admin")
    s.end(sid)
    assert s.get(sid) is None


def test_webui_never_imports_pyroute2():
    import subprocess
    import sys
    code = "import sys, webui.app, webui.hosts; print('pyroute2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.stdout.strip() == "False", out.stderr

