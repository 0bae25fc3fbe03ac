#!/usr/bin/env python3
"""Backend endpoints given as DNS names, resolved for real by the binary (uv_getaddrinfo → glibc).

cutover runs inside a private mount namespace (`unshare --mount`, plus `--map-root-user` when not
root) where /etc/hosts, /etc/resolv.conf and /etc/nsswitch.conf are bind-mounted from files this
test owns: `hosts: files dns`, a hosts file mapping svc.cutover.test to 127.0.0.2, .3 and .4 (one
line each: getaddrinfo returns every matching line), and a resolver on loopback that answers
nothing useful, so a name missing from the hosts file fails fast. glibc's files backend opens the
hosts file on every lookup, so rewriting it in place is what the next lookup sees.

Backends listen on 127.0.0.2, .3 and .4, all on one port. Where unshare or the bind mounts are not
permitted, every test here is skipped with the reason (never passed without running).
"""

import json
import os
import shutil
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

NAME = "svc.cutover.test"
ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
WAIT_S = 8.0  # bound on every wait for a resolver event (refresh is 1 s)


def unshare_argv():
    argv = ["unshare", "--mount"]
    if os.geteuid() != 0:
        argv.append("--map-root-user")
    return argv


def namespace_problem():
    """None when a private mount namespace with a bind-mounted /etc/hosts works here, else why."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    d = tempfile.mkdtemp(prefix="cutover-dns-probe-")
    probe = os.path.join(d, "hosts")
    with open(probe, "w") as f:
        f.write("127.0.0.9 probe.cutover.test\n")
    try:
        r = subprocess.run(unshare_argv() + ["sh", "-c", 'mount --bind "$1" /etc/hosts && '
                                             'cat /etc/hosts', "sh", probe],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "unshare failed: %s" % e
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if r.returncode != 0 or b"probe.cutover.test" not in r.stdout:
        return "unshare --mount with a bind-mounted /etc/hosts is not permitted here: %s" % (
            r.stderr.decode(errors="replace").strip())
    return None


PROBLEM = namespace_problem()


def write_in_place(path, text):
    # In place (same inode): the bind mount shows this file, a rename-over would not be seen.
    with open(path, "r+") as f:
        f.truncate(0)
        f.write(text)


def hosts_text(addresses, name=NAME):
    return "127.0.0.1 localhost\n" + "".join("%s %s\n" % (a, name) for a in addresses)


@unittest.skipIf(PROBLEM is not None, "needs a private mount namespace: %s" % PROBLEM)
class DnsTest(h.ProxyTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cutover-dns-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.hosts = os.path.join(self.dir, "hosts")
        with open(self.hosts, "w") as f:
            f.write(hosts_text(ADDRESSES))
        resolv = os.path.join(self.dir, "resolv.conf")
        with open(resolv, "w") as f:
            # Nothing answers DNS on 127.0.0.1:53 here: a name not in the hosts file fails at once.
            f.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        nss = os.path.join(self.dir, "nsswitch.conf")
        with open(nss, "w") as f:
            f.write("hosts: files dns\n")
        # cutover is started through this wrapper; unshare and sh exec, so the pid is cutover's.
        self.real_binary = h.require_binary()
        wrapper = os.path.join(self.dir, "cutover-in-netns")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec %s sh -c 'mount --bind \"$1\" /etc/hosts && "
                    "mount --bind \"$2\" /etc/resolv.conf && mount --bind \"$3\" "
                    "/etc/nsswitch.conf && shift 3 && exec \"$@\"' sh %s %s %s %s \"$@\"\n"
                    % (" ".join(unshare_argv()), self.hosts, resolv, nss, self.real_binary))
        os.chmod(wrapper, 0o755)
        self.saved_binary = h.BINARY
        h.BINARY = wrapper
        self.addCleanup(setattr, h, "BINARY", self.saved_binary)

        # Three backends on one port, one per loopback address the name resolves to.
        first = self.backend("b2", "--host", ADDRESSES[0])
        self.port = first.port
        self.backend("b3", "--host", ADDRESSES[1], "--port", str(self.port))
        self.backend("b4", "--host", ADDRESSES[2], "--port", str(self.port))
        self.name = "%s:%d" % (NAME, self.port)

    def start(self, refresh):
        cfg = h.make_config({"app": [self.name]}, admin=True, timeouts={"connect": "500ms"})
        cfg["backends"]["app"]["dns_refresh"] = refresh
        p = self.proxy(cfg)
        self.wait_ready(p)
        return p

    def wait_ready(self, p):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if h.admin(p, "GET", "/ready").status == 200:
                return
            time.sleep(0.05)
        self.fail("/ready never answered 200; log:\n" + p.log_tail())

    def served(self, p, n=30):
        """x-backend of n requests on one keep-alive connection (round-robin over endpoints)."""
        out = []
        with h.Client(p.port) as c:
            for i in range(n):
                r = c.request("GET", "/?i=%d" % i)
                self.assertEqual(r.status, 200, "%r\n%s" % (r, p.log_tail()))
                out.append(r.header("x-backend"))
        return out

    def assertServed(self, p, expected, timeout=5.0):
        """The set of backends 30 requests reach becomes `expected`, every answer a 200. Workers
        take a new snapshot a moment after the server logs it, so a request or two in between may
        still use the old set: retried until `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = set(self.served(p))
            except AssertionError:
                if time.monotonic() >= deadline:
                    raise
                got = None
            if got == expected:
                return
            if time.monotonic() >= deadline:
                self.assertEqual(got, expected)
            time.sleep(0.05)

    def wait_event(self, p, event, predicate=lambda e: True, count=1):
        def seen(px):
            return len([e for e in px.find_events(event) if predicate(e)]) >= count
        self.assertTrue(p.wait_for(seen, WAIT_S),
                        "no %s event within %.0fs; log:\n%s" % (event, WAIT_S, p.log_tail()))

    def metric(self, p, metric_name, labels, **more):
        """Sample value by exact labels (h.metric cannot take a label called `name`)."""
        want = dict(labels, **more)
        for line in h.admin(p, "GET", "/metrics").body.decode().splitlines():
            m = h._SAMPLE_RE.match(line)
            if m and m.group(1) == metric_name and \
                    dict(h._LABEL_RE.findall(m.group(2) or "")) == want:
                return float(m.group(3))
        return None

    def dns_stats(self, p):
        stats = json.loads(h.admin(p, "GET", "/stats").body)
        return {d["name"]: d for d in stats["dns"]}

    def test_a_name_resolving_to_three_loopback_addresses_spreads_traffic_follows_changes_and_keeps_the_last_good_set(self):
        p = self.start("1s")
        labels = {"backend": "app", "name": self.name}
        # Every address the name resolves to is an endpoint and gets traffic.
        self.assertServed(p, {"b2", "b3", "b4"})
        self.assertEqual(self.metric(p, "cutover_dns_endpoints", labels), 3)
        self.assertGreaterEqual(
            self.metric(p, "cutover_dns_resolutions_total", labels, result="success"), 1)
        self.assertGreater(
            self.metric(p, "cutover_dns_last_success_timestamp_seconds", labels),
            time.time() - 60)
        d = self.dns_stats(p)[self.name]
        self.assertEqual(d["addresses"], ["%s:%d" % (a, self.port) for a in ADDRESSES])
        self.assertEqual(d["backends"], ["app"])
        self.assertIsNone(d["last_error"])
        # /config shows the name as written, not the addresses it resolved to.
        config_text = h.admin(p, "GET", "/config").body.decode()
        self.assertIn(self.name, config_text)
        self.assertNotIn("127.0.0.3", config_text)

        # The name stops listing 127.0.0.4: within the refresh it gets no more traffic.
        write_in_place(self.hosts, hosts_text(ADDRESSES[:2]))
        t0 = time.monotonic()
        self.wait_event(p, "dns_endpoints_changed",
                        lambda e: e.get("addresses") == "127.0.0.2:%d 127.0.0.3:%d"
                        % (self.port, self.port))
        took = time.monotonic() - t0
        self.assertLess(took, 3.0, "the change took %.1fs with dns_refresh 1s" % took)
        sys.stderr.write("hosts file change to new set in use: %.0f ms (dns_refresh 1s)\n"
                         % (took * 1000))
        self.assertServed(p, {"b2", "b3"})
        self.assertEqual(self.metric(p, "cutover_dns_endpoints", labels), 2)

        # The name no longer resolves: the last good set stays in use, the failures are counted,
        # and the warning is logged once however many retries fail.
        write_in_place(self.hosts, hosts_text([]))
        self.wait_event(p, "dns_resolution_failed")
        deadline = time.monotonic() + WAIT_S
        while (self.metric(p, "cutover_dns_resolutions_total", labels, result="failure") or 0) < 2:
            self.assertLess(time.monotonic(), deadline, "no second failed lookup (retry after 1s)")
            time.sleep(0.1)
        self.assertEqual(len(p.find_events("dns_resolution_failed")), 1)
        self.assertServed(p, {"b2", "b3"})
        self.assertEqual(self.metric(p, "cutover_dns_endpoints", labels), 2)
        d = self.dns_stats(p)[self.name]
        self.assertEqual(len(d["addresses"]), 2)
        self.assertIsNotNone(d["last_error"])
        self.assertTrue(d["failing"])
        self.assertEqual(h.admin(p, "GET", "/ready").status, 200)  # resolved once: stays ready

        # It resolves again (all three): recovery is logged and .4 is back.
        write_in_place(self.hosts, hosts_text(ADDRESSES))
        self.wait_event(p, "dns_resolution_recovered")
        self.wait_event(p, "dns_endpoints_changed", lambda e: e.get("addresses", "").count(":") == 3,
                        count=2)  # the first was at start
        self.assertServed(p, {"b2", "b3", "b4"})
        self.assertEqual(len(p.find_events("dns_resolution_failed")), 1)

    def test_a_connect_error_triggers_an_early_lookup_and_a_reload_keeps_unchanged_names(self):
        # Refresh 1h: only a connect error (or a new name) can cause a second lookup in this test.
        p = self.start("1h")
        labels = {"backend": "app", "name": self.name}
        self.assertServed(p, {"b2", "b3", "b4"})
        self.assertEqual(
            self.metric(p, "cutover_dns_resolutions_total", labels, result="success"), 1)

        # A reload that adds a second backend with another name: the unchanged name is not looked
        # up again and keeps its set; the new one is resolved.
        with open(os.path.join(self.dir, "hosts"), "a") as f:
            f.write("127.0.0.2 other.cutover.test\n")
        cfg = h.make_config({"app": [self.name], "other": ["other.cutover.test:%d" % self.port]},
                            admin=True, timeouts={"connect": "500ms"},
                            routes=[{"name": "default", "match": {"prefix": "/"},
                                     "split": {"app": 100}}])
        cfg["backends"]["app"]["dns_refresh"] = "1h"
        with open(p.config_path + ".tmp", "w") as f:
            f.write(h.to_yaml(cfg) + "\n")
        os.rename(p.config_path + ".tmp", p.config_path)
        r = h.admin(p, "POST", "/reload")
        self.assertEqual(r.status, 200, r.body)
        other = {"backend": "other", "name": "other.cutover.test:%d" % self.port}
        deadline = time.monotonic() + WAIT_S
        while self.metric(p, "cutover_dns_endpoints", other) != 1:
            self.assertLess(time.monotonic(), deadline, "the added name was not resolved")
            time.sleep(0.05)
        self.assertEqual(
            self.metric(p, "cutover_dns_resolutions_total", labels, result="success"), 1)
        self.assertEqual(self.metric(p, "cutover_dns_endpoints", labels), 3)
        self.assertServed(p, {"b2", "b3", "b4"})

        # 127.0.0.4 leaves the name and its backend stops: the next connect error to it triggers
        # an early lookup (the refresh is an hour away) and the set drops it.
        write_in_place(self.hosts, hosts_text(ADDRESSES[:2]))
        b4 = [b for b in self._backends() if b.name == "b4"][0]
        b4.stop()
        # Round-robin sends every third request to .4; its idle pooled connection may fail first
        # as a reset, the next attempt is a refused connect.
        for i in range(30):
            try:
                h.get(p.port, "/?i=%d" % i)
            except (OSError, h.HttpError):
                pass
            if p.find_events("dns_early_lookup"):
                break
        self.wait_event(p, "dns_early_lookup")
        self.wait_event(p, "dns_endpoints_changed",
                        lambda e: e.get("addresses") == "127.0.0.2:%d 127.0.0.3:%d"
                        % (self.port, self.port))
        self.assertServed(p, {"b2", "b3"})
        self.assertEqual(
            self.metric(p, "cutover_dns_resolutions_total", labels, result="success"), 2)

    def _backends(self):
        return self._started

    def backend(self, name, *extra_args):
        b = super().backend(name, *extra_args)
        if not hasattr(self, "_started"):
            self._started = []
        self._started.append(b)
        return b


@unittest.skipIf(PROBLEM is not None, "needs a private mount namespace: %s" % PROBLEM)
class DnsReadinessTest(DnsTest):
    """/ready waits for every name's first answer: a lookup held by a silent DNS server."""

    def setUp(self):
        super().setUp()
        # A DNS server that reads queries and never answers, on an address the resolver uses.
        self.silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.silent.bind(("127.0.0.53", 53))
        except OSError as e:
            self.silent.close()
            self.skipTest("cannot bind a silent DNS server on 127.0.0.53:53: %s" % e)
        self.addCleanup(self.silent.close)
        with open(os.path.join(self.dir, "resolv.conf"), "w") as f:
            f.write("nameserver 127.0.0.53\noptions timeout:2 attempts:1\n")

    def test_ready_is_503_until_the_first_answer_then_200_even_when_it_failed(self):
        cfg = h.make_config({"app": ["slow.cutover.test:%d" % self.port]}, admin=True)
        p = self.proxy(cfg)
        t0 = time.monotonic()
        r = h.admin(p, "GET", "/ready")
        self.assertEqual(r.status, 503, r.body)
        # No address yet: a request gets 503 no_endpoint rather than hanging.
        self.assertLocalReply(h.get(p.port, "/"), 503, "no_endpoint")
        self.wait_event(p, "dns_resolution_failed")
        self.wait_ready(p)
        self.assertGreater(time.monotonic() - t0, 1.0)  # it waited for the 2 s DNS timeout

    # The inherited tests run in DnsTest already.
    test_a_name_resolving_to_three_loopback_addresses_spreads_traffic_follows_changes_and_keeps_the_last_good_set = None
    test_a_connect_error_triggers_an_early_lookup_and_a_reload_keeps_unchanged_names = None


if __name__ == "__main__":
    h.main()
