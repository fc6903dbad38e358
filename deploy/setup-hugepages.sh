#!/bin/sh
# Reserves 2 MiB hugepages for turn-dataplane and mounts hugetlbfs
# (deploy/README.md). Idempotent: a second run with the same arguments changes
# nothing. Run as root (turn-hugepages.service runs it at boot).
#
#   setup-hugepages.sh [--dry-run] [--mount DIR | --no-mount] PAGES
#   setup-hugepages.sh [--dry-run] [--mount DIR | --no-mount] NODE:PAGES...
#
#   PAGES        total number of 2 MiB pages (the kernel spreads them over the
#                NUMA nodes)
#   NODE:PAGES   pages on one NUMA node, e.g. 0:1024 1:512 (DPDK allocates on
#                the NIC's node: put them there)
#   --mount DIR  mount hugetlbfs (pagesize=2M) at DIR unless a 2 MiB hugetlbfs
#                is mounted there already (default /dev/hugepages, which
#                Debian's systemd mounts at boot)
#   --no-mount   only reserve
#   --dry-run    print what would be done, change nothing
#
# Sets the count to exactly PAGES (lowering it frees only unused pages; pages
# in use stay until their process exits) and checks that the kernel really
# reserved them: after boot, memory may be too fragmented to find enough
# contiguous 2 MiB blocks; then the script fails and says to reserve them on
# the kernel command line (hugepages=N). 1 GiB pages must be reserved there
# anyway (hugepagesz=1G hugepages=N).
#
# Why not dpdk-hugepages.py (package dpdk): it has no dry run, does not check
# what the kernel granted, and its --setup unmounts and clears pages a running
# DPDK process may hold. This script uses the same sysfs files directly.
#
# Exit codes: 0 done (or nothing to do), 1 failed, 2 bad arguments.
# TURN_SYSFS (tests only) replaces /sys.
set -eu

prog=setup-hugepages.sh
sysfs=${TURN_SYSFS:-/sys}
kb=2048
dry=0
mount_dir=/dev/hugepages
do_mount=1
specs=""

usage() {
    sed -n '6,17s/^# \{0,1\}//p' "$0" >&2
}
bad() {
    echo "$prog: $*" >&2
    echo "usage: $prog [--dry-run] [--mount DIR | --no-mount] PAGES | NODE:PAGES..." >&2
    exit 2
}
fail() {
    echo "$prog: $*" >&2
    exit 1
}
say() {
    echo "$prog: $*"
}
is_uint() {
    case $1 in
        '' | *[!0-9]*) return 1 ;;
    esac
    # Bounded: 2^20 pages is 2 TiB of 2 MiB pages.
    [ "${#1}" -le 7 ] && [ "$1" -le 1048576 ]
}

while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry=1 ;;
        --no-mount) do_mount=0 ;;
        --mount)
            [ $# -ge 2 ] || bad "--mount needs a directory"
            mount_dir=$2
            shift
            ;;
        --mount=*) mount_dir=${1#--mount=} ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*) bad "unknown option $1" ;;
        *) specs="$specs $1" ;;
    esac
    shift
done

