#!/usr/bin/env python3
"""TLS termination on a listener: versions, SNI, client certificates, plaintext to the TLS port,
keep-alive, WebSocket and 64 MiB each way over TLS, certificate rotation by symlink swap under
load, `--check` on bad certificates, and the TLS metrics. Certificates are made at test time with
the openssl CLI."""

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from test_streaming import RssSampler  # noqa: E402

SIZE = 64 << 20
RSS_LIMIT_KIB = int(os.environ.get("CUTOVER_RSS_LIMIT_MIB", "64")) * 1024  # sanitizer builds raise it


def sh(cmd, cwd):
    subprocess.run(cmd, shell=True, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)


def make_pki(d):
    """CA; ECDSA P-256 server certs for a.test and b.test; a client cert; an expired cert; a key
    that matches none of them; an RSA cert for a.test."""
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    sh("openssl req -x509 %s -days 3 -subj /CN=test-ca -keyout ca.key -out ca.pem" % ec, d)

    def leaf(name, subj, san, days=3, key=ec):
        sh("openssl req %s -subj %s -keyout %s.key -out %s.csr" % (key, subj, name, name), d)
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\n" % san)
        sh("openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days %d "
           "-extfile %s.ext -out %s.pem" % (name, days, name, name), d)

    leaf("a", "/CN=a.test", "DNS:a.test")
    leaf("a2", "/CN=a.test/O=rotated", "DNS:a.test")
    leaf("b", "/CN=b.test", "DNS:b.test")
    leaf("client", "/CN=client-one/O=Example", "DNS:client.example,URI:spiffe://example/c1")
    leaf("old", "/CN=old.test", "DNS:old.test", days=-1)
    leaf("rsa", "/CN=a.test", "DNS:a.test", key="-newkey rsa:2048 -nodes")
    sh("openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out stray.key", d)
    # A client certificate from a CA the listener does not trust.
    sh("openssl req -x509 %s -days 3 -subj /CN=rogue -keyout rogue.key -out rogue.pem" % ec, d)


class TlsCase(h.ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="cutover-tls-")
        make_pki(cls.pki)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki, ignore_errors=True)

    def f(self, name):
        return os.path.join(self.pki, name)

    def start(self, tls=None, admin=True, **kw):
        self.legacy = self.backend("legacy")
        tls = tls or {"certificates": [{"cert": self.f("a.pem"), "key": self.f("a.key")},
                                       {"cert": self.f("b.pem"), "key": self.f("b.key")}]}
        cfg = h.make_config({"legacy": self.legacy}, split={"legacy": 100}, admin=admin,
                            listeners=[{"name": "public", "address": "127.0.0.1:0", "tls": tls}],
                            **kw)
        self.p = self.proxy(cfg)
        return self.p

    def ctx(self, version=None, cert=None):
        c = ssl.create_default_context(cafile=self.f("ca.pem"))
        if version is not None:
            c.minimum_version = c.maximum_version = version
        if cert:
            c.load_cert_chain(self.f(cert + ".pem"), self.f(cert + ".key"))
        return c

    def client(self, sni="a.test", **kw):
        return TlsClient(self.p.port, self.ctx(**kw), sni)

    def metrics(self):
        return h.admin(self.p, "GET", "/metrics").body.decode()

    def wait_metric(self, name, value, **labels):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            v = h.metric(self.metrics(), name, **labels)
            if v is not None and v >= value:
                return v
            time.sleep(0.05)
        self.fail("%s%r never reached %s" % (name, labels, value))

    def s_client(self, *args, stdin=b"", timeout=20):
        r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.p.port,
                            "-CAfile", self.f("ca.pem"), *args],
                           input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace")


class TlsClient(h.Client):
    """harness.Client over TLS: every helper (request, read_response, ws frames) works as is."""

    def __init__(self, port, context, sni, timeout=h.IO_TIMEOUT):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(raw, server_hostname=sni)
        self.buf = bytearray()
        self.eof = False
        self.port = port


def echo_headers(resp):
    return {k.lower(): v for k, v in resp.json()["headers"]}


