"""fcnetd-webui as an unprivileged user against the private bus with the
project's policy: it works in group fcnet and is refused outside it; with
several hosts configured it shows them all."""

import subprocess

from tests.system.harness import wait_for
from tests.webstack import NOBODY, HttpUser, Stack, start_webui


def test_webui_in_group_fcnet_works_as_an_unprivileged_user():
    stack = Stack()
    try:
        user = HttpUser(stack.url, "admin")
        status, body = user.json("POST", "/api/networks", {"bridge": "fcbr0", "vlan": ""})
        assert status == 201 and body["name"] == "fcbr0"
        status, body = user.json("GET", "/api/networks")
        assert [n["name"] for n in body["items"]] == ["fcbr0"] and body["hosts"][0]["error"] == ""
        uid = int(open(f"/proc/{stack.webui.pid}/status").read().split("Uid:")[1].split()[0])
        assert uid == NOBODY
        assert "pyroute2" not in open(f"/proc/{stack.webui.pid}/maps").read()
    finally:
        stack.close()


def test_webui_outside_group_fcnet_is_refused_by_the_bus():
    stack = Stack(in_fcnet=False)
    try:
        user = HttpUser(stack.url, "admin")
        status, body = user.json("GET", "/api/networks")
        assert body["items"] == [] and "must be in group fcnet" in body["hosts"][0]["error"], body
        status, body = user.json("POST", "/api/networks", {"bridge": "fcbr0", "vlan": ""})
        assert status == 403 and "must be in group fcnet" in body["error"]
    finally:
        stack.close()


def test_several_hosts_are_listed_together(tmp_path):
    stack = Stack()
    proc = None
    try:
        webcfg = stack.second_host(str(tmp_path))
        proc, url = start_webui(stack.users, subprocess.DEVNULL, config=webcfg)
        user = HttpUser(url, "admin")
        assert user.json("POST", "/api/networks", {"host": "node2", "bridge": "fcbr0", "vlan": ""})[0] == 201
        assert user.json("POST", "/api/networks", {"host": "node1", "bridge": "fcbr1", "vlan": ""})[0] == 201
        def both_listed():
            body = user.json("GET", "/api/networks")[1]
            return body if len(body["items"]) == 2 else None
        body = wait_for(both_listed, what="the networks of both hosts listed")
        assert sorted((n["host"], n["name"]) for n in body["items"]) == [("node1", "fcbr1"), ("node2", "fcbr0")]
        assert [h["name"] for h in body["hosts"]] == ["node1", "node2"]
        assert user.json("GET", "/api/bridges?host=node2")[1]["bridges"] == ["fcbr0"]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        stack.close()


def test_repeated_wrong_passwords_are_throttled():
    import re
    import urllib.error
    import urllib.parse
    import urllib.request
    stack = Stack()
    try:
        jar = __import__("http.cookiejar").cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        codes = []
        for _ in range(7):
            page = opener.open(stack.url + "/login").read().decode()
            token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
            data = urllib.parse.urlencode({"csrf": token, "username": "admin", "password": "wrong-password"})
            try:
                opener.open(stack.url + "/login", data.encode())
            except urllib.error.HTTPError as e:
                codes.append((e.code, "Too many failed sign-ins" in e.read().decode()))
        assert codes[:5] == [(401, False)] * 5 and codes[5:] == [(429, True)] * 2
    finally:
        stack.close()
