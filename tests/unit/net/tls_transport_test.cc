// TlsTransport on a real loop over loopback TCP: handshake, data both ways, close_notify as EOF,
// backpressure on a large write, and a peer sending plaintext instead of a ClientHello.
// Certificates are made with the openssl CLI into a temp dir.
#include "net/tls_transport.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <memory>
#include <string>

using namespace cutover;

namespace {

std::string makeCerts() {
  char tmpl[] = "/tmp/cutover-tls-unit-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::string cmd =
      "cd " + dir +
      " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2"
      " -subj /CN=ca -keyout ca.key -out ca.pem 2>/dev/null"
      " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost"
      " -keyout srv.key -out srv.csr 2>/dev/null"
      " && printf 'subjectAltName=DNS:localhost\\n' > ext"
      " && openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
      " -extfile ext -out srv.pem 2>/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
  return dir;
}

const std::string& certDir() {
  static std::string dir = makeCerts();
  return dir;
}

struct Side : TransportCallbacks, TlsHandshakeCallbacks {
  TcpTransport tcp;
  std::unique_ptr<TlsTransport> tls;
  Transport* t = nullptr;
  std::string got;
  int eofs = 0, errors = 0, closed = 0, drained = 0, connected = 0, hs_done = 0, hs_failed = 0;
  TlsFailure failure = TlsFailure::Other;
  std::function<void(Side&)> on_data;
  void onTransportData(const char* d, size_t n) override {
    got.append(d, n);
    if (on_data) on_data(*this);
  }
  void onTransportEof() override { ++eofs; }
  void onTransportError(int) override { ++errors; }
  void onTransportConnected() override { ++connected; }
  void onTransportDrained() override { ++drained; }
  void onTransportClosed() override { ++closed; }
  void onTlsHandshakeDone() override { ++hs_done; }
  void onTlsHandshakeFailed(TlsFailure r, const std::string&) override {
    ++hs_failed;
    failure = r;
  }
};

struct Fixture {
  uv_loop_t loop{};
  uv_tcp_t listener{};
  uv_timer_t tick{};  // wakes uv_run(ONCE) so runUntil's deadline is checked
  sockaddr_in addr{};
  char server_buf[64 * 1024];
  char client_buf[64 * 1024];
  std::shared_ptr<const TlsServerContext> server_ctx;
  std::shared_ptr<const TlsClientContext> client_ctx;
  Side server, client;
  bool tls_server = true;

