"""/dev/net/tun ioctls: the one kernel interface for TAPs that is not netlink.

The kernel refuses to create TUN/TAP devices over rtnetlink, so creation
goes through TUNSETIFF. IFF_TUN_EXCL makes it fail with EBUSY when the name
exists, so fcnetd can never attach itself to a device it did not create.
A new TAP lives only as long as the fd that made it, until TUNSETPERSIST:
fcnetd sets that last, once the TAP is tagged as its own.
"""

from __future__ import annotations

import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
TUNSETCARRIER = 0x400454E2
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000
TUN_DEVICE = "/dev/net/tun"

# Firecracker opens its TAP with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR.
VM_FLAGS = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR


def _ifreq(name: str, flags: int) -> bytes:
    return struct.pack("16sH22x", name.encode(), flags)


def create_tap(name: str, uid: int | None, gid: int | None) -> int:
    """Creates a TAP owned by uid/gid and returns the fd that holds it;
    OSError(EBUSY) if the name exists. Its carrier is off while fcnetd holds
    it: raised with our queue attached and carrier on, it would get IPv6
    addresses, routes and MLD joins the kernel must undo again when we let
    go (1,000 VM stops took twice as long); a VMM's open turns it on. The TAP is not persistent: it
    vanishes when the fd is closed, by anyone or by the process dying, until
    make_persistent(fd). So a crash before the caller has tagged it leaves
    no device behind."""
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, VM_FLAGS | IFF_TUN_EXCL))
        if uid is not None:
            fcntl.ioctl(fd, TUNSETOWNER, uid)
        if gid is not None:
            fcntl.ioctl(fd, TUNSETGROUP, gid)
        fcntl.ioctl(fd, TUNSETCARRIER, struct.pack("i", 0))
    except OSError:
        os.close(fd)
        raise
    return fd


def make_persistent(fd: int) -> None:
    """Makes the TAP held by fd outlive it (the fd stays open)."""
    fcntl.ioctl(fd, TUNSETPERSIST, 1)


def open_tap(name: str, flags: int = IFF_TAP | IFF_NO_PI) -> int:
    """Opens an existing TAP the way a VMM does; returns the queue's fd."""
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, flags))
    except OSError:
        os.close(fd)
        raise
    return fd
