// UpstreamRequest, one attempt at a time, on a fake context: its pool hands out real
// UpstreamConnections over fake transports (no sockets; the connections' timers run on a real
// loop). Covers the bytes out exactly as the writer frames them, the response relayed and the
// connection pooled, failures closing the connection, a dead pooled connection replaced once,
// the per-attempt timeouts, and the slots taken on the backend (pending connect, connection)
// given back exactly once on every path: success, reset, timeout, client abort and retry.
#include "proxy/upstream_request.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "http/http1_codec.h"
#include "http/http1_writer.h"
#include "policy/circuit_breaker.h"
#include "tests/unit/proxy/test_snapshot.h"

using namespace cutover;
using Events = std::vector<std::string>;

namespace {

// A transport whose backend side is played by the test. Like TcpTransport it never calls back from
// inside a call into it: every event comes from a test call below.
struct FakeTransport final : Transport {
  TransportCallbacks* cb = nullptr;
  int connect_rc = 0;  // what connect() returns
  int connects = 0;
  bool init = false;
  bool reading = false;
  bool closing = false;
  bool told_closed = false;
  size_t pending = 0;   // what pendingBytes() says
  std::string written;  // every byte written, in order

  void setCallbacks(TransportCallbacks* c) override { cb = c; }
  int connect(uv_loop_t*, const sockaddr*, char*, size_t) override {
    ++connects;
    init = true;
    return connect_rc;
  }
  bool initialized() const override { return init; }
  int readStart() override {
    if (closing) return UV_EINVAL;
    reading = true;
    return 0;
  }
  void readStop() override { reading = false; }
  void write(const char* data, size_t len) override {
    if (!closing) written.append(data, len);
  }
  using Transport::write;
  void write2(std::string_view a, std::string_view b) override {
    write(a);
    write(b);
  }
  size_t pendingBytes() const override { return pending; }
  void shutdownWrite() override {}
  void close() override {
    closing = true;
    reading = false;
  }
  bool isClosing() const override { return closing; }
  std::string peerAddress() const override { return "127.0.0.1"; }

  // ---- the backend's side ----
  void connected() { cb->onTransportConnected(); }
  void receive(std::string_view bytes) {
    REQUIRE(reading);
    cb->onTransportData(bytes.data(), bytes.size());
  }
  void eof() {
    reading = false;
    cb->onTransportEof();
  }
  void reset() {
    closing = true;  // as TcpTransport: closes itself, then reports the error
    reading = false;
    cb->onTransportError(UV_ECONNRESET);
  }
  void drained() {
    pending = 0;
    cb->onTransportDrained();
  }
};

const char* failureName(UpstreamCallbacks::Failure f) {
  switch (f) {
    case UpstreamCallbacks::Failure::Connect:
      return "connect";
    case UpstreamCallbacks::Failure::Timeout:
      return "timeout";
    case UpstreamCallbacks::Failure::Reset:
      return "reset";
    case UpstreamCallbacks::Failure::BadResponse:
      return "bad response";
    case UpstreamCallbacks::Failure::TlsVerify:
      return "tls verify";
  }
  return "?";
}

// The worker (both contexts, one pool for the only endpoint of backend "new") and the router (the
// callbacks, recorded in order as `events`).
struct Fixture final : UpstreamContext, UpstreamRequestContext, UpstreamRequestCallbacks {
  uv_loop_t loop_;
  Snapshot snap;
  uint32_t b = 0;
  std::unique_ptr<UpstreamPool> pool_;
  std::deque<FakeTransport> transports;  // one per connection made, in order (stable addresses)
  int connect_rc = 0;                    // for the next transport's connect()
  char read_buf[1024];
  std::string scratch_buf;
  bool draining_ = false;
  int created = 0;
  int freed = 0;

  Events events;
  std::string held;  // body bytes the owner holds until onAttemptSending
  bool request_complete = true;
  RequestHead req;
  ForwardInfo fwd;
  BackendLease lease;
  UpstreamRequest attempt{*this, *this};

