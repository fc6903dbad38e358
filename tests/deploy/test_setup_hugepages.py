"""deploy/setup-hugepages.sh: argument errors, dry runs (nothing changes), the
write path on a fake sysfs tree (per node and total, idempotent), and for real
on this host: a hugetlbfs mount at a temporary directory and a 2-page raise of
nr_hugepages, both undone afterwards."""
import os
import pathlib
import subprocess
import tempfile

import pytest

from unitfile import DEPLOY, require_root

SCRIPT = DEPLOY / "setup-hugepages.sh"
NR = pathlib.Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")


def run(*args, env=None):
    e = dict(os.environ)
    e.pop("TURN_SYSFS", None)
    e.update(env or {})
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=e, timeout=30)


@pytest.mark.parametrize("args, message", [
    ([], "how many pages"),
    (["abc"], "'abc' is not a number"),
    (["-5"], "unknown option -5"),
    (["2000000"], "at most 1048576"),
    (["999:10"], "no NUMA node 999"),
    (["0:x"], "page count must be a number"),
    (["x:10"], "NUMA node must be a number"),
    (["0:10", "0:20"], "given twice"),
    (["64", "0:10"], "not both"),
    (["64", "128"], "not both"),
    (["--mount", "relative/dir", "64"], "absolute path"),
    (["--mount"], "--mount needs a directory"),
])
def test_bad_arguments_exit_2_and_say_why(args, message):
    before = NR.read_text() if NR.exists() else None
    r = run("--dry-run", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert "usage:" in r.stderr
    assert (NR.read_text() if NR.exists() else None) == before


@pytest.mark.skipif(not NR.exists(), reason="no 2 MiB hugepages on this kernel")
def test_dry_run_changes_nothing(tmp_path):
    now = int(NR.read_text())
    target = tmp_path / "hp"
    r = run("--dry-run", "--mount", str(target), str(now + 7))
    assert r.returncode == 0, r.stderr
    assert f"would reserve {now + 7} pages of 2 MiB on all nodes (now {now})" in r.stdout
    assert f"echo {now + 7} > {NR}" in r.stdout
    assert f"would mount hugetlbfs: mount -t hugetlbfs -o pagesize=2M nodev {target}" in r.stdout
    assert int(NR.read_text()) == now
    assert not target.exists()
    node0 = pathlib.Path("/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages")
    if node0.exists():
        n0 = int(node0.read_text())
        r = run("--dry-run", "--no-mount", f"0:{n0 + 3}")
        assert r.returncode == 0, r.stderr
        assert f"would reserve {n0 + 3} pages of 2 MiB on node 0 (now {n0}): echo {n0 + 3} > {node0}" in r.stdout
        assert "mount" not in r.stdout
        assert int(node0.read_text()) == n0


def fake_sysfs(root, nodes=2):
    g = root / "kernel/mm/hugepages/hugepages-2048kB"
    g.mkdir(parents=True)
    (g / "nr_hugepages").write_text("0\n")
    for n in range(nodes):
        d = root / f"devices/system/node/node{n}/hugepages/hugepages-2048kB"
        d.mkdir(parents=True)
        (d / "nr_hugepages").write_text("0\n")
    return root


def test_reserves_per_node_and_in_total_on_a_fake_sysfs(tmp_path):
    sysfs = fake_sysfs(tmp_path / "sys")
    env = {"TURN_SYSFS": str(sysfs)}
    node = lambda n: (sysfs / f"devices/system/node/node{n}/hugepages/hugepages-2048kB/nr_hugepages")
    r = run("--no-mount", "0:3", "1:5", env=env)
    assert r.returncode == 0, r.stderr
    assert node(0).read_text().strip() == "3" and node(1).read_text().strip() == "5"
    assert "node 0: reserved 3 pages of 2 MiB (was 0)" in r.stdout
    # Idempotent: the second run writes nothing.
    r = run("--no-mount", "0:3", "1:5", env=env)
    assert r.returncode == 0, r.stderr
    assert "node 1: 5 pages of 2 MiB reserved already" in r.stdout
    assert "reserved 3" not in r.stdout and "reserved 5" not in r.stdout
    total = sysfs / "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    r = run("--no-mount", "8", env=env)
    assert r.returncode == 0, r.stderr
    assert total.read_text().strip() == "8"
    r = run("--no-mount", "2:1", env=env)
    assert r.returncode == 2 and "no NUMA node 2 (nodes: node0 node1" in r.stderr


def test_kernel_without_hugepages_is_a_clear_error(tmp_path):
    r = run("--no-mount", "8", env={"TURN_SYSFS": str(tmp_path)})
    assert r.returncode == 1
    assert "no 2 MiB hugepages" in r.stderr


@pytest.mark.skipif(not NR.exists(), reason="no 2 MiB hugepages on this kernel")
def test_mounts_hugetlbfs_for_real_and_idempotently():
    require_root()
    now = int(NR.read_text())
    target = pathlib.Path(tempfile.mkdtemp(prefix="turn-hugepages-"))
    mnt = target / "mnt"
    try:
        # The current count: nothing to reserve, only the mount.
        r = run("--mount", str(mnt), str(now))
        assert r.returncode == 0, r.stderr
        assert f"all nodes: {now} pages of 2 MiB reserved already" in r.stdout
        mounts = [line.split() for line in open("/proc/mounts")]
        mine = [m for m in mounts if m[1] == str(mnt)]
        assert len(mine) == 1 and mine[0][2] == "hugetlbfs" and "pagesize=2M" in mine[0][3], mine
        r = run("--mount", str(mnt), str(now))
        assert r.returncode == 0, r.stderr
        assert "is mounted at" in r.stdout and "already" in r.stdout
        assert len([m for m in (line.split() for line in open("/proc/mounts")) if m[1] == str(mnt)]) == 1
        # Something else mounted there is refused, not mounted over.
        r = run("--mount", "/proc", str(now))
        assert r.returncode == 1 and "as proc, not hugetlbfs" in r.stderr
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        subprocess.run(["rm", "-rf", "--one-file-system", str(target)])


@pytest.mark.skipif(not NR.exists(), reason="no 2 MiB hugepages on this kernel")
def test_reserves_for_real_and_restores():
    # 2 more pages (4 MiB), then the previous count. Restored only if nobody
    # else changed it in between (other tests on this host use hugepages too).
    require_root()
    before = int(NR.read_text())
    want = before + 2
    try:
        r = run("--no-mount", str(want))
        assert r.returncode == 0, r.stdout + r.stderr
        assert int(NR.read_text()) == want
        assert f"all nodes: reserved {want} pages of 2 MiB (was {before})" in r.stdout
    finally:
        if int(NR.read_text()) == want:
            NR.write_text(f"{before}\n")
    assert int(NR.read_text()) == before
