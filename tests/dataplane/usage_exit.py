#!/usr/bin/env python3
"""turn-dataplane's command line and exits (dataplane/README.md "Command line"), on the real binary:

- "-- --help" / "-- -h": its own usage on stdout, exit 0, EAL not started;
- "--help" before "--" (EAL's option): EAL's help, then the same usage, exit 0, nothing created;
- usage errors (no --ipc, no "--", an unknown option, values out of range or missing, a bad MAC, an
  --ipc path too long for a socket): exit 2 with a message naming the option, EAL not started;
- errors after EAL started (a port that does not exist, a stray argument before "--") and a stop by
  SIGTERM once it runs: exit 1 / 2 / 0, with rte_eal_cleanup and nothing of the run left behind.

"Nothing left" means: no /var/run/dpdk/<prefix> and no <prefix>map_* file in a hugetlbfs mount,
for a --file-prefix unique to each run. The usage cases get EAL arguments that would map
hugepages, so that starting EAL by mistake would show; the cases after EAL run with --no-huge,
and again with hugepages where the machine has 256 MiB of them free. Ports are net_null, no
namespaces, no traffic (the SIGTERM case answers on a Unix socket of its own).

Usage: usage_exit.py <turn-dataplane>
"""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks  # noqa: E402
from netns_smoke import listen_ipc  # noqa: E402  (the control plane's end of the IPC socket)

NULL = ["--no-pci", "--vdev=net_null0", "--vdev=net_null1", "--log-level=lib.eal:error"]
NO_HUGE = ["-l", "0,1", "--no-huge", "-m", "256", *NULL]
HUGE = ["-l", "0,1", *NULL]
SOCK = f"/tmp/dp-usage-{os.getpid()}.sock"
GOOD = ["--nic", "net_null0", "--exc", "net_null1", "--ipc", SOCK, "--flows", "1024", "--no-kernel-mirror"]


def hugetlbfs_mounts():
    with open("/proc/mounts") as f:
        return [ln.split()[1] for ln in f if ln.split()[2] == "hugetlbfs"]


def hugepages_free_mib():
    info = {}
    with open("/proc/meminfo") as f:
        for ln in f:
            k, v = ln.split(":", 1)
            info[k] = int(v.split()[0])
    return info.get("HugePages_Free", 0) * info.get("Hugepagesize", 0) // 1024


def leftovers(prefix):
    """What a run with --file-prefix=prefix left: its runtime directory, its hugepage files."""
    left = [f"/var/run/dpdk/{prefix}"] if os.path.exists(f"/var/run/dpdk/{prefix}") else []
    for m in hugetlbfs_mounts():
        left += glob.glob(os.path.join(m, f"{prefix}map_*"))
    return left


def remove(paths):
    for p in paths:
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.exists(p):
            os.unlink(p)


