"""Issue 13: `fcnetd-webui user del` and `passwd` are another process than
the web UI, and used to leave the user's sessions working (a deleted
alice's cookie still created and deleted networks). Each ends them now, on
the session's next request."""

import subprocess

from tests.system.harness import REPO
from tests.webstack import HttpUser, Stack, webui_command


def admin_cli(stack: Stack, *args: str, password: str | None = None) -> None:
    subprocess.run(webui_command() + ["--users", stack.users, "user", *args], check=True, capture_output=True,
                   text=True, input=(password + "\n") if password else None,
                   env={"PYTHONPATH": REPO, "PATH": "/usr/bin:/bin"})


def test_deleting_a_user_or_changing_a_password_ends_their_sessions():
    stack = Stack()
    try:
        admin, viewer = HttpUser(stack.url, "admin"), HttpUser(stack.url, "viewer")
        assert admin.json("POST", "/api/networks", {"bridge": "fcbr0", "vlan": ""})[0] == 201
        assert viewer.json("GET", "/api/networks")[0] == 200

        admin_cli(stack, "passwd", "viewer", "--password-stdin", password="a-new-long-password")
        status, body = viewer.json("GET", "/api/networks")
        assert status == 401, f"the viewer's session outlived its password: {status} {body}"
        assert admin.json("GET", "/api/networks")[0] == 200, "another user's session goes on"

        admin_cli(stack, "del", "admin")
        status, body = admin.json("POST", "/api/networks", {"bridge": "fcbr1", "vlan": ""})
        assert status == 401, f"a deleted user's cookie still made a network: {status} {body}"
        assert "session of admin ended" in stack.webui_output()
    finally:
        stack.close()
