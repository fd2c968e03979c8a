#!/usr/bin/env bash
# Installs what fcnetd's demo and every test tier need, on a fresh Debian 12
# machine, as root: Debian packages, then a virtualenv in .venv with the
# project installed editable. Idempotent and quick once done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  iproute2 dbus dbus-bin systemd util-linux       # ip, dbus-daemon, busctl, setpriv
  python3-venv
  qemu-system-x86 linux-image-amd64 busybox-static  # kernel tier (virtme-ng boots this kernel); udhcpc for guests
  tcpdump                                         # system tier: what reaches the "internet" namespace
  prometheus prometheus-node-exporter             # promtool, a real Prometheus, the netdev baseline
  chromium                                        # browser tier
  gcc libc6-dev                                   # bench: builds tapfloor.c, CreateTap's physical floor
  nftables python3-nftables                       # nat networks: libnftables and its binding (fcnetd/firewall.py)
  dnsmasq-base                                    # nat networks: DHCP and DNS (fcnetd/dnsmasq.py; makes user dnsmasq)
  polkitd                                         # system tier: a real polkit authority (tests/system/polkitd.py)
  openssh-server openssh-client                   # remote hosts: ssh for the web UI and fcnetctl --host; the tests' own sshd
  debootstrap e2fsprogs                           # systemd tier: the guest's Debian (tools/systemd-image.sh), mkfs.ext4 -d
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian's prometheus package starts its services where systemd runs; the
# tests start their own on loopback ports, so nothing here depends on them.

getent group fcnet >/dev/null || groupadd --system fcnet

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.fcnetd-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi

# libnftables' Python binding exists only as Debian's python3-nftables (it
# is not on PyPI, and it must match the installed libnftables1). The venv
# runs pyenv's Python, which does not see Debian's dist-packages, and must
# not see all of it (Debian's other modules would shadow the pinned ones).
# So exactly that one package is exposed: a directory in the venv holding a
# symlink to it, named by a .pth file (relative: the venv may move with
# its checkout).
mkdir -p .venv/debian-nftables
ln -sfn /usr/lib/python3/dist-packages/nftables .venv/debian-nftables/nftables
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "../../../debian-nftables" > "$site/debian-nftables.pth"
