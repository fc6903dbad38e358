"""The record of a test script's named checks, shared by the network-namespace test scripts
(tests/controlplane/netns_*.py, tests/dataplane/netns_*.py), which are plain programs run by
meson and judged by their exit code.

    check = Checks()
    check(got == want, f"relayed {got} of {want}")   # prints "ok   ..." or "FAIL ..."
    ...
    sys.exit(check.finish())                         # "RESULT: PASS" -> 0, else the failures -> 1
"""


class Checks:
    def __init__(self, echo=True):
        self.fails = []
        self.echo = echo  # print every check as it is made, not only the failures at the end

    def __call__(self, cond, what):
        """Records `what` as passed if `cond` is true, else as failed; returns bool(cond)."""
        cond = bool(cond)
        if self.echo:
            print(("ok   " if cond else "FAIL ") + what, flush=True)
        if not cond:
            self.fails.append(what)
        return cond

    @property
    def ok(self):
        return not self.fails

    def finish(self):
        """Prints the result line and returns the exit code: 0 if every check passed."""
        print("RESULT:", "PASS" if self.ok else "FAIL " + "; ".join(self.fails), flush=True)
        return 0 if self.ok else 1
