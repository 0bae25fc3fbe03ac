#!/usr/bin/env python3
"""The admin API against the real binary: readiness and drain, POST-only mutations, the bearer
token, /metrics (promtool and exact counters), /stats and its reset, emergency rollback, and
`cutoverctl status` reading it all."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

CUTOVERCTL = os.path.join(h.REPO, "tools", "cutoverctl")
MUTATIONS = ["/reload", "/drain", "/rollback", "/rollback/clear", "/stats/reset"]
TOKEN_ENV = "CUTOVER_IT_ADMIN_TOKEN"

served_by, admin, metric = h.served_by, h.admin, h.metric


def write_atomic(path, text):
    tmp = os.path.join(os.path.dirname(path), ".%s.tmp" % os.path.basename(path))
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def wait_events(p, name, n, timeout):
    def enough(px):
        evs = px.find_events(name)
        return evs if len(evs) >= n else None
    return p.wait_for(enough, timeout)


class AdminTest(h.ProxyTestCase):
    def setUp(self):
        self.legacy = self.backend("legacy")
        self.new = self.backend("new")

    def config(self, new=50, legacy=50, **kw):
        kw.setdefault("admin", True)
        return h.make_config({"legacy": self.legacy, "new": self.new},
                             split={"new": new, "legacy": legacy}, **kw)

    def watched_proxy(self, cfg):
        """A proxy whose file watcher is running: it starts after "admin_listening" (where
        start_proxy returns), just before "started"; an edit made earlier raises no event."""
        p = self.proxy(cfg)
        self.assertTrue(p.wait_for(lambda px: px.find_events("started"), 5), p.log_tail())
        return p

    def send(self, p, n, target="/"):
        """n requests on one keep-alive connection; {backend: count} from x-cutover-backend."""
        counts = {"new": 0, "legacy": 0}
        with h.Client(p.port) as c:
            for i in range(n):
                r = c.request("GET", target)
                self.assertEqual(r.status, 200, r)
                counts[served_by(r)] += 1
        return counts

    def metrics_until(self, p, pred, timeout=2.0):
        """/metrics text once pred(text) holds (a stream records its metrics as it finishes, which
        may be a moment after the client has read the response), else the last text."""
        deadline = time.monotonic() + timeout
        while True:
            text = admin(p, "GET", "/metrics").body.decode()
            if pred(text) or time.monotonic() > deadline:
                return text
            time.sleep(0.02)

    # ---- readiness and drain --------------------------------------------------------------------

    def test_ready_is_200_then_503_after_post_drain_and_the_proxy_exits_0(self):
        p = self.proxy(self.config(new=0, legacy=100, timeouts={"drain": "5s"}))
        r = admin(p, "GET", "/healthz")
        self.assertEqual((r.status, r.body), (200, b"ok\n"))
        r = admin(p, "GET", "/ready")
        self.assertEqual((r.status, r.body), (200, b"ready\n"))

        # A slow request keeps the drain going long enough to look at /ready.
        result = {}

        def slow():
            try:
                with h.Client(p.port, timeout=10) as c:
                    result["resp"] = c.request("GET", "/slow?ms=1500")
            except Exception as e:
                result["error"] = e

        t = threading.Thread(target=slow)
        t.start()
        self.assertGreaterEqual(self.legacy.wait_in_flight(1), 1, "slow request never arrived")

        p.expect_exit = True
        r = admin(p, "POST", "/drain")
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.json().get("draining"), True, r.body)
        r = admin(p, "GET", "/ready")
        self.assertEqual((r.status, r.body), (503, b"draining\n"), r)
        self.assertTrue(t.is_alive(), "slow request ended before /ready was checked")
        r = admin(p, "GET", "/healthz")
        self.assertEqual(r.status, 200, "still alive while draining")

        t.join(timeout=10)
        self.assertNotIn("error", result, "in-flight request failed: %r" % result.get("error"))
        self.assertEqual(result["resp"].status, 200)
        code = p.wait_exit(timeout=6)
        self.assertEqual(code, 0, "exit code %s; log:\n%s" % (code, p.log_tail()))
        drain = p.find_events("drain_started")
        self.assertEqual([e.get("why") for e in drain], ["admin"], drain)

    # ---- methods and the token ------------------------------------------------------------------

    def test_get_on_every_mutation_path_is_405_with_allow_post_and_changes_nothing(self):
        p = self.proxy(self.config())
        for path in MUTATIONS:
            r = admin(p, "GET", path)
            self.assertEqual(r.status, 405, "%s: %r" % (path, r))
            self.assertEqual(r.header("allow"), "POST", "%s: %r" % (path, r))
        r = admin(p, "POST", "/metrics")
        self.assertEqual(r.status, 405, r)
        self.assertIn("GET", r.header("allow", ""), r)
        # Nothing happened: still ready, no rollback, no reload.
        self.assertEqual(admin(p, "GET", "/ready").status, 200)
        cfg = admin(p, "GET", "/config").body.decode()
        self.assertRegex(cfg, r"(?m)^rollback_active: false$")
        self.assertEqual(p.find_events("config_reloaded"), [])
        self.assertEqual(p.find_events("drain_started"), [])

    def test_token_from_env_protects_mutations_with_401_while_reads_stay_open(self):
        token = "it-token-%d" % os.getpid()
        os.environ[TOKEN_ENV] = token  # the proxy inherits the environment
        self.addCleanup(os.environ.pop, TOKEN_ENV, None)
        p = self.proxy(self.config(extra={"admin": {"address": "127.0.0.1:0",
                                                    "token_env": TOKEN_ENV}}))
        for path in MUTATIONS:
            r = admin(p, "POST", path)
            self.assertEqual(r.status, 401, "%s without a token: %r" % (path, r))
            self.assertIn("Bearer", r.header("www-authenticate", ""), r)
        for bad in ("Bearer wrong", "Basic " + token, token, "Bearer " + token + "x"):
            r = admin(p, "POST", "/rollback", [("Authorization", bad)])
            self.assertEqual(r.status, 401, "%r: %r" % (bad, r))
        r = admin(p, "POST", "/drain", [("Authorization", "Bearer nope")])
        self.assertEqual(r.status, 401, r)
        self.assertEqual(admin(p, "GET", "/ready").status, 200, "an unauthorized drain drained")
        cfg = admin(p, "GET", "/config").body.decode()
        self.assertRegex(cfg, r"(?m)^rollback_active: false$", "an unauthorized rollback ran")

        for path in ("/metrics", "/healthz", "/ready", "/config", "/stats"):
            self.assertEqual(admin(p, "GET", path).status, 200, path)

        r = admin(p, "POST", "/rollback", [("Authorization", "Bearer " + token)])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["rollback_active"], True)
        r = admin(p, "POST", "/reload", [("Authorization", "Bearer " + token)])
        self.assertEqual((r.status, r.json()["ok"]), (200, True), r.body)
        r = admin(p, "POST", "/rollback/clear", [("Authorization", "Bearer " + token)])
        self.assertEqual(r.status, 200, r)

    # ---- failing closed -------------------------------------------------------------------------

    def write_config(self, cfg):
        d = tempfile.mkdtemp(prefix="cutover-admin-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "cutover.yaml")
        with open(path, "w") as f:
            f.write(h.to_yaml(cfg) + "\n")
        return path

    def assertStartFails(self, cfg, message):
        """`--config` exits 1 (not by a signal) naming `message`; `--check` fails the same way."""
        path = self.write_config(cfg)
        for mode in ("--config", "--check"):
            code, out, err = h.run_binary([mode, path], timeout=15)
            self.assertEqual(code, 1, "%s exit %r:\n%s%s" % (mode, code, out, err))
            self.assertIn(message, out + err, mode)
        return path

    def test_missing_token_file_fails_start_and_check_with_file_line_col(self):
        path = self.assertStartFails(
            self.config(extra={"admin": {"address": "127.0.0.1:0",
                                         "token_file": "/nonexistent/admin-token"}}),
            "admin.token_file: cannot read the token file '/nonexistent/admin-token': "
            "No such file or directory")
        code, out, err = h.run_binary(["--check", path])
        self.assertRegex(out + err, re.escape(path) + r":\d+:\d+: admin\.token_file: ")

    def test_unset_or_blank_token_env_fails_start_and_check(self):
        os.environ.pop(TOKEN_ENV, None)
        cfg = self.config(extra={"admin": {"address": "127.0.0.1:0", "token_env": TOKEN_ENV}})
        self.assertStartFails(cfg, "admin.token_env: environment variable %s is not set"
                              % TOKEN_ENV)
        os.environ[TOKEN_ENV] = "  \n"
        self.addCleanup(os.environ.pop, TOKEN_ENV, None)
        self.assertStartFails(cfg, "admin.token_env: environment variable %s is empty or blank"
                              % TOKEN_ENV)

    def test_reload_with_a_blank_token_file_is_rejected_and_the_old_token_still_guards(self):
        d = tempfile.mkdtemp(prefix="cutover-token-")
        self.addCleanup(shutil.rmtree, d, True)
        token_file = os.path.join(d, "token")
        write_atomic(token_file, "first-token\n")
        p = self.proxy(self.config(new=0, legacy=100,
                                   extra={"admin": {"address": "127.0.0.1:0",
                                                    "token_file": token_file}}))
        ok = [("Authorization", "Bearer first-token")]
        write_atomic(token_file, " \n")
        r = admin(p, "POST", "/reload", ok)
        self.assertEqual(r.status, 400, r)
        self.assertIn("is empty or blank", " ".join(r.json()["errors"]), r.body)
        self.assertEqual(admin(p, "POST", "/stats/reset").status, 401)
        self.assertEqual(admin(p, "POST", "/stats/reset", ok).status, 200)
        self.assertEqual(admin(p, "POST", "/drain").status, 401)
        self.assertEqual(admin(p, "GET", "/ready").status, 200)
        # A good reload rotates the token.
        write_atomic(token_file, "second-token\n")
        r = admin(p, "POST", "/reload", ok)
        self.assertEqual((r.status, r.json()["ok"]), (200, True), r.body)
        self.assertEqual(admin(p, "POST", "/stats/reset", ok).status, 401)
        self.assertEqual(admin(p, "POST", "/stats/reset",
                               [("Authorization", "Bearer second-token")]).status, 200)

    def test_admin_on_all_interfaces_without_a_token_is_refused_unless_explicitly_allowed(self):
        self.assertStartFails(
            self.config(extra={"admin": {"address": "0.0.0.0:0"}}),
            "admin.address: admin address 0.0.0.0:0 is not loopback and no token is configured")
        p = self.proxy(self.config(extra={"admin": {"address": "0.0.0.0:0",
                                                    "allow_unauthenticated": True}}))
        self.assertTrue(p.find_events("admin_unprotected"), p.log_tail())
        self.assertEqual(admin(p, "GET", "/ready").status, 200)

    def test_admin_port_in_use_exits_1_with_a_clear_message_and_no_abort(self):
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        path = self.write_config(self.config(extra={"admin": {"address": "127.0.0.1:%d" % port}}))
        code, out, err = h.run_binary(["--config", path], timeout=15)
        text = out + err
        self.assertEqual(code, 1, "exit %r (negative: killed by a signal):\n%s" % (code, text))
        self.assertNotIn("destroyed before", text)
        events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        failed = [e for e in events if e.get("event") == "admin_listen_failed"]
        self.assertTrue(failed, text)
        self.assertEqual(failed[0].get("address"), "127.0.0.1:%d" % port, failed)
        self.assertIn("address already in use", failed[0].get("error", ""), failed)

    # ---- /metrics -------------------------------------------------------------------------------

    def test_metrics_pass_promtool_and_request_counters_equal_requests_sent_per_backend(self):
        routes = [{"name": "api", "match": {"prefix": "/api/"},
                   "split": {"new": 50, "legacy": 50}}]
        p = self.proxy(h.make_config({"legacy": self.legacy, "new": self.new}, routes=routes,
                                     admin=True))
        counts = self.send(p, 200, "/api/items")
        self.assertGreater(counts["new"], 0, counts)
        self.assertGreater(counts["legacy"], 0, counts)
        with h.Client(p.port) as c:
            for _ in range(3):
                r = c.request("GET", "/elsewhere")
                self.assertEqual((r.status, r.header("x-cutover-reason")), (404, "no_route"))

        def complete(text):
            got = [metric(text, "cutover_requests_total", route="api", backend=b,
                          code_class="2xx") for b in ("new", "legacy")]
            return (got == [counts["new"], counts["legacy"]]
                    and metric(text, "cutover_local_replies_total", reason="no_route") == 3)

        text = self.metrics_until(p, complete)
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool is not installed")
        r = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        self.assertEqual(r.returncode, 0, "promtool:\n%s" % r.stdout.decode())

        for b in ("new", "legacy"):
            self.assertEqual(metric(text, "cutover_requests_total", route="api", backend=b,
                                    code_class="2xx"), counts[b], b)
            self.assertEqual(metric(text, "cutover_request_duration_seconds_count", route="api",
                                    backend=b), counts[b], b)
            for cls in ("1xx", "3xx", "4xx", "5xx"):
                v = metric(text, "cutover_requests_total", route="api", backend=b, code_class=cls)
                self.assertIn(v, (None, 0.0), (b, cls))
            self.assertEqual(metric(text, "cutover_route_weight_percent", route="api", backend=b),
                             50)
        self.assertEqual(metric(text, "cutover_local_replies_total", reason="no_route"), 3)
        self.assertEqual(metric(text, "cutover_config_generation"), 1)
        self.assertEqual(metric(text, "cutover_rollback_active"), 0)
        self.assertEqual(metric(text, "cutover_config_reloads_total", result="success"), 0)
        self.assertEqual(metric(text, "cutover_config_reloads_total", result="rejected"), 0)
        self.assertRegex(text, r'(?m)^cutover_build_info\{version="[^"]+"\} 1$')
        # Labels are bounded: no request path ever becomes a label value.
        self.assertNotIn("/api/items", text)
        self.assertNotIn("/elsewhere", text)

    # ---- /stats ---------------------------------------------------------------------------------

    def test_stats_counts_match_requests_and_reset_zeroes_the_window_but_not_metrics(self):
        p = self.proxy(self.config(new=50, legacy=50))
        counts = self.send(p, 100)
        text = self.metrics_until(p, lambda t: metric(
            t, "cutover_requests_total", route="default", backend="new", code_class="2xx")
            == counts["new"])

        st = json.loads(admin(p, "GET", "/stats").body)
        self.assertEqual(st["generation"], 1)
        self.assertIs(st["rollback"], False)
        self.assertRegex(st["since"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual([r["name"] for r in st["routes"]], ["default"])
        route = st["routes"][0]
        self.assertEqual(route["rate_limited"], 0)
        by_name = {b["name"]: b for b in route["backends"]}
        self.assertEqual(sorted(by_name), ["legacy", "new"])
        for name, b in by_name.items():
            self.assertEqual(b["weight"], 50, b)
            self.assertEqual(b["requests"], counts[name], (b, counts))
            self.assertEqual(b["success_rate"], 1.0, b)
            self.assertGreater(b["avg_ms"], 0, b)
            self.assertGreaterEqual(b["p99_ms"], b["avg_ms"] * 0.5, b)
            self.assertLess(b["p99_ms"], 1000, b)
        totals = {b["name"]: b for b in st["backends"]}
        self.assertEqual(sorted(totals), ["legacy", "new"])
        for name in ("new", "legacy"):
            self.assertEqual(totals[name]["requests"], counts[name])
            self.assertEqual(totals[name]["success_rate"], 1.0)
            self.assertIn("breaker", totals[name])

        r = admin(p, "POST", "/stats/reset")
        self.assertEqual((r.status, r.json()), (200, {"ok": True}))
        st = json.loads(admin(p, "GET", "/stats").body)
        for b in st["routes"][0]["backends"] + st["backends"]:
            self.assertEqual(b["requests"], 0, b)
            self.assertIsNone(b["success_rate"], b)
        after = admin(p, "GET", "/metrics").body.decode()
        for name in ("new", "legacy"):
            self.assertEqual(metric(after, "cutover_requests_total", route="default",
                                    backend=name, code_class="2xx"),
                             metric(text, "cutover_requests_total", route="default",
                                    backend=name, code_class="2xx"),
                             "Prometheus counters must never reset")

        more = self.send(p, 10)
        deadline = time.monotonic() + 2
        while True:
            st = json.loads(admin(p, "GET", "/stats").body)
            got = {b["name"]: b["requests"] for b in st["backends"]}
            if got == more or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self.assertEqual(got, more)

    # ---- rollback -------------------------------------------------------------------------------

    def test_rollback_sends_every_route_to_legacy_kept_across_same_weight_reload_until_clear(self):
        routes = [{"name": "api", "match": {"prefix": "/api/"},
                   "split": {"new": 100, "legacy": 0}},
                  {"name": "web", "match": {"prefix": "/"}, "split": {"new": 50, "legacy": 50}}]
        cfg = h.make_config({"legacy": self.legacy, "new": self.new}, routes=routes, admin=True)
        p = self.watched_proxy(cfg)
        self.assertEqual(self.send(p, 20, "/api/x"), {"new": 20, "legacy": 0})

        r = admin(p, "POST", "/rollback")
        self.assertEqual(r.status, 200, r)
        self.assertEqual({k: r.json()[k] for k in ("ok", "rollback_active", "changed", "actor")},
                         {"ok": True, "rollback_active": True, "changed": True, "actor": "admin"})
        # Immediately: the very next requests on both routes go to legacy.
        self.assertEqual(self.send(p, 50, "/api/x"), {"new": 0, "legacy": 50})
        self.assertEqual(self.send(p, 50, "/"), {"new": 0, "legacy": 50})
        conf = admin(p, "GET", "/config").body.decode()
        self.assertRegex(conf, r"(?m)^rollback_active: true$")
        m = admin(p, "GET", "/metrics").body.decode()
        self.assertEqual(metric(m, "cutover_rollback_active"), 1)
        for route in ("api", "web"):
            self.assertEqual(metric(m, "cutover_route_weight_percent", route=route,
                                    backend="new"), 0, route)
            self.assertEqual(metric(m, "cutover_route_weight_percent", route=route,
                                    backend="legacy"), 100, route)
        self.assertIs(json.loads(admin(p, "GET", "/stats").body)["rollback"], True)
        self.assertEqual(len(p.find_events("rollback")), 1)
        r = admin(p, "POST", "/rollback")
        self.assertEqual(r.json()["changed"], False, "a second rollback is a no-op")

        # A reload whose file keeps the same weights (only a comment changes) keeps the rollback.
        text = h.to_yaml(cfg) + "\n"
        write_atomic(p.config_path, text + "# touched\n")
        self.assertTrue(wait_events(p, "config_reloaded", 1, 3), p.log_tail())
        self.assertEqual(self.send(p, 30, "/api/x"), {"new": 0, "legacy": 30})
        self.assertRegex(admin(p, "GET", "/config").body.decode(), r"(?m)^rollback_active: true$")
        r = admin(p, "POST", "/reload")
        self.assertEqual(r.json()["ok"], True, r.body)
        self.assertEqual(self.send(p, 30, "/api/x"), {"new": 0, "legacy": 30})

        r = admin(p, "POST", "/rollback/clear")
        self.assertEqual({k: r.json()[k] for k in ("ok", "rollback_active", "changed")},
                         {"ok": True, "rollback_active": False, "changed": True})
        self.assertEqual(self.send(p, 20, "/api/x"), {"new": 20, "legacy": 0})
        self.assertRegex(admin(p, "GET", "/config").body.decode(), r"(?m)^rollback_active: false$")
        m = admin(p, "GET", "/metrics").body.decode()
        self.assertEqual(metric(m, "cutover_rollback_active"), 0)
        self.assertEqual(metric(m, "cutover_route_weight_percent", route="api", backend="new"), 100)
        self.assertEqual(metric(m, "cutover_route_weight_percent", route="web", backend="new"), 50)
        self.assertEqual(len(p.find_events("rollback_cleared")), 1)

    def test_rollback_stays_when_a_reload_sets_new_weights_which_apply_underneath(self):
        p = self.watched_proxy(self.config(new=100, legacy=0))
        self.assertEqual(admin(p, "POST", "/rollback").status, 200)
        self.assertEqual(self.send(p, 20), {"new": 0, "legacy": 20})

        write_atomic(p.config_path, h.to_yaml(self.config(new=90, legacy=10)) + "\n")
        self.assertTrue(wait_events(p, "config_reloaded", 1, 3), p.log_tail())
        self.assertEqual(p.find_events("rollback_cleared"), [], p.log_tail())
        self.assertEqual(p.find_events("config_reloaded")[-1].get("rollback"),
                         "applied under active rollback")
        self.assertRegex(admin(p, "GET", "/config").body.decode(), r"(?m)^rollback_active: true$")
        m = admin(p, "GET", "/metrics").body.decode()
        self.assertEqual(metric(m, "cutover_rollback_active"), 1)
        self.assertEqual(metric(m, "cutover_route_weight_percent", route="default", backend="new"),
                         0)
        self.assertEqual(self.send(p, 20), {"new": 0, "legacy": 20})

        # Cleared: the file's new weights, applied underneath, take over.
        self.assertEqual(admin(p, "POST", "/rollback/clear").json()["changed"], True)
        m = admin(p, "GET", "/metrics").body.decode()
        self.assertEqual(metric(m, "cutover_route_weight_percent", route="default", backend="new"),
                         90)
        counts = self.send(p, 200)
        self.assertTrue(150 <= counts["new"] <= 200, counts)  # 180 ± 5 sigma (sigma ≈ 4.2)

    # ---- cutoverctl ---------------------------------------------------------------------------

    def test_cutoverctl_status_prints_a_table_of_routes_backends_and_weights(self):
        p = self.proxy(self.config(new=25, legacy=75))
        counts = self.send(p, 40)
        self.metrics_until(p, lambda t: metric(
            t, "cutover_requests_total", route="default", backend="legacy", code_class="2xx")
            == counts["legacy"])
        r = subprocess.run([sys.executable, CUTOVERCTL, "--admin",
                            "http://127.0.0.1:%d" % p.admin_port, "status"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        out = r.stdout.decode()
        self.assertEqual(r.returncode, 0, out + r.stderr.decode())
        lines = [l.split() for l in out.splitlines()[1:] if l.strip()]  # after the caption
        self.assertEqual(lines[0][:4], ["ROUTE", "BACKEND", "WEIGHT", "REQUESTS"], out)
        rows = {tuple(l[:2]): l for l in lines[1:]}
        self.assertIn(("default", "new"), rows, out)
        self.assertIn(("default", "legacy"), rows, out)
        self.assertEqual(rows[("default", "new")][2:4], ["25%", str(counts["new"])], out)
        self.assertEqual(rows[("default", "legacy")][2:4], ["75%", str(counts["legacy"])], out)
        self.assertNotIn("ROLLBACK", out)


if __name__ == "__main__":
    h.main()
