#!/usr/bin/python3
"""The side-by-side comparison end to end, short: bench/load/netns_compare.py --quick puts
coturn, turn-relay (sockets) and turn-relay + turn-dataplane (AF_XDP, hugepages) through
turn-load on its namespace topology. Figures are not judged here (this machine is shared
and noisy; bench/RESULTS.md has them); what must hold:

  * the script exits 0 and reports one result per relay, each marked ok;
  * each relay carried its half-rate phase without loss and at a rate above zero;
  * each relay's setup phase made every allocation it asked for (coturn: at least 99 %; it
    now and then answers 437 during setup);
  * with the dataplane attached, at least 90 % of relayed packets took its fast path
    (turn-relay's path="dataplane" vs path="socket" metrics).

Usage: netns_compare_smoke.py <build dir>   (root)
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "bench", "load", "netns_compare.py")


def main():
    build = sys.argv[1]
    out = tempfile.mkdtemp(prefix="netns-compare-smoke-")
    p = subprocess.run(["/usr/bin/python3", SCRIPT, "--quick", "--build", build, "--out", out],
                       capture_output=True, text=True, timeout=600)
    print(p.stdout[-6000:])
    print(p.stderr[-3000:])
    check = Checks()

    check(p.returncode == 0, f"netns_compare.py exited 0 (got {p.returncode})")
    try:
        results = json.load(open(os.path.join(out, "results.json")))
    except (OSError, ValueError) as e:
        results = []
        check(False, f"results.json readable ({e})")
    by_kind = {r.get("kind"): r for r in results}
    for kind in ("coturn", "socket", "dpdk"):
        r = by_kind.get(kind)
        check(r is not None and r.get("ok"), f"{kind}: a result marked ok")
        if not r:
            continue
        half = r.get("half", {})
        check(r.get("half_rate", 0) > 0 and half.get("lost", 1) == 0 and half.get("received", 0) > 0,
              f"{kind}: half-rate phase at {r.get('half_rate')}/s without loss (lost {half.get('lost')})")
        setup = r.get("setup", {})
        ok_n, req = setup.get("ok", 0), setup.get("requested", -1)
        if kind == "coturn":
            # coturn 4.6.1 now and then answers 437 to a setup's ChannelBind (1-3 in 3000 seen).
            check(req > 0 and ok_n >= 0.99 * req, f"{kind}: setup made >= 99 % of its allocations ({ok_n}/{req})")
        else:
            check(req > 0 and ok_n == req, f"{kind}: setup made every allocation ({ok_n}/{req})")
    paths = (by_kind.get("dpdk") or {}).get("relayed_by_path", {})
    total = paths.get("dataplane", 0) + paths.get("socket", 0)
    share = 100 * paths.get("dataplane", 0) / total if total else 0
    check(share >= 90, f"dpdk: {share:.1f} % of relayed packets on the fast path (>= 90)")
    subprocess.run(["rm", "-rf", out], check=False)
    sys.exit(check.finish())


if __name__ == "__main__":
    main()
