#!/bin/bash
# The whole test suite: installs dependencies (Debian 12, as root), configures
# and builds in ./build, runs every meson test (unit tests, fuzz-corpus tests
# under ASan/UBSan, control-plane and integration tests), and prints a
# one-line summary. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}

./deploy/install-deps.sh

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
    meson setup "$BUILD_DIR"
fi
meson compile -C "$BUILD_DIR"

status=0
meson test -C "$BUILD_DIR" --print-errorlogs --num-processes 2 "$@" || status=$?

# Count individual test cases (gtest cases and pytest cases appear in the
# JUnit log meson writes) for a closing line CI can read.
/usr/bin/python3 - "$BUILD_DIR/meson-logs/testlog.junit.xml" <<'PY' || true
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception as e:  # no log: meson test did not run
    print(f"no test log: {e}")
    sys.exit(0)
passed = failed = skipped = 0
for case in root.iter("testcase"):
    if case.find("failure") is not None or case.find("error") is not None:
        failed += 1
    elif case.find("skipped") is not None:
        skipped += 1
    else:
        passed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
