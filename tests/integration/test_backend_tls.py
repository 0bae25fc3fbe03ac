#!/usr/bin/env python3
"""TLS to backends (backends.X.tls): a small HTTPS/1.1 keep-alive server made with python's ssl
module runs in a thread of the test; certificates are made at test time with the openssl CLI.
Valid, wrong-host, expired and untrusted certificates; verify: false; a client certificate the
backend requires; IP verification without sni; keep-alive reuse and session resumption across
pooled connections; `--check` on a bad CA path and an unknown key."""

import http.server
import os
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from test_tls import sh  # noqa: E402


def make_pki(d):
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    sh("openssl req -x509 %s -days 3 -subj /CN=test-ca -keyout ca.key -out ca.pem" % ec, d)

    def leaf(name, subj, san, days=3, ca="ca"):
        sh("openssl req %s -subj %s -keyout %s.key -out %s.csr" % (ec, subj, name, name), d)
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\n" % san)
        sh("openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial -days %d "
           "-extfile %s.ext -out %s.pem" % (name, ca, ca, days, name, name), d)

    leaf("api", "/CN=api.test", "DNS:api.test")
    leaf("other", "/CN=other.test", "DNS:other.test")
    leaf("old", "/CN=api.test", "DNS:api.test", days=-1)
    leaf("ip", "/CN=loopback", "IP:127.0.0.1")
    leaf("client", "/CN=client-one", "DNS:client.example")
    # The same name from a CA cutover does not trust.
    sh("openssl req -x509 %s -days 3 -subj /CN=rogue-ca -keyout rogue.key -out rogue.pem" % ec, d)
    leaf("untrusted", "/CN=api.test", "DNS:api.test", ca="rogue")


