#!/bin/sh
# Binds a PCI NIC to vfio-pci for turn-dataplane, and gives it back to its
# kernel driver (deploy/README.md). A wrapper around dpdk-devbind.py (package
# dpdk) that checks first what makes binding fail or hurt:
#   - the device exists (PCI address, or a kernel interface name);
#   - it does not carry the host's default route (binding it would cut the
#     host off the network; --force overrides);
#   - vfio-pci is loaded or loadable, and the device sits in an IOMMU group
#     (or VFIO's unsafe no-IOMMU mode is on, which is reported);
# and checks afterwards that the device is on the driver asked for.
# Idempotent: a device already on the driver asked for is left alone.
#
#   bind-nic.sh [--dry-run] [--force] bind DEVICE [--driver vfio-pci]
#   bind-nic.sh [--dry-run] restore DEVICE [--driver KERNEL_DRIVER]
#   bind-nic.sh status
#
#   DEVICE         PCI address (0000:01:00.0 or 01:00.0) or interface name (eth1)
#   bind           to vfio-pci (or --driver: igb_uio, uio_pci_generic); the
#                  kernel driver it leaves is recorded in /run/turn-nic/
#   restore        back to the recorded kernel driver (or --driver: ixgbe, i40e,
#                  ice, mlx5_core, ...)
#   --dry-run      print the checks and the dpdk-devbind.py command, change nothing
#   --force        bind even a device that carries the default route
#
# Exit codes: 0 done (or nothing to do), 1 a check or the binding failed,
# 2 bad arguments. TURN_SYSFS, TURN_DEVBIND and TURN_NIC_STATE (tests only)
# replace /sys, /usr/bin/dpdk-devbind.py and /run/turn-nic.
set -eu

prog=bind-nic.sh
sysfs=${TURN_SYSFS:-/sys}
devbind=${TURN_DEVBIND:-/usr/bin/dpdk-devbind.py}
state=${TURN_NIC_STATE:-/run/turn-nic}
dry=0
force=0
action=""
device=""
driver=""

bad() {
    echo "$prog: $*" >&2
    echo "usage: $prog [--dry-run] [--force] bind|restore DEVICE [--driver NAME] | status" >&2
    exit 2
}
fail() {
    echo "$prog: $*" >&2
    exit 1
}
say() {
    echo "$prog: $*"
}

while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry=1 ;;
        --force) force=1 ;;
        --driver)
            [ $# -ge 2 ] || bad "--driver needs a driver name"
            driver=$2
            shift
            ;;
        --driver=*) driver=${1#--driver=} ;;
        -h | --help)
            sed -n '14,27s/^# \{0,1\}//p' "$0"
            exit 0
            ;;
        -*) bad "unknown option $1" ;;
        *)
            if [ -z "$action" ]; then
                action=$1
            elif [ -z "$device" ]; then
                device=$1
            else
                bad "unexpected argument '$1'"
            fi
            ;;
    esac
    shift
done

[ -x "$devbind" ] || fail "$devbind not found: install the dpdk package (apt-get install dpdk)"

case $action in
    status)
        exec "$devbind" --status-dev net
        ;;
    bind | restore) ;;
    "") bad "bind, restore or status?" ;;
    *) bad "unknown action '$action' (bind, restore or status)" ;;
esac
[ -n "$device" ] || bad "$action which device? give a PCI address (0000:01:00.0) or an interface name"
case $driver in
    *[!A-Za-z0-9_-]*) bad "'$driver' is not a driver name" ;;
esac

# Resolve DEVICE to a full PCI address.
case $device in
    [0-9a-fA-F][0-9a-fA-F]:[0-9a-fA-F][0-9a-fA-F].[0-7]) pci=0000:$device ;;
    [0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]:[0-9a-fA-F][0-9a-fA-F]:[0-9a-fA-F][0-9a-fA-F].[0-7]) pci=$device ;;
    *[!A-Za-z0-9_.-]* | .*) bad "'$device' is neither a PCI address (0000:01:00.0) nor an interface name" ;;
    *)
        [ -e "$sysfs/class/net/$device" ] ||
            fail "no network interface '$device' (and not a PCI address like 0000:01:00.0); list NICs with: $prog status"
        # The interface's device, or one of its parents (virtio-net sits
        # below its PCI function), is the PCI function.
        link=$(readlink -f "$sysfs/class/net/$device/device" 2>/dev/null) ||
            fail "interface '$device' has no device (virtual interface?): not a PCI NIC"
        pci=$(echo "$link" | tr '/' '\n' |
            grep -E '^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$' | tail -n 1) || true
        if [ -z "$pci" ] || [ ! -e "$sysfs/bus/pci/devices/$pci" ]; then
            fail "interface '$device' is not on a PCI device ($link)"
        fi
        ;;
