"""fcnetd-webui: aiohttp server, JSON API, server-sent events, users CLI."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import secrets
import sys

from aiohttp import web

from fcnetd.bus import Variant
from fcnetd.model import auto_name, excerpt, matches_search
from fcnetd.schema import from_dbus

from . import config as configmod, pages
from .hosts import RATES, DBusError, Host, Unavailable, explain
from .sessions import Sessions
from .throttle import SignInThrottle
from .users import ROLES, UserError, UserStore

log = logging.getLogger("fcnetd-webui")
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
COOKIE = "fcnetd_session"
LOGIN_COOKIE = "fcnetd_login"
PAGE_SIZE = 50
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HTTP_STATUS = {"InvalidArgs": 400, "NetworkExists": 409, "NetworkInUse": 409, "NoSuchNetwork": 404,
               "BridgeNotAllowed": 400, "BridgeNotFound": 400, "VlanUnsupported": 400, "AccessDenied": 403,
               "SubnetConflict": 409, "AddressUnavailable": 409, "NoSuchVm": 404, "NicAttached": 409,
               "BridgeFull": 409, "UnknownMethod": 501}
HISTORY_SECONDS = 3600  # fcnetd keeps one hour of traffic
PROBE_MS_MAX = 8000  # a probe must end well inside the 10 s a host call may take (hosts.CALL_SECONDS)
# Each probe: its fcnetd method and fcnetd's own default timeout_ms for it.
PROBES = {"dhcp": ("ProbeDhcp", 2000), "isolation": ("ProbeIsolation", 1000)}
DELETE_MANY_MAX = 500
SAMPLE_KEYS = (("Time", "time"), ("ReceiveBytes", "receive_bytes"), ("TransmitBytes", "transmit_bytes"),
               ("ReceivePackets", "receive_packets"), ("TransmitPackets", "transmit_packets"))
START_WAIT_SECONDS = 3.0  # how long the start waits for the hosts' first answers (never for a host)


class BadField(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def json_kind(value) -> str:
    """What a JSON value is, as a person would name it."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {dict: "an object", list: "an array", str: "text"}.get(type(value), "null")


def text_field(body: dict, key: str) -> str:
    """An optional text field of a JSON request: absent or null is ''. Any
    other kind is refused, never turned into its Python repr."""
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadField(key, f"{key}: must be text, not {json_kind(value)}")
    return value


async def json_body(request) -> dict:
    """The request's JSON object, or BadField."""
    try:
        body = await request.json()
    except ValueError:  # not JSON, or a number past Python's digit limit
        raise BadField("", "the request body must be JSON") from None
    if not isinstance(body, dict):
        raise BadField("", f"the request body must be a JSON object, not {json_kind(body)}")
    return body


def vlan_field(body: dict) -> int:
    """A VLAN ID as given in a form: empty is untagged. fcnetd judges the
    range; this only keeps what D-Bus type q can carry."""
    vlan = body.get("vlan")
    if vlan in (None, ""):
        return 0
    if isinstance(vlan, str) and vlan.strip().isdigit() and len(vlan.strip()) <= 5:
        vlan = int(vlan)
    if isinstance(vlan, bool) or not isinstance(vlan, int) or not 0 <= vlan <= 0xFFFF:
        shown = excerpt(vlan) if isinstance(vlan, (str, int)) else json_kind(vlan)
        raise BadField("vlan", f"vlan: {shown} is out of range: empty (untagged) or 1-4094")
    return vlan


def flag_field(query, key: str) -> bool:
    value = query.get(key, "")
    if value not in ("", "0", "1", "true", "false"):
        raise BadField(key, f"{key}: {excerpt(value)} must be 1, true, 0 or false")
    return value in ("1", "true")


