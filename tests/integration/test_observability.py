#!/usr/bin/env python3
"""Metrics and alerts that tell the truth, against the real binary and a real Prometheus.

new answers 503 to everything on a route with retry_on_other_backend: clients only ever see
legacy's 200s, so cutover_requests_total says new served nothing. The attempt counters, /stats and
`cutoverctl status` must still show new failing every attempt, and the headline alert of
deploy/prometheus/alerts.yml must fire for new at 100% weight, and stay silent for a healthy new.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
ALERTS = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")
CTL = os.path.join(ROOT, "tools", "cutoverctl")
HEADLINE = "CutoverNewAttemptSuccessBelowGate"


def failing_over_route():
    return {"name": "default", "match": {"prefix": "/"}, "split": {"new": 100, "legacy": 0},
            "retry": {"attempts": 1, "on": [503], "retry_on_other_backend": True,
                      "backoff_base": "1ms", "backoff_max": "5ms"}}


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.1)


class ObservabilityTest(h.ProxyTestCase):
    def start_pair(self, new_fails):
        legacy = self.backend("legacy")
        new = self.backend("new")
        if new_fails:
            new.set_fail(100, 503)
        p = self.proxy(h.make_config({"legacy": legacy, "new": new}, routes=[failing_over_route()],
                                     admin=True))
        return p, legacy, new

    def send(self, p, n, served_by="legacy"):
        with h.Client(p.port) as c:
            for i in range(n):
                r = c.request("GET", "/?i=%d" % i)
                self.assertEqual((r.status, r.header("x-cutover-backend")), (200, served_by))

    def metrics(self, p, pred):
        # A stream records its metrics as it finishes, a moment after the client read the answer.
        text = [""]

        def ready():
            text[0] = h.admin(p, "GET", "/metrics").body.decode()
            return pred(text[0])
        wait_until(ready, 5, "the metrics to settle")
        return text[0]

    def test_attempts_show_new_failing_where_final_responses_show_only_legacy(self):
        p, legacy, new = self.start_pair(new_fails=True)
        self.send(p, 20)
        self.assertEqual(new.stats()["requests"], 20)

        def attempts(text, backend, outcome):
            return h.metric(text, "cutover_upstream_attempts_total", route="default",
                            backend=backend, outcome=outcome)
        text = self.metrics(p, lambda t: attempts(t, "legacy", "2xx") == 20)
        self.assertEqual(attempts(text, "new", "5xx"), 20)
        self.assertEqual(attempts(text, "new", "2xx"), 0)
        self.assertEqual(attempts(text, "legacy", "2xx"), 20)
        for outcome in ("connect_error", "timeout", "reset", "bad_response", "cancelled"):
            self.assertEqual(attempts(text, "new", outcome), 0, outcome)
        # The final-response view: what the old counters say (the lie the attempts correct).
        self.assertEqual(h.metric(text, "cutover_requests_total", route="default",
                                  backend="legacy", code_class="2xx"), 20)
        self.assertEqual(h.metric(text, "cutover_requests_total", route="default",
                                  backend="new", code_class="5xx"), 0)
        self.assertEqual(h.metric(text, "cutover_failovers_total", route="default",
                                  **{"from": "new", "to": "legacy"}), 20)
        self.assertEqual(h.metric(text, "cutover_route_configured_weight_percent",
                                  route="default", backend="new"), 100)
        self.assertEqual(h.metric(text, "cutover_route_effective_weight_percent",
                                  route="default", backend="new"), 100)
        self.assertGreater(h.metric(text, "process_resident_memory_bytes"), 1 << 20)
        self.assertGreater(h.metric(text, "process_open_fds"), 3)

        stats = json.loads(h.admin(p, "GET", "/stats").body)
        row = {b["name"]: b for b in stats["routes"][0]["backends"]}
        self.assertEqual((row["new"]["requests"], row["new"]["success_rate"]), (0, None))
        self.assertEqual((row["new"]["attempts"], row["new"]["attempt_success_rate"]), (20, 0.0))
        self.assertEqual((row["legacy"]["attempts"], row["legacy"]["attempt_success_rate"]),
                         (20, 1.0))
        per_backend = {b["name"]: b for b in stats["backends"]}
        self.assertEqual(per_backend["new"]["attempts"], 20)
        self.assertEqual(per_backend["new"]["attempt_success_rate"], 0.0)

        r = subprocess.run([sys.executable, CTL, "--admin", "http://127.0.0.1:%d" % p.admin_port,
                            "status"], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()[1:]  # after the caption saying which window
        self.assertEqual(lines[0].split()[:7], ["ROUTE", "BACKEND", "WEIGHT", "REQUESTS",
                                                "SUCCESS", "ATTEMPTS", "ATTEMPT"], r.stdout)
        new_row = [l for l in lines if l.startswith("default") and " new " in l][0].split()
        # No final responses for new: "-" for its success and p99, never 0.0; attempts 0.00%.
        self.assertEqual(new_row[:8], ["default", "new", "100%", "0", "-", "20", "0.00%", "-"],
                         r.stdout)
        legacy_row = [l for l in lines if " legacy " in l][0].split()
        self.assertEqual(legacy_row[3:7], ["20", "100.00%", "20", "100.00%"], r.stdout)

    def test_failed_attempts_are_counted_by_outcome_and_refusals_are_not_attempts(self):
        slow = self.backend("slow")
        dead_port = h.free_port()
        routes = [
            {"name": "slow", "match": {"prefix": "/slow"}, "split": {"slow": 100},
             "timeout": "300ms"},
            {"name": "dead", "match": {"prefix": "/dead"}, "split": {"dead": 100}},
        ]
        cfg = h.make_config({"slow": slow, "dead": [dead_port]}, routes=routes, admin=True)
        cfg["backends"]["dead"]["circuit_breaker"] = {"consecutive_failures": 1, "cooldown": "60s",
                                                      "failure_on": ["connect_error"]}
        p = self.proxy(cfg)
        # A connect error, then the open breaker refuses: one attempt, not two.
        self.assertEqual(h.get(p.port, "/dead").status, 502)
        r = h.get(p.port, "/dead")
        self.assertEqual((r.status, r.header("x-cutover-reason")), (503, "circuit_open"))
        # The request deadline passes while the backend thinks: a timeout.
        slow.set_latency(2000)
        self.assertEqual(h.get(p.port, "/slow").status, 504)
        # The client goes away mid-attempt (in the middle of its body): cancelled.
        with h.Client(p.port) as c:
            c.send(b"POST /slow/up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
            slow.wait_in_flight(2)

        def outcome(text, route, backend, o):
            return h.metric(text, "cutover_upstream_attempts_total", route=route, backend=backend,
                            outcome=o)
        text = self.metrics(p, lambda t: outcome(t, "slow", "slow", "cancelled") == 1)
        self.assertEqual(outcome(text, "dead", "dead", "connect_error"), 1)
        self.assertEqual(sum(outcome(text, "dead", "dead", o) for o in (
            "1xx", "2xx", "3xx", "4xx", "5xx", "timeout", "reset", "bad_response", "cancelled")), 0)
        self.assertEqual(h.metric(text, "cutover_local_replies_total", reason="circuit_open"), 1)
        self.assertEqual(outcome(text, "slow", "slow", "timeout"), 1)
        self.assertEqual(outcome(text, "slow", "slow", "2xx"), 0)
        stats = json.loads(h.admin(p, "GET", "/stats").body)
        dead = [b for b in stats["backends"] if b["name"] == "dead"][0]
        self.assertEqual((dead["attempts"], dead["attempt_success_rate"]), (1, 0.0))
        slow_row = [b for b in stats["backends"] if b["name"] == "slow"][0]
        # Cancelled attempts are neither successes nor failures.
        self.assertEqual((slow_row["attempts"], slow_row["attempt_success_rate"]), (1, 0.0))

    def test_dry_run_limits_count_what_they_would_reject_and_serve_it(self):
        legacy = self.backend("legacy")
        new = self.backend("new")
        routes = [
            {"name": "route_limit", "match": {"prefix": "/r"}, "split": {"legacy": 100},
             "rate_limit": {"rate": "1/min", "key": "route", "mode": "dry_run"}},
            {"name": "backend_limit", "match": {"prefix": "/b"}, "split": {"new": 100}},
        ]
        cfg = h.make_config({"legacy": legacy, "new": new}, routes=routes, admin=True)
        cfg["backends"]["new"]["rate_limit"] = {"rate": "1/min", "key": "route",
                                                "mode": "dry_run"}
        p = self.proxy(cfg)
        for target in ("/r", "/r", "/r", "/b", "/b", "/b"):
            self.assertEqual(h.get(p.port, target).status, 200, target)

        def dry(text, route):
            return h.metric(text, "cutover_rate_limit_dry_run_total", route=route)
        text = self.metrics(p, lambda t: dry(t, "backend_limit") == 2)
        self.assertEqual(dry(text, "route_limit"), 2)
        self.assertEqual(h.metric(text, "cutover_rate_limited_total", route="backend_limit"), 0)

    def test_prometheus_fires_the_headline_alert_for_failing_new_and_not_for_healthy_new(self):
        prometheus = shutil.which("prometheus")
        if prometheus is None:
            self.fail("the prometheus binary is needed (Debian package `prometheus`)")
        started = time.monotonic()
        failing, _, _ = self.start_pair(new_fails=True)
        healthy, _, _ = self.start_pair(new_fails=False)

        tmp = tempfile.mkdtemp(prefix="cutover-prom-")
        self.addCleanup(shutil.rmtree, tmp, True)
        # The real rules; only the `for:` hold times go to 0 so a test can wait for them.
        with open(ALERTS) as f:
            rules = re.sub(r"(?m)^(\s+for:\s*)\S+\s*$", r"\g<1>0s", f.read())
        with open(os.path.join(tmp, "rules.yml"), "w") as f:
            f.write(rules)

        def target(job, p):
            return ("  - job_name: %s\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n"
                    "        labels: {namespace: obs, pod: %s-0}\n" % (job, p.admin_port, job))
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                    "rule_files: [rules.yml]\nscrape_configs:\n" +
                    target("failing", failing) + target("healthy", healthy))
        port = h.free_port()
        log = open(os.path.join(tmp, "prometheus.log"), "w")
        self.addCleanup(log.close)
        prom = subprocess.Popen([prometheus, "--config.file=" + os.path.join(tmp, "prometheus.yml"),
                                 "--storage.tsdb.path=" + os.path.join(tmp, "data"),
                                 "--web.listen-address=127.0.0.1:%d" % port],
                                stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(h._kill, prom)

        def api(path, **params):
            url = "http://127.0.0.1:%d%s" % (port, path)
            if params:
                url += "?" + urllib.parse.urlencode(params)
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    return json.loads(r.read())["data"]
            except OSError:
                return None

        def query(expr):
            d = api("/api/v1/query", query=expr)
            return None if d is None else {s["metric"].get("job"): float(s["value"][1])
                                           for s in d["result"]}

        # Both targets scraped once before any traffic (the counters are there at 0), so the
        # traffic below is an increase Prometheus sees.
        zero = 'cutover_upstream_attempts_total{backend="new",outcome="5xx"}'
        wait_until(lambda: (query(zero) or {}).keys() >= {"failing", "healthy"}, 20,
                   "Prometheus to scrape both proxies (log: %s)" % log.name)
        self.send(failing, 120)  # above the alert's 100-attempt guard
        self.send(healthy, 120, served_by="new")

        def firing():
            d = api("/api/v1/alerts") or {"alerts": []}
            return [a["labels"] for a in d["alerts"]
                    if a["labels"]["alertname"] == HEADLINE and a["state"] == "firing"]
        fired = wait_until(firing, 25, "%s to fire" % HEADLINE)
        self.assertEqual([(a["job"], a["namespace"], a["pod"], a["route"]) for a in fired],
                         [("failing", "obs", "failing-0", "default")])
        # The healthy proxy is silent because its new succeeds, not for lack of data: the
        # headline's ratio is evaluated for it, at 1, over enough attempts.
        ratio = ('sum by (job) (rate(cutover_upstream_attempts_total{backend="new",'
                 'outcome=~"1xx|2xx|3xx|4xx"}[10m])) / sum by (job) (rate('
                 'cutover_upstream_attempts_total{backend="new",outcome!="cancelled"}[10m]))')
        # NaN (0/0) until a scrape after the traffic has reached Prometheus: wait past it.
        values = wait_until(
            lambda: (lambda v: v if v and len(v) == 2 and not any(math.isnan(x) for x in
                                                                   v.values()) else None)(
                query(ratio)), 20, "the success ratio of both proxies")
        self.assertEqual(values, {"failing": 0.0, "healthy": 1.0})
        self.assertEqual([a["job"] for a in firing()], ["failing"])
        self.assertLess(time.monotonic() - started, 60)


if __name__ == "__main__":
    h.main()
