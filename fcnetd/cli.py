"""fcnetctl: the admin CLI, a D-Bus client of fcnetd. Tables for people,
--json for scripts."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time

from .audit import MESSAGE_ID
from .bus import DBusError, Variant, call, connect, unwrap
from .names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH
from .sshbus import SshError, SshTarget, check_destination
from .sshbus import connect as ssh_connect


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _vlan(v: int) -> str:
    return str(v) if v else ""


async def _run(args) -> int:
    remote = None
    if args.host:  # the remote host's system bus, through ssh and systemd-stdio-bridge there
        remote = await ssh_connect(SshTarget(args.host, args.port, args.identity, args.known_hosts))
        conn = remote.conn
    else:
        conn = await connect(args.bus)
    try:
        return await _command(args, conn)
    finally:
        if remote is not None:
            await remote.close()


async def _command(args, conn) -> int:

    async def m(member, sig="", body=None):
        return await call(conn, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, member, sig, body)

    out = sys.stdout
    if args.cmd == "list":
        flt = {k: Variant("s", v) for k, v in (("search", args.search), ("type", args.type),
                                                ("bridge", args.bridge), ("mode", args.mode)) if v}
        if args.unused:
            flt["unused"] = Variant("b", True)
        (nets,) = await m("ListNetworks", "a{sv}", [flt])
        nets = unwrap(nets)
        if args.json:
            json.dump(nets, out, indent=2)
            out.write("\n")
        else:
            rows = [[n["Name"], n["Bridge"], _vlan(n["Vlan"]), n["Mode"], n["Subnet"], n["VmCount"],
                     n["Created"][:19].replace("T", " ")] for n in nets]
            if rows:
                print(_table(rows, ["Network", "Bridge", "VLAN", "Mode", "Subnet", "VMs", "Created"]))
                print()
            print(f"{_plural(len(nets), 'network')} listed.")
    elif args.cmd == "show":
        (net,) = await m("GetNetwork", "s", [args.network])
        net = unwrap(net)
        if args.json:
            json.dump(net, out, indent=2)
            out.write("\n")
        else:
            for key in ("Name", "Id", "Bridge", "Vlan", "Type", "Mode", "Subnet", "Gateway", "Dhcp", "Status",
                        "Host", "Origin", "Created", "Description", "VmCount"):
                value = net[key]
                if key == "Vlan":
                    value = _vlan(value)
                elif key == "Dhcp":
                    value = "yes" if value else "no"
                print(f"{key:>12}: {value}")
            if net["Vms"]:
                print()
                print(_table([[v["VmName"] or "-", v["VmId"], v["Nic"], v["Ip"] or "-", v["Mac"] or "-", v["State"],
                               v["Tap"] or "-"] for v in net["Vms"]],
                             ["VM", "ID", "NIC", "IP", "MAC", "State", "TAP"]))
    elif args.cmd == "create":
        opts = {"description": Variant("s", args.description)} if args.description else {}
        if args.mode:
            opts["mode"] = Variant("s", args.mode)
        if args.subnet:
            opts["subnet"] = Variant("s", args.subnet)
        if args.no_dhcp:
            opts["dhcp"] = Variant("b", False)
        (path,) = await m("CreateNetwork", "ssqa{sv}", [args.name or "", args.bridge, args.vlan, opts])
        net = await _props(conn, path)
        where = f" ({net['Mode']} {net['Subnet']}, gateway {net['Gateway']})" if net["Mode"] == "nat" else ""
        _say(args, {"path": path, "id": net["Id"], "name": net["Name"], "mode": net["Mode"], "subnet": net["Subnet"],
                    "gateway": net["Gateway"]}, f"created {net['Name']}{where}")
    elif args.cmd == "delete":
        await m("DeleteNetwork", "s", [args.network])
        _say(args, {"deleted": args.network}, f"deleted {args.network}")
    elif args.cmd == "delete-unused":
        status = await _delete_unused(args, m)
        conn.disconnect()
        return status
    elif args.cmd in ("attach", "move"):
        opts = {k: Variant("s", val) for k, val in (("mac", args.mac), ("ip", args.ip)) if val}
        if args.cmd == "attach":
            opts["nic"] = Variant("s", args.nic)
            if args.vm_name:
                opts["vm_name"] = Variant("s", args.vm_name)
            (path,) = await m("AttachVm", "ssqa{sv}", [args.vm_id, args.bridge, args.vlan, opts])
        else:
            (path,) = await m("MoveVm", "sssqa{sv}", [args.vm_id, args.nic, args.bridge, args.vlan, opts])
        net = await _props(conn, path)
        vm = next(v for v in net["Vms"] if (v["VmId"], v["Nic"]) == (args.vm_id, args.nic))
        address = f" ip {vm['Ip']} mac {vm['Mac']}" if vm["Ip"] else ""
        done = "attached" if args.cmd == "attach" else f"moved to {net['Name']}:"
        _say(args, {"path": path, "network": net["Name"], "ip": vm["Ip"], "mac": vm["Mac"]},
             f"{done} {args.vm_id} {args.nic}{address}")
    elif args.cmd == "detach":
        await m("DetachVm", "ss", [args.vm_id, args.nic])
        _say(args, {"detached": [args.vm_id, args.nic]}, f"detached {args.vm_id} {args.nic}")
    elif args.cmd == "tap-create":
        opts = {}
        if args.uid is not None:
            opts["owner_uid"] = Variant("u", args.uid)
        if args.gid is not None:
            opts["owner_gid"] = Variant("u", args.gid)
        (tap,) = await m("CreateTap", "ssa{sv}", [args.vm_id, args.nic, opts])
        _say(args, {"tap": tap}, tap)
    elif args.cmd == "tap-delete":
        await m("DeleteTap", "ss", [args.vm_id, args.nic])
        _say(args, {"deleted": [args.vm_id, args.nic]}, f"deleted TAP of {args.vm_id} {args.nic}")
    elif args.cmd == "describe":
        (text,) = await m("Describe")
        print(text)
    elif args.cmd == "diagnose":
        status = await _diagnose(args, m)
        conn.disconnect()
        return status
    conn.disconnect()
    return 0


async def _delete_unused(args, m) -> int:
    """Every unused network (or the named ones), one DeleteNetwork each: a
    network that got a VM meanwhile is refused by fcnetd and reported, the
    rest go on. Exit 0 if all were deleted, 1 if any was refused."""
    if args.network:
        names = list(dict.fromkeys(args.network))
    else:
        (nets,) = await m("ListNetworks", "a{sv}", [{"unused": Variant("b", True)}])
        names = [n["Name"] for n in unwrap(nets)]
    if not names:
        _say(args, {"deleted": [], "refused": []}, "no unused networks.")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"fcnetctl: would delete {', '.join(names)}; give --yes to do it", file=sys.stderr)
            return 1
        answer = input(f"Delete {_plural(len(names), 'network')} ({', '.join(names)})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted.")
            return 1
    deleted, refused = [], []
    for name in names:
        try:
            await m("DeleteNetwork", "s", [name])
            deleted.append(name)
            if not args.json:
                print(f"deleted {name}")
        except DBusError as e:
            refused.append({"network": name, "error": e.type.rsplit(".", 1)[-1], "message": e.text})
            if not args.json:
                print(f"not deleted {name}: {e.text} ({refused[-1]['error']})")
    if args.json:
        json.dump({"deleted": deleted, "refused": refused}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"{_plural(len(deleted), 'network')} deleted" + (f", {len(refused)} refused." if refused else "."))
    return 1 if refused else 0


DIAGNOSE_STATUS = {"ok": 0, "fail": 1, "warn": 2}  # exit status by the worst result


async def _diagnose(args, m) -> int:
    """`diagnose NETWORK`, `--vm VM [--nic N]` or `--path VM_A VM_B`: the
    checks as a table (or --json); exit 0 all ok, 1 a check failed, 2 warnings only."""
    if args.network:
        opts = {} if args.timeout is None else {"timeout_ms": Variant("u", round(args.timeout * 1000))}
        if args.dhcp_probe:
            (rows,) = await m("ProbeDhcp", "sa{sv}", [args.network, opts])
        elif args.isolation:
            (rows,) = await m("ProbeIsolation", "sa{sv}", [args.network, opts])
        else:
            (rows,) = await m("Diagnose", "s", [args.network])
    elif args.vm:
        (rows,) = await m("DiagnoseVm", "ss", [args.vm, args.nic])
    else:
        (rows,) = await m("DiagnosePath", "ss", list(args.path))
    rows = unwrap(rows)
    results = [r["Result"] for r in rows]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_table([[r["Check"], r["Result"], r["Detail"], r["Hint"]] for r in rows],
                     ["Check", "Result", "Detail", "Hint"]))
        print()
        counts = ", ".join(f"{results.count(k)} {k}" for k in ("ok", "warn", "fail"))
        print(f"{_plural(len(rows), 'check')}: {counts}.")
    return max((DIAGNOSE_STATUS[r] for r in results), key=lambda s: (s == 1, s), default=0)


async def _props(conn, path):
    (props,) = await call(conn, BUS_NAME, path, "org.freedesktop.DBus.Properties", "GetAll", "s",
                          ["org.fcnetd.Network1.Network"])
    return unwrap(props)


def _say(args, data, text) -> None:
    print(json.dumps(data) if args.json else text)


# -- fcnetctl log: the audit trail, read from the journal -------------------------
def _journal_text(value) -> str:
    """A field of journalctl -o json: text, bytes as a list of numbers (not
    UTF-8), or a list of either when a field repeats (the last one is shown)."""
    if isinstance(value, list) and value and not all(isinstance(x, int) for x in value):
        value = value[-1]
    if isinstance(value, list):
        return bytes(value).decode(errors="replace")
    return str(value)


def _change(entry: dict) -> dict:
    """One audit entry as fcnetctl shows it: its time and its FCNETD_ fields."""
    seconds = int(_journal_text(entry.get("__REALTIME_TIMESTAMP", "0"))) / 1e6
    out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))}
    out.update({k[len("FCNETD_"):].lower(): _journal_text(v) for k, v in entry.items() if k.startswith("FCNETD_")})
    return out


def _who(change: dict) -> str:
    if "caller_uid" not in change:
        return "fcnetd"
    who = f"uid {change['caller_uid']}"
    if "caller_pid" in change:
        who += f" pid {change['caller_pid']}"
    if "caller_unit" in change:
        who += f" ({change['caller_unit']})"
    return who


def _log(args) -> int:
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        print("fcnetctl: journalctl is not installed; fcnetd's audit trail is in the systemd journal "
              "(without one, the daemon writes it to its log as lines starting with the change)", file=sys.stderr)
        return 1
    # _UID=0: a field journald sets itself. MESSAGE_ID and FCNETD_* are
    # written by the sender, so any local user can forge them; root's
    # journalctl reads users' journals too. fcnetd runs as root.
    cmd = [journalctl, "--no-pager", "-o", "json", f"MESSAGE_ID={MESSAGE_ID}", "_UID=0", "-n", str(args.n)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"fcnetctl: {' '.join(cmd[1:])} failed: {res.stderr.strip()}", file=sys.stderr)
        return 1
    changes = [_change(json.loads(ln)) for ln in res.stdout.splitlines() if ln.startswith("{")]
    if not changes:
        why = f" ({res.stderr.strip()})" if res.stderr.strip() else ""
        hint = "" if os.geteuid() == 0 else "; reading fcnetd's entries takes root or group systemd-journal"
        print(f"fcnetctl: the journal holds no fcnetd changes (MESSAGE_ID={MESSAGE_ID}){why}{hint}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(changes, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    rows = [[c["time"][:19].replace("T", " "), c.get("action", "?"), c.get("network", "-"),
             " ".join(filter(None, (c.get("vm"), c.get("nic")))) or "-", c.get("tap", "-"), _who(c),
             c.get("actor", "-")] for c in changes]
    print(_table(rows, ["Time", "Action", "Network", "VM", "TAP", "By", "Actor"]))
    print()
    print(f"{_plural(len(changes), 'change')} listed.")
    return 0


def _vlan_arg(text: str) -> int:
    # The daemon judges 1-4094; this only keeps values D-Bus type q can carry.
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: 0 (untagged) or 1-4094")
    return int(text)


def _count_arg(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100000:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} must be a number from 1 to 100000")
    return int(text)


def _destination_arg(text: str) -> str:
    try:
        return check_destination(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _port_arg(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} must be a port number from 1 to 65535")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fcnetctl", description="Manage fcnetd's networks over D-Bus")
    p.add_argument("--bus", default="system", help="system, session or a D-Bus address")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    r = p.add_argument_group("a remote host, over SSH (its system bus, through systemd-stdio-bridge there)")
    r.add_argument("--host", "-H", type=_destination_arg, metavar="[USER@]HOST",
                   help="the login must be in that host's group fcnet; its host key must be known")
    r.add_argument("--port", type=_port_arg, help="ssh port (default: ssh's)")
    r.add_argument("--identity", "-i", default="", metavar="FILE", help="ssh private key (default: ssh's)")
    r.add_argument("--known-hosts", default="", metavar="FILE",
                   help="the only known_hosts file to check the host key against (default: ssh's)")
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="list networks, newest first")
    ls.add_argument("--search", default="")
    ls.add_argument("--type", choices=["bridge", "vlan"], default="")
    ls.add_argument("--bridge", default="")
    ls.add_argument("--mode", choices=["bridge", "nat"], default="")
    ls.add_argument("--unused", action="store_true", help="only networks without a VM attached")
    sub.add_parser("show", help="one network with its VMs").add_argument("network")
    c = sub.add_parser("create", help="create a network by hand")
    c.add_argument("bridge")
    c.add_argument("--vlan", type=_vlan_arg, default=0, help="802.1Q VID 1-4094; 0 or none = untagged")
    c.add_argument("--name", default="", help="default: BRIDGE or BRIDGE-vlan-N")
    c.add_argument("--description", default="")
    c.add_argument("--mode", choices=["bridge", "nat"], default="",
                   help="bridge (default: layer 2 only) or nat (fcnetd is the gateway: DHCP, DNS, masquerade)")
    c.add_argument("--subnet", default="", help="IPv4 CIDR, /16 to /29; for nat default: a free /24 of [nat] pool")
    c.add_argument("--no-dhcp", action="store_true", help="a nat network without fcnetd's DHCP server")
    sub.add_parser("delete", help="delete a network (refused while VMs are attached)").add_argument("network")
    du = sub.add_parser("delete-unused", help="delete every network without a VM attached, or the named ones "
                                              "(each must be unused); each is reported")
    du.add_argument("network", nargs="*", help="only these (id or name)")
    du.add_argument("--yes", "-y", action="store_true", help="do not ask (needed when stdin is not a terminal)")
    du.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    a = sub.add_parser("attach", help="attach a VM NIC (auto-creates the network)")
    a.add_argument("vm_id")
    a.add_argument("bridge")
    a.add_argument("--vlan", type=_vlan_arg, default=0)
    a.add_argument("--nic", default="eth0")
    a.add_argument("--vm-name", default="")
    a.add_argument("--mac", default="", help="default on a nat network: generated, 02:...")
    a.add_argument("--ip", default="", help="a static address on a nat network; default: the lowest free")
    mv = sub.add_parser("move", help="move a VM NIC to another network; a running VM keeps its TAP")
    mv.add_argument("vm_id")
    mv.add_argument("bridge")
    mv.add_argument("--vlan", type=_vlan_arg, default=0)
    mv.add_argument("--nic", default="eth0")
    mv.add_argument("--mac", default="", help="on a nat network; default: the NIC's own (the guest's)")
    mv.add_argument("--ip", default="", help="a static address on a nat network; default: the lowest free")
    d = sub.add_parser("detach", help="detach a VM NIC")
    d.add_argument("vm_id")
    d.add_argument("--nic", default="eth0")
    t = sub.add_parser("tap-create", help="create the TAP of a VM NIC (VM start)")
    t.add_argument("vm_id")
    t.add_argument("--nic", default="eth0")
    t.add_argument("--uid", type=int)
    t.add_argument("--gid", type=int)
    td = sub.add_parser("tap-delete", help="destroy the TAP of a VM NIC (VM stop)")
    td.add_argument("vm_id")
    td.add_argument("--nic", default="eth0")
    sub.add_parser("describe", help="everything as JSON")
    dg = sub.add_parser("diagnose", help="check a network, a VM NIC or the path between two VMs "
                                         "(exit 0: all ok, 1: a check failed, 2: warnings only)")
    which = dg.add_mutually_exclusive_group(required=True)
    which.add_argument("network", nargs="?", help="the network to check (id or name)")
    probes = dg.add_mutually_exclusive_group()
    probes.add_argument("--dhcp-probe", action="store_true", help="ask the network's DHCP servers (a probe port "
                                                                  "plugs into its bridge and VLAN for the call)")
    probes.add_argument("--isolation", action="store_true", help="send frames in the (tagged) network's VLAN from a "
                                                                 "probe port and watch the bridge's other VLANs and "
                                                                 "untagged segment for them")
    dg.add_argument("--timeout", type=float, metavar="S", help="how long a probe waits (default: DHCP 2 s, "
                                                               "isolation 1 s)")
    which.add_argument("--vm", metavar="VM", help="check one VM's NICs")
    dg.add_argument("--nic", default="", help="with --vm: only this NIC")
    which.add_argument("--path", nargs=2, metavar=("VM_A", "VM_B"), help="why two VMs can or cannot talk")
    dg.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    lg = sub.add_parser("log", help="the last changes, from the audit trail in the journal (this host's)")
    lg.add_argument("-n", type=_count_arg, default=20, metavar="N", help="how many (default 20)")
    lg.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.host and args.bus != "system":
        p.error("--host and --bus name two different buses; give one")
    if not args.host and (args.port or args.identity or args.known_hosts):
        p.error("--port, --identity and --known-hosts go with --host")
    if args.cmd == "log":  # the journal, not the bus
        if args.host:
            p.error("log reads this host's journal; run it on the remote host")
        return _log(args)
    try:
        return asyncio.run(_run(args))
    except DBusError as e:
        print(f"fcnetctl: {e.text} ({e.type.rsplit('.', 1)[-1]})", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader left (fcnetctl list | head): not a bus problem
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except SshError as e:
        print(f"fcnetctl: cannot reach {args.host}'s bus: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        where = f"{args.host}'s system bus (over ssh)" if args.host else f"the {args.bus} bus"
        print(f"fcnetctl: cannot reach fcnetd on {where}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
