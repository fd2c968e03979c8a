"""Writes dbus/org.fcnetd.Network1.{Manager,Network}.xml from the service
classes. Run after changing the API; a system test compares the files with
the live daemon, so a forgotten run fails the suite."""

import os
import sys
import types
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fcnetd.service import Manager, NetworkObject  # noqa: E402

HEAD = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
        ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
        '<!-- org.fcnetd.Network1.{kind} (contract). A system test compares this file with\n'
        "     the live daemon's introspection; the README documents every member. -->\n")

for iface, kind in ((Manager(types.SimpleNamespace(), None), "Manager"),
                    (NetworkObject(None, None, None), "Network")):
    root = ET.Element("node")
    root.append(iface.introspect().to_xml())
    ET.indent(root, "  ")
    with open(os.path.join(ROOT, "dbus", f"org.fcnetd.Network1.{kind}.xml"), "w") as f:
        f.write(HEAD.format(kind=kind) + ET.tostring(root, encoding="unicode") + "\n")
