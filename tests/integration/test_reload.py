#!/usr/bin/env python3
"""Hot reload against the real binary: file edits (in place, rename-over, ConfigMap `..data` swap),
SIGHUP and POST /reload, rejection of broken files with last-known-good, listeners added and
removed, and in-flight requests finishing on the config they started with."""

import os
import re
import signal
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

served_by, admin, metric = h.served_by, h.admin, h.metric


def wait_events(p, name, n, timeout):
    """The events called `name` once there are at least n of them, or None after `timeout`."""
    def enough(px):
        evs = px.find_events(name)
        return evs if len(evs) >= n else None
    return p.wait_for(enough, timeout)


def write_in_place(path, text):
    with open(path, "w") as f:
        f.write(text)


def write_atomic(path, text):
    """What editors and cutoverctl do: a temp file in the same directory renamed over the file."""
    tmp = os.path.join(os.path.dirname(path), ".%s.tmp" % os.path.basename(path))
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def connect_refused(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        # Queued on a listening socket that closed meanwhile: the listener is going, not gone.
        return False
    s.close()
    return False


class ReloadTest(h.ProxyTestCase):
    def setUp(self):
        self.legacy = self.backend("legacy")
        self.new = self.backend("new")

    def config(self, new, legacy, **kw):
        kw.setdefault("admin", True)
        return h.make_config({"legacy": self.legacy, "new": self.new},
                             split={"new": new, "legacy": legacy}, **kw)

    def text(self, new, legacy, **kw):
        return h.to_yaml(self.config(new, legacy, **kw)) + "\n"

    def start(self, new, legacy, **kw):
        p = self.proxy(self.config(new, legacy, **kw))
        # start_proxy returns at "admin_listening"; the file watcher starts after that, just
        # before "started". An edit made earlier would raise no event at all.
        self.assertTrue(p.wait_for(lambda px: px.find_events("started"), 5), p.log_tail())
        return p

    def reloaded(self, p, n, timeout=3.0):
        """Waits for the n-th config_reloaded event; returns the list of them."""
        evs = wait_events(p, "config_reloaded", n, timeout)
        self.assertTrue(evs, "no config_reloaded #%d within %.1fs; log:\n%s"
                        % (n, timeout, p.log_tail()))
        return evs

    def assert_all_served_by(self, p, name, n=20):
        with h.Client(p.port) as c:
            got = [served_by(c.request("GET", "/")) for _ in range(n)]
        self.assertEqual(got, [name] * n)

    # ---- file edits -----------------------------------------------------------------------------

    def test_weight_change_in_file_applies_to_next_requests_within_1s_and_log_names_change(self):
        p = self.start(new=0, legacy=100)
        self.assert_all_served_by(p, "legacy")

        write_in_place(p.config_path, self.text(new=100, legacy=0))
        t_write = time.monotonic()
        first_new = None
        while time.monotonic() - t_write < 1.0:
            if served_by(h.get(p.port, "/")) == "new":
                first_new = time.monotonic() - t_write
                break
            time.sleep(0.005)
        self.assertIsNotNone(first_new, "still on legacy 1 s after the write; log:\n%s"
                             % p.log_tail())
        sys.stderr.write("[weight change applied %.0f ms after the write] " % (first_new * 1000))
        self.assert_all_served_by(p, "new")

        ev = self.reloaded(p, 1)[0]
        self.assertEqual(ev.get("trigger"), "file_change", ev)
        self.assertEqual(ev.get("level"), "info", ev)
        self.assertIn("route default: new 0% -> 100%", ev.get("changes", ""), ev)
        self.assertIn("route default: legacy 100% -> 0%", ev.get("changes", ""), ev)

    def test_reload_under_load_50_rewrites_no_failed_or_reset_request_and_both_backends_seen(self):
        p = self.start(new=0, legacy=100)
        stop = threading.Event()
        lock = threading.Lock()
        failures = []
        seen = {"new": 0, "legacy": 0}
        done = [0]

        def check(r, how):
            b = served_by(r)
            if r.status != 200 or b not in seen or r.body != b"hello from %s\n" % b.encode():
                failures.append("%s: %r %r" % (how, r, r.body[:100]))
                return
            with lock:
                seen[b] += 1
                done[0] += 1

        def keepalive_client(k):
            c = None
            while not stop.is_set():
                try:
                    if c is None:
                        c = h.Client(p.port, timeout=5)
                    check(c.request("GET", "/ka?c=%d" % k), "keep-alive")
                except (OSError, h.HttpError) as e:
                    failures.append("keep-alive: %r" % e)
                    if c is not None:
                        c.close()
                    c = None
            if c is not None:
                c.close()

        def fresh_client(k):
            while not stop.is_set():
                try:
                    check(h.get(p.port, "/fresh?c=%d" % k), "fresh")
                except (OSError, h.HttpError) as e:
                    failures.append("fresh connection: %r" % e)

        threads = [threading.Thread(target=keepalive_client, args=(k,)) for k in range(2)]
        threads += [threading.Thread(target=fresh_client, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        try:
            for i in range(50):
                time.sleep(0.05)
                split = (100, 0) if i % 2 == 0 else (0, 100)
                write_atomic(p.config_path, self.text(new=split[0], legacy=split[1]))
                # Each rewrite is applied before the next one: rewrites closer together than the
                # 50 ms debounce plus the read coalesce into one reload (by design), and on a
                # loaded machine even 100 ms apart can.
                self.reloaded(p, i + 1)
            time.sleep(0.3)  # keep the load on past the last swap
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=15)
        self.assertFalse(any(t.is_alive() for t in threads), "a client thread hung")
        self.assertEqual(failures[:5], [], "%d failed requests of %d" % (len(failures),
                                                                        done[0] + len(failures)))
        self.assertGreater(seen["new"], 0, seen)
        self.assertGreater(seen["legacy"], 0, seen)
        self.assertGreater(done[0], 200, "too little load to mean anything: %s" % seen)
        self.assertEqual(len(p.find_events("config_reload_rejected")), 0, p.log_tail())
        m = admin(p, "GET", "/metrics").body.decode()
        self.assertEqual(metric(m, "cutover_config_reloads_total", result="success"), 50)
        self.assertEqual(metric(m, "cutover_config_reloads_total", result="rejected"), 0)
        # The last rewrite (i = 49) set legacy 100.
        self.assert_all_served_by(p, "legacy")
        sys.stderr.write("[%d requests during 50 reloads: %s] " % (done[0], seen))

    def test_broken_files_are_rejected_old_config_keeps_serving_and_config_shows_the_error(self):
        p = self.start(new=0, legacy=100)
        path = p.config_path
        # Weights summing to 110: the error is reported at the split map, line 17 column 7
        # (see the to_yaml layout: routes[0].split's first key).
        bad = self.text(new=20, legacy=90)
        self.assertEqual(bad.splitlines()[16], "      new: 20", bad)
        write_in_place(path, bad)
        evs = p.wait_for(lambda px: px.find_events("config_reload_rejected"), 3)
        self.assertTrue(evs, "no config_reload_rejected; log:\n%s" % p.log_tail())
        self.assertEqual(len(evs), 1, evs)
        self.assertEqual(evs[0].get("level"), "error", evs[0])
        self.assertIn("%s:17:7: routes[0].split: weights must sum to 100, got 110" % path,
                      evs[0].get("error", ""), evs[0])

        self.assert_all_served_by(p, "legacy")
        cfg = admin(p, "GET", "/config").body.decode()
        self.assertIn("%s:17:7:" % path, cfg, cfg)
        self.assertIn("weights must sum to 100", cfg)
        self.assertRegex(cfg, r"(?m)^last_reload_error: \|$")
        m = admin(p, "GET", "/metrics").body.decode()
        self.assertEqual(metric(m, "cutover_config_reloads_total", result="rejected"), 1, m)
        self.assertEqual(metric(m, "cutover_config_reloads_total", result="success"), 0, m)
        self.assertEqual(p.find_events("config_reloaded"), [])

        # A YAML syntax error: an unclosed flow sequence on line 18.
        good = self.text(new=0, legacy=100)
        syntax = good.replace("      legacy: 100\n", "      legacy: [100\n")
        self.assertNotEqual(syntax, good)
        write_atomic(path, syntax)
        evs = wait_events(p, "config_reload_rejected", 2, 3)
        self.assertTrue(evs, "syntax error not rejected; log:\n%s" % p.log_tail())
        self.assertRegex(evs[1].get("error", ""), re.escape(path) + r":\d+:\d+: YAML syntax error",
                         evs[1])
        self.assert_all_served_by(p, "legacy")
        cfg = admin(p, "GET", "/config").body.decode()
        self.assertRegex(cfg, re.escape(path) + r":\d+:\d+: YAML syntax error")
        # POST /reload on the same broken file: 400 with the errors, counted as rejected.
        r = admin(p, "POST", "/reload")
        self.assertEqual(r.status, 400, r)
        body = r.json()
        self.assertFalse(body["ok"], body)
        self.assertRegex(" ".join(body["errors"]), re.escape(path) + r":\d+:\d+: ")
        m = admin(p, "GET", "/metrics").body.decode()
        self.assertEqual(metric(m, "cutover_config_reloads_total", result="rejected"), 3, m)

        # A good file again: applied, the error cleared.
        write_atomic(path, self.text(new=100, legacy=0))
        self.reloaded(p, 1)
        self.assert_all_served_by(p, "new")
        cfg = admin(p, "GET", "/config").body.decode()
        self.assertRegex(cfg, r"(?m)^last_reload_error: null$", cfg)

    def test_configmap_style_data_symlink_swap_is_picked_up(self):
        p = self.start(new=0, legacy=100)
        d = os.path.dirname(p.config_path)
        base = os.path.basename(p.config_path)

        def make_version(stamp, text):
            vdir = os.path.join(d, "..%s" % stamp)
            os.mkdir(vdir)
            with open(os.path.join(vdir, base), "w") as f:
                f.write(text)
            return "..%s" % stamp

        # The kubelet layout: FILE -> ..data/FILE, ..data -> ..<timestamp>/.
        v1 = make_version("2026_01_01_00_00_00.000000001", self.text(new=10, legacy=90))
        os.symlink(v1, os.path.join(d, "..data"))
        tmp_link = os.path.join(d, ".%s.link" % base)
        os.symlink(os.path.join("..data", base), tmp_link)
        os.replace(tmp_link, p.config_path)
        ev = self.reloaded(p, 1)[0]
        self.assertIn("route default: new 0% -> 10%", ev.get("changes", ""), ev)

        # The ConfigMap update: a new timestamped directory, a new symlink renamed over ..data,
        # then the old directory removed. The file's own name sees no event at all.
        v2 = make_version("2026_01_01_00_01_00.000000002", self.text(new=100, legacy=0))
        os.symlink(v2, os.path.join(d, "..data_tmp"))
        os.replace(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
        vdir1 = os.path.join(d, v1)
        os.remove(os.path.join(vdir1, base))
        os.rmdir(vdir1)
        ev = self.reloaded(p, 2)[1]
        self.assertEqual(ev.get("trigger"), "file_change", ev)
        self.assertIn("route default: new 10% -> 100%", ev.get("changes", ""), ev)
        self.assert_all_served_by(p, "new")
        self.assertEqual(p.find_events("config_reload_rejected"), [], p.log_tail())

    # ---- SIGHUP and POST /reload ----------------------------------------------------------------

    def test_sighup_and_post_reload_pick_up_an_edit_the_file_watcher_cannot_see(self):
        p = self.start(new=0, legacy=100)
        d = os.path.dirname(p.config_path)
        # The config becomes a symlink to a file in another directory: edits made there raise no
        # event in the watched directory, so only SIGHUP and POST /reload can pick them up.
        other = os.path.join(d, "elsewhere")
        os.mkdir(other)
        real = os.path.join(other, "real.yaml")
        write_in_place(real, self.text(new=0, legacy=100) + "# moved elsewhere\n")
        link = os.path.join(d, ".link.tmp")
        os.symlink(real, link)
        os.replace(link, p.config_path)
        ev = self.reloaded(p, 1)[0]  # the swap itself is seen (new bytes: the comment)
        self.assertEqual(ev.get("changes"), "none", ev)

        write_in_place(real, self.text(new=100, legacy=0))
        time.sleep(0.3)  # several debounce periods: the watcher indeed saw nothing
        self.assertEqual(len(p.find_events("config_reloaded")), 1, p.log_tail())
        self.assert_all_served_by(p, "legacy")

        p.signal(signal.SIGHUP)
        ev = self.reloaded(p, 2)[1]
        self.assertEqual(ev.get("trigger"), "SIGHUP", ev)
        self.assertIn("route default: new 0% -> 100%", ev.get("changes", ""), ev)
        self.assert_all_served_by(p, "new")

        write_in_place(real, self.text(new=30, legacy=70))
        r = admin(p, "POST", "/reload")
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertEqual(body["ok"], True, body)
        self.assertEqual(body["errors"], [], body)
        self.assertIn("route default: new 100% -> 30%", body["changes"], body)
        self.assertIn("route default: legacy 0% -> 70%", body["changes"], body)
        ev = self.reloaded(p, 3)[2]
        self.assertEqual(ev.get("trigger"), "admin", ev)
        self.assertEqual(ev.get("generation"), body["generation"], (ev, body))
        cfg = admin(p, "GET", "/config").body.decode()
        self.assertRegex(cfg, r"(?m)^generation: %d$" % body["generation"], cfg)
        # Applied before the response: the split is 30/70 from the next request on.
        with h.Client(p.port) as c:
            got = [served_by(c.request("GET", "/")) for _ in range(200)]
        self.assertTrue(20 <= got.count("new") <= 100, got.count("new"))  # 60 ± 5 sigma

    def test_fifo_swapped_in_for_the_config_is_rejected_at_once_and_sigterm_still_exits(self):
        p = self.start(new=0, legacy=100)
        fifo = os.path.join(os.path.dirname(p.config_path), ".fifo.tmp")
        os.mkfifo(fifo)  # nobody ever writes to it: a blocking open or read would never return
        os.replace(fifo, p.config_path)
        # The watcher's read refuses it (it used to hang a thread-pool thread for good).
        self.assertTrue(p.wait_for(lambda px: [e for e in px.find_events("config_watch_error")
                                               if "not a regular file" in e.get("error", "")], 3),
                        p.log_tail())
        t0 = time.monotonic()
        r = admin(p, "POST", "/reload")
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["ok"], False, r.body)
        self.assertIn("not a regular file", " ".join(r.json()["errors"]), r.body)
        self.assert_all_served_by(p, "legacy")  # the running config stays
        p.expect_exit = True
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        code = p.wait_exit(10)
        self.assertEqual(code, 0, "SIGTERM with a FIFO config: exit %r after %.1fs; log:\n%s"
                         % (code, time.monotonic() - t0, p.log_tail()))

    # ---- listeners ------------------------------------------------------------------------------

    def test_removed_listener_stops_accepting_and_added_listener_starts(self):
        two = [{"name": "public", "address": "127.0.0.1:0"},
               {"name": "second", "address": "127.0.0.1:0"}]
        p = self.start(new=0, legacy=100, listeners=two)
        second = p.ports["second"]
        self.assertNotEqual(second, p.port)
        self.assertEqual(h.get(second, "/").status, 200)

        third = h.free_port()
        listeners = [{"name": "public", "address": "127.0.0.1:0"},
                     {"name": "third", "address": "127.0.0.1:%d" % third}]
        write_atomic(p.config_path, self.text(new=0, legacy=100, listeners=listeners))
        ev = self.reloaded(p, 1)[0]
        self.assertIn("listener third: 127.0.0.1:%d added" % third, ev.get("changes", ""), ev)
        self.assertIn("listener second: 127.0.0.1:0 removed", ev.get("changes", ""), ev)
        self.assertTrue(p.wait_for(lambda px: px.find_events("listener_removed"), 2),
                        p.log_tail())

        deadline = time.monotonic() + 1.0
        while not connect_refused(second) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertTrue(connect_refused(second), "removed listener still accepts")
        r = h.get(third, "/")
        self.assertEqual((r.status, served_by(r)), (200, "legacy"))
        r = h.get(p.port, "/")
        self.assertEqual((r.status, served_by(r)), (200, "legacy"), "kept listener broke")
        started = [e for e in p.find_events("listening") if e.get("listener") == "third"]
        self.assertEqual(len(started), 1, started)
        self.assertEqual(started[0].get("address"), "127.0.0.1:%d" % third)

    # ---- in-flight requests ---------------------------------------------------------------------

    def _slow_request_across_reload(self, new_text):
        p = self.start(new=0, legacy=100)
        result = {}

        def slow():
            try:
                with h.Client(p.port, timeout=10) as c:
                    result["resp"] = c.request("GET", "/slow?ms=1500")
                    result["at"] = time.monotonic()
            except Exception as e:  # reported by the main thread
                result["error"] = e

        t = threading.Thread(target=slow)
        t.start()
        self.assertGreaterEqual(self.legacy.wait_in_flight(1), 1, "slow request never arrived")
        write_atomic(p.config_path, new_text)
        self.reloaded(p, 1)
        swapped_at = time.monotonic()
        r = h.get(p.port, "/")
        self.assertEqual((r.status, served_by(r)), (200, "new"), "reload not applied")
        t.join(timeout=10)
        self.assertNotIn("error", result, "in-flight request failed: %r" % result.get("error"))
        self.assertLess(swapped_at, result["at"], "the reload came after the slow request ended")
        resp = result["resp"]
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(served_by(resp), "legacy")
        self.assertEqual(resp.header("x-backend"), "legacy")
        self.assertEqual(resp.body, b"slept 1500 ms for /slow?ms=1500\n")

    def test_in_flight_request_completes_on_old_backend_after_reload_moves_its_route(self):
        self._slow_request_across_reload(self.text(new=100, legacy=0))

    def test_in_flight_request_completes_after_reload_removes_its_backend(self):
        cfg = h.make_config({"new": self.new}, split={"new": 100}, admin=True)
        self._slow_request_across_reload(h.to_yaml(cfg) + "\n")


if __name__ == "__main__":
    h.main()
