#!/bin/sh
# Installs what tests/container needs when it is missing: Debian's podman (with runc, since
# crun refuses some hosts' hybrid cgroup layout), its network stack (netavark sets up the
# compose network's bridge with iptables: without it no container starts), podman-compose, and
# mmdebstrap (base images are built locally; no image registry is needed).
set -eu
packages="podman runc mmdebstrap podman-compose slirp4netns netavark aardvark-dns iptables"
missing=""
for cmd in podman runc mmdebstrap podman-compose slirp4netns; do
    command -v "$cmd" >/dev/null 2>&1 || missing="$missing $cmd"
done
[ -x /usr/lib/podman/netavark ] || missing="$missing netavark"
[ -x /usr/lib/podman/aardvark-dns ] || missing="$missing aardvark-dns"
[ -x /usr/sbin/iptables ] || missing="$missing iptables"
[ -z "$missing" ] && exit 0
echo "ensure-podman: missing:$missing; installing Debian's$(printf ' %s' $packages)"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq $packages >/dev/null