[ -n "$specs" ] || bad "how many pages? give PAGES (e.g. 1024) or NODE:PAGES (e.g. 0:1024)"
case $mount_dir in
    /*) ;;
    *) bad "--mount needs an absolute path, not '$mount_dir'" ;;
esac

global="$sysfs/kernel/mm/hugepages/hugepages-${kb}kB/nr_hugepages"
[ -e "$global" ] || fail "this kernel has no 2 MiB hugepages ($global missing): needs CONFIG_HUGETLBFS on x86_64/arm64"

# Validate every spec before touching anything.
total_spec=""
node_specs=""
for s in $specs; do
    case $s in
        *:*)
            node=${s%%:*}
            pages=${s#*:}
            is_uint "$node" || bad "'$s': the NUMA node must be a number (0, 1, ...)"
            is_uint "$pages" || bad "'$s': the page count must be a number of 2 MiB pages, at most 1048576"
            # shellcheck disable=SC2012 # node directory names are nodeN
            [ -d "$sysfs/devices/system/node/node$node" ] ||
                bad "'$s': there is no NUMA node $node (nodes: $(cd "$sysfs/devices/system/node" && ls -d node[0-9]* 2>/dev/null | tr '\n' ' '))"
            case " $node_specs " in
                *" $node:"*) bad "NUMA node $node given twice" ;;
            esac
            node_specs="$node_specs $node:$pages"
            ;;
        *)
            is_uint "$s" || bad "'$s' is not a number of 2 MiB pages (at most 1048576), nor NODE:PAGES"
            [ -z "$total_spec" ] || bad "give one total PAGES, or NODE:PAGES per node, not both"
            total_spec=$s
            ;;
    esac
done
[ -z "$total_spec" ] || [ -z "$node_specs" ] || bad "give one total PAGES, or NODE:PAGES per node, not both"

if [ "$dry" -eq 0 ] && [ "$(id -u)" -ne 0 ] && [ -z "${TURN_SYSFS:-}" ]; then
    fail "run as root (it writes $global and mounts hugetlbfs), or use --dry-run"
fi

# reserve FILE PAGES WHAT: set FILE to PAGES and check what the kernel granted.
reserve() {
    file=$1
    want=$2
    what=$3
    have=$(cat "$file")
    if [ "$have" -eq "$want" ]; then
        say "$what: $have pages of 2 MiB reserved already"
        return 0
    fi
    if [ "$dry" -eq 1 ]; then
        say "would reserve $want pages of 2 MiB on $what (now $have): echo $want > $file"
        return 0
    fi
    echo "$want" >"$file" || fail "$what: writing $want to $file failed"
    got=$(cat "$file")
    if [ "$got" -lt "$want" ]; then
        fail "$what: the kernel reserved only $got of $want pages of 2 MiB (not enough free contiguous memory); reserve them at boot instead: hugepages=$want on the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub)"
    fi
    say "$what: reserved $got pages of 2 MiB (was $have)"
}

if [ -n "$total_spec" ]; then
    reserve "$global" "$total_spec" "all nodes"
else
    for s in $node_specs; do
        node=${s%%:*}
        reserve "$sysfs/devices/system/node/node$node/hugepages/hugepages-${kb}kB/nr_hugepages" "${s#*:}" "node $node"
    done
fi

[ "$do_mount" -eq 1 ] || exit 0

# Mounted already? Fields of /proc/mounts: device dir type options.
mounted=$(awk -v d="$mount_dir" '$2 == d { print $3 " " $4 }' /proc/mounts | tail -n 1)
if [ -n "$mounted" ]; then
    type=${mounted%% *}
    opts=${mounted#* }
    [ "$type" = hugetlbfs ] || fail "$mount_dir is mounted already, as $type, not hugetlbfs: choose another --mount directory"
    case ",$opts," in
        *,pagesize=2M,* | *,pagesize=2048k,* | *,pagesize=2048K,*) ;;
        *) fail "$mount_dir is a hugetlbfs of another page size ($opts): choose another --mount directory" ;;
    esac
    say "hugetlbfs (2 MiB) is mounted at $mount_dir already"
    exit 0
fi
if [ -e "$mount_dir" ] && [ ! -d "$mount_dir" ]; then
    fail "$mount_dir exists and is not a directory"
fi
if [ "$dry" -eq 1 ]; then
    [ -d "$mount_dir" ] || say "would create $mount_dir: mkdir -p $mount_dir"
    say "would mount hugetlbfs: mount -t hugetlbfs -o pagesize=2M nodev $mount_dir"
    exit 0
fi
mkdir -p "$mount_dir" || fail "cannot create $mount_dir"
mount -t hugetlbfs -o pagesize=2M nodev "$mount_dir" || fail "mounting hugetlbfs at $mount_dir failed"
say "mounted hugetlbfs (2 MiB pages) at $mount_dir"
