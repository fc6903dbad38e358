"""Helpers shared by the deploy tests: systemd unit parsing, paths, free ports."""
import os
import pathlib
import socket

REPO = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SYSTEMD = DEPLOY / "systemd"

# Installed paths used in the units, and their build-tree / source-tree stand-ins.
INSTALLED_RELAY = "/usr/local/bin/turn-relay"
INSTALLED_DATAPLANE = "/usr/local/bin/turn-dataplane"
INSTALLED_SCRIPTS = "/usr/local/lib/turnrelay/"


def parse_unit(path):
    """A systemd unit as {section: [(key, value), ...]} (keys may repeat)."""
    sections = {}
    cur = None
    pending = ""
    for raw in pathlib.Path(path).read_text().splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = sections.setdefault(line[1:-1], [])
            continue
        assert cur is not None, f"{path}: key outside a section: {line}"
        key, _, value = line.partition("=")
        cur.append((key.strip(), value.strip()))
    return sections


def get(unit, section, key):
    """The last value of key in section (systemd's rule for single-valued keys)."""
    values = [v for k, v in unit.get(section, []) if k == key]
    assert values, f"no {key}= in [{section}]"
    return values[-1]


def get_all(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


def seconds(value):
    """systemd time span ("45", "45s", "1min 30s") in seconds."""
    total = 0.0
    mult = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 0.001}
    for part in value.split():
        num = part.rstrip("abcdefghijklmnopqrstuvwxyz")
        total += float(num) * mult[part[len(num):]]
    return total


def free_port(kind, low=1024, high=60000, host="127.0.0.1"):
    """A port on host that is free for kind (SOCK_DGRAM / SOCK_STREAM) in [low, high)."""
    import random
    for _ in range(500):
        port = random.randrange(low, high)
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError(f"no free port in {low}..{high}")


def require_root():
    import pytest
    if os.geteuid() != 0:
        pytest.skip("needs root")