class HttpsBackend:
    """HTTP/1.1 keep-alive over TLS in a thread. GET answers 200 with the connection's number,
    whether its TLS session was resumed and the client certificate's CN in headers; /close
    answers with Connection: close."""

    def __init__(self, cert, key, client_ca=None, max12=False):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if max12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
        self.connections = 0
        self.resumed = 0
        self.paths = []
        self.handshake_errors = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with lock:
                    outer.connections += 1
                    self.conn_id = outer.connections
                    if self.connection.session_reused:
                        outer.resumed += 1

            def do_GET(self):
                with lock:
                    outer.paths.append(self.path)
                body = b"ok\n"
                peer = self.connection.getpeercert() or {}
                cn = ""
                for rdn in peer.get("subject", ()):
                    for k, v in rdn:
                        if k == "commonName":
                            cn = v
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Conn", str(self.conn_id))
                self.send_header("X-Resumed", "1" if self.connection.session_reused else "0")
                self.send_header("X-Client-CN", cn)
                self.send_header("X-Tls-Version", self.connection.version())
                if self.path == "/close":
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, addr = self.socket.accept()
                sock.settimeout(10)
                # Headers and body leave in two writes: without this, Nagle holds the body for
                # the proxy's delayed ACK (40 ms a keep-alive request).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    return ctx.wrap_socket(sock, server_side=True), addr
                except (ssl.SSLError, OSError):
                    with lock:
                        outer.handshake_errors += 1
                    sock.close()
                    raise

        lock = threading.Lock()
        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.address = "127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class BackendTlsTest(h.ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="cutover-btls-")
        make_pki(cls.pki)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki, ignore_errors=True)

    def f(self, name):
        return os.path.join(self.pki, name)

    def https(self, name, client_ca=None, max12=False):
        b = HttpsBackend(self.f(name + ".pem"), self.f(name + ".key"), client_ca, max12)
        self.addCleanup(b.stop)
        return b

    def config(self, backend, tls, endpoint=None):
        cfg = h.make_config({"legacy": endpoint or backend.address}, admin=True)
        cfg["backends"]["legacy"]["tls"] = tls
        return cfg

    def start(self, backend, tls, endpoint=None):
        self.p = self.proxy(self.config(backend, tls, endpoint))
        return self.p

    def get(self, path="/"):
        return h.get(self.p.port, path)

    def metric(self, **labels):
        text = h.admin(self.p, "GET", "/metrics").body.decode()
        return h.metric(text, "cutover_upstream_tls_failures_total", **labels)

    def assertVerifyFailed(self, verify_error):
        r = self.get()
        self.assertLocalReply(r, 502, "upstream_tls_verify_failed")
        self.assertEqual(self.metric(backend="legacy", reason="verify_failed"), 1)
        ev = self.p.wait_for(lambda p: p.find_events("upstream_tls_failed"), 5)
        self.assertTrue(ev, self.p.log_tail())
        self.assertEqual(ev[0].get("reason"), "verify_failed", ev)
        self.assertEqual(ev[0].get("backend"), "legacy", ev)
        self.assertIn(verify_error, ev[0].get("error", ""), ev)

    def test_valid_certificate_serves_200_over_tls(self):
        b = self.https("api")
        self.start(b, {"sni": "api.test", "ca": self.f("ca.pem")})
        r = self.get()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"ok\n")
        self.assertEqual(r.header("x-tls-version"), "TLSv1.3")
        self.assertEqual(self.metric(backend="legacy", reason="verify_failed"), 0)

    def test_wrong_host_certificate_is_502_upstream_tls_verify_failed(self):
        b = self.https("other")
        self.start(b, {"sni": "api.test", "ca": self.f("ca.pem")})
        self.assertVerifyFailed("hostname mismatch")

    def test_expired_certificate_is_502(self):
        b = self.https("old")
        self.start(b, {"sni": "api.test", "ca": self.f("ca.pem")})
        self.assertVerifyFailed("certificate has expired")

    def test_untrusted_ca_is_502(self):
        b = self.https("untrusted")
        self.start(b, {"sni": "api.test", "ca": self.f("ca.pem")})
        self.assertVerifyFailed("unable to get local issuer certificate")

    def test_system_store_by_default_does_not_trust_a_private_ca(self):
        b = self.https("api")
        self.start(b, {"sni": "api.test"})
        self.assertVerifyFailed("unable to get local issuer certificate")

    def test_verify_false_accepts_a_wrong_host_certificate(self):
        b = self.https("other")
        self.start(b, {"sni": "api.test", "verify": False})
        self.assertEqual(self.get().status, 200)

    def test_ip_endpoint_without_sni_verifies_the_ip_address(self):
        good = self.https("ip")
        self.start(good, {"ca": self.f("ca.pem")})
        self.assertEqual(self.get().status, 200)
        self.p.stop()
        bad = self.https("api")  # names api.test only
        self.start(bad, {"ca": self.f("ca.pem")})
        self.assertVerifyFailed("IP address mismatch")

    def test_client_certificate_presented_when_the_backend_requires_it(self):
        b = self.https("api", client_ca=self.f("ca.pem"))
        self.start(b, {"sni": "api.test", "ca": self.f("ca.pem"),
                       "client_cert": self.f("client.pem"), "client_key": self.f("client.key")})
        r = self.get()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-client-cn"), "client-one")
        self.p.stop()
        self.start(b, {"sni": "api.test", "ca": self.f("ca.pem")})  # no client certificate
        self.assertEqual(self.get().status, 502)

    def test_keep_alive_reuses_the_connection_and_new_connections_resume_the_session(self):
        for version in ("TLSv1.2", "TLSv1.3"):
            with self.subTest(version=version):
                b = self.https("api", max12=version == "TLSv1.2")
                self.start(b, {"sni": "api.test", "ca": self.f("ca.pem")})
                with h.Client(self.p.port) as c:
                    r1 = c.request("GET", "/")
                    r2 = c.request("GET", "/")
                    self.assertEqual(r1.status, 200, r1)
                    self.assertEqual(r1.header("x-tls-version"), version)
                    self.assertEqual(r1.header("x-conn"), r2.header("x-conn"))  # pooled
                    self.assertEqual(r1.header("x-resumed"), "0")
                    r3 = c.request("GET", "/close")  # the backend closes that connection
                    self.assertEqual(r3.status, 200, r3)
                    r4 = c.request("GET", "/")
                    self.assertEqual(r4.status, 200, r4)
                    self.assertNotEqual(r4.header("x-conn"), r1.header("x-conn"))
                    self.assertEqual(r4.header("x-resumed"), "1", r4)
                    # A resumed connection closed by the backend leaves a session to resume.
                    for _ in range(3):  # the pooled one, then two new ones
                        r = c.request("GET", "/close")
                        self.assertEqual(r.header("x-resumed"), "1", r)
                self.assertEqual(b.connections, 4)
                self.assertEqual(b.resumed, 3)
                self.p.stop()

    def test_health_checks_go_over_tls_and_fail_on_a_bad_certificate(self):
        health = {"enabled": True, "path": "/health", "interval": "100ms", "timeout": "100ms",
                  "healthy_threshold": 1, "unhealthy_threshold": 1}
        b = self.https("api")
        cfg = self.config(b, {"sni": "api.test", "ca": self.f("ca.pem")})
        cfg["backends"]["legacy"]["health_check"] = health
        self.p = self.proxy(cfg)
        deadline = time.monotonic() + 5
        while "/health" not in b.paths and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn("/health", b.paths)  # answered over TLS: a plaintext check cannot be
        self.assertEqual(self.get().status, 200)
        self.assertEqual(self.p.find_events("endpoint_health"), [])
        self.p.stop()
        bad = self.https("other")
        cfg = self.config(bad, {"sni": "api.test", "ca": self.f("ca.pem")})
        cfg["backends"]["legacy"]["health_check"] = health
        self.p = self.proxy(cfg)
        ev = self.p.wait_for(lambda p: [e for e in p.find_events("endpoint_health")
                                        if e.get("healthy") is False], 5)
        self.assertTrue(ev, self.p.log_tail())
        self.assertNotIn("/health", bad.paths)

    def check(self, tls):
        d = tempfile.mkdtemp(prefix="cutover-btls-check-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "cutover.yaml")
        cfg = h.make_config({"legacy": "127.0.0.1:1"})
        cfg["backends"]["legacy"]["tls"] = tls
        with open(path, "w") as fh:
            fh.write(h.to_yaml(cfg) + "\n")
        return h.run_binary(["--check", path])

    def test_check_names_file_line_and_key_of_an_unreadable_ca(self):
        rc, out, err = self.check({"ca": self.f("missing.pem")})
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(err, r"cutover\.yaml:\d+:\d+: backends\.legacy\.tls\.ca: .*missing\.pem: "
                              r"cannot load CA")

    def test_check_rejects_unknown_keys_and_a_lone_client_cert(self):
        rc, out, err = self.check({"verfy": False})
        self.assertEqual(rc, 1, out + err)
        self.assertIn("backends.legacy.tls", err)
        self.assertIn("verfy", err)
        rc, out, err = self.check({"client_cert": self.f("client.pem")})
        self.assertEqual(rc, 1, out + err)
        self.assertIn("client_key", err)

    def test_check_accepts_a_good_backend_tls_block(self):
        rc, out, err = self.check({"sni": "api.test", "ca": self.f("ca.pem"),
                                   "client_cert": self.f("client.pem"),
                                   "client_key": self.f("client.key")})
        self.assertEqual(rc, 0, out + err)


if __name__ == "__main__":
    h.main()
