#!/bin/sh
# Creates turn-dataplane's exception port as a veth pair (dataplane/README.md
# "Ports"): the kernel end holds the relay IP(s), so turn-relay's sockets and
# the kernel (ARP/ND, ICMP, TCP, TLS) see what the dataplane punts; the
# dataplane drives the other end with AF_XDP (--vdev=net_af_xdp1,iface=...).
# Idempotent. Run as root (turn-exception-port.service runs it at boot).
#
#   setup-exception-port.sh [--dry-run] [--kernel-if exc0-k] [--dataplane-if exc0-d] [--mtu M] ADDR/LEN[@VLAN]...
#
# --mtu M (576-9216): the MTU of both ends (and of the VLAN devices); it must
# equal turn-dataplane's --mtu, which refuses to start otherwise. Without it,
# or with an empty M, the MTU is left as it is (1500 on a new pair).
# ADDR/LEN: the relay's addresses with their prefix length (203.0.113.10/24,
# 2001:db8::10/64): turn-relay's listen and [server].relay_ips. The NIC itself
# keeps no IP address in the kernel.
# @VLAN (1-4094): the address is on that 802.1Q VLAN of the NIC's link (a
# trunk port): it goes on a VLAN device of the kernel end (exc0-k.VLAN),
# whose neighbours turn-dataplane's next hops then carry the tag of
# (dataplane/README.md "VLANs"). Needs the kernel's 8021q support.
#
# Exit codes: 0 done (or nothing to do), 1 failed, 2 bad arguments.
set -eu

prog=setup-exception-port.sh
kif=exc0-k
dif=exc0-d
dry=0
mtu=""
addrs=""

bad() {
    echo "$prog: $*" >&2
    echo "usage: $prog [--dry-run] [--kernel-if NAME] [--dataplane-if NAME] [--mtu M] ADDR/LEN[@VLAN]..." >&2
    exit 2
}
fail() {
    echo "$prog: $*" >&2
    exit 1
}
say() {
    echo "$prog: $*"
}
run() {
    if [ "$dry" -eq 1 ]; then
        say "would run: $*"
    else
        "$@" || fail "failed: $*"
    fi
}
ifname_ok() {
    case $1 in
        '' | *[!A-Za-z0-9_.-]* | ????????????????*) return 1 ;;
    esac
}

while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry=1 ;;
        --kernel-if | --dataplane-if)
            [ $# -ge 2 ] || bad "$1 needs an interface name"
            ifname_ok "$2" || bad "$1: '$2' is not an interface name (at most 15 of A-Z a-z 0-9 _ . -)"
            if [ "$1" = --kernel-if ]; then kif=$2; else dif=$2; fi
            shift
            ;;
        --mtu)
            [ $# -ge 2 ] || bad "--mtu needs a number"
            # Empty: leave the MTU as it is (an /etc/default/turn-dataplane
            # from before EXC_MTU existed gives the unit an empty ${EXC_MTU}).
            if [ -n "$2" ]; then
                case $2 in
                    *[!0-9]* | 0* | ?????*) bad "--mtu '$2': a number from 576 to 9216" ;;
                esac
                { [ "$2" -ge 576 ] && [ "$2" -le 9216 ]; } || bad "--mtu '$2': a number from 576 to 9216"
            fi
            mtu=$2
            shift
            ;;
        -*) bad "unknown option $1" ;;
        */*) addrs="$addrs $1" ;;
        *) bad "'$1': give the address with its prefix length, e.g. 203.0.113.10/24 or 2001:db8::10/64" ;;
    esac
    shift
done
[ -n "$addrs" ] || bad "which relay address(es)? e.g. 203.0.113.10/24"
[ "$kif" != "$dif" ] || bad "--kernel-if and --dataplane-if must differ"
vlans=""
for a in $addrs; do
    case $a in
        *@*)
            v=${a##*@}
            case $v in
                '' | *[!0-9]* | 0* | ?????*) bad "'$a': the VLAN after @ is a number from 1 to 4094" ;;
            esac
            [ "$v" -le 4094 ] || bad "'$a': the VLAN after @ is a number from 1 to 4094"
            ifname_ok "$kif.$v" || bad "'$a': the VLAN device $kif.$v needs a shorter --kernel-if (at most 15 characters in all)"
            case " $vlans " in *" $v "*) ;; *) vlans="$vlans $v" ;; esac
            ;;
    esac
done
command -v ip >/dev/null 2>&1 || fail "ip not found: install iproute2"
[ "$dry" -eq 1 ] || [ "$(id -u)" -eq 0 ] || fail "run as root, or use --dry-run"

if ip link show dev "$kif" >/dev/null 2>&1; then
    peer=$(ip -o link show dev "$kif" | sed -n 's/^[0-9]*: [^@]*@\([^:]*\):.*/\1/p')
    ip -d link show dev "$kif" | grep -q ' veth ' || fail "$kif exists and is not a veth: choose another --kernel-if"
    [ "$peer" = "$dif" ] || fail "$kif exists but its peer is '${peer:-?}', not $dif: delete it (ip link del $kif) or choose other names"
    say "veth pair $kif / $dif exists already"
