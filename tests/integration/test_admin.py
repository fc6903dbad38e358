"""The admin interface ([admin].socket) through tools/ctl's turn-ctl against a real turn-relay
with allocations held by real clients (aioice, UDP): status and allocations show what the
clients hold (users, relayed addresses, permissions, channels), `close` ends one allocation so
its client's data stops being relayed, `reload` applies a rewritten [auth] and says so, and
`drain` with a deadline drains the relay, which exits once its last allocation ends. Errors:
an unknown allocation, a reload whose TLS key does not load, a second drain (exit 1), no relay
at the socket (exit 3); the socket is its owner's only. Across a restart with [state].dir, an
allocation's age and usage go on where the previous process left them, and one that ended
after the last save before a crash stays ended.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import socket
import stat
import subprocess
import time

import pytest

from conftest import log_tail, stop_process
from conftest import find_turn_relay_bin
from test_turn_probe import PASSWORD, SECRET, USER, Relay, wait_tcp
from tool_paths import find_tool

aioice_turn = pytest.importorskip("aioice.turn")
CTL = find_tool("TURN_CTL_BIN", "tools/ctl/turn-ctl")
pytestmark = pytest.mark.skipif(CTL is None, reason="turn-ctl not built")


def ctl(sock, *args):
    p = subprocess.run([CTL, "--socket", str(sock), *args], capture_output=True, text=True, timeout=20)
    return p.returncode, p.stdout, p.stderr


def ctl_json(sock, *args):
    rc, out, err = ctl(sock, "--json", *args)
    return rc, json.loads(out) if out.strip() else None


def echo_socket():
    """A UDP peer on loopback for the clients' data (3 s receive timeout)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(3)
    return s


def start_relay_again(relay, log):
    """Another turn-relay on `relay`'s configuration file (as it is now), logging to `log`;
    returns once it listens (stopped again if it does not)."""
    with open(log, "wb") as f:
        proc = subprocess.Popen([find_turn_relay_bin(), "--config", str(relay.dir / "relay.toml")], stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if not wait_tcp(relay.tls_port):
        stop_process(proc, second_signal_after=1.0)
        raise AssertionError("turn-relay did not listen again:\n" + log_tail(log))
    return proc


async def echo_round_trip(end, echo, payload):
    """`payload` from an aioice TURN endpoint (transport, Collector) to the UDP `echo` socket,
    echoed back to its sender: what came back to the endpoint, or None if the echo socket got
    nothing (its receive timeout)."""
    end[0].sendto(payload, echo.getsockname())
    try:
        data, src = await asyncio.to_thread(echo.recvfrom, 100)
    except socket.timeout:
        return None
    echo.sendto(data, src)
    return (await asyncio.wait_for(end[1].queue.get(), 3))[0]


class Collector(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))


