#!/usr/bin/env python3
"""Rollback by role: every route to its stable backend whatever the backends are called, sticky
until cleared (file edits apply underneath), override header refused, tunnels to the rolled-back
backend closable, persisted in state_dir across restarts, a broken file at restart served from the
last-known-good, and `cutoverctl rollback --now` telling the running proxy."""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

served_by, admin, metric = h.served_by, h.admin, h.metric
CUTOVERCTL = os.path.join(h.REPO, "tools", "cutoverctl")
V1, V2 = "fastapi-v1", "fastapi-v2"


def write_atomic(path, text):
    tmp = os.path.join(os.path.dirname(path), ".%s.tmp" % os.path.basename(path))
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def poll(predicate, timeout=5.0):
    """predicate() until truthy or the timeout; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.02)


class RollbackTest(h.ProxyTestCase):
    def setUp(self):
        self.v1 = self.backend(V1)
        self.v2 = self.backend(V2)
        self.state_dir = tempfile.mkdtemp(prefix="cutover-state-")

    def config(self, w2=100, state_dir=False, override=False, per_route_stable=True):
        routes = [{"name": "api", "match": {"prefix": "/api/"}, "split": {V2: w2, V1: 100 - w2}},
                  {"name": "web", "match": {"prefix": "/"}, "split": {V2: w2, V1: 100 - w2}}]
        extra = {"defaults": {"stable": V1}}
        if per_route_stable:
            # One route names its own role, the other takes defaults.stable.
            routes[0]["stable"] = V1
        if state_dir:
            extra["state_dir"] = self.state_dir
        return h.make_config({V1: self.v1, V2: self.v2}, routes=routes, admin=True,
                             override_header="x-cutover-backend" if override else None,
                             extra=extra)

    def started(self, cfg, **kw):
        p = self.proxy(cfg, **kw)
        self.assertTrue(p.wait_for(lambda px: px.find_events("started"), 5), p.log_tail())
        return p

    def send(self, p, n, target="/", headers=None):
        counts = {V1: 0, V2: 0}
        with h.Client(p.port) as c:
            for _ in range(n):
                r = c.request("GET", target, headers)
                self.assertEqual(r.status, 200, r)
                counts[served_by(r)] += 1
        return counts

    def test_check_refuses_a_split_route_without_a_rollback_target(self):
        cfg = self.config(per_route_stable=False)
        del cfg["defaults"]
        path = os.path.join(self.state_dir, "bad.yaml")
        with open(path, "w") as f:
            f.write(h.to_yaml(cfg) + "\n")
        code, out, err = h.run_binary(["--check", path])
        self.assertEqual(code, 1, err)
        self.assertRegex(err, r"bad\.yaml:\d+:\d+: routes\[0\]\.stable: route splits over "
                              r"fastapi-v2, fastapi-v1 but has no rollback target")
        self.assertRegex(err, r"routes\[1\]\.stable: ")

    def test_rollback_with_fastapi_names_moves_all_traffic_to_stable_until_cleared(self):
        p = self.started(self.config(w2=100))
        self.assertEqual(self.send(p, 20, "/api/x"), {V1: 0, V2: 20})
        self.assertEqual(self.send(p, 20), {V1: 0, V2: 20})

        r = admin(p, "POST", "/rollback?reason=v2+5xx&actor=oncall")
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertEqual((body["rollback_active"], body["changed"], body["actor"],
                          body["reason"], body["persisted"]), (True, True, "oncall", "v2 5xx", False))
        self.assertEqual(self.send(p, 50, "/api/x"), {V1: 50, V2: 0})
        self.assertEqual(self.send(p, 50), {V1: 50, V2: 0})

        st = json.loads(admin(p, "GET", "/stats").body)
        self.assertIs(st["rollback"], True)
        self.assertEqual(st["rollback_since"], body["since"])
        conf = admin(p, "GET", "/config").body.decode()
        self.assertRegex(conf, r"(?m)^# ROLLBACK ACTIVE since \d{4}-\d\d-\d\dT")
        self.assertRegex(conf, r"(?m)^rollback_active: true$")
        self.assertIn('rollback_actor: "oncall"', conf)
        m = admin(p, "GET", "/metrics").body.decode()
        self.assertEqual(metric(m, "cutover_rollback_active"), 1)
        self.assertGreater(metric(m, "cutover_rollback_since_seconds"), 1.7e9)
        for route in ("api", "web"):
            self.assertEqual(metric(m, "cutover_route_weight_percent", route=route, backend=V1), 100)
            self.assertEqual(metric(m, "cutover_route_weight_percent", route=route, backend=V2), 0)

        r = admin(p, "DELETE", "/rollback")
        self.assertEqual((r.status, r.json()["rollback_active"], r.json()["changed"]),
                         (200, False, True), r)
        self.assertEqual(self.send(p, 20, "/api/x"), {V1: 0, V2: 20})
        self.assertIs(json.loads(admin(p, "GET", "/stats").body)["rollback"], False)

    def test_file_edit_during_rollback_changes_weights_underneath_traffic_stays_on_stable(self):
        p = self.started(self.config(w2=50))
        self.assertEqual(admin(p, "POST", "/rollback").status, 200)
        write_atomic(p.config_path, h.to_yaml(self.config(w2=100)) + "\n")
        self.assertTrue(p.wait_for(lambda px: px.find_events("config_reloaded"), 5), p.log_tail())
        ev = p.find_events("config_reloaded")[-1]
        self.assertEqual(ev.get("rollback"), "applied under active rollback", ev)
        self.assertIn("route api: fastapi-v2 50% -> 100%", ev.get("changes"))
        self.assertEqual(p.find_events("rollback_cleared"), [])
        self.assertEqual(self.send(p, 40, "/api/x"), {V1: 40, V2: 0})
        self.assertEqual(self.send(p, 40), {V1: 40, V2: 0})

        self.assertEqual(admin(p, "POST", "/rollback/clear").json()["changed"], True)
        # The file's new weights, applied underneath, are what runs now.
        self.assertEqual(self.send(p, 40, "/api/x"), {V1: 0, V2: 40})
        self.assertEqual(self.send(p, 40), {V1: 0, V2: 40})

    def test_override_header_cannot_pick_the_rolled_back_backend(self):
        p = self.started(self.config(w2=0, override=True))
        force_v2 = [("x-cutover-backend", V2)]
        self.assertEqual(self.send(p, 5, "/api/x", force_v2), {V1: 0, V2: 5})
        self.assertEqual(admin(p, "POST", "/rollback").status, 200)
        self.assertEqual(self.send(p, 7, "/api/x", force_v2), {V1: 7, V2: 0})
        self.assertEqual(self.send(p, 3, "/", [("x-cutover-backend", V1)]), {V1: 3, V2: 0})
        m = admin(p, "GET", "/metrics").body.decode()
        self.assertEqual(metric(m, "cutover_override_refused_total"), 7)
        flagged = p.wait_for(lambda px: [e for e in px.events
                                         if "override_refused" in (e.get("flags") or [])], 3)
        self.assertEqual(len(flagged or []), 7, p.log_tail())

    def ws_open(self, port, headers):
        c = h.Client(port, timeout=5)
        c.send(h.build_request("GET", "/ws", [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
            *headers]))
        r = c.read_response()
        self.assertEqual(r.status, 101, r)
        return c, r

    def test_close_tunnels_closes_a_websocket_to_the_rolled_back_backend_only(self):
        p = self.started(self.config(w2=100, override=True))
        to_v2, r2 = self.ws_open(p.port, [])
        self.addCleanup(to_v2.close)
        self.assertEqual(r2.header("x-backend"), V2)
        to_v1, r1 = self.ws_open(p.port, [("x-cutover-backend", V1)])
        self.addCleanup(to_v1.close)
        self.assertEqual(r1.header("x-backend"), V1)

        # A plain rollback leaves open tunnels alone; close_tunnels=1 ends the one to v2.
        self.assertEqual(admin(p, "POST", "/rollback").status, 200)
        to_v2.send(h.ws_client_frame(0x9, b"still here"))
        self.assertEqual(h.ws_read_frame(to_v2)[1:3], (0xA, b"still here"))
        r = admin(p, "POST", "/rollback?close_tunnels=1")
        self.assertEqual((r.json()["changed"], r.json()["close_tunnels"]), (False, True), r)
        self.assertTrue(to_v2.closed_by_peer(5), "the tunnel to fastapi-v2 stayed open")
        to_v1.send(h.ws_client_frame(0x9, b"stable"))
        self.assertEqual(h.ws_read_frame(to_v1)[1:3], (0xA, b"stable"))
        ev = p.wait_for(lambda px: px.find_events("tunnels_closed"), 3)
        self.assertEqual(sum(e["count"] for e in ev), 1, ev)

    def test_rollback_persists_across_restart_with_state_dir(self):
        cfg = self.config(w2=100, state_dir=True)
        p = self.started(cfg)
        r = admin(p, "POST", "/rollback?actor=alice&reason=errors")
        self.assertEqual((r.status, r.json()["persisted"]), (200, True), r)
        since = r.json()["since"]
        with open(os.path.join(self.state_dir, "rollback.state")) as f:
            self.assertIn("rollback_active 1\n", f.read())
        p.stop()

        p2 = self.started(cfg)
        restored = p2.find_events("rollback_restored")
        self.assertEqual([(e["actor"], e["reason"]) for e in restored], [("alice", "errors")])
        self.assertEqual(self.send(p2, 30, "/api/x"), {V1: 30, V2: 0})
        st = json.loads(admin(p2, "GET", "/stats").body)
        self.assertEqual((st["rollback"], st["rollback_since"]), (True, since))
        self.assertRegex(admin(p2, "GET", "/config").body.decode(),
                         r"(?m)^# ROLLBACK ACTIVE since ")
        r = admin(p2, "POST", "/rollback/clear")
        self.assertEqual((r.json()["changed"], r.json()["persisted"]), (True, True), r)
        p2.stop()

        # The --state-dir flag names the same directory without the config key.
        p3 = self.started(self.config(w2=100), extra_args=("--state-dir", self.state_dir))
        self.assertEqual(p3.find_events("rollback_restored"), [])
        self.assertEqual(self.send(p3, 10, "/api/x"), {V1: 0, V2: 10})

    def test_broken_config_at_restart_starts_from_last_known_good(self):
        cfg = self.config(w2=100, state_dir=True)
        p = self.started(cfg)
        last_good = os.path.join(self.state_dir, "last_good.yaml")
        self.assertTrue(poll(lambda: os.path.exists(last_good)), "no last_good.yaml written")
        p.stop()

        broken = h.to_yaml(cfg).replace("prefix: \"/api/\"", "prefix: \"/api/\"\n    bogus: 1")
        self.assertNotEqual(broken, h.to_yaml(cfg))
        p2 = self.started(broken + "\n", wait_admin=True)
        ev = p2.find_events("config_started_from_last_good")
        self.assertEqual(len(ev), 1, p2.log_tail())
        self.assertEqual(ev[0]["level"], "error")
        self.assertTrue([e for e in p2.find_events("config_error") if "bogus" in e["error"]])
        self.assertEqual(admin(p2, "GET", "/ready").status, 200)
        conf = admin(p2, "GET", "/config").body.decode()
        self.assertRegex(conf, r"(?m)^running_from: last_known_good$")
        self.assertRegex(conf, r"(?m)^last_reload_error: ")
        m = admin(p2, "GET", "/metrics").body.decode()
        self.assertEqual(metric(m, "cutover_config_last_load_success"), 0)
        self.assertEqual(self.send(p2, 10, "/api/x"), {V1: 0, V2: 10})

        # Fixing the file loads it, and says so.
        write_atomic(p2.config_path, h.to_yaml(self.config(w2=0, state_dir=True)) + "\n")
        self.assertTrue(p2.wait_for(lambda px: px.find_events("config_reloaded"), 5),
                        p2.log_tail())
        self.assertRegex(admin(p2, "GET", "/config").body.decode(), r"(?m)^running_from: file$")
        m = admin(p2, "GET", "/metrics").body.decode()
        self.assertEqual(metric(m, "cutover_config_last_load_success"), 1)
        self.assertEqual(self.send(p2, 10, "/api/x"), {V1: 10, V2: 0})

    def test_broken_config_without_a_last_known_good_exits_non_zero(self):
        empty = tempfile.mkdtemp(prefix="cutover-state-")
        path = os.path.join(empty, "cutover.yaml")
        for extra in (["--state-dir", empty], []):
            with open(path, "w") as f:
                f.write("listeners: [ {name: public\n")  # not even YAML
            code, out, err = h.run_binary(["--config", path, *extra])
            self.assertEqual(code, 1, err)
            self.assertIn("config_no_last_good", err)
            self.assertNotIn("listening", err)

    def test_cutoverctl_rollback_now_posts_to_the_api_and_edits_the_file_by_role(self):
        cfg = self.config(w2=100)
        p = self.started(cfg)
        url = "http://127.0.0.1:%d" % p.admin_port
        r = subprocess.run([sys.executable, CUTOVERCTL, "--admin", url, "--config", p.config_path,
                            "--binary", h.BINARY, "rollback", "--now", "--reason", "drill"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        out = r.stdout.decode()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("proxy: rollback active since", out)
        self.assertIn("route api: fastapi-v2 100% -> 0%, fastapi-v1 0% -> 100%", out)
        conf = admin(p, "GET", "/config").body.decode()
        self.assertIn('rollback_actor: "cutoverctl"', conf)
        self.assertIn('rollback_reason: "drill"', conf)
        with open(p.config_path) as f:
            text = f.read()
        self.assertEqual(len(re.findall(r"fastapi-v1: 100\b", text)), 2, text)
        self.assertEqual(self.send(p, 20, "/api/x"), {V1: 20, V2: 0})

        r = subprocess.run([sys.executable, CUTOVERCTL, "--admin", url, "status"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertRegex(r.stdout.decode(), r"ROLLBACK ACTIVE since \d{4}-")
        r = subprocess.run([sys.executable, CUTOVERCTL, "--admin", url, "rollback", "--clear"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("proxy: rollback cleared", r.stdout.decode())
        self.assertRegex(admin(p, "GET", "/config").body.decode(), r"(?m)^rollback_active: false$")


if __name__ == "__main__":
    h.main()
