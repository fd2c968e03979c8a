"""A VM's network card without a VM: copies Ethernet frames between a TAP of
fcnetd's, opened as Firecracker opens it, and a new TAP `eth0` in another
network namespace. That namespace then sees the network as a guest does
(DHCP, ARP, everything on the wire), so a test or the demo can prove what a
VM would get without booting one.

Both ends are opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a 12-byte
virtio-net header (virtio_net_hdr_v1, what Firecracker sets). Neither end
enables offloads, as for a guest that negotiated none, so the header is
passed through untouched in both directions: it means the same thing on
both sides.

    python -m fcnetd.relay vmtap0 --tap-netns fcnetd-demo --netns guest

prints "ready" once both ends are open, then relays until killed, until
its parent exits (PR_SET_PDEATHSIG) or until fcnetd deletes the TAP. The
guest's TAP lives only as long as the relay.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import os
import select
import signal
import struct
import sys

from .tundev import IFF_TUN_EXCL, VM_FLAGS, open_tap

TUNSETVNETHDRSZ = 0x400454D8
VNET_HDR_LEN = 12
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
# A frame as a TAP without offloads hands it over: header + MTU-sized frame
# fits easily; 64 KiB leaves room for a larger MTU.
READ_SIZE = 65536 + VNET_HDR_LEN

_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name: str) -> None:
    """Moves this (single-threaded) process into the namespace `ip netns add` made."""
    with open(os.path.join("/run/netns", name)) as f:
        if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {name}: {os.strerror(err)}")


def open_vm_side(name: str, create: bool = False) -> int:
    """A TAP queue as Firecracker opens it; with create, a new TAP (EBUSY if
    the name exists), gone when the fd closes."""
    fd = open_tap(name, VM_FLAGS | (IFF_TUN_EXCL if create else 0))
    try:
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
    except OSError:
        os.close(fd)
        raise
    os.set_blocking(fd, False)
    return fd


def _copy(src: int, dst: int) -> None:
    """Everything queued on src, written to dst. A frame dst refuses (EIO
    while its link is down, ENOBUFS) is dropped, as a NIC drops it."""
    while True:
        try:
            frame = os.read(src, READ_SIZE)
        except BlockingIOError:
            return
        try:
            os.write(dst, frame)
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno not in (errno.EIO, errno.ENOBUFS):
                raise


def relay(vm_fd: int, guest_fd: int) -> None:
    """Returns when fcnetd deletes the VM's TAP (reads fail with EBADFD)."""
    peer = {vm_fd: guest_fd, guest_fd: vm_fd}
    poller = select.poll()
    for fd in peer:
        poller.register(fd, select.POLLIN)
    while True:
        for fd, events in poller.poll():
            if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                return
            try:
                _copy(fd, peer[fd])
            except OSError as e:
                if e.errno == errno.EBADFD:
                    return
                raise


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fcnetd.relay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tap", help="the VM's TAP (made by fcnetd's CreateTap)")
    p.add_argument("--tap-netns", default="", help="the TAP's network namespace (default: this one)")
    p.add_argument("--netns", required=True, help="the guest's network namespace (ip netns add)")
    p.add_argument("--ifname", default="eth0", help="the guest's interface, created here (default eth0)")
    args = p.parse_args(argv)
    # A relay outliving whoever started it would hold the VM's TAP open.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # Ctrl-C in the demo reaches the whole process group: end as quietly as on SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        if args.tap_netns:
            enter_netns(args.tap_netns)
        vm_fd = open_vm_side(args.tap)
        enter_netns(args.netns)
        guest_fd = open_vm_side(args.ifname, create=True)
    except OSError as e:
        print(f"fcnetd-relay: {e}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    relay(vm_fd, guest_fd)
    print(f"fcnetd-relay: {args.tap} is gone; stopping", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