def test_turn_ctl_inspects_closes_reloads_and_drains(tmp_path):
    sock = tmp_path / "run" / "admin.sock"
    relay = Relay(tmp_path, extra=f'[admin]\nsocket = "{sock}"\n[drain]\ndeadline_s = 600\n')
    echo = echo_socket()
    try:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600

        async def scenario():
            ends = []
            for _ in range(2):
                ends.append(await asyncio.wait_for(aioice_turn.create_turn_endpoint(
                    Collector, server_addr=("127.0.0.1", relay.port), username=USER, password=PASSWORD), 10))
            relayed = [t.get_extra_info("sockname") for t, _ in ends]

            def round_trip(i, payload):
                return echo_round_trip(ends[i], echo, payload)

            assert await round_trip(0, b"zero") == b"zero" and await round_trip(1, b"one") == b"one"
            r = {}
            r["status"] = await asyncio.to_thread(ctl_json, sock, "status")
            r["all"] = await asyncio.to_thread(ctl_json, sock, "allocations")
            r["table"] = await asyncio.to_thread(ctl, sock, "allocations")
            r["nobody"] = await asyncio.to_thread(ctl_json, sock, "allocations", "--user", "nobody")
            by_relayed = {a["relayed"][0]: a for a in r["all"][1]["allocations"]}
            first = by_relayed[f"{relayed[0][0]}:{relayed[0][1]}"]
            r["close"] = await asyncio.to_thread(ctl, sock, "close", str(first["id"]))
            r["after_close"] = await round_trip(0, b"closed?")
            r["still"] = await round_trip(1, b"still")
            r["left"] = await asyncio.to_thread(ctl_json, sock, "allocations")
            r["unknown"] = await asyncio.to_thread(ctl, sock, "close", "987654321")
            cfg = relay.dir / "relay.toml"
            cfg.write_text(cfg.read_text().replace(f'users = ["{USER}:{PASSWORD}"]', f'users = ["{USER}:{PASSWORD}", "dave:dave-pw"]'))
            r["reload"] = await asyncio.to_thread(ctl, sock, "reload")
            # A renewal hook's broken key: the reload fails (exit 1), the old certificate stays.
            good_key = relay.key.read_bytes()
            relay.key.write_text("not a key\n")
            r["reload_bad_tls"] = await asyncio.to_thread(ctl, sock, "reload")
            relay.key.write_bytes(good_key)
            r["drain"] = await asyncio.to_thread(ctl, sock, "drain", "--deadline", "20")
            time.sleep(0.3)
            r["draining"] = await asyncio.to_thread(ctl_json, sock, "status")
            r["drain_again"] = await asyncio.to_thread(ctl, sock, "drain")
            for t, _ in ends:
                t.close()  # Refresh 0: the drain has nothing left to wait for
            return relayed, by_relayed, r

        relayed, by_relayed, r = asyncio.run(scenario())
        rc, st = r["status"]
        assert rc == 0 and st["ok"] and st["allocations"]["total"] == 2 and st["draining"] is False, st
        assert st["listen"] == [f"127.0.0.1:{relay.port}", f"[::1]:{relay.port}"] and st["relay_ips"] == ["127.0.0.1", "::1"]
        assert st["listen_dtls"] == [] and st["dtls_sessions"] == 0 and st["connections"] == 0, st
        rc, al = r["all"]
        assert rc == 0 and al["complete"] is True and len(al["allocations"]) == 2, al
        for a in al["allocations"]:
            assert a["user"] == USER and a["transport"] == "udp" and a["client"].startswith("127.0.0.1:")
            assert 0 < a["expires_in_s"] <= 600 and a["age_s"] >= 0
            assert [p["peer"] for p in a["permissions"]] == ["127.0.0.1"], a
            assert a["packets_client_to_peer"] >= 1 and a["packets_peer_to_client"] >= 1, a
        assert set(by_relayed) == {f"{h}:{p}" for h, p in relayed}
        # What each relayed, payload bytes: b"zero" one way and back, b"one" the same.
        for (h, p), size in zip(relayed, (4, 3)):
            a = by_relayed[f"{h}:{p}"]
            assert a["bytes_client_to_peer"] == size * a["packets_client_to_peer"], a
            assert a["bytes_peer_to_client"] == size * a["packets_peer_to_client"], a
        rc, out, err = r["table"]
        assert rc == 0 and "2 allocation(s)" in out and USER in out and "BYTES_UP" in out
        assert r["nobody"][0] == 0 and r["nobody"][1]["allocations"] == []
        rc, out, err = r["close"]
        assert rc == 0 and f"closed allocation {by_relayed[f'{relayed[0][0]}:{relayed[0][1]}']['id']}" in out, (out, err)
        assert r["after_close"] is None and r["still"] == b"still"
        assert len(r["left"][1]["allocations"]) == 1
        closed = by_relayed[f"{relayed[0][0]}:{relayed[0][1]}"]
        end = re.search(rf"event=allocation_closed_by_operator id={closed['id']} .*", relay.log.read_text())
        assert end, relay.log.read_text()
        assert (f" packets_to_peer={closed['packets_client_to_peer']} bytes_to_peer={closed['bytes_client_to_peer']}"
                f" packets_to_client={closed['packets_peer_to_client']} bytes_to_client={closed['bytes_peer_to_client']}"
                in end.group(0)), end.group(0)
        rc, out, err = r["unknown"]
        assert rc == 1 and "no allocation 987654321" in err
        rc, out, err = r["reload"]
        assert rc == 0 and "applied: [auth].users" in out, (out, err)
        rc, out, err = r["reload_bad_tls"]
        assert rc == 1 and "[tls]" in err and "event=tls_reload_failed" in relay.log.read_text(), (out, err)
        rc, out, err = r["drain"]
        assert rc == 0 and "draining" in out, (out, err)
        rc, out, err = r["drain_again"]
        assert rc == 1 and "already draining" in err, (out, err)
        assert r["draining"][1]["draining"] is True
        assert "event=draining" in relay.log.read_text() and "deadline_s=20" in relay.log.read_text()
        assert relay.proc.wait(timeout=15) == 0, log_tail(relay.log)
        assert not sock.exists()  # removed on exit
        rc, out, err = ctl(sock, "status")
        assert rc == 3 and "cannot connect" in err
    finally:
        echo.close()
        if relay.proc.poll() is None:
            stop_process(relay.proc, second_signal_after=1.0)