else
    ip link show dev "$dif" >/dev/null 2>&1 && fail "$dif exists but $kif does not: delete $dif or choose other names"
    run ip link add "$kif" type veth peer name "$dif"
fi
for v in $vlans; do
    if ip link show dev "$kif.$v" >/dev/null 2>&1; then
        ip -d link show dev "$kif.$v" | grep -q "^[0-9]*: $kif\.$v@$kif:" &&
            ip -d link show dev "$kif.$v" | grep -q "vlan protocol 802.1Q id $v " ||
            fail "$kif.$v exists and is not VLAN $v of $kif: delete it (ip link del $kif.$v)"
        say "VLAN device $kif.$v exists already"
    elif [ "$dry" -eq 1 ]; then
        say "would run: ip link add link $kif name $kif.$v type vlan id $v"
    else
        ip link add link "$kif" name "$kif.$v" type vlan id "$v" ||
            fail "failed: ip link add link $kif name $kif.$v type vlan id $v (the kernel needs 802.1Q VLAN support: modprobe 8021q)"
    fi
done
for a in $addrs; do
    dev=$kif
    case $a in
        *@*)
            dev=$kif.${a##*@}
            a=${a%@*}
            ;;
    esac
    case $a in
        *:*) fam=-6 ;;
        *) fam=-4 ;;
    esac
    if ip "$fam" -o addr show dev "$dev" 2>/dev/null | grep -q " $a "; then
        say "$dev has $a already"
    else
        # nodad: the relay's address must be usable at once (turn-relay binds it).
        if [ "$fam" = -6 ]; then
            run ip -6 addr add "$a" dev "$dev" nodad
        else
            run ip -4 addr add "$a" dev "$dev"
        fi
    fi
done
# The dataplane sends the kernel's egress out the NIC as it is: the kernel
# must fill in checksums itself, not leave them to a veth "offload", and
# (with VLANs) write tags, 802.1Q and 802.1ad, into the frame rather than
# beside it, where an AF_XDP socket would not see them.
off="tx off"
[ -z "$vlans" ] || off="tx off txvlan off tx-vlan-stag-hw-insert off"
if command -v ethtool >/dev/null 2>&1; then
    if [ "$dry" -eq 1 ]; then
        say "would run: ethtool -K $kif $off"
    else
        # shellcheck disable=SC2086  # $off is several words on purpose
        ethtool -K "$kif" $off >/dev/null || fail "failed: ethtool -K $kif $off"
    fi
else
    say "warning: ethtool not found (package ethtool): run ethtool -K $kif $off yourself"
fi
# Lower device first: a VLAN device's MTU cannot exceed its lower's.
if [ -n "$mtu" ]; then
    for dev in "$kif" "$dif"; do
        run ip link set "$dev" mtu "$mtu"
    done
    for v in $vlans; do
        run ip link set "$kif.$v" mtu "$mtu"
    done
fi
run ip link set "$dif" up
run ip link set "$kif" up
for v in $vlans; do
    run ip link set "$kif.$v" up
done
[ "$dry" -eq 1 ] || say "exception port ready: $kif (${addrs# }) <-> $dif"