  Fixture() {
    uv_loop_init(&loop);
    std::vector<TlsLoadError> errs;
    TlsServerOptions so;
    so.certificates.push_back({certDir() + "/srv.pem", certDir() + "/srv.key"});
    server_ctx = TlsServerContext::build(so, errs);
    REQUIRE(errs.empty());
    TlsClientOptions co;
    co.ca = certDir() + "/ca.pem";
    client_ctx = TlsClientContext::build(co, errs);
    REQUIRE(errs.empty());
    uv_timer_init(&loop, &tick);
    uv_timer_start(
        &tick, [](uv_timer_t*) {}, 10, 10);
    uv_tcp_init(&loop, &listener);
    listener.data = this;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    REQUIRE(uv_tcp_bind(&listener, reinterpret_cast<sockaddr*>(&addr), 0) == 0);
    int len = sizeof addr;
    uv_tcp_getsockname(&listener, reinterpret_cast<sockaddr*>(&addr), &len);
    REQUIRE(uv_listen(reinterpret_cast<uv_stream_t*>(&listener), 8, [](uv_stream_t* s, int) {
              auto* f = static_cast<Fixture*>(s->data);
              REQUIRE(f->server.tcp.accept(&f->loop, s, f->server_buf, sizeof f->server_buf) == 0);
              f->server.tls =
                  std::make_unique<TlsTransport>(&f->loop, f->server.tcp, f->server_ctx);
              f->server.tls->setCallbacks(&f->server);
              f->server.tls->setHandshakeCallbacks(&f->server);
              f->server.t = f->server.tls.get();
              f->server.t->readStart();
            }) == 0);
  }
  void connectClient(bool tls = true) {
    if (tls) {
      client.tls = std::make_unique<TlsTransport>(&loop, client.tcp, client_ctx, "localhost");
      client.tls->setCallbacks(&client);
      client.tls->setHandshakeCallbacks(&client);
      client.t = client.tls.get();
    } else {
      client.tcp.setCallbacks(&client);
      client.t = &client.tcp;
    }
    REQUIRE(client.t->connect(&loop, reinterpret_cast<sockaddr*>(&addr), client_buf,
                              sizeof client_buf) == 0);
  }
  // Runs the loop until `done` or 5 s of loop turns.
  template <typename F>
  bool runUntil(F done) {
    uint64_t start = uv_hrtime();
    while (!done()) {
      if (uv_hrtime() - start > 5'000'000'000ULL) return false;
      uv_run(&loop, UV_RUN_ONCE);
    }
    return true;
  }
  ~Fixture() {
    if (server.t != nullptr) server.t->close();
    if (client.t != nullptr) client.t->close();
    uv_close(reinterpret_cast<uv_handle_t*>(&listener), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
};

}  // namespace

TEST_CASE("TLS handshake, data both ways, close_notify reaches the peer as EOF") {
  Fixture f;
  f.connectClient();
  REQUIRE(f.runUntil([&] { return f.client.connected == 1; }));
  CHECK(f.client.hs_done == 1);
  CHECK(std::string(f.client.tls->version()).rfind("TLSv1.", 0) == 0);
  f.client.t->readStart();
  f.client.t->write2("hello ", "server");
  REQUIRE(f.runUntil([&] { return f.server.got == "hello server"; }));
  CHECK(f.server.hs_done == 1);
  f.server.t->write("hello client");
  REQUIRE(f.runUntil([&] { return f.client.got == "hello client"; }));
  f.client.t->shutdownWrite();
  REQUIRE(f.runUntil([&] { return f.server.eofs == 1; }));
  f.server.t->close();
  f.client.t->close();
  REQUIRE(f.runUntil([&] { return f.server.closed == 1 && f.client.closed == 1; }));
  uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK(f.server.closed == 1);  // exactly once
  CHECK(f.client.closed == 1);
  CHECK(f.server.errors == 0);
  f.server.t = f.client.t = nullptr;
}

TEST_CASE("8 MiB written over TLS queue as pending bytes, drain, and arrive whole") {
  Fixture f;
  f.connectClient();
  REQUIRE(f.runUntil([&] { return f.client.connected == 1; }));
  f.client.t->write("x");
  REQUIRE(f.runUntil([&] { return f.server.got == "x"; }));
  std::string big(8 << 20, 'a');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + (i / 4096) % 26);
  f.server.t->write(big);
  CHECK(f.server.t->pendingBytes() > 0);  // the client is not reading yet
  f.client.t->readStart();
  REQUIRE(f.runUntil([&] { return f.client.got.size() == big.size(); }));
  CHECK(f.client.got == big);
  REQUIRE(f.runUntil([&] { return f.server.drained >= 1; }));
  CHECK(f.server.t->pendingBytes() == 0);
}

TEST_CASE("reading paused mid-stream resumes on a later turn with nothing lost") {
  Fixture f;
  f.connectClient();
  REQUIRE(f.runUntil([&] { return f.client.connected == 1; }));
  f.client.t->readStart();
  f.client.t->write("x");
  REQUIRE(f.runUntil([&] { return f.server.got == "x"; }));
  // The client pauses after every record it receives, the way a connection applies backpressure.
  f.client.on_data = [](Side& s) { s.t->readStop(); };
  std::string big(256 * 1024, 'z');
  f.server.t->write(big);
  for (int i = 0; i < 200 && f.client.got.size() < big.size(); ++i) {
    size_t before = f.client.got.size();
    REQUIRE(f.runUntil([&] { return f.client.got.size() > before; }));
    size_t after = f.client.got.size();
    f.client.t->readStart();  // never calls back from inside the call
    CHECK(f.client.got.size() == after);
  }
  CHECK(f.client.got == big);
}

TEST_CASE("a peer sending plaintext HTTP fails the handshake as not_tls and gets no cleartext") {
  Fixture f;
  f.connectClient(false);
  REQUIRE(f.runUntil([&] { return f.client.connected == 1; }));
  f.client.t->readStart();
  f.client.t->write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(f.runUntil([&] { return f.server.closed == 1; }));
  CHECK(f.server.hs_failed == 1);
  CHECK(f.server.failure == TlsFailure::NotTls);
  REQUIRE(f.runUntil([&] { return f.client.eofs + f.client.errors + f.client.closed > 0; }));
  CHECK(f.client.got.find("HTTP") == std::string::npos);
  f.server.t = nullptr;
}

TEST_CASE("garbage after the handshake closes the connection with an error") {
  Fixture f;
  f.connectClient();
  REQUIRE(f.runUntil([&] { return f.client.connected == 1; }));
  f.client.t->write("x");
  REQUIRE(f.runUntil([&] { return f.server.got == "x"; }));
  f.client.tcp.write("\x17\x03\x03\x00\x10garbagegarbage!!", 21);  // a bogus application record
  REQUIRE(f.runUntil([&] { return f.server.closed == 1; }));
  CHECK(f.server.errors == 1);
  f.server.t = nullptr;
}

TEST_CASE("server context refuses a key that does not match and an expired certificate") {
  std::string d = certDir();
  REQUIRE(std::system(("cd " + d +
                       " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
                       " -subj /CN=other -keyout other.key -out other.pem -days 1 2>/dev/null"
                       " && openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -days -1"
                       " -out old.pem 2>/dev/null")
                          .c_str()) == 0);
  std::vector<TlsLoadError> errs;
  TlsServerOptions so;
  so.certificates.push_back({d + "/srv.pem", d + "/other.key"});
  CHECK(TlsServerContext::build(so, errs) == nullptr);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].field == "key");
  CHECK(errs[0].message.find("does not match") != std::string::npos);
  errs.clear();
  so.certificates = {{d + "/missing.pem", d + "/srv.key"}};
  CHECK(TlsServerContext::build(so, errs) == nullptr);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].field == "cert");
  errs.clear();
  so.certificates = {{d + "/old.pem", d + "/srv.key"}};
  CHECK(TlsServerContext::build(so, errs) == nullptr);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0].message.find("expired 20") != std::string::npos);
}
