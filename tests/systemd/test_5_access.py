"""The system bus refuses a process of a user outside fcnet."""

import re

import pytest

pytestmark = pytest.mark.systemd
MANAGER = "org.fcnetd.Network1 /org/fcnetd/Network1 org.fcnetd.Network1.Manager"


def test_a_user_outside_fcnet_is_refused_a_manage_call(configured):
    g = configured
    r = g.run(f"setpriv --reuid=nobody --regid=nogroup --clear-groups "
              f"busctl --system call {MANAGER} CreateNetwork ssqa{{sv}} outsider fcbr1 0 0")
    # busctl prints the error's message: the bus policy's "Rejected send message"
    # or the daemon's own refusal; either way the call failed and nothing was made
    assert r.rc != 0 and re.search(r"denied|rejected", r.stderr, re.I), str(r)
    assert "outsider" not in g.ok("fcnetctl list")


def test_a_member_of_fcnet_may_make_the_same_call(configured):
    g = configured
    g.ok(f"runuser -u launcher -- busctl --system call {MANAGER} CreateNetwork ssqa{{sv}} insider fcbr1 0 0")
    assert "insider" in g.ok("fcnetctl list")
