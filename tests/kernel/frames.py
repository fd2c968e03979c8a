"""Ethernet frames through TAP file descriptors and AF_PACKET sockets: the
VM's view of the network, used to prove isolation rather than assume it."""

from __future__ import annotations

import os
import select
import socket
import struct
import time

from fcnetd.tundev import open_tap

ETHERTYPE = 0x88B5  # IEEE local experimental: nothing else on the wire uses it
TPID = 0x8100
BROADCAST = b"\xff" * 6
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 0x10
ETH_P_ALL = 0x0003


def read_until(fileobj, wait: float, read_one) -> list:
    """Everything queued now, plus what arrives within `wait` seconds; read_one
    returns one frame or raises BlockingIOError."""
    out, deadline = [], time.monotonic() + wait
    while select.select([fileobj], [], [], max(0.0, deadline - time.monotonic()))[0]:
        try:
            while True:
                got = read_one()
                if got:
                    out.append(got)
        except BlockingIOError:
            pass
    return out


def mac(n: int) -> bytes:
    return bytes([0x02, 0xFC, 0, 0, (n >> 8) & 0xFF, n & 0xFF])


def frame(dst: bytes, src: bytes, marker: str, vid: int | None = None) -> bytes:
    tag = struct.pack("!HH", TPID, vid) if vid is not None else b""
    payload = marker.encode().ljust(46, b"\0")
    return dst + src + tag + struct.pack("!H", ETHERTYPE) + payload


def parse(data: bytes, aux_vid: int | None = None) -> tuple[int | None, str] | None:
    """(VLAN id or None, marker) of one of our frames, else None."""
    vid = aux_vid
    etype = struct.unpack("!H", data[12:14])[0]
    body = 14
    if etype == TPID:
        vid = struct.unpack("!H", data[14:16])[0] & 0x0FFF
        etype = struct.unpack("!H", data[16:18])[0]
        body = 18
    if etype != ETHERTYPE:
        return None
    return vid, data[body:].rstrip(b"\0").decode(errors="replace")


class Endpoint:
    """A VM stand-in on a TAP: writes and reads raw frames through its fd."""

    def __init__(self, name: str, tap: str, n: int):
        self.name, self.tap, self.mac = name, tap, mac(n)
        self.fd = open_tap(tap)
        os.set_blocking(self.fd, False)

    def send(self, dst: bytes, marker: str) -> None:
        os.write(self.fd, frame(dst, self.mac, marker))

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def received(self, wait: float) -> list[tuple[int | None, str]]:
        return [got for got in (parse(data) for _, data in self.raw(wait)) if got]

    def raw(self, wait: float) -> list[tuple[None, bytes]]:
        """Every frame as it came, (None, bytes): a TAP hands tags over inline."""
        return read_until(self.fd, wait, lambda: (None, os.read(self.fd, 65536)))

    def drain(self) -> None:
        self.received(0.05)

    def close(self) -> None:
        os.close(self.fd)


class Wire:
    """The far end of an uplink (a veth peer): sees tags as a switch would."""

    def __init__(self, ifname: str):
        self.ifname = ifname
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        self.sock.bind((ifname, 0))
        self.sock.setblocking(False)

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def received(self, wait: float) -> list[tuple[int | None, str]]:
        return [got for got in (parse(data, vid) for vid, data in self.raw(wait)) if got]

    def raw(self, wait: float) -> list[tuple[int | None, bytes]]:
        """Every frame as (VID the kernel took off it, or None; bytes)."""
        return read_until(self.sock, wait, self._read_one)

    def _read_one(self) -> tuple[int | None, bytes]:
        data, anc, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(20))
        aux_vid = None
        for level, kind, value in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA:
                status, _len, _snap, _mac, _net, tci = struct.unpack("=IIIHHH", value[:18])
                if status & TP_STATUS_VLAN_VALID:
                    aux_vid = tci & 0x0FFF
        return aux_vid, data

    def close(self) -> None:
        self.sock.close()