def test_close_every_allocation_of_a_user(tmp_path):
    """`turn-ctl close --user U` (a leaked credential: remove it, reload, close what it holds)
    ends every allocation of U on whichever event loops hold them (the relay runs two; the
    kernel decides where each client lands), logged one by one, and no other user's; their
    clients' data stops while the other user's still flows. A user with none: 0 closed."""
    sock = tmp_path / "admin.sock"
    relay = Relay(tmp_path, extra=f'[admin]\nsocket = "{sock}"\n')
    echo = echo_socket()
    rest_user = f"{int(time.time()) + 3600}:dave"
    rest_password = base64.b64encode(hmac.new(SECRET.encode(), rest_user.encode(), hashlib.sha1).digest()).decode()
    try:
        async def scenario():
            ends = []
            for user, password in ((USER, PASSWORD), (USER, PASSWORD), (rest_user, rest_password)):
                ends.append(await asyncio.wait_for(aioice_turn.create_turn_endpoint(
                    Collector, server_addr=("127.0.0.1", relay.port), username=user, password=password), 10))

            def round_trip(i, payload):
                return echo_round_trip(ends[i], echo, payload)

            r = {"before": [await round_trip(i, b"x%d" % i) for i in range(3)]}
            r["all"] = await asyncio.to_thread(ctl_json, sock, "allocations")
            r["close"] = await asyncio.to_thread(ctl, sock, "close", "--user", USER)
            r["left"] = await asyncio.to_thread(ctl_json, sock, "allocations")
            echo.settimeout(1)
            r["after"] = [await round_trip(i, b"y%d" % i) for i in range(3)]
            r["nobody"] = await asyncio.to_thread(ctl_json, sock, "close", "--user", "nobody")
            r["both"] = await asyncio.to_thread(ctl, sock, "close", "5", "--user", USER)
            for t, _ in ends:
                t.close()
            return r

        r = asyncio.run(scenario())
        assert r["before"] == [b"x0", b"x1", b"x2"]
        ids = sorted(a["id"] for a in r["all"][1]["allocations"] if a["user"] == USER)
        dave = [a["id"] for a in r["all"][1]["allocations"] if a["user"] == rest_user]
        assert len(ids) == 2 and len(dave) == 1, r["all"]
        rc, out, err = r["close"]
        assert rc == 0 and f"closed 2 allocation(s) of {USER}: {ids[0]} {ids[1]}" in out, (out, err)
        assert [a["id"] for a in r["left"][1]["allocations"]] == dave
        assert r["after"] == [None, None, b"y2"]
        log = relay.log.read_text()
        for i in ids:
            assert re.search(rf"event=allocation_closed_by_operator id={i} .*user={USER}\b", log), log_tail(relay.log)
        assert f"event=allocation_closed_by_operator id={dave[0]} " not in log
        rc, j = r["nobody"]
        assert rc == 0 and j["ok"] is True and j["closed"] == [] and j["user"] == "nobody", j
        rc, out, err = r["both"]
        assert rc != 0 and "excludes" in err, (out, err)
    finally:
        echo.close()
        stop_process(relay.proc, second_signal_after=1.0)


