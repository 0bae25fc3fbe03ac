#!/usr/bin/env python3
"""JSON logs from the real binary: one access line per request with the right values (stdout or a
file, flushed by the 100 ms timer), the off / errors / sampled modes, and JSON event lines with
ts, level and event on stderr."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ACCESS_FIELDS = ["ts", "request_id", "client", "method", "path", "route", "backend", "endpoint",
                 "status", "duration_ms", "upstream_ms", "bytes_in", "bytes_out", "attempts",
                 "reason", "flags"]
TS_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
LEVELS = {"debug", "info", "warn", "error"}


served_by = h.served_by


def is_access(ev):
    return "request_id" in ev and "event" not in ev


def access_lines(p):
    with p.cond:
        return [e for e in p.events if is_access(e)]


def wait_access(p, n, timeout):
    """The access lines once there are at least n, else what there is after `timeout`."""
    p.wait_for(lambda px: len(access_lines(px)) >= n, timeout)
    return access_lines(p)


class AccessLogTest(h.ProxyTestCase):
    def setUp(self):
        self.legacy = self.backend("legacy")
        self.new = self.backend("new")

    def config(self, access_log=None, **kw):
        routes = [{"name": "app", "match": {"prefix": "/", "header": {"name": "x-app"}},
                   "split": {"new": 50, "legacy": 50}}]
        extra = {"access_log": access_log} if access_log is not None else None
        return h.make_config({"legacy": self.legacy, "new": self.new}, routes=routes, extra=extra,
                             **kw)

    def test_every_access_line_is_json_with_all_fields_and_the_values_of_its_request(self):
        p = self.proxy(self.config())
        app = [("x-app", "1")]
        body = bytes(range(256)) * 4
        sent = []  # (method, target, request id sent or None, request body length, response)
        with h.Client(p.port) as c:
            for i in range(6):
                rid = "it-req-%d" % i
                sent.append(("GET", "/?i=%d" % i, rid, 0,
                             c.request("GET", "/?i=%d" % i, app + [("x-request-id", rid)])))
            sent.append(("GET", "/generated", None, 0, c.request("GET", "/generated", app)))
            sent.append(("POST", "/echo", "it-post", len(body),
                         c.request("POST", "/echo", app + [("x-request-id", "it-post")], body)))
            sent.append(("GET", "/slow?ms=200", "it-slow", 0,
                         c.request("GET", "/slow?ms=200", app + [("x-request-id", "it-slow")])))
            sent.append(("GET", "/status?code=503", "it-503", 0,
                         c.request("GET", "/status?code=503", app + [("x-request-id", "it-503")])))
            sent.append(("GET", "/no/route", "it-404", 0,
                         c.request("GET", "/no/route", [("x-request-id", "it-404")])))
        self.assertEqual([s[4].status for s in sent], [200] * 9 + [503, 404])

        lines = wait_access(p, len(sent), 2.0)
        self.assertEqual(len(lines), len(sent), "access lines:\n%s" % "\n".join(map(str, lines)))
        # No access line failed to parse (those would be missing from p.events, not from here).
        with p.cond:
            raw = [l for l in p.lines if '"request_id"' in l]
        self.assertEqual(len(raw), len(sent), raw)
        for l in raw:
            self.assertIsInstance(json.loads(l), dict, l)

        for (method, target, rid, nbody, resp), line in zip(sent, lines):
            what = "%s %s -> %r\n%s" % (method, target, resp, line)
            self.assertEqual(list(line.keys()), ACCESS_FIELDS, what)
            self.assertRegex(line["ts"], TS_RE, what)
            self.assertEqual(line["client"], "127.0.0.1", what)
            self.assertEqual(line["method"], method, what)
            self.assertEqual(line["path"], target, what)
            self.assertEqual(line["status"], resp.status, what)
            self.assertEqual(line["bytes_in"], nbody, what)
            self.assertEqual(line["flags"], [], what)
            self.assertIsInstance(line["duration_ms"], float, what)
            self.assertGreater(line["duration_ms"], 0, what)
            if rid is not None:
                self.assertEqual(line["request_id"], rid, what)
            if resp.status == 404:
                self.assertEqual(resp.header("x-cutover-reason"), "no_route")
                self.assertEqual((line["route"], line["backend"], line["endpoint"]), ("", "", ""),
                                 what)
                self.assertIsNone(line["upstream_ms"], what)
                self.assertEqual((line["attempts"], line["reason"]), (0, "no_route"), what)
                continue
            self.assertEqual(line["request_id"], resp.header("x-request-id"), what)
            self.assertEqual(line["route"], "app", what)
            backend = served_by(resp)
            self.assertEqual(line["backend"], backend, what)
            self.assertEqual(line["endpoint"], (self.new if backend == "new"
                                                else self.legacy).address, what)
            self.assertEqual(line["bytes_out"], len(resp.body), what)
            self.assertEqual((line["attempts"], line["reason"]), (1, "none"), what)
            self.assertIsInstance(line["upstream_ms"], float, what)
            self.assertLessEqual(line["upstream_ms"], line["duration_ms"], what)
        generated = lines[6]["request_id"]
        self.assertRegex(generated, r"^[0-9a-f]{32}$")
        self.assertEqual(sent[7][4].json()["body_length"], len(body))
        slow = lines[8]
        self.assertGreaterEqual(slow["upstream_ms"], 200, slow)
        self.assertGreaterEqual(slow["duration_ms"], 200, slow)

    def test_errors_mode_logs_the_502_of_a_down_backend_and_not_the_200s_or_a_backend_404(self):
        dead = h.free_port()
        routes = [{"name": "down", "match": {"exact": "/down"}, "split": {"new": 100}},
                  {"name": "web", "match": {"prefix": "/"}, "split": {"legacy": 100}}]
        cfg = h.make_config({"legacy": self.legacy, "new": dead}, routes=routes,
                            extra={"access_log": {"mode": "errors"}})
        p = self.proxy(cfg)
        with h.Client(p.port) as c:
            for i in range(5):
                self.assertEqual(c.request("GET", "/ok?i=%d" % i).status, 200)
            self.assertEqual(c.request("GET", "/status?code=404").status, 404)
            r = c.request("GET", "/down", [("x-request-id", "it-down")])
            self.assertEqual(r.status, 502, r)
            self.assertEqual(c.request("GET", "/ok-after").status, 200)
        lines = wait_access(p, 1, 2.0)
        time.sleep(0.3)  # three flush periods: anything else logged would be out by now
        lines = access_lines(p)
        self.assertEqual(len(lines), 1, lines)
        line = lines[0]
        self.assertEqual((line["status"], line["request_id"], line["route"], line["backend"]),
                         (502, "it-down", "down", "new"), line)
        self.assertEqual(line["endpoint"], "127.0.0.1:%d" % dead, line)
        self.assertEqual(line["reason"], r.header("x-cutover-reason"), line)
        self.assertNotEqual(line["reason"], "none", line)
        self.assertIsNone(line["upstream_ms"], line)

    def test_off_mode_logs_nothing(self):
        dead = h.free_port()
        routes = [{"name": "down", "match": {"exact": "/down"}, "split": {"new": 100}},
                  {"name": "web", "match": {"prefix": "/"}, "split": {"legacy": 100}}]
        p = self.proxy(h.make_config({"legacy": self.legacy, "new": dead}, routes=routes,
                                     extra={"access_log": {"mode": "off"}}))
        with h.Client(p.port) as c:
            for i in range(10):
                self.assertEqual(c.request("GET", "/?i=%d" % i).status, 200)
            self.assertEqual(c.request("GET", "/down").status, 502)
        time.sleep(0.4)  # four flush periods
        self.assertEqual(access_lines(p), [])
        with p.cond:
            self.assertEqual([l for l in p.lines if "request_id" in l], [])

    def test_sampled_mode_at_half_logs_about_half_the_requests(self):
        p = self.proxy(self.config(access_log={"mode": "sampled", "sample": 0.5}))
        with h.Client(p.port) as c:
            for i in range(400):
                self.assertEqual(c.request("GET", "/?i=%d" % i, [("x-app", "1")]).status, 200)
        time.sleep(0.3)
        n = len(access_lines(p))
        self.assertTrue(150 <= n <= 250, "%d of 400 logged at sample 0.5 (200 ± 5 sigma)" % n)

    def test_access_log_path_gets_the_lines_within_1s_and_stdout_gets_none(self):
        d = tempfile.mkdtemp(prefix="cutover-it-log-")
        path = os.path.join(d, "access.log")
        p = self.proxy(self.config(access_log={"path": path}))
        rids = []
        with h.Client(p.port) as c:
            for i in range(5):
                r = c.request("GET", "/f?i=%d" % i, [("x-app", "1")])
                self.assertEqual(r.status, 200)
                rids.append(r.header("x-request-id"))
        t_last = time.monotonic()
        lines = []
        while time.monotonic() - t_last < 1.0:
            with open(path) as f:
                lines = f.read().splitlines()
            if len(lines) >= 5:
                break
            time.sleep(0.01)
        elapsed = time.monotonic() - t_last
        self.assertEqual(len(lines), 5, "%d lines in %s after %.2fs" % (len(lines), path, elapsed))
        sys.stderr.write("[access lines in the file %.0f ms after the last response] "
                         % (elapsed * 1000))
        parsed = [json.loads(l) for l in lines]
        self.assertEqual([e["request_id"] for e in parsed], rids)
        self.assertEqual([e["path"] for e in parsed], ["/f?i=%d" % i for i in range(5)])
        for e in parsed:
            self.assertEqual(list(e.keys()), ACCESS_FIELDS)
        self.assertEqual(access_lines(p), [], "access lines also went to stdout")


class EventLogTest(h.ProxyTestCase):
    def test_event_lines_on_stderr_are_json_with_ts_level_event_and_stdout_only_has_access(self):
        legacy = self.backend("legacy")
        d = tempfile.mkdtemp(prefix="cutover-it-ev-")
        path = os.path.join(d, "cutover.yaml")
        cfg = h.make_config({"legacy": legacy}, split={"legacy": 100}, admin=True)
        with open(path, "w") as f:
            f.write(h.to_yaml(cfg) + "\n")
        proc = subprocess.Popen([h.require_binary(), "--config", path], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait(5)))
        err_lines = []
        port = None
        deadline = time.monotonic() + h.START_TIMEOUT
        while time.monotonic() < deadline and port is None:
            raw = h.read_line_bounded(proc.stderr, deadline - time.monotonic())
            if not raw:
                break
            err_lines.append(raw.decode())
            if '"event":"started"' in err_lines[-1]:
                for l in err_lines:
                    m = re.search(r'"event":"listening".*"address":"127\.0\.0\.1:(\d+)"', l)
                    if m:
                        port = int(m.group(1))
        self.assertIsNotNone(port, "no started/listening lines:\n%s" % "".join(err_lines))

        self.assertEqual(h.get(port, "/", [("x-request-id", "it-ev")]).status, 200)
        with open(path, "a") as f:
            f.write("# reload me\n")  # a watched in-place edit
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=5)
            self.fail("no exit within 10 s of SIGTERM")
        self.assertEqual(proc.returncode, 0, "".join(err_lines) + err.decode())
        err_lines += err.decode().splitlines(keepends=True)

        events = []
        for l in err_lines:
            self.assertTrue(l.endswith("\n"), "unterminated stderr line %r" % l)
            ev = json.loads(l)  # every stderr line is one JSON object
            self.assertIsInstance(ev, dict, l)
            self.assertEqual(list(ev.keys())[:3], ["ts", "level", "event"], l)
            self.assertRegex(ev["ts"], TS_RE, l)
            self.assertIn(ev["level"], LEVELS, l)
            self.assertIsInstance(ev["event"], str, l)
            events.append(ev)
        names = [e["event"] for e in events]
        for want in ("listening", "admin_listening", "started", "config_reloaded",
                     "drain_started", "drained", "stopped"):
            self.assertIn(want, names, names)
        self.assertLess(names.index("started"), names.index("config_reloaded"))
        self.assertEqual(names[-1], "stopped", names)
        self.assertIn("SIGHUP", [e.get("trigger") for e in events
                                 if e["event"] == "config_reloaded"], events)

        out_lines = out.decode().splitlines()
        self.assertEqual(len(out_lines), 1, out_lines)  # the one request, nothing else
        acc = json.loads(out_lines[0])
        self.assertEqual(list(acc.keys()), ACCESS_FIELDS)
        self.assertEqual((acc["request_id"], acc["status"], acc["backend"]),
                         ("it-ev", 200, "legacy"))


if __name__ == "__main__":
    h.main()