class Runs:
    def __init__(self, dp, check):
        self.dp, self.check, self.n = dp, check, 0

    def prefix(self):
        self.n += 1
        return f"dpusage{os.getpid()}_{self.n}"

    def clean(self, name, prefix):
        """Checks that the run left nothing, then removes whatever it did leave."""
        left = leftovers(prefix)
        self.check(not left, f"{name}: nothing left behind {left if left else ''}")
        remove(left)

    def run(self, name, eal, args, want_rc, want_out=(), stream="stderr"):
        prefix = self.prefix()
        cmd = [self.dp, *eal, f"--file-prefix={prefix}", *args]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            rc, out = p.returncode, {"stdout": p.stdout, "stderr": p.stderr}[stream]
        except subprocess.TimeoutExpired as e:
            rc, out = None, str(e.stdout or "") + str(e.stderr or "")
        missing = [w for w in want_out if w not in out]
        if not self.check(rc == want_rc and not missing,
                          f"{name}: rc={rc} (want {want_rc}){', missing ' + repr(missing) if missing else ''}"):
            print(" ".join(cmd))
            print(out)
        self.clean(name, prefix)
        return out

    def sigterm(self, name, eal):
        """Runs until it connects to our socket and says Hello, then SIGTERM: exit 0, totals printed."""
        prefix = self.prefix()
        srv = listen_ipc(SOCK)
        p = subprocess.Popen([self.dp, *eal, f"--file-prefix={prefix}", "--", *GOOD],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            conn, _ = srv.accept()
            conn.settimeout(10)
            hello = conn.recv(4096)
            self.check(len(hello) > 0, f"{name}: running (Hello on the IPC socket, {len(hello)} bytes)")
            # What the checks below must find gone: the runtime directory and, with hugepages, their files.
            pages = len(leftovers(prefix)) - 1
            print(f"     while running: /var/run/dpdk/{prefix}: {', '.join(sorted(os.listdir(f'/var/run/dpdk/{prefix}')))}; "
                  f"{pages} hugepage file(s)")
            p.send_signal(signal.SIGTERM)
            out = p.communicate(timeout=30)[0]
            conn.close()
        except (socket.timeout, subprocess.TimeoutExpired) as e:
            p.kill()
            out = p.communicate()[0]
            self.check(False, f"{name}: {e}")
        finally:
            srv.close()
            os.unlink(SOCK)
        if not self.check(p.returncode == 0 and "ipc_applied" in out,
                          f"{name}: exit {p.returncode} (want 0) with its totals"):
            print(out)
        self.clean(name, prefix)


def main():
    dp = sys.argv[1]
    check = Checks()
    r = Runs(dp, check)
    options = ["--nic", "--exc", "--ipc", "--mtu", "--flows", "--nexthops", "--learned-ttl", "--gw4", "--gw4-vlan",
               "--gw6", "--gw6-vlan", "--exc-kernel-if", "--no-kernel-mirror", "--help"]
    # Help: ours, before EAL, on stdout, exit 0.
    usage = r.run("-- --help", HUGE, ["--", "--help"], 0, options + ["default 1500", "EAL options", "go before \"--\""],
                  stream="stdout")
    check("Exit status" in usage and "2 bad usage" in usage, "-- --help: names the exit statuses")
    r.run("-- -h among other options", HUGE, ["--", *GOOD, "-h"], 0, ["--ipc PATH"], stream="stdout")
    r.run("-- --help with a bad option too", HUGE, ["--", "--bogus", "--help"], 0, ["--ipc PATH"], stream="stdout")
    # EAL's --help (before "--"): EAL's own options, then ours through its usage hook.
    out = r.run("--help before --", HUGE, ["--help", "--", *GOOD], 0,
                ["EAL common options", "Application Usage", "--ipc PATH"], stream="stdout")
    check(out.find("EAL common options") < out.find("--ipc PATH"), "--help before --: EAL's help first, then ours")
    # Usage errors: exit 2, the option named, EAL not started.
    no_ipc = ["--nic", "net_null0", "--exc", "net_null1"]
    for name, args, want in [
        ("missing --ipc", ["--", *no_ipc], ["--ipc is required"]),
        ("missing --nic", ["--", "--exc", "net_null1", "--ipc", SOCK], ["--nic and --exc name the NIC"]),
        ("no \"--\"", no_ipc, ["they go after \"--\""]),
        ("unknown option", ["--", *GOOD, "--bogus"], ["unknown option --bogus"]),
        ("--mtu out of range", ["--", *GOOD, "--mtu", "9217"], ["--mtu 9217: expected a whole number from 576 to 9216"]),
        ("--flows out of range", ["--", *GOOD, "--flows", "16777217"],
         ["--flows 16777217: expected a whole number from 1 to 16777216"]),
        ("--nexthops out of range", ["--", *GOOD, "--nexthops", "63"],
         ["--nexthops 63: expected a whole number from 64 to 16777216"]),
        ("--learned-ttl out of range", ["--", *GOOD, "--learned-ttl", "0"],
         ["--learned-ttl 0: expected a whole number from 1 to 86400"]),
        ("--gw6-vlan out of range", ["--", *GOOD, "--gw6", "02:00:00:00:00:01", "--gw6-vlan", "0"],
         ["--gw6-vlan 0: expected a whole number from 1 to 4094"]),
        ("--mtu not a number", ["--", *GOOD, "--mtu", "big"], ["--mtu big: expected a whole number"]),
        ("missing value", ["--", *GOOD, "--flows"], ["missing value for --flows"]),
        ("option in place of a value", ["--", "--nic", "--exc", "net_null1", "--ipc", SOCK], ["missing value for --nic"]),
        ("bad MAC", ["--", *GOOD, "--gw4", "02:00:00:00:01"], ["bad MAC 02:00:00:00:01 for --gw4"]),
        ("--ipc too long", ["--", *no_ipc, "--ipc", "/tmp/" + "s" * 110], ["--ipc /tmp/", "at most 107 bytes"]),
    ]:
        r.run(name, HUGE, args, 2, want + ["turn-dataplane -- --help"])
    # Errors after EAL started, and a stop by SIGTERM: everything released, nothing left.
    modes = [("no hugepages", NO_HUGE)]
    if hugetlbfs_mounts() and hugepages_free_mib() >= 256:
        modes.append(("hugepages", HUGE))
    else:
        print("skip the hugepage runs: no hugetlbfs mount with 256 MiB free")
    for mode, eal in modes:
        r.run(f"{mode}: a port that does not exist", eal, ["--", *GOOD[:1], "net_tap9", *GOOD[2:]], 1,
              ["no DPDK port named 'net_tap9'"])
        r.run(f"{mode}: a stray argument before --", eal, ["stray", "--", *GOOD], 2,
              ["unexpected argument(s) before \"--\": stray"])
        r.sigterm(f"{mode}: SIGTERM", eal)
    sys.exit(check.finish())


if __name__ == "__main__":
    main()
