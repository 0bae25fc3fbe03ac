#!/usr/bin/env python3
"""Fleet mode on a real redis-server (Debian's, started here on a free loopback port with a temp
dir, killed by pid): a rollback posted to one of three replicas is applied by all within 100 ms
(the distribution is printed), a replica started during a rollback starts rolled back, Redis
killed mid-traffic fails no request and drops the gauge, Redis restarted resumes control without
a restart, a wrong password is a clear error, and the registry lists the replicas and flags config
skew."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

served_by, admin, metric = h.served_by, h.admin, h.metric
V1, V2 = "legacy", "new"
REDIS = shutil.which("redis-server")


def poll(predicate, timeout=10.0, interval=0.02):
    """predicate() until truthy or the timeout; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


class Redis:
    """A redis-server child on 127.0.0.1:port (no persistence), killed by pid."""

    def __init__(self, port=None, password=None):
        self.port = port or h.free_port()
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="cutover-redis-")
        self.proc = None

    def start(self):
        argv = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = h._spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL)
        if not poll(self.ping, 10):
            raise AssertionError("redis-server did not answer PING on port %d" % self.port)
        return self

    def command(self, *args):
        """One command over a raw socket (RESP); returns the raw reply bytes."""
        parts = []
        if self.password:
            parts.append(["AUTH", self.password])
        parts.append(list(args))
        data = b""
        for p in parts:
            data += b"*%d\r\n" % len(p)
            for a in p:
                a = a.encode() if isinstance(a, str) else a
                data += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out
                out += chunk

    def ping(self):
        try:
            return b"+PONG" in self.command("PING")
        except OSError:
            return False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)

    def stop(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@unittest.skipIf(REDIS is None, "redis-server is not installed (tools/install_deps.sh)")
class FleetTest(h.ProxyTestCase):
    def setUp(self):
        self.v1 = self.backend(V1)
        self.v2 = self.backend(V2)
        self.redis = Redis().start()
        self.addCleanup(self.redis.stop)

    def config(self, w2=50, fleet=None, prefix="cutover:test:"):
        f = {"redis": "127.0.0.1:%d" % self.redis.port, "key_prefix": prefix, "timeout": "200ms"}
        f.update(fleet or {})
        return h.make_config({V1: self.v1, V2: self.v2}, split={V2: w2, V1: 100 - w2},
                             admin=True, extra={"fleet": f})

    def replica(self, cfg=None, **kw):
        p = self.proxy(cfg or self.config(), **kw)
        ok = poll(lambda: admin(p, "GET", "/ready").status == 200, 10)
        self.assertTrue(ok, p.log_tail())
        return p

    def stats(self, p):
        return admin(p, "GET", "/stats").json()

    def metrics(self, p):
        return admin(p, "GET", "/metrics").body.decode()

    def wait_fleet_up(self, replicas, timeout=10):
        for p in replicas:
            ok = poll(lambda: metric(self.metrics(p), "cutover_fleet_redis_up") == 1, timeout)
            self.assertTrue(ok, p.log_tail())

    def test_rollback_posted_to_one_replica_is_applied_by_all_three_within_100ms(self):
        ps = [self.replica() for _ in range(3)]
        self.wait_fleet_up(ps)
        delays = []
        for i in range(10):
            origin = ps[i % 3]
            others = [p for p in ps if p is not origin]
            # One watcher thread per replica, so each apply is timed as its log line arrives.
            counts = [len(p.find_events("rollback")) + 1 for p in others]
            t0 = time.monotonic()
            seen = [None, None]

            def watch(j, p, c):
                if p.wait_for(lambda px: len(px.find_events("rollback")) >= c, 5):
                    seen[j] = time.monotonic() - t0
            threads = [threading.Thread(target=watch, args=(j, p, counts[j]))
                       for j, p in enumerate(others)]
            for t in threads:
                t.start()
            r = admin(origin, "POST", "/rollback?actor=test&reason=drill")
            self.assertEqual(r.status, 200)
            for t in threads:
                t.join()
            self.assertNotIn(None, seen, "a replica never applied the fleet rollback")
            delays += seen
            for p in others:
                st = self.stats(p)
                self.assertTrue(st["rollback"])
                self.assertEqual(st["rollback_source"], "fleet")
                self.assertEqual(st["rollback_origin"], self.stats(origin)["fleet"]["replica_id"])
                for _ in range(5):
                    self.assertEqual(served_by(h.get(p.port, "/x")), V1)
            self.assertEqual(self.stats(origin)["rollback_source"], "local")
            # Clearing on another replica clears everywhere.
            clearer = others[0]
            r = admin(clearer, "POST", "/rollback/clear")
            self.assertEqual(r.status, 200)
            for p in ps:
                self.assertTrue(poll(lambda: not self.stats(p)["rollback"], 2), p.log_tail())
        delays.sort()
        ms = [round(d * 1000, 1) for d in delays]
        print("\nfleet rollback apply delay over %d observations (ms): min %.1f p50 %.1f p90 %.1f "
              "max %.1f" % (len(ms), ms[0], ms[len(ms) // 2], ms[int(len(ms) * 0.9)], ms[-1]),
              file=sys.stderr)
        self.assertLess(delays[-1], 0.100, "slowest apply %.1f ms" % (delays[-1] * 1000))
        text = self.metrics(ps[0])
        self.assertEqual(metric(text, "cutover_fleet_rollback_active"), 0)

    def test_replica_started_during_a_fleet_rollback_starts_rolled_back(self):
        a = self.replica()
        self.wait_fleet_up([a])
        self.assertEqual(admin(a, "POST", "/rollback?reason=bad+deploy").status, 200)
        self.assertTrue(poll(lambda: b"rollback_active 1" in self.redis.command(
            "GET", "cutover:test:rollback")))
        b = self.replica(self.config(w2=100))  # everything to new, by its file
        st = self.stats(b)
        self.assertTrue(st["rollback"])
        self.assertEqual(st["rollback_source"], "fleet")
        for _ in range(10):
            self.assertEqual(served_by(h.get(b.port, "/x")), V1)
        self.assertEqual(metric(self.metrics(b), "cutover_fleet_rollback_active"), 1)
        cfg = admin(b, "GET", "/config").body.decode()
        self.assertIn("rollback_source: fleet", cfg)
        # cutoverctl status says where the rollback came from, and lists the fleet.
        ctl = os.path.join(h.REPO, "tools", "cutoverctl")
        a_id = self.stats(a)["fleet"]["replica_id"]
        self.assertTrue(poll(lambda: len(self.stats(b)["fleet"]["replicas"]) == 2, 5))
        out = subprocess.run([sys.executable, ctl, "--admin", "http://127.0.0.1:%d" % b.admin_port,
                              "status"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=20).stdout.decode()
        self.assertIn("ROLLBACK ACTIVE", out)
        self.assertIn("from the fleet: posted to replica %s" % a_id, out)
        self.assertRegex(out, r"FLEET replica \S+, Redis 127\.0\.0\.1:\d+ up, 2 live replica")
        self.assertIn("%s  hash" % a_id, out)

    def test_redis_killed_fails_no_request_and_restarted_resumes_control(self):
        ps = [self.replica() for _ in range(2)]
        self.wait_fleet_up(ps)
        failures, done, count = [], threading.Event(), [0]

        def load():
            while not done.is_set():
                try:
                    r = h.get(ps[0].port, "/x")
                    if r.status != 200:
                        failures.append(r.status)
                except Exception as e:  # noqa: BLE001 - any failure counts
                    failures.append(repr(e))
                count[0] += 1
        t = threading.Thread(target=load)
        t.start()
        try:
            time.sleep(0.2)  # traffic before the kill
            self.redis.kill()
            for p in ps:
                self.assertTrue(poll(lambda: metric(self.metrics(p), "cutover_fleet_redis_up") == 0,
                                     5), p.log_tail())
            # A rollback while Redis is away applies locally and counts a fallback.
            self.assertEqual(admin(ps[1], "POST", "/rollback").status, 200)
            self.assertGreaterEqual(metric(self.metrics(ps[1]), "cutover_fleet_fallbacks_total"), 1)
            self.assertTrue(self.stats(ps[1])["fleet"]["rollback_write_pending"])
            self.redis.start()  # same port, empty data
            self.wait_fleet_up(ps, timeout=15)
            # The pending local rollback reaches Redis and the other replica, without a restart.
            self.assertTrue(poll(lambda: self.stats(ps[0])["rollback"], 5), ps[0].log_tail())
            self.assertEqual(self.stats(ps[0])["rollback_source"], "fleet")
            # And control flows both ways again: a clear on ps[0] reaches ps[1].
            self.assertEqual(admin(ps[0], "POST", "/rollback/clear").status, 200)
            self.assertTrue(poll(lambda: not self.stats(ps[1])["rollback"], 2), ps[1].log_tail())
        finally:
            done.set()
            t.join(10)
        self.assertGreater(count[0], 50)
        self.assertEqual(failures, [], "requests failed while Redis was down")
        self.assertGreaterEqual(metric(self.metrics(ps[0]), "cutover_fleet_errors_total"), 1)
        # A fleet rollback survives a Redis that comes back empty: it is never cleared by the
        # loss, and the replicas write it back.
        self.assertEqual(admin(ps[0], "POST", "/rollback").status, 200)
        self.assertTrue(poll(lambda: self.stats(ps[1])["rollback"], 2))
        self.redis.kill()
        self.redis.start()
        self.wait_fleet_up(ps, timeout=15)
        self.assertTrue(poll(lambda: b"rollback_active 1" in self.redis.command(
            "GET", "cutover:test:rollback"), 5))
        for p in ps:
            self.assertTrue(self.stats(p)["rollback"], p.log_tail())

    def test_paused_redis_times_out_marks_down_and_traffic_never_waits(self):
        p = self.replica()
        self.wait_fleet_up([p])
        self.redis.proc.send_signal(signal.SIGSTOP)
        try:
            # The next heartbeat outlives fleet.timeout (200ms here): the connection is dropped.
            self.assertTrue(poll(lambda: metric(self.metrics(p), "cutover_fleet_redis_up") == 0,
                                 5), p.log_tail())
            ev = p.find_events("fleet_redis_error")
            self.assertTrue(any("timeout" in e.get("error", "") for e in ev), ev)
            for _ in range(20):
                t0 = time.monotonic()
                self.assertEqual(h.get(p.port, "/x").status, 200)
                self.assertLess(time.monotonic() - t0, 1.0)  # never the paused Redis
            self.assertEqual(admin(p, "POST", "/rollback").status, 200)  # local, at once
        finally:
            self.redis.proc.send_signal(signal.SIGCONT)
        self.wait_fleet_up([p], timeout=15)
        self.assertTrue(poll(lambda: b"rollback_active 1" in self.redis.command(
            "GET", "cutover:test:rollback"), 5), p.log_tail())

    def test_registry_lists_replicas_and_flags_config_skew(self):
        ps = [self.replica() for _ in range(2)]
        self.wait_fleet_up(ps)
        self.assertTrue(poll(lambda: len(self.stats(ps[0])["fleet"]["replicas"]) == 2, 5))
        st = self.stats(ps[0])
        self.assertFalse(st["fleet"]["config_skew"])
        self.assertEqual(sum(r["self"] for r in st["fleet"]["replicas"]), 1)
        self.assertEqual(metric(self.metrics(ps[0]), "cutover_fleet_config_skew"), 0)
        ps.append(self.replica(self.config(w2=10)))  # a different file: another hash
        self.assertTrue(poll(lambda: metric(self.metrics(ps[0]), "cutover_fleet_replicas") == 3,
                             5), ps[0].log_tail())
        self.assertEqual(metric(self.metrics(ps[0]), "cutover_fleet_config_skew"), 1)
        # Each replica reads the registry on its own 1 s tick.
        self.assertTrue(poll(lambda: self.stats(ps[1])["fleet"]["config_skew"], 3))
        st = self.stats(ps[1])
        self.assertEqual(len({r["config_hash"] for r in st["fleet"]["replicas"]}), 2)
        self.assertIn("new=10", [r for r in st["fleet"]["replicas"]
                                 if r["id"] == self.stats(ps[2])["fleet"]["replica_id"]][0]
                      ["weights"])
        # A replica that stops heartbeating leaves the registry once its key expires (3 s).
        ps[2].stop()
        self.assertTrue(poll(lambda: metric(self.metrics(ps[0]), "cutover_fleet_replicas") == 2,
                             6), ps[0].log_tail())
        self.assertEqual(metric(self.metrics(ps[0]), "cutover_fleet_config_skew"), 0)

    def test_reload_that_changes_the_fleet_section_says_a_restart_is_needed(self):
        p = self.replica()
        with open(p.config_path, "w") as f:
            f.write(h.to_yaml(self.config(prefix="cutover:other:")) + "\n")
        r = admin(p, "POST", "/reload")
        self.assertEqual(r.status, 200, r.body)
        ev = p.wait_for(lambda px: [e for e in px.find_events("config_needs_restart")
                                    if e.get("key") == "fleet"], 5)
        self.assertTrue(ev, p.log_tail())
        self.assertEqual(self.stats(p)["fleet"]["key_prefix"], "cutover:test:")


@unittest.skipIf(REDIS is None, "redis-server is not installed (tools/install_deps.sh)")
class FleetAuthTest(h.ProxyTestCase):
    def setUp(self):
        self.v1 = self.backend(V1)
        self.redis = Redis(password="s3cret").start()
        self.addCleanup(self.redis.stop)

    def config(self, env):
        return h.make_config({V1: self.v1}, admin=True, extra={"fleet": {
            "redis": "127.0.0.1:%d" % self.redis.port, "password_env": env}})

    def test_wrong_password_is_a_clear_error_and_traffic_flows(self):
        os.environ["CUTOVER_TEST_REDIS_PW"] = "wrong"
        p = self.proxy(self.config("CUTOVER_TEST_REDIS_PW"))
        ev = p.wait_for(lambda px: px.find_events("fleet_redis_auth_failed"), 5)
        self.assertTrue(ev, p.log_tail())
        self.assertRegex(ev[0]["error"], "WRONGPASS|invalid password|invalid username")
        self.assertEqual(ev[0]["redis"], "127.0.0.1:%d" % self.redis.port)
        self.assertEqual(metric(admin(p, "GET", "/metrics").body.decode(),
                                "cutover_fleet_redis_up"), 0)
        self.assertEqual(h.get(p.port, "/x").status, 200)
        self.assertEqual(admin(p, "GET", "/ready").status, 200)

    def test_right_password_connects(self):
        os.environ["CUTOVER_TEST_REDIS_PW"] = "s3cret"
        p = self.proxy(self.config("CUTOVER_TEST_REDIS_PW"))
        self.assertTrue(poll(lambda: metric(admin(p, "GET", "/metrics").body.decode(),
                                            "cutover_fleet_redis_up") == 1, 5), p.log_tail())

    def test_unset_password_variable_is_a_config_error_naming_the_key(self):
        os.environ.pop("CUTOVER_TEST_REDIS_UNSET", None)
        d = tempfile.mkdtemp(prefix="cutover-it-")
        path = os.path.join(d, "cutover.yaml")
        with open(path, "w") as f:
            f.write(h.to_yaml(self.config("CUTOVER_TEST_REDIS_UNSET")) + "\n")
        code, out, err = h.run_binary(["--check", path])
        self.assertEqual(code, 1, out + err)
        self.assertRegex(out + err, r"cutover\.yaml:\d+:\d+: fleet\.password_env: environment "
                                    r"variable CUTOVER_TEST_REDIS_UNSET is not set")


if __name__ == "__main__":
    h.main()