def test_global_options_after_the_subcommand(tmp_path):
    """`--json` and `--socket` are accepted after the subcommand as well as before it
    (`turn-ctl status --json`), alone or mixed, with the same JSON answer; without `--json`
    the text form stays. `--help` names the default admin socket."""
    sock = tmp_path / "run" / "admin.sock"
    relay = Relay(tmp_path, extra=f'[admin]\nsocket = "{sock}"\n')

    def run(*args):
        p = subprocess.run([CTL, *args], capture_output=True, text=True, timeout=20)
        return p.returncode, p.stdout, p.stderr

    try:
        answers = []
        for args in (("status", "--json", "--socket", str(sock)),
                     ("--socket", str(sock), "status", "--json"),
                     ("--json", "status", "-s", str(sock)),
                     ("--socket", str(sock), "--json", "status")):
            rc, out, err = run(*args)
            assert rc == 0 and err == "", (args, out, err)
            st = json.loads(out)
            assert st["ok"] is True and st["pid"] == relay.proc.pid and st["draining"] is False, (args, st)
            assert st["listen"] == [f"127.0.0.1:{relay.port}", f"[::1]:{relay.port}"], (args, st)
            assert st["relay_ips"] == ["127.0.0.1", "::1"] and st["allocations"]["total"] == 0, (args, st)
            answers.append(st)
        assert {a["realm"] for a in answers} == {"turnrelay.local"}
        rc, out, err = run("allocations", "--user", "nobody", "--json", "-s", str(sock))
        assert rc == 0 and json.loads(out)["allocations"] == [], (out, err)
        rc, out, err = run("status", "--socket", str(sock))
        assert rc == 0 and out.startswith("pid ") and f"127.0.0.1:{relay.port}" in out, (out, err)
        rc, out, err = run("--help")
        assert rc == 0 and "/run/turnrelay/admin.sock" in out, out
        # A subcommand's own option is still refused before the subcommand (usage error).
        rc, out, err = run("--user", "nobody", "allocations", "-s", str(sock))
        assert rc == 2, (rc, out, err)
    finally:
        stop_process(relay.proc, second_signal_after=1.0)


