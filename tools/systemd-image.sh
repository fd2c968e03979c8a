#!/usr/bin/env bash
# Builds (or finds in the cache) the systemd tier's guest: a Debian 12 root
# file system image with systemd as PID 1, a system bus, udev, polkitd and
# what the README's install section asks apt for, plus the host's modules
# for the /boot kernel the guest boots. Prints the image's path.
#
# Usage: tools/systemd-image.sh [CACHE_DIR]   (default /var/cache/fcnetd-tests)
#
# Why this shape (issue 11 measured the alternatives):
# - debootstrap from the Debian mirror, not virtme-ng's view of this host:
#   a real /sbin/init, a writable root and nothing of the host leaking in.
# - mkfs.ext4 -d turns the tree into an image without mounting anything.
# - udev is included: without it systemd waits 90 s for /dev/ttyS0 and the
#   virtio-serial port the test agent talks over never gets its name.
# - The image is keyed by a hash of the package list, this script, the
#   agent and the kernel version; a warm run only checks that it exists.
#   Every run boots it with snapshot=on, so the cached file never changes.
# - The two stages are cached apart: the debootstrap tree (the slow, network
#   part, keyed by the package list alone) and the image made from it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${1:-/var/cache/fcnetd-tests}
SUITE=bookworm
MIRROR=${FCNETD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
KVER=$(basename "$(ls /boot/vmlinuz-*-amd64 | sort -V | tail -n1)" | sed 's/^vmlinuz-//')
# What the guest needs before the README runs: systemd with a bus, udev,
# polkit; and every package the README's apt line names, because the guest
# has no network (its `apt install` then finds them installed). curl is the
# tests' HTTP client, busybox their DHCP client (udhcpc).
PACKAGES=(
  systemd-sysv dbus udev libpam-systemd polkitd kmod procps
  python3 python3-venv python3-pip
  iproute2 nftables python3-nftables dnsmasq-base
  curl busybox-static
)
AGENT="$ROOT/tests/systemd/agent.py"

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9   # one builder at a time; a second waits and then finds the result

tree_key=$(printf '%s\n' "$SUITE" "$MIRROR" "${PACKAGES[@]}" | sha256sum | cut -c1-16)
tree_tar="$CACHE/debootstrap-$SUITE-$tree_key.tar"
image_key=$(cat "$0" "$AGENT" <(echo "$tree_key $KVER") | sha256sum | cut -c1-16)
image="$CACHE/guest-$SUITE-$KVER-$image_key.img"
if [ -f "$image" ]; then
  echo "$image"
  exit 0
fi

work=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
tree="$work/tree"
mkdir "$tree"
if [ ! -f "$tree_tar" ]; then
  t0=$(date +%s)
  debootstrap --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    "$SUITE" "$tree" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  tar -C "$tree" -cf "$tree_tar.tmp" . && mv "$tree_tar.tmp" "$tree_tar"
  echo "systemd-image: debootstrap took $(( $(date +%s) - t0 )) s" >&2
else
  tar -C "$tree" -xf "$tree_tar"
fi

# The kernel's modules (bridge, tun, 8021q, nf_tables, virtio, 9p); the
# kernel and initrd themselves are passed to QEMU from /boot.
mkdir -p "$tree/usr/lib/modules"
cp -a "/usr/lib/modules/$KVER" "$tree/usr/lib/modules/"

echo fcnetd-guest >"$tree/etc/hostname"
echo "127.0.1.1 fcnetd-guest" >>"$tree/etc/hosts"
# Root comes rw from the kernel command line; nothing else to mount.
: >"$tree/etc/fstab"
# No network to the outside: apt must not try a mirror it cannot reach.
rm -f "$tree/etc/apt/sources.list"
ln -sf /dev/null "$tree/etc/systemd/system/apt-daily.timer"
ln -sf /dev/null "$tree/etc/systemd/system/apt-daily-upgrade.timer"
# A known root password is never needed: the agent is the way in.
# The agent: runs the tests' commands, started as soon as its port exists.
install -m755 "$AGENT" "$tree/usr/local/sbin/fcnetd-test-agent"
cat >"$tree/etc/systemd/system/fcnetd-test-agent.service" <<'UNIT'
[Unit]
Description=fcnetd systemd tier: runs the host's commands (virtio-serial port "agent")
DefaultDependencies=no
BindsTo=dev-virtio\x2dports-agent.device
After=dev-virtio\x2dports-agent.device

[Service]
ExecStart=/usr/local/sbin/fcnetd-test-agent /dev/virtio-ports/agent

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/fcnetd-test-agent.service \
  "$tree/etc/systemd/system/multi-user.target.wants/fcnetd-test-agent.service"

truncate -s 3G "$work/image"
mkfs.ext4 -q -F -L fcnetd-guest -d "$tree" "$work/image"
mv "$work/image" "$image"
# Older images and trees of this tier (other keys) are of no further use.
find "$CACHE" -maxdepth 1 \( \( -name "guest-*.img" ! -path "$image" \) -o \
  \( -name "debootstrap-*.tar" ! -path "$tree_tar" \) \) -delete
echo "$image"