def number_field(given, key: str, low: int, high: int, default: int) -> int:
    """A whole number in [low, high] from a query string or a JSON body."""
    value = given.get(key)
    if value in (None, ""):
        return default
    if isinstance(value, str) and value.isdigit() and len(value) <= 10:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        shown = excerpt(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else json_kind(value)
        raise BadField(key, f"{key}: {shown} must be a whole number from {low} to {high}")
    return value


def bool_field(body: dict, key: str, default: bool) -> bool:
    """An optional true/false field of a JSON request: absent or null is the default."""
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadField(key, f"{key}: must be true or false, not {json_kind(value)}")
    return value


def probes_asked(body: dict) -> list[str]:
    """The probes a request asks for: each of `dhcp` and `isolation` set
    true; neither set, the DHCP probe (all the endpoint ran before the
    isolation probe came)."""
    isolation = bool_field(body, "isolation", False)
    dhcp = bool_field(body, "dhcp", not isolation)
    if not (dhcp or isolation):
        field = "dhcp" if "dhcp" in body else "isolation"
        raise BadField(field, f"{field}: dhcp and isolation are both false, which asks for no probe; set either or "
                              "both to true")
    return [name for name, on in (("dhcp", dhcp), ("isolation", isolation)) if on]


def merged_checks(answers: list[list[dict]]) -> list[dict]:
    """Several probes' answers as one list: each answer repeats Diagnose's
    checks before its probe's own, so a check already listed is not listed
    again."""
    rows, seen = [], set()
    for answer in answers:
        for row in answer:
            if row.get("Check") not in seen:
                seen.add(row.get("Check"))
                rows.append(row)
    return rows


def older_fcnetd(h: Host, lacks: str):
    """The answer when a host's fcnetd predates a method this web UI calls."""
    return web.json_response({"error": f"fcnetd on host {h.name} {lacks} (it is older than this web UI)",
                              "code": "UnknownMethod", "field": ""}, status=501)


def bad_field(e: BadField):
    return web.json_response({"error": str(e), "field": e.field}, status=400)


def checks_json(rows: list[dict]) -> list[dict]:
    """Diagnose's checks as the page shows them; the DHCP probe's servers with them."""
    out = []
    for r in rows:
        check = {"check": r.get("Check", ""), "result": r.get("Result", ""), "detail": r.get("Detail", ""),
                 "hint": r.get("Hint", "")}
        if "Servers" in r:
            check["servers"] = [{k.lower(): v for k, v in server.items()} for server in r["Servers"]]
        out.append(check)
    return out


def error_name(e: DBusError) -> str:
    return (e.type or "").rsplit(".", 1)[-1]


def error_answer(e: DBusError | Unavailable) -> tuple[int, dict]:
    """A failed call as an HTTP status and body: the error, its code, the field it names."""
    if isinstance(e, Unavailable):  # answered at once: the host is down, or did not answer in time
        return HTTP_STATUS.get(e.code, 503), {"error": str(e), "code": e.code or "HostUnavailable", "field": ""}
    name = error_name(e)
    field = e.text.split(":", 1)[0] if name == "InvalidArgs" and ":" in e.text else ""
    return HTTP_STATUS.get(name, 502), {"error": explain(e), "code": name, "field": field}


class App:
    def __init__(self, cfg: configmod.WebConfig, buses: list[str] | None = None):
        self.cfg = cfg
        self.users = UserStore(cfg.users)
        self.sessions = Sessions()
        self.throttle = SignInThrottle()
        # configured hosts, else one host on --bus (default: the system bus)
        hosts = cfg.hosts or {"": buses[0] if buses else "system"}
        self.hosts = [Host(label, where, self._changed) for label, where in hosts.items()]
        self.listeners: set[asyncio.Queue] = set()
        self._tasks: set[asyncio.Task] = set()

    # -- infrastructure ---------------------------------------------------
    def _changed(self, event: dict) -> None:
        for q in list(self.listeners):
            if q.qsize() < 1000:
                q.put_nowait(event)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise web.HTTPNotFound(text=json.dumps({"error": f"no host {excerpt(name)}"}), content_type="application/json")

    def session(self, request):
        s = self.sessions.get(request.cookies.get(COOKIE))
        if s is not None and not self.users.still_valid(s.user, s.role, s.credential):
            # deleted, its password or role changed by `fcnetd-webui user ...`
            log.info("session of %s ended: the user was deleted or changed", s.user)
            self.sessions.end_user(s.user)
            return None
        return s

    def secure_cookies(self, request) -> bool:
        return request.secure or request.host.split(":")[0] not in ("127.0.0.1", "localhost", "[::1]")

    async def _secure(self, request, resp) -> None:
        """Runs as each response's headers are about to be sent: every
        response, the event stream and static files included, carries the
        same security headers (a middleware ran too late for a stream)."""
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["X-Frame-Options"] = "DENY"
        if not request.path.startswith("/static/"):
            resp.headers.setdefault("Cache-Control", "no-store")

    @web.middleware
    async def guard(self, request, handler):
        """Sign-in for everything but the login page and static files; CSRF
        and the admin role for every request that changes something."""
        path = request.path
        if path in ("/login", "/favicon.ico") or path.startswith("/static/"):
            return await handler(request)
        s = self.session(request)
        if s is None:
            if path.startswith("/api/"):
                return web.json_response({"error": "sign in first"}, status=401)
            raise web.HTTPSeeOther("/login")
        request["session"] = s
        if request.method not in ("GET", "HEAD"):
            token = request.headers.get("X-CSRF-Token")
            if token is None and request.content_type == "application/x-www-form-urlencoded":
                token = (await request.post()).get("csrf")
            if not s.csrf_ok(token):
                return web.json_response({"error": "missing or wrong CSRF token"}, status=403)
            if path.startswith("/api/") and not s.admin:
                return web.json_response({"error": "viewers cannot change networks"}, status=403)
        return await handler(request)

    # -- pages ------------------------------------------------------------
    def _login_form(self, request, error: str = "", status: int = 200) -> web.Response:
        # Double-submit token: the form and a cookie must carry the same value.
        # An existing token is kept, so a second tab or a stray request for
        # the page does not invalidate a form already shown.
        token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        resp = web.Response(text=pages.login(error, token), content_type="text/html", status=status)
        resp.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", secure=self.secure_cookies(request))
        return resp

    async def login_page(self, request):
        if self.session(request):
            raise web.HTTPSeeOther("/networks")
        return self._login_form(request)

    async def login(self, request):
        form = await request.post()
        token = form.get("csrf", "")
        if not token or not secrets.compare_digest(token, request.cookies.get(LOGIN_COOKIE, "")):
            return self._login_form(request, "Your sign-in form expired; try again.", 403)
        name, password = form.get("username", ""), form.get("password", "")
        addr = request.remote or "?"
        wait = self.throttle.begin(addr, name)  # counted now, before the slow check
        if wait:
            return self._login_form(request, f"Too many failed sign-ins; try again in {wait} s.", 429)
        user = await asyncio.to_thread(self.users.signed_in, name, password)
        if user is None:
            log.info("failed sign-in for %r from %s", name[:64], addr)
            return self._login_form(request, "Wrong user name or password.", 401)
        self.throttle.succeeded(addr, name)
        role = user["role"]
        sid, _ = self.sessions.create(name, role, user["hash"])
        resp = web.HTTPSeeOther("/networks")
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", secure=self.secure_cookies(request),
                        path="/")
        resp.del_cookie(LOGIN_COOKIE)
        log.info("%s signed in (%s)", name, role)
        raise resp

    async def logout(self, request):
        self.sessions.end(request.cookies.get(COOKIE))
        resp = web.HTTPSeeOther("/login")
        resp.del_cookie(COOKIE, path="/")
        raise resp

    async def favicon(self, request):
        return web.Response(status=204)

    async def root(self, request):
        raise web.HTTPSeeOther("/networks")

    async def networks_page(self, request):
        return web.Response(text=pages.networks(request["session"]), content_type="text/html")

    async def network_page(self, request):
        return web.Response(text=pages.network(request["session"], request.match_info["host"],
                                               request.match_info["id"]), content_type="text/html")

    # -- API --------------------------------------------------------------
    async def api_networks(self, request):
        q = request.query
        search = q.get("search", "").strip().lower()
        kind = q.get("type", "")
        if kind not in ("", "bridge", "vlan"):
            return web.json_response({"error": "type: must be bridge or vlan"}, status=400)
        only = q.get("host", "")
        if only and only not in (h.name for h in self.hosts):
            return web.json_response({"error": f"host: no host {excerpt(only)}", "field": "host"}, status=400)
        shown = [h for h in self.hosts if not only or h.name == only]
        try:
            unused = flag_field(q, "unused")
        except BadField as e:
            return bad_field(e)
        sort = q.get("sort", "created")
        order = q.get("order", "desc")
        try:
            page = max(1, int(q.get("page", "1")))
            size = min(500, max(1, int(q.get("size", str(PAGE_SIZE)))))
        except ValueError:
            return web.json_response({"error": "page and size must be numbers"}, status=400)
        items = []
        for h in shown:
            for n in h.networks.values():
                if kind and n["type"] != kind:
                    continue
                if unused and n["vm_count"]:  # fcnetd's ListNetworks option unused: no VM attached
                    continue
                if not matches_search(search, n["name"], n["bridge"], n["vlan"], n["description"]):
                    continue
                items.append(n)
        key = (lambda n: (n["vm_count"], n["created"])) if sort == "vms" else (lambda n: n["created"])
        items.sort(key=key, reverse=(order != "asc"))
        total = len(items)
        start = (page - 1) * size
        by_name = {h.name: h for h in shown}
        return web.json_response({
            "total": total, "all": sum(len(h.networks) for h in shown), "page": page, "size": size,
            "pages": max(1, -(-total // size)),
            "items": [self._with_drift(by_name[n["host"]], n) for n in items[start:start + size]],
            "answered": sum(h.available for h in shown), "asked": len(shown),
            "hosts": [h.status() for h in self.hosts]})

    async def api_network(self, request):
        h = self.host(request.match_info["host"])
        try:
            (net,) = await h.m("GetNetwork", "s", request.match_info["id"])
        except (DBusError, Unavailable) as e:
            return self._dbus_error(e)
        entry = {**from_dbus(net), "host": h.name}
        entry.update({key: net[prop] for prop, key in RATES if prop in net})
        return web.json_response(self._with_drift(h, entry))

    @staticmethod
    def _with_drift(h: Host, entry: dict) -> dict:
        drift = h.drift_of(entry["id"])
        return {**entry, "drift": drift} if drift else entry

    async def api_bridges(self, request):
        h = self.host(request.query.get("host", self.hosts[0].name))
        try:
            (bridges,) = await h.m("ListBridges")
        except (DBusError, Unavailable) as e:
            return self._dbus_error(e)
        return web.json_response({"host": h.name, "bridges": [b["Name"] for b in bridges]})

    async def api_create(self, request):
        try:
            body = await json_body(request)
            host, name, bridge, description, mode, subnet = (
                text_field(body, key) for key in ("host", "name", "bridge", "description", "mode", "subnet"))
            vlan = vlan_field(body)
        except BadField as e:
            return bad_field(e)
        h = self.host(host or self.hosts[0].name)
        # fcnetd records who made the change (its audit trail) from the signed-in user
        opts = {"actor": Variant("s", request["session"].user)}
        if description:
            opts["description"] = Variant("s", description)
        # mode and subnet go to fcnetd as given: its answer names the rule
        for key, value in (("mode", mode), ("subnet", subnet)):
            if value.strip():
                opts[key] = Variant("s", value.strip())
        try:
            (path,) = await h.m("CreateNetwork", "ssqa{sv}", name, bridge, vlan, opts)
        except (DBusError, Unavailable) as e:
            return self._dbus_error(e)
        log.info("%s created network %s on %s", request["session"].user, name or auto_name(bridge, vlan), h.name)
        return web.json_response({"path": path, "name": name or auto_name(bridge, vlan)}, status=201)

    async def api_delete(self, request):
        h = self.host(request.match_info["host"])
        try:
            await self._delete_network(h, request.match_info["id"], request["session"].user)
        except (DBusError, Unavailable) as e:
            return self._dbus_error(e)
        log.info("%s deleted network %s on %s", request["session"].user, request.match_info["id"], h.name)
        return web.json_response({"deleted": request.match_info["id"]})

    async def api_delete_many(self, request):
        """Several networks deleted in one action (the unused ones a user
        picked); each is answered for on its own, in the order given."""
        try:
            targets = self._delete_targets(await json_body(request))
        except BadField as e:
            return bad_field(e)
        results = []
        for h, net_id in targets:
            entry = h.networks.get(net_id, {})
            result = {"host": h.name, "id": net_id, "name": entry.get("name", net_id)}
            try:
                await self._delete_network(h, net_id, request["session"].user)
            except (DBusError, Unavailable) as e:
                results.append({**result, "ok": False, **error_answer(e)[1]})
                continue
            log.info("%s deleted network %s on %s", request["session"].user, net_id, h.name)
            results.append({**result, "ok": True})
        return web.json_response({"deleted": sum(r["ok"] for r in results), "results": results})

    @staticmethod
    async def _delete_network(h: Host, net_id: str, user: str) -> None:
        """DeleteNetwork on the signed-in user's behalf (the audit entry's
        actor); a host whose fcnetd predates DeleteNetworkWithOptions is
        asked without it."""
        try:
            await h.m("DeleteNetworkWithOptions", "sa{sv}", net_id, {"actor": Variant("s", user)})
        except DBusError as e:
            if error_name(e) != "UnknownMethod":
                raise
            await h.m("DeleteNetwork", "s", net_id)

    def _delete_targets(self, body: dict) -> list[tuple[Host, str]]:
        nets = body.get("networks")
        if not isinstance(nets, list) or not nets:
            shown = "an empty array" if nets == [] else json_kind(nets)
            raise BadField("networks", f"networks: must be a list of {{host, id}} objects, not {shown}")
        if len(nets) > DELETE_MANY_MAX:
            raise BadField("networks", f"networks: at most {DELETE_MANY_MAX} at once, not {len(nets)}")
        targets = []
        for i, item in enumerate(nets):
            where = f"networks[{i}]"
            if not isinstance(item, dict):
                raise BadField(where, f"{where}: must be an object with host and id, not {json_kind(item)}")
            try:
                host, net_id = text_field(item, "host"), text_field(item, "id")
            except BadField as e:
                raise BadField(f"{where}.{e.field}", f"{where}.{e}") from None
            if not net_id:
                raise BadField(f"{where}.id", f"{where}.id: must name a network")
            h = next((h for h in self.hosts if h.name == (host or self.hosts[0].name)), None)
            if h is None:
                raise BadField(f"{where}.host", f"{where}.host: no host {excerpt(host)}")
            targets.append((h, net_id))
        return targets

    # -- troubleshooting ------------------------------------------------------
    async def api_diagnose(self, request):
        """Diagnose: read-only in effect, so viewers may run it too."""
        h = self.host(request.match_info["host"])
        try:
            (rows,) = await h.m("Diagnose", "s", request.match_info["id"])
        except (DBusError, Unavailable) as e:
            return self._dbus_error(e)
        return web.json_response({"checks": checks_json(rows)})

    async def api_probe(self, request):
        """Diagnose with the DHCP probe, the isolation probe or both: they plug
        ports into the bridge, so admins only (the guard refuses viewers any
        POST). Both asked, both run at once, each a call of its own: the
        request takes the longer one's time, inside what one host call may."""
        h = self.host(request.match_info["host"])
        net = request.match_info["id"]
        try:
            body = await json_body(request)
            probes = probes_asked(body)
            timeout = number_field(body, "timeout_ms", 100, PROBE_MS_MAX, 0)
        except BadField as e:
            return bad_field(e)
        calls = [h.m(PROBES[p][0], "sa{sv}", net, {"timeout_ms": Variant("u", timeout or PROBES[p][1])})
                 for p in probes]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        for probe, answer in zip(probes, answers):
            if isinstance(answer, DBusError) and error_name(answer) == "UnknownMethod":
                return older_fcnetd(h, f"has no {probe} probe")
            if isinstance(answer, (DBusError, Unavailable)):
                return self._dbus_error(answer)
            if isinstance(answer, BaseException):
                raise answer
        log.info("%s probed %s on network %s on %s", request["session"].user, " and ".join(probes), net, h.name)
        return web.json_response({"checks": checks_json(merged_checks([rows for (rows,) in answers]))})

    async def api_diagnose_vm(self, request):
        h = self.host(request.match_info["host"])
        try:
            (rows,) = await h.m("DiagnoseVm", "ss", request.match_info["vm"], request.query.get("nic", ""))
        except (DBusError, Unavailable) as e:
            return self._dbus_error(e)
        return web.json_response({"checks": checks_json(rows)})

    async def api_move(self, request):
        h = self.host(request.match_info["host"])
        vm = request.match_info["vm"]
        try:
            body = await json_body(request)
            nic, bridge = text_field(body, "nic") or "eth0", text_field(body, "bridge")
            vlan = vlan_field(body)
        except BadField as e:
            return bad_field(e)
        opts = {"actor": Variant("s", request["session"].user)}
        try:
            (path,) = await h.m("MoveVm", "sssqa{sv}", vm, nic, bridge, vlan, opts)
        except (DBusError, Unavailable) as e:
            return self._dbus_error(e)
        name = h.networks.get(h.by_path.get(path, ""), {}).get("name") or auto_name(bridge, vlan)
        log.info("%s moved %s %s to %s on %s", request["session"].user, vm, nic, name, h.name)
        return web.json_response({"path": path, "name": name})

    async def api_traffic(self, request):
        """A network's (or one VM NIC's) rates, oldest first, as columns for the charts."""
        h = self.host(request.match_info["host"])
        q = request.query
        try:
            seconds = number_field(q, "seconds", 10, HISTORY_SECONDS, HISTORY_SECONDS)
        except BadField as e:
            return bad_field(e)
        opts = {"seconds": Variant("u", seconds)}
        if q.get("vm"):
            opts["vm"] = Variant("s", q["vm"])
            opts["nic"] = Variant("s", q.get("nic") or "eth0")
        try:
            (samples,) = await h.m("GetTraffic", "sa{sv}", request.match_info["id"], opts)
        except DBusError as e:
            if error_name(e) == "UnknownMethod":
                return older_fcnetd(h, "keeps no traffic history")
            return self._dbus_error(e)
        except Unavailable as e:
            return self._dbus_error(e)
        return web.json_response({key: [s.get(prop, 0) for s in samples] for prop, key in SAMPLE_KEYS})

    def _dbus_error(self, e: DBusError | Unavailable):
        status, body = error_answer(e)
        return web.json_response(body, status=status)

    async def api_events(self, request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await resp.prepare(request)
        q: asyncio.Queue = asyncio.Queue()
        self.listeners.add(q)
        try:
            await resp.write(b": connected\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(q.get(), 15)
                    await resp.write(f"data: {json.dumps(event)}\n\n".encode())
                except asyncio.TimeoutError:
                    if self.session(request) is None:  # the user was deleted or changed meanwhile
                        break
                    await resp.write(b": keepalive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.listeners.discard(q)
        return resp

    # -- assembly -----------------------------------------------------------
    def make(self) -> web.Application:
        app = web.Application(middlewares=[self.guard], client_max_size=64 * 1024)
        app.on_response_prepare.append(self._secure)
        app.add_routes([
            web.get("/login", self.login_page), web.post("/login", self.login), web.post("/logout", self.logout),
            web.get("/", self.root), web.get("/favicon.ico", self.favicon), web.get("/networks", self.networks_page),
            web.get("/networks/{host}/{id}", self.network_page),
            web.get("/api/networks", self.api_networks), web.post("/api/networks", self.api_create),
            web.get("/api/networks/{host}/{id}", self.api_network),
            web.delete("/api/networks/{host}/{id}", self.api_delete),
            web.post("/api/networks/delete", self.api_delete_many),
            web.get("/api/networks/{host}/{id}/diagnose", self.api_diagnose),
            web.post("/api/networks/{host}/{id}/probe", self.api_probe),
            web.get("/api/networks/{host}/{id}/traffic", self.api_traffic),
            web.get("/api/vms/{host}/{vm}/diagnose", self.api_diagnose_vm),
            web.post("/api/vms/{host}/{vm}/move", self.api_move),
            web.get("/api/bridges", self.api_bridges), web.get("/api/events", self.api_events),
            web.static("/static", STATIC),
        ])
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app) -> None:
        """Each host on a task of its own; the start waits a moment for their
        first answers, so the first page is whole, but never for a host that
        is down or slow."""
        for h in self.hosts:
            task = asyncio.get_running_loop().create_task(h.run(), name=f"host {h.label or h.where}")
            self._tasks.add(task)
            task.add_done_callback(self._host_ended)
        first = [asyncio.ensure_future(h.tried.wait()) for h in self.hosts]
        await asyncio.wait(first, timeout=START_WAIT_SECONDS)
        for waiter in first:
            waiter.cancel()

    def _host_ended(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # run() catches everything: a bug
            log.error("%s stopped following its host", task.get_name(), exc_info=task.exception())

    async def _stop(self, app) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _users_cli(store: UserStore, args) -> int:
    try:
        if args.action == "list":
            for name, u in sorted(store.load().items()):
                print(f"{name}\t{u['role']}")
            return 0
        if args.action == "del":
            store.delete(args.name)
            print(f"deleted {args.name}")
            return 0
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"password for {args.name}: ")
            if getpass.getpass("again: ") != password:
                print("fcnetd-webui: passwords differ", file=sys.stderr)
                return 1
        if args.action == "add":
            store.add(args.name, password, args.role)
            print(f"added {args.name} ({args.role})")
        else:
            store.passwd(args.name, password)
            print(f"password of {args.name} changed")
        return 0
    except UserError as e:
        print(f"fcnetd-webui: {e}", file=sys.stderr)
        return 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fcnetd-webui", description="The fcnetd web UI (talks to fcnetd over D-Bus)")
    p.add_argument("--config", help=f"config file (default {configmod.DEFAULT_PATH}, optional)")
    p.add_argument("--bus", help="system, session or a D-Bus address (one host; default system)")
    p.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8080)")
    p.add_argument("--users", help=f"users file (default {configmod.DEFAULT_USERS})")
    sub = p.add_subparsers(dest="cmd")
    u = sub.add_parser("user", help="manage sign-in users")
    u.add_argument("action", choices=["add", "passwd", "del", "list"])
    u.add_argument("name", nargs="?")
    u.add_argument("--role", choices=ROLES, default="viewer")
    u.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    args = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("FCNETD_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError as e:
        print(f"fcnetd-webui: {e}", file=sys.stderr)
        return 1
    if args.users:
        cfg = configmod.WebConfig(cfg.listen, args.users, cfg.hosts)
    if args.cmd == "user":
        if args.action != "list" and not args.name:
            p.error("user add|passwd|del need a NAME")
        return _users_cli(UserStore(cfg.users), args)
    listen = args.listen or cfg.listen
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"fcnetd-webui: --listen: {listen!r} must be HOST:PORT", file=sys.stderr)
        return 1
    if note := UserStore(cfg.users).startup_note():
        log.warning("%s", note)   # and keep serving: a crash loop would explain nothing
    app = App(cfg, [args.bus] if args.bus else None)
    try:
        # open event streams would hold a graceful stop for a minute by default
        web.run_app(app.make(), host=host.strip("[]"), port=int(port), print=None, access_log=None,
                    handle_signals=True, shutdown_timeout=1.0)
    except (DBusError, OSError) as e:
        print(f"fcnetd-webui: cannot start: {getattr(e, 'text', e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