def test_usage_and_age_go_on_across_a_restart(tmp_path):
    """A client's allocation relays 3 datagrams through one turn-relay, which stops cleanly
    (its end line says the allocation continues, with no usage); the next turn-relay on the
    same [state].dir relays 2 more: turn-ctl then shows 5 each way and the age since the
    first Allocate, and the end line when the client leaves counts all 5."""
    sock = tmp_path / "admin.sock"
    state = tmp_path / "state"
    relay = Relay(tmp_path, extra=f'[admin]\nsocket = "{sock}"\n[state]\ndir = "{state}"\nsave_interval_ms = 100\n')
    echo = echo_socket()
    second = None
    try:
        async def scenario():
            nonlocal second
            t, proto = await asyncio.wait_for(aioice_turn.create_turn_endpoint(
                Collector, server_addr=("127.0.0.1", relay.port), username=USER, password=PASSWORD), 10)
            born = time.monotonic()

            async def round_trip(payload):
                t.sendto(payload, echo.getsockname())
                data, src = await asyncio.to_thread(echo.recvfrom, 100)
                echo.sendto(data, src)
                return (await asyncio.wait_for(proto.queue.get(), 3))[0]

            for i in range(3):
                assert await round_trip(b"abc%d" % i) == b"abc%d" % i
                # Traffic changes nothing the periodic saves track (the first
                # datagram's CreatePermission does): only the last save at the
                # stop has the later datagrams.
                await asyncio.sleep(0.5)
            rc, first = await asyncio.to_thread(ctl_json, sock, "allocations")
            assert rc == 0 and len(first["allocations"]) == 1, first
            await asyncio.sleep(2)
            # A clean stop: the drain's second signal ends it; the allocation is saved.
            await asyncio.to_thread(stop_process, relay.proc, 5.0, 1.0)
            assert relay.proc.returncode == 0, log_tail(relay.log)
            log2 = tmp_path / "relay2.log"
            second = await asyncio.to_thread(start_relay_again, relay, log2)
            for i in range(2):
                assert await round_trip(b"def%d" % i) == b"def%d" % i
            rc, after = await asyncio.to_thread(ctl_json, sock, "allocations")
            lived = time.monotonic() - born
            # Another client's allocation, kept by the second process when it stops.
            t2, proto2 = await asyncio.wait_for(aioice_turn.create_turn_endpoint(
                Collector, server_addr=("127.0.0.1", relay.port), username=USER, password=PASSWORD), 10)
            t2.sendto(b"kept", echo.getsockname())
            await asyncio.to_thread(echo.recvfrom, 100)
            t.close()  # Refresh 0 to the second process
            deadline = time.monotonic() + 5
            while "event=allocation_deleted" not in log2.read_text() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            rc2, kept = await asyncio.to_thread(ctl_json, sock, "allocations")
            await asyncio.to_thread(stop_process, second, 5.0, 1.0)
            t2.close()
            return first["allocations"][0], rc, after, lived, log2, kept

        a, rc, after, lived, log2, kept = asyncio.run(scenario())
        stopped = re.search(rf"event=allocation_closed id={a['id']} .*", relay.log.read_text())
        assert stopped and " continues=yes" in stopped.group(0) and "packets_to_peer" not in stopped.group(0), \
            relay.log.read_text()
        assert rc == 0 and len(after["allocations"]) == 1, after
        b = after["allocations"][0]
        assert b["id"] == a["id"] and b["relayed"] == a["relayed"], (a, b)
        assert (b["packets_client_to_peer"], b["bytes_client_to_peer"]) == (5, 20), b
        assert (b["packets_peer_to_client"], b["bytes_peer_to_client"]) == (5, 20), b
        assert int(lived) - 1 <= b["age_s"] <= lived + 1 and b["age_s"] >= 2, (b, lived)
        text = log2.read_text()
        assert "event=state_restored" in text, text
        end = re.search(rf"event=allocation_deleted id={a['id']} .*", text)
        assert end, text
        assert " packets_to_peer=5 bytes_to_peer=20 packets_to_client=5 bytes_to_client=20" in end.group(0), end.group(0)

        # A third process on another number of event loops cannot take the kept allocation
        # over; its last line still says what it relayed (the control plane's share).
        assert len(kept["allocations"]) == 1, kept
        k = kept["allocations"][0]
        assert (k["packets_client_to_peer"], k["bytes_client_to_peer"]) == (1, 4), k
        cfg = tmp_path / "relay.toml"
        cfg.write_text(cfg.read_text().replace("threads = 2", "threads = 1"))
        log3 = tmp_path / "relay3.log"
        third = start_relay_again(relay, log3)
        try:
            deadline = time.monotonic() + 5
            while "event=allocation_not_restored" not in log3.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            text = log3.read_text()
            assert "event=state_not_restored" in text and "threads = 2" in text, text
            # Its own loop's file is kept aside (not read again by a later start), the
            # second loop's removed (this process has one loop).
            assert (state / "loop-0.state.rejected").exists() and not (state / "loop-1.state").exists()
            lost = re.search(rf"event=allocation_not_restored id={k['id']} .*", text)
            assert lost and ' reason="its snapshot was not restored"' in lost.group(0), text
            assert " packets_to_peer=1 bytes_to_peer=4 " in lost.group(0), lost.group(0)
        finally:
            stop_process(third, second_signal_after=1.0)
    finally:
        echo.close()
        for p in (relay.proc, second):
            if p is not None and p.poll() is None:
                stop_process(p, second_signal_after=1.0)