  explicit Fixture(const std::string& timeouts = "{connect: 1s, upstream_idle: 1s}",
                   const std::string& breaker = "{max_connections: 0}") {
    uv_loop_init(&loop_);
    std::string yaml = "listeners: [{name: public, address: '127.0.0.1:0'}]\n";
    yaml += "timeouts: " + timeouts + "\n";
    yaml += "backends:\n";
    yaml += "  legacy: {endpoints: ['127.0.0.1:1']}\n";
    yaml += "  new: {endpoints: ['127.0.0.1:2'], circuit_breaker: " + breaker + "}\n";
    yaml += "routes: [{name: r, match: {prefix: /}, split: {new: 100, legacy: 0}}]\n";
    testing::loadSnapshot(snap, yaml);
    b = testing::backendIndex(snap, "new");
    const config::SocketAddress& ep = snap.config->backends[b].endpoints[0];
    pool_ = std::make_unique<UpstreamPool>(*this, "new", ep.text, ep.addr);
    pool_->configure(8, 60000);
    req.method = "GET";
    req.target = "/";
    req.headers.add("Host", "h");
    fwd.client_address = "10.0.0.1";
    // The router admitted the request: the in-flight slot and budget count are the request's, not
    // the attempt's.
    REQUIRE(lease.admit(snap.backends[b]) == Reason::None);
  }
  ~Fixture() {
    attempt.abandon();
    pool_->closeIdle();
    settle();
    CHECK(freed == created);
    CHECK(pendingSlots() == 0);
    CHECK(connectionSlots() == 0);
    // No attempt path touched the request's slots; the lease gives them back once, at its end.
    const BackendRuntime& rt = snap.backends[b];
    CHECK(rt.limits->inflight() == 1);
    CHECK(rt.budget->activeRequests() == 1);
    lease = BackendLease();
    CHECK(rt.limits->inflight() == 0);
    CHECK(rt.budget->activeRequests() == 0);
    CHECK(rt.budget->activeRetries() == 0);
    pool_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop_) == 0);
  }

  // ---- UpstreamContext ----
  uv_loop_t* loop() override { return &loop_; }
  char* readBuffer() override { return read_buf; }
  size_t readBufferSize() const override { return sizeof(read_buf); }
  bool poolsClosing() const override { return draining_; }
  Transport* upstreamTransport(UpstreamPool& p) override {
    CHECK(&p == pool_.get());
    transports.emplace_back();
    transports.back().connect_rc = connect_rc;
    return &transports.back();
  }
  void upstreamCreated() override { ++created; }
  void upstreamClosed(UpstreamConnection* c) override {
    ++freed;
    delete c;
  }

  // ---- UpstreamRequestContext ----
  UpstreamPool& pool(const Snapshot& s, uint32_t backend, uint32_t e) override {
    CHECK(&s == &snap);
    CHECK(backend == b);
    CHECK(e == 0);
    return *pool_;
  }
  uint32_t nextEndpoint(uint32_t, uint32_t n) override {
    CHECK(n == 1);
    return 0;
  }
  std::string& scratch() override { return scratch_buf; }

  // ---- UpstreamRequestCallbacks ----
  std::string& onAttemptSending() override {
    events.push_back("sending");
    return held;
  }
  void onAttemptReconnecting() override { events.push_back("reconnecting"); }
  bool requestComplete() const override { return request_complete; }
  void onAttemptHead(ResponseHead& head) override {
    events.push_back("head " + std::to_string(head.status));
  }
  void onAttemptBody(const char* data, size_t len) override {
    events.push_back("body " + std::string(data, len));
  }
  void onAttemptComplete() override { events.push_back("complete"); }
  void onAttemptReadDone() override { events.push_back("read done"); }
  void onAttemptFailed(UpstreamCallbacks::Failure f) override {
    events.push_back(std::string("failed ") + failureName(f));
  }
  void pauseRequestBody() override { events.push_back("pause body"); }
  void resumeRequestBody() override { events.push_back("resume body"); }
  void onAttemptTunnelData(const char* data, size_t len) override {
    events.push_back("tunnel " + std::string(data, len));
  }
  void onAttemptTunnelClosed() override { events.push_back("tunnel closed"); }

  // ---- helpers ----
  Reason start() { return attempt.start(snap, b, req, fwd, lease); }
  // The request head as the writer makes it for this attempt (Host defaults to the endpoint).
  std::string expectedHead() const {
    ForwardInfo f = fwd;
    f.default_host = "127.0.0.1:2";
    std::string out;
    writeRequestHead(out, req, f);
    return out;
  }
  // A later loop turn: the close callbacks of closed transports and timers run.
  void settle() {
    for (FakeTransport& t : transports) {
      if (t.closing && t.init && !t.told_closed) {
        t.told_closed = true;
        t.cb->onTransportClosed();
      }
    }
    uv_run(&loop_, UV_RUN_NOWAIT);
  }
  // Runs the loop (its timers) until `n` events were reported, or nothing is left to run.
  void runUntil(size_t n) {
    for (int i = 0; i < 1000 && events.size() < n; ++i) uv_run(&loop_, UV_RUN_ONCE);
  }
  // One whole GET on a fresh connection, which ends in the pool.
  void exchangeOnce() {
    REQUIRE(start() == Reason::None);
    transports.back().connected();
    transports.back().receive("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    REQUIRE(events.back() == "complete");
    REQUIRE(pool_->idleCount() == 1);
    events.clear();
  }
  uint32_t pendingSlots() const { return snap.backends[b].limits->pending(); }
  uint32_t connectionSlots() const { return snap.backends[b].limits->connections(); }
};

}  // namespace

