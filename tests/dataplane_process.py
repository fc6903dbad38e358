"""Shared by the namespace tests of tests/dataplane and tests/controlplane: stopping
turn-dataplane. SIGINT makes it print its counters (one "name value" line each, plus the
IPC and next-hop totals) and exit; a dataplane that does not exit in time is killed."""
import subprocess


def stop_dataplane(dp, timeout=20):
    """Returns (its whole output, {counter: value as printed})."""
    dp.send_signal(2)
    try:
        out = dp.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        dp.kill()
        out = dp.communicate()[0]
    counters = dict(ln.split() for ln in out.splitlines() if len(ln.split()) == 2 and ln.split()[1].isdigit())
    return out, counters
