"""Faults found by testing the web UI as an attacker would (issue 13), each
proved over real HTTP against the real web UI, fcnetd and dbus-daemon."""

import http.client
import re
import threading
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.webstack import PASSWORDS, HttpUser, Stack

SECURITY_HEADERS = {"Content-Security-Policy": "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff",
                    "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


@pytest.fixture(scope="module")
def stack():
    s = Stack()
    s.admin = HttpUser(s.url, "admin")  # before the throttle tests spend admin's budget
    yield s
    s.close()


def login_form(base: str) -> tuple[str, str]:
    """The sign-in form's CSRF token and its cookie (double submit)."""
    with urllib.request.urlopen(base + "/login") as r:
        cookie = r.headers["Set-Cookie"].split(";", 1)[0]
        token = re.search(r'name="csrf" value="([^"]+)"', r.read().decode()).group(1)
    return token, cookie


def post_sign_in(base: str, token: str, cookie: str, user: str, password: str) -> tuple[int, str]:
    """One sign-in over its own connection: (status, the page's error or '')."""
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=60)
    try:
        body = urllib.parse.urlencode({"csrf": token, "username": user, "password": password})
        conn.request("POST", "/login", body, {"Cookie": cookie,
                                              "Content-Type": "application/x-www-form-urlencoded"})
        r = conn.getresponse()
        error = re.search(r'<p class="error" role="alert">([^<]*)</p>', r.read().decode())
        return r.status, error.group(1) if error else ""
    finally:
        conn.close()


def concurrently(n: int, fn) -> list:
    """n calls of fn, released together so they reach the server at once."""
    gate = threading.Barrier(n)

    def one(_):
        gate.wait()
        return fn()
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_parallel_wrong_passwords_are_throttled_like_sequential_ones(stack):
    """60 wrong passwords at once: only five are checked, as if sent one by
    one; the rest are refused before scrypt runs. Failures used to be
    counted only after scrypt, so all 60 were checked against the limit."""
    token, cookie = login_form(stack.url)
    results = concurrently(60, lambda: post_sign_in(stack.url, token, cookie, "viewer", "wrong-password"))
    checked = [r for r in results if r == (401, "Wrong user name or password.")]
    refused = [r for r in results if r[0] == 429 and r[1].startswith("Too many failed sign-ins")]
    assert (len(checked), len(refused)) == (5, 55), sorted(set(results))
    # the budget is spent for this name from this address, even for the right password
    assert post_sign_in(stack.url, token, cookie, "viewer", PASSWORDS["viewer"])[0] == 429


def test_right_passwords_do_not_spend_the_budget(stack):
    """An attempt is counted when it starts; a right password takes its count
    back and clears the name's failures, so signing in, at once or one after
    another, never locks a user out."""
    token, cookie = login_form(stack.url)
    right = lambda: post_sign_in(stack.url, token, cookie, "admin", PASSWORDS["admin"])  # noqa: E731
    wrong = lambda: post_sign_in(stack.url, token, cookie, "admin", "wrong-password")  # noqa: E731
    assert [status for status, _ in concurrently(5, right)] == [303] * 5
    assert [right()[0] for _ in range(8)] == [303] * 8
    assert [wrong()[0] for _ in range(4)] == [401] * 4
    assert right()[0] == 303
    assert [wrong()[0] for _ in range(5)] == [401] * 5, "a right password clears the failures before it"
    assert right()[0] == 429


def headers_of(base: str, path: str, cookie: str = "") -> tuple[int, http.client.HTTPMessage]:
    """A response's status and headers, without reading its body (an event
    stream never ends)."""
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        r = conn.getresponse()
        return r.status, r.headers
    finally:
        conn.close()


def session_cookie(user: HttpUser) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in user.jar)


@pytest.mark.parametrize("path,status,signed_in", [
    ("/api/events", 200, True), ("/api/networks", 200, True), ("/networks", 200, True),
    ("/networks/node1/no-such-id", 200, True), ("/api/networks/node1/no-such-id", 404, True),
    ("/api/networks/nohost/x", 404, True), ("/static/app.js", 200, True), ("/no/such/page", 404, True),
    ("/", 303, True), ("/login", 200, False), ("/api/networks", 401, False), ("/networks", 303, False),
    ("/api/events", 401, False),
])
def test_every_response_carries_the_security_headers(stack, path, status, signed_in):
    """The event stream was sent before the header middleware ran, so it had
    no CSP, frame-ancestors or nosniff."""
    cookie = session_cookie(stack.admin) if signed_in else ""
    got, headers = headers_of(stack.url, path, cookie)
    assert got == status
    for name, part in SECURITY_HEADERS.items():
        assert part in (headers.get(name) or ""), f"{path}: {name} is {headers.get(name)!r}"


@pytest.mark.parametrize("body,field,rule", [
    ({"bridge": "fcbr0", "description": {"note": "x"}}, "description", "description: must be text, not an object"),
    ({"bridge": "fcbr0", "description": ["a"]}, "description", "description: must be text, not an array"),
    ({"bridge": "fcbr0", "description": 5}, "description", "description: must be text, not a number"),
    ({"bridge": {"x": 1}}, "bridge", "bridge: must be text, not an object"),
    ({"bridge": "fcbr0", "name": 7}, "name", "name: must be text, not a number"),
    ({"bridge": "fcbr0", "host": ["node1"]}, "host", "host: must be text, not an array"),
    ({"bridge": "fcbr0", "mode": True}, "mode", "mode: must be text, not a boolean"),
    ({"bridge": "fcbr0", "subnet": {"a": 1}}, "subnet", "subnet: must be text, not an object"),
])
def test_a_field_that_is_not_text_is_refused_and_nothing_is_stored(stack, body, field, rule):
    """A JSON object given as a description was stored as its Python repr."""
    user = stack.admin
    status, answer = user.json("POST", "/api/networks", body)
    assert (status, answer.get("field")) == (400, field), answer
    assert answer["error"] == rule
    assert user.json("GET", "/api/networks")[1]["all"] == 0


def test_a_body_that_is_not_an_object_is_refused(stack):
    user = stack.admin
    status, answer = user.json("POST", "/api/networks", ["fcbr0"])
    assert status == 400 and answer["error"] == "the request body must be a JSON object, not an array"


def test_a_huge_wrong_value_is_not_echoed(stack):
    user = stack.admin
    status, answer = user.json("POST", "/api/networks", {"bridge": "fcbr0", "vlan": "9" * 5000})
    assert status == 400 and answer["field"] == "vlan" and len(answer["error"]) < 300, answer
