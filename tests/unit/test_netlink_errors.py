"""Kernel errors become domain errors by errno name AND by what was being
done to which kind of device (issue 9, item 7): ENODEV on a TAP is not
BridgeNotFound, EBUSY on an uplink is not TapExists."""

import errno

import pytest

from fcnetd import errors as E
from fcnetd.netlink import DOING, RULES, Device, translate
from pyroute2.netlink.exceptions import NetlinkError


def _nl(code):
    return NetlinkError(code, "refused")


@pytest.mark.parametrize("code,device,action,bridge,error,words", [
    (errno.ENODEV, Device("bridge", "fcbr0"), "up", "", E.BridgeNotFound, ["bridge fcbr0", "bringing it up"]),
    (errno.ENODEV, Device("tap", "vmtap123456"), "plug", "fcbr0", E.Internal,
     ["tap vmtap123456", "adding it to bridge fcbr0", "vanished"]),
    (errno.ENODEV, Device("tap", "vmtap123456"), "vlans", "", E.Internal, ["tap vmtap123456", "vanished"]),
    (errno.ENODEV, Device("uplink", "eth0"), "enslave", "fcbr0", E.Internal, ["uplink eth0", "check the uplink"]),
    (errno.EBUSY, Device("tap", "vmtap123456"), "create", "", E.TapExists, ["not created by fcnetd"]),
    (errno.EEXIST, Device("tap", "vmtap123456"), "create", "", E.TapExists, ["not created by fcnetd"]),
    (errno.EBUSY, Device("uplink", "eth0"), "enslave", "fcbr0", E.Internal,
     ["uplink eth0", "adding it to bridge fcbr0", "another master", "EBUSY"]),
    (errno.EBUSY, Device("uplink", "eth0"), "vlans", "", E.Internal, ["uplink eth0", "setting its VLANs", "EBUSY"]),
    (errno.EOPNOTSUPP, Device("bridge", "fcbr0"), "vlan_filtering", "", E.VlanUnsupported,
     ["CONFIG_BRIDGE_VLAN_FILTERING", "shared segment"]),
    (errno.EOPNOTSUPP, Device("tap", "vmtap1"), "vlans", "", E.VlanUnsupported, ["CONFIG_BRIDGE_VLAN_FILTERING"]),
    (errno.EOPNOTSUPP, Device("tap", "vmtap1"), "plug", "fcbr0", E.Internal, ["Operation not supported"]),
    (errno.EXFULL, Device("tap", "vmtap1"), "plug", "fcbr0", E.BridgeFull, ["bridge fcbr0 is full", "1,023 ports"]),
    (errno.EPERM, Device("bridge", "fcbr0"), "create", "", E.Internal, ["CAP_NET_ADMIN"]),
    (errno.ENOENT, Device("tap", "vmtap1"), "create", "", E.Internal, ["/dev/net/tun"]),
    (errno.ENOMEM, Device("tap", "vmtap1"), "persist", "", E.Internal, ["making it persistent", "ENOMEM"]),
])
def test_errno_is_translated_in_context(code, device, action, bridge, error, words):
    for exc in (_nl(code), OSError(code, "refused")):  # netlink and ioctl refusals alike
        got = translate(exc, device, action, bridge)
        assert type(got) is error, got
        assert str(got).startswith(f"{device}: ")
        for w in words:
            assert w in str(got), (w, str(got))


def test_the_engines_text_form_still_names_the_device():
    got = translate(_nl(errno.ENODEV), "uplink eth0", "vlans")
    assert type(got) is E.Internal and str(got).startswith("uplink eth0: setting its VLANs")
    assert Device.of("something odd") == Device("device", "something odd")


def test_every_rule_names_a_known_errno_and_action():
    for err, kinds, actions, _error, _reason in RULES:
        assert isinstance(getattr(errno, err, None), int), err
        assert actions is None or set(actions) <= set(DOING), actions
