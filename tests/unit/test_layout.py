"""Each external library is imported in exactly one module of fcnetd/, so it
can be swapped there (ARCHITECTURE.md, "Libraries")."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "fcnetd"
OWNERS = {"pyroute2": "netlink.py", "dbus_fast": "bus.py", "sdnotify": "notify.py", "pyinotify": "watch.py",
          "prometheus_client": "metrics.py", "nftables": "firewall.py"}


def test_each_library_has_one_importing_module():
    importers: dict[str, set[str]] = {lib: set() for lib in OWNERS}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in importers:
                    importers[top].add(path.name)
    assert importers == {lib: {module} for lib, module in OWNERS.items()}