TEST_CASE("a chunked request goes out as head, held body, later body and last chunk, in order") {
  Fixture f;
  f.req.method = "POST";
  f.req.target = "/upload";
  f.req.chunked = true;
  f.request_complete = false;
  f.held = "abc";
  REQUIRE(f.start() == Reason::None);
  REQUIRE(f.transports.size() == 1);
  FakeTransport& t = f.transports[0];
  CHECK(t.connects == 1);
  CHECK(t.written.empty());  // nothing before the connection is up
  CHECK(f.events.empty());
  CHECK(f.pendingSlots() == 1);
  CHECK(f.connectionSlots() == 1);

  t.connected();
  CHECK(f.pendingSlots() == 0);
  CHECK(f.events == Events{"sending", "resume body"});
  CHECK(f.held.empty());  // taken and cleared
  CHECK(f.attempt.bodyStarted());
  f.attempt.sendBody("defgh", 5);
  f.request_complete = true;
  f.attempt.endBody();
  f.attempt.endBody();  // once only
  CHECK(t.written.rfind("POST /upload HTTP/1.1\r\n", 0) == 0);
  CHECK(t.written.find("Transfer-Encoding: chunked\r\n") != std::string::npos);
  CHECK(t.written == f.expectedHead() + "3\r\nabc\r\n" + "5\r\ndefgh\r\n" + "0\r\n\r\n");
}

TEST_CASE("a Content-Length body goes out unframed, and a complete request needs nothing more") {
  Fixture f;
  f.req.method = "PUT";
  f.req.has_content_length = true;
  f.req.content_length = 10;
  f.request_complete = false;
  REQUIRE(f.start() == Reason::None);
  FakeTransport& t = f.transports[0];
  f.attempt.sendBody("early", 5);  // before the head went out: the owner holds these, not us
  t.connected();
  CHECK_FALSE(f.attempt.bodyStarted());
  f.attempt.sendBody("01234", 5);
  f.attempt.sendBody("56789", 5);
  f.request_complete = true;
  f.attempt.endBody();
  CHECK(t.written.find("Content-Length: 10\r\n") != std::string::npos);
  CHECK(t.written == f.expectedHead() + "0123456789");
}