esac
pci=$(echo "$pci" | tr 'A-F' 'a-f')
dev="$sysfs/bus/pci/devices/$pci"
[ -e "$dev" ] || fail "no PCI device $pci ($dev missing); list NICs with: $prog status"

current_driver() {
    if [ -e "$dev/driver" ]; then
        basename "$(readlink -f "$dev/driver")"
    fi
}
now=$(current_driver)

if [ "$action" = bind ]; then
    target=${driver:-vfio-pci}
else
    target=$driver
    if [ -z "$target" ] && [ -f "$state/$pci.driver" ]; then
        target=$(cat "$state/$pci.driver")
    fi
    [ -n "$target" ] ||
        fail "$pci: which kernel driver to restore? none was recorded by '$prog bind' in $state; pass --driver (e.g. ixgbe, i40e, ice, mlx5_core)"
fi

if [ "$now" = "$target" ]; then
    say "$pci is bound to $target already"
    exit 0
fi

if [ "$action" = bind ]; then
    # Interfaces the kernel driver made for this device: none may carry the
    # default route, or this host loses its network.
    devpath=$(readlink -f "$dev")
    for net in "$sysfs"/class/net/*; do
        [ -e "$net/device" ] || continue
        case $(readlink -f "$net/device")/ in
            "$devpath"/*) ;;
            *) continue ;;
        esac
        ifc=$(basename "$net")
        if ip -4 route show default 2>/dev/null | grep -q " dev $ifc\( \|$\)" ||
            ip -6 route show default 2>/dev/null | grep -q " dev $ifc\( \|$\)"; then
            if [ "$force" -eq 1 ]; then
                say "warning: $pci ($ifc) carries the default route; binding it anyway (--force): this host loses that network"
            else
                fail "refusing to bind $pci: its interface $ifc carries the default route (this host would lose its network); use another NIC, or --force"
            fi
        fi
        say "$pci is interface $ifc"
    done
    case $target in
        vfio-pci)
            if [ ! -d "$sysfs/bus/pci/drivers/vfio-pci" ]; then
                if command -v modprobe >/dev/null 2>&1 && modprobe -n -q vfio-pci 2>/dev/null; then
                    if [ "$dry" -eq 1 ]; then
                        say "would load vfio-pci: modprobe vfio-pci"
                    else
                        modprobe vfio-pci || fail "modprobe vfio-pci failed"
                    fi
                else
                    fail "vfio-pci is not loaded and cannot be loaded (no module vfio-pci for kernel $(uname -r), or no modprobe): boot a kernel with VFIO (Debian's linux-image-amd64 has it)"
                fi
            fi
            if [ -e "$dev/iommu_group" ]; then
                say "$pci is in IOMMU group $(basename "$(readlink -f "$dev/iommu_group")")"
            elif [ "$(cat "$sysfs/module/vfio/parameters/enable_unsafe_noiommu_mode" 2>/dev/null)" = Y ]; then
                say "warning: $pci has no IOMMU group; VFIO's unsafe no-IOMMU mode is on (DMA is not isolated)"
            else
                fail "$pci has no IOMMU group, so vfio-pci cannot take it: enable the IOMMU (VT-d / AMD-Vi in the firmware, intel_iommu=on iommu=pt on the kernel command line), or, without one, enable_unsafe_noiommu_mode=1 of module vfio (insecure)"
            fi
            ;;
    esac
    if [ "$dry" -eq 0 ] && [ -n "$now" ]; then
        mkdir -p "$state" || fail "cannot create $state"
        echo "$now" >"$state/$pci.driver"
    fi
fi

args="-b $target"
[ "$force" -eq 1 ] && args="$args --force"
if [ "$dry" -eq 1 ]; then
    say "would bind $pci (now ${now:-no driver}) to $target: $devbind $args $pci"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || [ -n "${TURN_SYSFS:-}" ] || fail "run as root (it rebinds a PCI device), or use --dry-run"
# shellcheck disable=SC2086
"$devbind" $args "$pci" || fail "$devbind $args $pci failed"
got=$(current_driver)
[ "$got" = "$target" ] || fail "$pci is on ${got:-no driver} after $devbind, not $target"
say "$pci bound to $target (was ${now:-no driver})"