def test_an_allocation_ended_between_saves_stays_ended_after_a_crash(tmp_path):
    """Two clients' allocations are saved; one client deletes its allocation and turn-relay is
    killed (SIGKILL) before its next save, so the snapshot on disk still holds that allocation.
    Its end journal names it: the next turn-relay takes over only the other one (the ended one
    would otherwise come back, holding its port and quota and counting its usage twice), and
    deletes the journal once it has saved a snapshot of its own."""
    sock = tmp_path / "admin.sock"
    state = tmp_path / "state"
    relay = Relay(tmp_path, extra=f'[admin]\nsocket = "{sock}"\n[state]\ndir = "{state}"\nsave_interval_ms = 4000\n')
    echo = echo_socket()
    second = None

    def saved_in(loop, id_):
        try:
            return id_.to_bytes(8, "big") in (state / f"loop-{loop}.state").read_bytes()
        except FileNotFoundError:
            return False

    try:
        async def scenario():
            ends = []
            for _ in range(2):
                t, proto = await asyncio.wait_for(aioice_turn.create_turn_endpoint(
                    Collector, server_addr=("127.0.0.1", relay.port), username=USER, password=PASSWORD), 10)
                t.sendto(b"hello", echo.getsockname())
                data, src = await asyncio.to_thread(echo.recvfrom, 100)
                assert data == b"hello"
                ends.append(t)
            rc, listed = await asyncio.to_thread(ctl_json, sock, "allocations")
            assert rc == 0 and len(listed["allocations"]) == 2, listed
            gone, kept = listed["allocations"]
            deadline = time.monotonic() + 10
            while not (saved_in(gone["loop"], gone["id"]) and saved_in(kept["loop"], kept["id"])):
                assert time.monotonic() < deadline, "the allocations were not saved:\n" + log_tail(relay.log)
                await asyncio.sleep(0.05)
            # Just saved: the next save is ~4 s away. The client whose allocation is listed
            # first deletes it (Refresh 0), and the process dies at once.
            saved_at = time.monotonic()
            victim = next(t for t in ends if f"127.0.0.1:{t.get_extra_info('related_address')[1]}" == gone["client"])
            victim.close()
            deadline = time.monotonic() + 3
            while f"event=allocation_deleted id={gone['id']} " not in relay.log.read_text():
                assert time.monotonic() < deadline, log_tail(relay.log)
                await asyncio.sleep(0.02)
            relay.proc.kill()
            relay.proc.wait(timeout=5)
            return gone, kept, time.monotonic() - saved_at

        gone, kept, window = asyncio.run(scenario())
        # The crash came before the next save: the snapshot still has the ended allocation,
        # and a journal names it.
        assert window < 3.5 and saved_in(gone["loop"], gone["id"]), window
        journals = list(state.glob(f"loop-{gone['loop']}.ended.*"))
        assert any(gone["id"].to_bytes(8, "little") in j.read_bytes() for j in journals), journals

        log2 = tmp_path / "relay2.log"
        second = start_relay_again(relay, log2)
        text = log2.read_text()
        assert "event=state_restored allocations=1 saved=1 ended_after_save=1 " in text, text
        assert f"id={gone['id']} " not in text, text
        rc, after = ctl_json(sock, "allocations")
        assert rc == 0 and [a["id"] for a in after["allocations"]] == [kept["id"]], after
        # Its first save has no such allocation: the journal goes.
        deadline = time.monotonic() + 5
        while any(state.glob("loop-*.ended.*")):
            assert time.monotonic() < deadline, list(state.glob("loop-*.ended.*"))
            time.sleep(0.05)
        assert not saved_in(gone["loop"], gone["id"]) and saved_in(kept["loop"], kept["id"])
    finally:
        echo.close()
        for p in (relay.proc, second):
            if p is not None and p.poll() is None:
                stop_process(p, second_signal_after=1.0)