TEST_CASE("a response is relayed head, body, end, and its connection goes back to the pool") {
  Fixture f;
  REQUIRE(f.start() == Reason::None);
  FakeTransport& t = f.transports[0];
  t.connected();
  t.receive("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
  t.receive("world");
  CHECK(f.events == Events{"sending", "resume body", "head 200", "body hello", "read done",
                           "body world", "complete"});
  CHECK_FALSE(f.attempt.active());
  CHECK(f.pool_->idleCount() == 1);
  CHECK_FALSE(t.closing);
  CHECK(t.reading);                 // an idle connection keeps reading to notice a close
  CHECK(f.connectionSlots() == 1);  // the pooled connection keeps its slot
  CHECK(f.pendingSlots() == 0);

  SUBCASE("the next attempt takes it: no new connection, the head goes out at once") {
    f.events.clear();
    t.written.clear();
    REQUIRE(f.start() == Reason::None);
    CHECK(f.transports.size() == 1);
    CHECK(f.pool_->idleCount() == 0);
    CHECK(f.pendingSlots() == 0);  // no connect, no pending slot
    CHECK(f.events == Events{"sending", "resume body"});
    CHECK(t.written == f.expectedHead());
  }
  SUBCASE("it is closed when the backend closes it while idle") {
    t.eof();
    CHECK(t.closing);
    CHECK(f.pool_->idleCount() == 0);
    f.settle();
    CHECK(f.freed == 1);
    CHECK(f.connectionSlots() == 0);
  }
}

TEST_CASE("a connection is not pooled when the worker drains or the backend says close") {
  Fixture f;
  std::string response;
  SUBCASE("draining") {
    f.draining_ = true;
    response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  }
  SUBCASE("Connection: close") {
    response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  }
  REQUIRE(f.start() == Reason::None);
  FakeTransport& t = f.transports[0];
  t.connected();
  t.receive(response);
  CHECK(f.events.back() == "complete");
  CHECK(t.closing);
  CHECK(f.pool_->idleCount() == 0);
  f.settle();
  CHECK(f.freed == 1);
  CHECK(f.connectionSlots() == 0);
}

TEST_CASE("an answer that comes before the whole request went out leaves its connection unpooled") {
  Fixture f;
  f.req.method = "POST";
  f.req.has_content_length = true;
  f.req.content_length = 10;
  f.request_complete = false;
  REQUIRE(f.start() == Reason::None);
  FakeTransport& t = f.transports[0];
  t.connected();
  f.attempt.sendBody("01234", 5);
  t.receive("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n");
  CHECK(f.events == Events{"sending", "resume body", "head 413", "complete"});
  CHECK(t.closing);  // the rest of the body would be read as the next request
  CHECK(f.pool_->idleCount() == 0);
}

TEST_CASE("a reset before any response byte fails the attempt; the connection closes, unpooled") {
  Fixture f;
  REQUIRE(f.start() == Reason::None);
  FakeTransport& t = f.transports[0];
  t.connected();
  SUBCASE("reset") { t.reset(); }
  SUBCASE("EOF") { t.eof(); }
  CHECK(f.events == Events{"sending", "resume body", "failed reset"});
  CHECK_FALSE(f.attempt.active());
  CHECK(t.closing);
  CHECK(f.pool_->idleCount() == 0);
  f.settle();
  CHECK(f.freed == 1);
  CHECK(f.connectionSlots() == 0);
  CHECK(f.pendingSlots() == 0);
}

TEST_CASE("a connection refused while connecting fails the attempt as a connect failure") {
  Fixture f;
  REQUIRE(f.start() == Reason::None);
  CHECK(f.pendingSlots() == 1);
  f.transports[0].reset();
  CHECK(f.events == Events{"failed connect"});
  CHECK(f.pendingSlots() == 0);
  f.settle();
  CHECK(f.connectionSlots() == 0);
}

TEST_CASE("a malformed response fails the attempt as a bad response and closes the connection") {
  Fixture f;
  REQUIRE(f.start() == Reason::None);
  FakeTransport& t = f.transports[0];
  t.connected();
  t.receive("HTTP/1.1 2x0 OK\r\n\r\n");
  CHECK(f.events == Events{"sending", "resume body", "failed bad response"});
  CHECK(t.closing);
}

TEST_CASE("a dead pooled connection is replaced once within the attempt, and the request resent") {
  Fixture f;
  f.exchangeOnce();
  f.req.method = "POST";
  f.req.chunked = true;
  f.request_complete = false;
  FakeTransport& t0 = f.transports[0];
  t0.written.clear();
  REQUIRE(f.start() == Reason::None);
  CHECK(f.events == Events{"sending", "resume body"});
  CHECK(t0.written == f.expectedHead());

  t0.eof();  // the backend had closed it while it sat in the pool
  CHECK(f.events == Events{"sending", "resume body", "reconnecting"});
  CHECK(t0.closing);
  REQUIRE(f.transports.size() == 2);
  FakeTransport& t1 = f.transports[1];
  CHECK(t1.connects == 1);
  CHECK(f.pendingSlots() == 1);  // the fresh connection takes a pending slot like any other
  CHECK(f.attempt.active());

  // Meanwhile the owner held the body and the client finished: both go out on the fresh one.
  f.held = "hello";
  f.request_complete = true;
  t1.connected();
  CHECK(f.pendingSlots() == 0);
  CHECK(f.events == Events{"sending", "resume body", "reconnecting", "sending", "resume body"});
  CHECK(t1.written == f.expectedHead() + "5\r\nhello\r\n0\r\n\r\n");

  SUBCASE("the fresh connection answers") {
    t1.receive("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    CHECK(f.events.back() == "complete");
    CHECK(f.pool_->idleCount() == 1);
    f.settle();
    CHECK(f.freed == 1);  // the dead one
    CHECK(f.connectionSlots() == 1);
  }
  SUBCASE("the fresh connection dies too: the attempt fails, no third connection") {
    t1.eof();
    CHECK(f.events.back() == "failed reset");
    CHECK(f.transports.size() == 2);
    f.settle();
    CHECK(f.connectionSlots() == 0);
  }
}

TEST_CASE("a request that had ended goes out whole again on the replacement, last chunk included") {
  Fixture f;
  f.exchangeOnce();
  f.req.method = "POST";
  f.req.chunked = true;  // an empty chunked body: only the last chunk
  FakeTransport& t0 = f.transports[0];
  t0.written.clear();
  REQUIRE(f.start() == Reason::None);
  CHECK(t0.written == f.expectedHead() + "0\r\n\r\n");
  t0.reset();
  CHECK(f.events == Events{"sending", "resume body", "reconnecting"});
  REQUIRE(f.transports.size() == 2);
  f.transports[1].connected();
  CHECK(f.transports[1].written == f.expectedHead() + "0\r\n\r\n");
  f.transports[1].receive("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  CHECK(f.events.back() == "complete");
  CHECK(f.pool_->idleCount() == 1);  // it carried a whole request: reusable
}

TEST_CASE("a pooled connection is not replaced once body bytes went out or response bytes came") {
  Fixture f;
  f.exchangeOnce();
  FakeTransport& t0 = f.transports[0];
  SUBCASE("body sent") {
    f.req.method = "POST";
    f.req.has_content_length = true;
    f.req.content_length = 5;
    f.held = "hello";
    REQUIRE(f.start() == Reason::None);
    CHECK(f.attempt.bodyStarted());
  }
  SUBCASE("part of the response came") {
    REQUIRE(f.start() == Reason::None);
    t0.receive("HTTP/1.1 200 OK\r\n");
  }
  t0.eof();
  CHECK(f.events.back() == "failed reset");
  CHECK(f.transports.size() == 1);
  CHECK_FALSE(f.attempt.active());
}

TEST_CASE("per-attempt timeouts: connect, then the backend's silence after the request") {
  Fixture f("{connect: 20ms, upstream_idle: 20ms}");
  REQUIRE(f.start() == Reason::None);
  FakeTransport& t = f.transports[0];
  SUBCASE("connect") {
    f.runUntil(1);
    CHECK(f.events == Events{"failed connect"});
  }
  SUBCASE("response") {
    t.connected();
    f.runUntil(3);
    CHECK(f.events == Events{"sending", "resume body", "failed timeout"});
  }
  SUBCASE("between body pieces") {
    t.connected();
    t.receive("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
    f.runUntil(6);
    CHECK(f.events == Events{"sending", "resume body", "head 200", "body hello", "read done",
                             "failed timeout"});
  }
  CHECK(t.closing);
  CHECK(f.pendingSlots() == 0);
  f.settle();
  CHECK(f.freed == 1);
  CHECK(f.connectionSlots() == 0);
}

TEST_CASE("abandon (client gone, deadline) closes the connection and reports nothing") {
  Fixture f;
  REQUIRE(f.start() == Reason::None);
  FakeTransport& t = f.transports[0];
  Events before;
  SUBCASE("while connecting") { CHECK(f.pendingSlots() == 1); }
  SUBCASE("mid-response") {
    t.connected();
    t.receive("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
    before = f.events;
  }
  f.attempt.abandon();
  CHECK_FALSE(f.attempt.active());
  CHECK(t.closing);
  CHECK(f.pendingSlots() == 0);
  f.settle();
  CHECK(f.events == before);
  CHECK(f.freed == 1);
  CHECK(f.connectionSlots() == 0);
  CHECK(f.pool_->idleCount() == 0);
}

TEST_CASE("a retry is a new attempt on the same object; the failed one's slots are already back") {
  Fixture f;
  REQUIRE(f.start() == Reason::None);
  f.transports[0].connected();
  f.transports[0].reset();
  CHECK(f.events.back() == "failed reset");
  f.events.clear();

  // The router's retry (its budget slot is held by the lease until the request ends).
  const BackendRuntime& rt = f.snap.backends[f.b];
  REQUIRE(f.lease.tryStartRetry(rt, f.snap.config->routes[0].retry));
  REQUIRE(f.start() == Reason::None);
  REQUIRE(f.transports.size() == 2);
  CHECK(f.pendingSlots() == 1);
  f.transports[1].connected();
  CHECK(f.pendingSlots() == 0);
  f.transports[1].receive("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  CHECK(f.events == Events{"sending", "resume body", "head 200", "complete"});
  f.settle();
  CHECK(f.freed == 1);
  CHECK(f.connectionSlots() == 1);  // only the pooled one
  CHECK(rt.budget->activeRetries() == 1);
}

TEST_CASE("an attempt that cannot start says why, calls nothing back and holds nothing") {
  SUBCASE("connect fails at once") {
    Fixture f;
    f.connect_rc = UV_ECONNREFUSED;
    CHECK(f.start() == Reason::UpstreamConnectFailure);
    CHECK(f.events.empty());
    CHECK_FALSE(f.attempt.active());
    CHECK(f.pendingSlots() == 0);
    f.settle();
    CHECK(f.freed == 1);
    CHECK(f.connectionSlots() == 0);
  }
  SUBCASE("max_pending") {
    Fixture f("{connect: 1s, upstream_idle: 1s}", "{max_pending: 1}");
    ConcurrencyLimits& limits = *f.snap.backends[f.b].limits;
    REQUIRE(limits.tryAcquirePending() == Reason::None);  // another request is connecting
    CHECK(f.start() == Reason::MaxPending);
    CHECK(f.transports.empty());
    CHECK(f.connectionSlots() == 0);
    CHECK(f.pendingSlots() == 1);
    limits.releasePending();
  }
  SUBCASE("max_connections") {
    Fixture f("{connect: 1s, upstream_idle: 1s}", "{max_connections: 1}");
    f.exchangeOnce();
    REQUIRE(f.start() == Reason::None);  // takes the pooled connection, the only one allowed
    UpstreamRequest second(f, f);
    BackendLease lease2;
    CHECK(second.start(f.snap, f.b, f.req, f.fwd, lease2) == Reason::MaxConnections);
    CHECK(f.transports.size() == 1);
    CHECK(f.pendingSlots() == 0);
    CHECK(f.connectionSlots() == 1);
  }
}

TEST_CASE("request-body flow control follows the backend connection's pending bytes") {
  Fixture f;
  f.req.method = "POST";
  f.req.has_content_length = true;
  f.req.content_length = 2;
  f.request_complete = false;
  REQUIRE(f.start() == Reason::None);
  FakeTransport& t = f.transports[0];
  t.connected();
  t.pending = f.snap.config->limits.high_watermark + 1;
  f.attempt.sendBody("x", 1);
  CHECK(f.events == Events{"sending", "resume body", "pause body"});
  t.drained();
  CHECK(f.events == Events{"sending", "resume body", "pause body", "resume body"});
}