class TlsListenerTest(TlsCase):
    def test_tls13_and_tls12_both_work_and_the_backend_sees_https(self):
        self.start()
        for version, name in ((ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
                              (ssl.TLSVersion.TLSv1_2, "TLSv1.2")):
            with self.client(version=version) as c:
                self.assertEqual(c.sock.version(), name)
                self.assertEqual(c.sock.selected_alpn_protocol(), None)
                r = c.request("GET", "/echo", [("X-Forwarded-Proto", "http")])
                self.assertEqual(r.status, 200, r)
                self.assertEqual(echo_headers(r)["x-forwarded-proto"], "https")
            self.wait_metric("cutover_tls_handshakes_total", 1, listener="public", version=name)

    def test_alpn_offering_h2_and_http11_selects_http11(self):
        self.start()
        ctx = self.ctx()
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with TlsClient(self.p.port, ctx, "a.test") as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), "http/1.1")
            self.assertEqual(c.request("GET", "/").status, 200)

    def test_tls11_is_refused_and_counted_as_protocol_version(self):
        self.start()
        # SECLEVEL=0 so that the client really offers TLS 1.1: the refusal is the server's.
        rc, out = self.s_client("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-servername",
                                "a.test")
        self.assertNotEqual(rc, 0, out)
        self.assertNotIn("BEGIN CERTIFICATE", out)
        self.wait_metric("cutover_tls_handshake_failures_total", 1, listener="public",
                         reason="protocol_version")

    def test_a_client_with_only_cbc_rsa_suites_gets_no_shared_cipher(self):
        self.start()
        rc, out = self.s_client("-tls1_2", "-cipher", "AES128-SHA", "-servername", "a.test")
        self.assertNotEqual(rc, 0, out)
        self.wait_metric("cutover_tls_handshake_failures_total", 1, listener="public",
                         reason="no_shared_cipher")

    def test_sni_selects_the_certificate_and_unknown_names_get_the_default(self):
        self.start()
        for sni, cn in (("a.test", "a.test"), ("b.test", "b.test"), ("other.test", "a.test")):
            rc, out = self.s_client("-servername", sni, "-brief", stdin=b"Q\n")
            self.assertIn("CN = %s" % cn, out.replace("CN=", "CN = "), (sni, out))
        with self.client(sni="b.test") as c:  # verifies b.test's certificate against the CA
            self.assertEqual(c.request("GET", "/").status, 200)

    def test_rsa_and_ecdsa_certificates_both_work(self):
        self.start({"certificates": [{"cert": self.f("rsa.pem"), "key": self.f("rsa.key")}]})
        with self.client(version=ssl.TLSVersion.TLSv1_2) as c:
            self.assertIn("RSA", c.sock.cipher()[0])
            self.assertEqual(c.request("GET", "/").status, 200)

    def test_plaintext_http_to_the_tls_port_is_closed_without_a_cleartext_answer(self):
        self.start()
        with h.Client(self.p.port, timeout=5) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            got = b""
            try:
                while True:
                    d = c.sock.recv(4096)
                    if not d:
                        break
                    got += d
            except ConnectionResetError:
                pass
            self.assertNotIn(b"HTTP/", got)
        self.wait_metric("cutover_tls_handshake_failures_total", 1, listener="public",
                         reason="not_tls")
        with self.client() as c:  # and the listener still serves
            self.assertEqual(c.request("GET", "/").status, 200)

    def test_handshake_timeout_closes_a_silent_connection_and_counts_it(self):
        self.start({"certificates": [{"cert": self.f("a.pem"), "key": self.f("a.key")}],
                    "handshake_timeout": "300ms"})
        with h.Client(self.p.port, timeout=5) as c:
            c.send(b"\x16\x03\x01")  # the start of a record, then nothing
            self.assertTrue(c.closed_by_peer(3))
        self.wait_metric("cutover_tls_handshake_failures_total", 1, listener="public",
                         reason="timeout")

    def test_keep_alive_carries_50_requests_on_one_tls_connection(self):
        self.start()
        with self.client() as c:
            for i in range(50):
                r = c.request("GET", "/echo?i=%d" % i)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.json()["query"], "i=%d" % i)
        v = h.metric(self.metrics(), "cutover_tls_handshakes_total", listener="public",
                     version="TLSv1.3")
        self.assertEqual(v, 1)

    def test_websocket_over_tls_echoes_frames(self):
        self.start()
        import base64
        with self.client() as c:
            key = base64.b64encode(os.urandom(16)).decode()
            c.send(h.build_request("GET", "/ws", [
                ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]))
            r = c.read_response()
            self.assertEqual(r.status, 101, r)
            self.assertEqual(r.header("sec-websocket-accept"), h.ws_accept(key))
            frames = [(0x1, b"hello over tls"), (0x2, os.urandom(100000))]
            for opcode, payload in frames:
                c.send(h.ws_client_frame(opcode, payload))
            for opcode, payload in frames:
                fin, op, got, masked = h.ws_read_frame(c)
                self.assertEqual((fin, op, got), (True, opcode, payload))

    def test_64mib_download_and_upload_over_tls_intact_with_bounded_rss(self):
        self.start()
        with RssSampler(self.p.pid) as rss, self.client() as c:
            c.settimeout(30)
            c.send(h.build_request("GET", "/bytes?n=%d" % SIZE))
            r = c.read_head()
            self.assertEqual(r.status, 200)
            hasher = hashlib.sha256()
            got = 0
            for piece in c.body_chunks(r, max_read=256 * 1024):
                hasher.update(piece)
                got += len(piece)
                if got < (4 << 20):
                    time.sleep(0.002)  # a slow start: backpressure must hold the backend back
            self.assertEqual(got, SIZE)
            self.assertEqual(hasher.hexdigest(), h.pattern_sha256(SIZE))
            block = os.urandom(1 << 20)
            up = hashlib.sha256()
            c.send(b"POST /upload?pause_ms=1000 HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
                   % SIZE)
            for i in range(SIZE // len(block)):
                piece = block[i % 7:] + block[:i % 7]
                up.update(piece)
                c.send(piece)
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["bytes"], SIZE)
            self.assertEqual(r.json()["sha256"], up.hexdigest())
            peak = rss.max_kib
        sys.stderr.write("[tls 64 MiB each way: proxy peak RSS %d KiB] " % peak)
        self.assertLess(peak, RSS_LIMIT_KIB)

    def test_sessions_resume_with_tickets_for_13_and_12_and_across_a_reload(self):
        self.start()
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            ctx = self.ctx(version=version)

            def connect(session=None):
                raw = socket.create_connection(("127.0.0.1", self.p.port), timeout=5)
                c = TlsClient.__new__(TlsClient)
                c.sock = ctx.wrap_socket(raw, server_hostname="a.test", session=session)
                c.buf, c.eof, c.port = bytearray(), False, self.p.port
                return c

            with connect() as c:
                self.assertEqual(c.request("GET", "/").status, 200)  # reads the 1.3 tickets
                self.assertFalse(c.sock.session_reused)
                session = c.sock.session
            with connect(session) as c:
                self.assertTrue(c.sock.session_reused, version)
                self.assertEqual(c.request("GET", "/").status, 200)
                session = c.sock.session
            # A reload builds new contexts; the ticket keys are the process's, so tickets issued
            # before it still resume.
            self.assertEqual(h.admin(self.p, "POST", "/reload").status, 200)
            with connect(session) as c:
                self.assertTrue(c.sock.session_reused, version)
                self.assertEqual(c.request("GET", "/").status, 200)

    def test_certificate_expiry_gauge_per_certificate(self):
        self.start()
        out = subprocess.run(["openssl", "x509", "-in", self.f("b.pem"), "-noout", "-enddate"],
                             stdout=subprocess.PIPE, check=True).stdout.decode()
        end = time.mktime(time.strptime(out.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z"))
        end -= time.timezone
        v = h.metric(self.metrics(), "cutover_tls_certificate_not_after_seconds",
                     listener="public", cert="b.test")
        self.assertIsNotNone(v)
        self.assertAlmostEqual(v, end, delta=2)


class ClientCertTest(TlsCase):
    def start_mtls(self, mode):
        return self.start({"certificates": [{"cert": self.f("a.pem"), "key": self.f("a.key")}],
                           "client_ca": self.f("ca.pem"), "client_cert": mode})

    def test_required_client_cert_missing_is_refused_and_counted(self):
        self.start_mtls("require")
        with self.assertRaises((ssl.SSLError, ConnectionError, h.HttpError, OSError)):
            with self.client() as c:  # TLS 1.3: the refusal arrives after the client's Finished
                c.request("GET", "/")
        self.wait_metric("cutover_tls_handshake_failures_total", 1, listener="public",
                         reason="no_client_cert")

    def test_client_cert_from_an_untrusted_ca_is_refused_as_bad_certificate(self):
        self.start_mtls("optional")
        with self.assertRaises((ssl.SSLError, ConnectionError, h.HttpError, OSError)):
            with self.client(cert="rogue") as c:
                c.request("GET", "/")
        self.wait_metric("cutover_tls_handshake_failures_total", 1, listener="public",
                         reason="bad_certificate")

    def test_verified_client_subject_reaches_the_backend_and_a_forged_one_does_not(self):
        self.start_mtls("require")
        with self.client(cert="client") as c:
            r = c.request("GET", "/echo", [("X-Client-Cert-Subject", "CN=forged")])
            self.assertEqual(r.status, 200, r)
            hdrs = r.json()["headers"]
        values = [v for k, v in hdrs if k.lower() == "x-client-cert-subject"]
        subject = "O=Example,CN=client-one; SAN=DNS:client.example,URI:spiffe://example/c1"
        self.assertEqual(values, [subject])
        # and the access log names it
        self.assertTrue(self.p.wait_for(
            lambda px: [e for e in px.events if e.get("client_cert") == subject], 5),
            self.p.log_tail())

    def test_optional_client_cert_allows_none_and_strips_the_forged_header(self):
        self.start_mtls("optional")
        with self.client() as c:
            r = c.request("GET", "/echo", [("X-Client-Cert-Subject", "CN=forged")])
            self.assertEqual(r.status, 200, r)
            self.assertNotIn("x-client-cert-subject", echo_headers(r))

    def test_rate_limit_keyed_on_client_cert_counts_per_certificate(self):
        routes = [{"name": "default", "match": {"prefix": "/"}, "split": {"legacy": 100},
                   "rate_limit": {"rate": "1/min", "burst": 1, "key": "client_cert"}}]
        self.start({"certificates": [{"cert": self.f("a.pem"), "key": self.f("a.key")}],
                    "client_ca": self.f("ca.pem"), "client_cert": "optional"}, routes=routes)
        with self.client(cert="client") as c:
            self.assertEqual(c.request("GET", "/").status, 200)
            self.assertLocalReply(c.request("GET", "/"), 429, "rate_limited")
        # Same address, no certificate: another key (the client address), so its own bucket.
        with self.client() as c:
            self.assertEqual(c.request("GET", "/").status, 200)
            self.assertLocalReply(c.request("GET", "/"), 429, "rate_limited")


class ProxyProtocolTlsTest(TlsCase):
    def test_proxy_header_in_clear_then_tls_and_its_source_is_the_client(self):
        self.legacy = self.backend("legacy")
        tls = {"certificates": [{"cert": self.f("a.pem"), "key": self.f("a.key")}]}
        self.p = self.proxy(h.make_config(
            {"legacy": self.legacy}, split={"legacy": 100},
            listeners=[{"name": "public", "address": "127.0.0.1:0", "proxy_protocol": True,
                        "tls": tls}]))
        raw = socket.create_connection(("127.0.0.1", self.p.port), timeout=h.IO_TIMEOUT)
        raw.sendall(b"PROXY TCP4 198.51.100.7 127.0.0.1 51234 443\r\n")
        c = TlsClient.__new__(TlsClient)
        c.sock, c.buf, c.eof, c.port = self.ctx().wrap_socket(raw, server_hostname="a.test"), \
            bytearray(), False, self.p.port
        with c:
            hdrs = echo_headers(c.request("GET", "/echo"))
        self.assertEqual(hdrs["x-forwarded-for"], "198.51.100.7")
        self.assertEqual(hdrs["x-forwarded-proto"], "https")


class CheckAndRotationTest(TlsCase):
    def config_text(self, cert, key):
        return h.to_yaml(h.make_config(
            {"legacy": 1}, split={"legacy": 100},
            listeners=[{"name": "public", "address": "127.0.0.1:0",
                        "tls": {"certificates": [{"cert": cert, "key": key}]}}])) + "\n"

    def check(self, cert, key):
        d = tempfile.mkdtemp(prefix="cutover-tls-check-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "cutover.yaml")
        with open(path, "w") as f:
            f.write(self.config_text(cert, key))
        return h.run_binary(["--check", path])

    def test_check_refuses_an_expired_certificate_naming_file_line_key_and_date(self):
        rc, out, err = self.check(self.f("old.pem"), self.f("old.key"))
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(err, r"cutover\.yaml:\d+:\d+: listeners\[0\]\.tls\.certificates\[0\]"
                              r"\.cert: .*old\.pem: certificate expired \d{4}-\d\d-\d\d")

    def test_check_refuses_a_key_that_does_not_match(self):
        rc, out, err = self.check(self.f("a.pem"), self.f("stray.key"))
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(err, r"listeners\[0\]\.tls\.certificates\[0\]\.key: .*stray\.key: "
                              r"private key does not match certificate")

    def test_check_accepts_good_certificates(self):
        rc, out, err = self.check(self.f("a.pem"), self.f("a.key"))
        self.assertEqual(rc, 0, out + err)

    def test_symlink_swap_rotates_the_certificate_under_load_with_zero_failures(self):
        # Kubernetes' secret layout: tls.crt -> ..data/tls.crt, ..data -> ..v1 (swapped by rename).
        d = tempfile.mkdtemp(prefix="cutover-tls-secret-")
        self.addCleanup(shutil.rmtree, d, True)
        for v, name in (("..v1", "a"), ("..v2", "a2")):
            os.mkdir(os.path.join(d, v))
            shutil.copy(self.f(name + ".pem"), os.path.join(d, v, "tls.crt"))
            shutil.copy(self.f(name + ".key"), os.path.join(d, v, "tls.key"))
        os.symlink("..v1", os.path.join(d, "..data"))
        os.symlink("..data/tls.crt", os.path.join(d, "tls.crt"))
        os.symlink("..data/tls.key", os.path.join(d, "tls.key"))
        self.start({"certificates": [{"cert": os.path.join(d, "tls.crt"),
                                      "key": os.path.join(d, "tls.key")}]})

        def subject():
            with self.client() as c:
                return dict(x[0] for x in c.sock.getpeercert()["subject"])

        self.assertNotIn("organizationName", subject())
        kept = self.client()  # open across the rotation: keeps the context it started with
        self.addCleanup(kept.close)
        self.assertEqual(kept.request("GET", "/").status, 200)
        stop = threading.Event()
        results = {"ok": 0, "failed": []}

        def load():
            while not stop.is_set():
                try:
                    with self.client() as c:  # a new handshake for every request
                        r = c.request("GET", "/")
                        if r.status == 200:
                            results["ok"] += 1
                        else:
                            results["failed"].append(r.status)
                except Exception as e:  # noqa: BLE001 - every failure counts
                    results["failed"].append(repr(e))

        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            os.symlink("..v2", os.path.join(d, "..data_tmp"))
            os.rename(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and subject().get("organizationName") != "rotated":
                time.sleep(0.05)
            before = results["ok"]
            while time.monotonic() < deadline and results["ok"] < before + 20:
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        self.assertEqual(subject().get("organizationName"), "rotated")
        self.assertEqual(results["failed"], [])
        self.assertEqual(kept.request("GET", "/").status, 200)
        self.assertNotIn("organizationName", dict(x[0] for x in kept.sock.getpeercert()["subject"]))
        self.assertGreater(results["ok"], 20)
        self.assertTrue(self.p.find_events("config_reloaded"))


class TestsslTest(TlsCase):
    # testssl.sh's severities, lowest first; WARN/DEBUG are about the scan itself (e.g. the local
    # openssl has no RC4 or GOST to test with), not findings about the server.
    FINDING_LEVELS = ["INFO", "OK", "LOW", "MEDIUM", "HIGH", "CRITICAL"]

    def test_testssl_finds_nothing_above_low_in_protocols_ciphers_and_vulnerabilities(self):
        testssl = shutil.which("testssl") or shutil.which("testssl.sh")
        self.assertIsNotNone(testssl, "testssl.sh is not installed: run tools/install_deps.sh")
        self.start({"certificates": [{"cert": self.f("a.pem"), "key": self.f("a.key")}]},
                   admin=False)
        out = os.path.join(self.pki, "testssl-%d.json" % self.p.port)
        # --std: the cipher categories (testssl 3.0 has no --ciphers); --fast keeps it ~30 s.
        r = subprocess.run([testssl, "--protocols", "--std", "--server-preference",
                            "--vulnerable", "--quiet", "--fast", "--warnings", "off",
                            "--color", "0", "--jsonfile", out, "--ip", "127.0.0.1",
                            "https://a.test:%d" % self.p.port],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=240)
        text = r.stdout.decode(errors="replace")
        import json
        with open(out) as f:
            findings = json.load(f)
        self.assertGreater(len(findings), 20, text)
        ids = {x["id"] for x in findings}
        for must in ("TLS1_2", "TLS1_3", "heartbleed", "BEAST", "LOGJAM", "secure_renego"):
            self.assertIn(must, ids, text)
        above_low = [x for x in findings if x["severity"] in ("MEDIUM", "HIGH", "CRITICAL")]
        self.assertEqual(above_low, [], text)
        offered = {x["id"]: x["finding"] for x in findings}
        self.assertEqual(offered["TLS1_1"], "not offered")
        self.assertEqual(offered["TLS1"], "not offered")


if __name__ == "__main__":
    h.main()
