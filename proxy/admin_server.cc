#include "proxy/admin_server.h"

#include <arpa/inet.h>

#include <cstdio>
#include <cstdlib>

#include "config/loader.h"
#include "http/http1_codec.h"
#include "http/http1_writer.h"
#include "net/tcp_transport.h"

namespace cutover {

namespace {

std::string formatAddress(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    uv_ip6_name(a, host, sizeof(host));
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
  uv_ip4_name(a, host, sizeof(host));
  return std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
}

// "Name: value\r\n" lines, the responder's preformatted form, into `out` (the writer checks them).
void addHeaderLines(HeaderMap& out, std::string_view lines) {
  while (!lines.empty()) {
    const size_t eol = lines.find("\r\n");
    std::string_view line = lines.substr(0, eol);
    lines.remove_prefix(eol == std::string_view::npos ? lines.size() : eol + 2);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    out.add(line.substr(0, colon), value);
  }
}

constexpr size_t kReadBufferSize = 16 * 1024;
// After the last response, how long a connection keeps reading (and discarding) the client's input
// so that unread bytes do not turn our FIN into a reset that destroys the response (as the data
// plane's lingering close).
constexpr uint64_t kLingerMs = 2000;
constexpr std::string_view kText = "text/plain; charset=utf-8";

}  // namespace

// Shared by every copy of one AdminResponder.
struct AdminResponderState {
  std::weak_ptr<AdminConnection> conn;
  uint64_t request_seq = 0;
  bool done = false;
  ~AdminResponderState();
};

// One accepted admin connection: a TcpTransport, a RequestDecoder and one timer. Owned by
// AdminServer::connections_ (a shared_ptr, so responders can hold weak references) and erased only
// in the last close callback of its two handles (the transport's socket and the timer).
//
//   Reading ──request──▶ Handling ──respond()──▶ Writing ──written──▶ Reading (keep-alive)
//      │ 400/408/413                      │ last answer (Connection: close)
//      └──error reply─────────────────────┴──▶ Lingering ──EOF or deadline──▶ Closed
//   Any state ──idle timeout, transport error, server close──▶ Closed ──both close cbs──▶ freed
//
// The timer means, by state: Reading, the idle timeout (or the head deadline while a head is
// being read); Handling, nothing (the handler bounds its own time); Writing, "the response went
// out" on the next loop turn when it was written at once, else the idle timeout for a client that
// does not read; Lingering, the linger deadline.
class AdminConnection final : public TransportCallbacks,
                              public RequestDecoderCallbacks,
                              public std::enable_shared_from_this<AdminConnection> {
 public:
  enum class State : uint8_t { Reading, Handling, Writing, Lingering, Closed };

  explicit AdminConnection(AdminServer& server)
      : server_(server),
        decoder_(*this, RequestDecoder::Limits{server.options_.max_header_bytes,
                                               server.options_.max_uri_bytes}) {
    transport_.setCallbacks(this);
  }

  // Accepts from the listener and starts reading; returns a libuv error after which close() must
  // still be called.
  int start(uv_stream_t* listener) {
    uv_timer_init(server_.loop_, &timer_);
    timer_.data = this;
    handles_open_ = 1;
    const int rc =
        transport_.accept(server_.loop_, listener, server_.read_buf_.get(), kReadBufferSize);
    if (transport_.initialized()) ++handles_open_;
    if (rc != 0) return rc;
    sockaddr_storage ss{};
    if (transport_.peerName(ss) == 0) peer_ = formatAddress(ss);
    armReadTimer();
    return transport_.readStart();
  }

  // Idempotent. The connection is freed once both handles' close callbacks ran.
  void close() {
    if (state_ == State::Closed) return;
    state_ = State::Closed;
    transport_.close();  // no callback if it was never initialised: not counted in handles_open_
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onTimerClosed);
  }

  // Writes the answer to the current request if `seq` names it and it is still awaited.
  bool respond(uint64_t seq, int status, std::string_view content_type, std::string_view body,
               std::string_view extra_headers) {
    if (state_ != State::Handling || seq != request_seq_) return false;
    // A client that half-closed is answered what it asked; the last answer closes.
    const bool last = !keep_alive_ || (peer_eof_ && input_.empty());
    writeResponse(status, content_type, body, extra_headers, last);
    return true;
  }

 private:
  // ---- RequestDecoderCallbacks ----
  void onRequestHead(RequestHead& head) override {
    request_ = AdminRequest{};
    request_.method = head.method;
    const std::string_view target(head.target);
    const size_t q = target.find('?');
    request_.path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) request_.query = std::string(target.substr(q + 1));
    for (size_t i = 0; i < head.headers.size(); ++i) {
      if (!head.headers.removed(i))
        request_.headers.add(head.headers.name(i), head.headers.value(i));
    }
    request_.peer = peer_;
    is_head_ = head.method == "HEAD";
    // HTTP/1.0 keep-alive needs a Connection: keep-alive echo; admin clients do not need it.
    keep_alive_ = head.keep_alive && head.version_minor >= 1;
    if (head.has_content_length && head.content_length > server_.options_.max_body) {
      body_too_large_ = true;
      return;
    }
    if (head.expect_continue) transport_.write(k100Continue);
  }
  void onRequestBody(const char* data, size_t len) override {
    if (body_too_large_) return;
    if (request_.body.size() + len > server_.options_.max_body) {
      body_too_large_ = true;  // chunked body over the cap
      return;
    }
    request_.body.append(data, len);
  }
  void onRequestComplete() override {}

  // ---- TransportCallbacks ----
  void onTransportData(const char* data, size_t len) override {
    if (state_ == State::Lingering || state_ == State::Closed) return;  // discarded
    input_.append(data, len);
    if (state_ == State::Reading) {
      process();
      return;
    }
    // Pipelined requests pile up only while one is answered; stop reading past a bound.
    if (input_.size() > server_.options_.max_body) pauseReading();
  }

  void onTransportEof() override {
    peer_eof_ = true;
    switch (state_) {
      case State::Reading:
        close();  // nothing asked, or a request cut short
        return;
      case State::Handling:
      case State::Writing:
        return;  // answer what was asked, then close (see respond() and responseWritten())
      case State::Lingering:
        if (transport_.pendingBytes() == 0) close();
        return;  // else onTransportDrained closes
      case State::Closed:
        return;
    }
  }

  void onTransportError(int) override { close(); }

  void onTransportDrained() override {
    if (state_ == State::Writing) {
      responseWritten();
    } else if (state_ == State::Lingering) {
      if (peer_eof_) {
        close();
      } else {
        startTimer(kLingerMs);
      }
    }
  }

  void onTransportClosed() override {
    close();
    if (--handles_open_ == 0) server_.onConnectionClosed(this);  // frees *this
  }

  // ---- timer ----
  static void onTimer(uv_timer_t* timer) {
    auto* self = static_cast<AdminConnection*>(timer->data);
    switch (self->state_) {
      case State::Reading:
        if (self->decoder_.inMessage() && !self->decoder_.headComplete()) {
          self->fail(408, "header_timeout");
        } else {
          self->close();  // idle
        }
        return;
      case State::Writing:
        if (self->transport_.pendingBytes() == 0) {
          self->responseWritten();
        } else {
          self->close();  // the client stopped reading
        }
        return;
      case State::Lingering:
        self->close();
        return;
      case State::Handling:
      case State::Closed:
        return;
    }
  }

  static void onTimerClosed(uv_handle_t* handle) {
    auto* self = static_cast<AdminConnection*>(handle->data);
    if (--self->handles_open_ == 0) self->server_.onConnectionClosed(self);  // frees *self
  }

  void startTimer(uint64_t ms) { uv_timer_start(&timer_, onTimer, ms, 0); }

  // While reading: the head deadline from a head's first byte, else the idle timeout from now.
  void armReadTimer() {
    if (decoder_.inMessage() && !decoder_.headComplete()) {
      const uint64_t now = uv_now(server_.loop_);
      if (head_deadline_ == 0) head_deadline_ = now + server_.options_.header_timeout_ms;
      startTimer(head_deadline_ > now ? head_deadline_ - now : 0);
      return;
    }
    head_deadline_ = 0;
    startTimer(server_.options_.idle_timeout_ms);
  }

  void pauseReading() {
    read_paused_ = true;
    transport_.readStop();
  }

  // Feeds buffered input to the decoder until a request completes, fails or needs more bytes.
  void process() {
    while (state_ == State::Reading && !input_.empty()) {
      size_t consumed = 0;
      const DecodeStatus status = decoder_.execute(input_.data(), input_.size(), consumed);
      input_.erase(0, consumed);
      if (status == DecodeStatus::Error) {
        fail(decoder_.error().status, decoder_.error().reason);
        return;
      }
      if (body_too_large_) {
        fail(413, "request body too large");
        return;
      }
      if (status == DecodeStatus::Upgrade) {
        fail(400, "upgrade not supported");
        return;
      }
      if (status == DecodeStatus::MessageComplete) {
        dispatch();
        return;
      }
      if (consumed == 0) break;
    }
    if (state_ != State::Reading) return;
    if (peer_eof_) {
      close();  // what is left can never complete
      return;
    }
    armReadTimer();
  }

  void dispatch() {
    state_ = State::Handling;
    uv_timer_stop(&timer_);
    head_deadline_ = 0;
    auto state = std::make_shared<AdminResponderState>();
    state->conn = weak_from_this();
    state->request_seq = ++request_seq_;
    server_.handler_(request_, AdminResponder(std::move(state)));
  }

  // The response is out of our hands (written, or the transport failed and is closing).
  void responseWritten() {
    if (transport_.isClosing()) {
      close();
      return;
    }
    state_ = State::Reading;
    decoder_.reset();
    body_too_large_ = false;
    if (read_paused_ && !peer_eof_) {
      read_paused_ = false;
      transport_.readStart();
    }
    process();  // the next request may be buffered already
  }

  // Answers a request the decoder or a limit refused, then closes.
  void fail(int status, std::string_view why) {
    keep_alive_ = false;
    is_head_ = false;
    std::string body(why);
    body += '\n';
    writeResponse(status, kText, body, {}, true);
  }

  void writeResponse(int status, std::string_view content_type, std::string_view body,
                     std::string_view extra_headers, bool last) {
    HeaderMap headers;
    if (!content_type.empty()) headers.add("Content-Type", content_type);
    headers.add("Cache-Control", "no-store");
    addHeaderLines(headers, extra_headers);
    std::string out;
    writeCompleteResponse(out, status, headers, body, last, is_head_);
    transport_.write(out);
    if (last) {
      linger();
      return;
    }
    state_ = State::Writing;
    // Continue from the loop, never from inside respond(): at once when everything was written,
    // else when the transport drains (or the idle timeout passes).
    startTimer(transport_.pendingBytes() == 0 ? 0 : server_.options_.idle_timeout_ms);
  }

  // The last response is queued: FIN once it is written, then read and discard until the client
  // closes or the linger deadline passes.
  void linger() {
    state_ = State::Lingering;
    input_.clear();
    const bool pending = transport_.pendingBytes() > 0;
    if (peer_eof_ && !pending) {
      close();
      return;
    }
    transport_.shutdownWrite();
    if (!peer_eof_) {
      read_paused_ = false;
      transport_.readStart();
    }
    startTimer(pending ? server_.options_.idle_timeout_ms : kLingerMs);
  }

  AdminServer& server_;
  TcpTransport transport_;
  uv_timer_t timer_;
  RequestDecoder decoder_;
  AdminRequest request_;
  std::string peer_;
  std::string input_;  // bytes read but not yet parsed (pipelined requests wait here)
  uint64_t request_seq_ = 0;
  uint64_t head_deadline_ = 0;  // loop time; 0 while no head is being read
  int handles_open_ = 0;
  State state_ = State::Reading;
  bool body_too_large_ = false;
  bool keep_alive_ = true;
  bool is_head_ = false;
  bool read_paused_ = false;
  bool peer_eof_ = false;  // the client half-closed: answer what was asked, then close
};

AdminResponderState::~AdminResponderState() {
  if (done) return;
  if (auto conn = this->conn.lock()) {
    conn->respond(request_seq, 500, "text/plain; charset=utf-8", "handler gave no answer\n", {});
  }
}

bool AdminResponder::respond(int status, std::string_view content_type, std::string_view body,
                             std::string_view extra_headers) const {
  if (!state_ || state_->done) return false;
  state_->done = true;
  auto conn = state_->conn.lock();
  return conn && conn->respond(state_->request_seq, status, content_type, body, extra_headers);
}

bool AdminResponder::responded() const { return state_ && state_->done; }

AdminServer::AdminServer(uv_loop_t* loop, const config::SocketAddress& address, Handler handler,
                         Options options)
    : loop_(loop),
      address_(address),
      handler_(std::move(handler)),
      options_(options),
      read_buf_(new char[kReadBufferSize]) {
  listener_.data = this;
}

AdminServer::~AdminServer() {
  if (listener_open_ || !connections_.empty()) {
    std::fputs("cutover: AdminServer destroyed before its close() completed\n", stderr);
    std::abort();
  }
}

int AdminServer::start(std::string& bound_address) {
  if (listener_open_ || closing_) return UV_EINVAL;
  int r = uv_tcp_init(loop_, &listener_);
  if (r < 0) return r;
  listener_.data = this;
  listener_open_ = true;
  r = uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&address_.addr), 0);
  if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 128, onConnection);
  if (r < 0) return r;  // the caller closes us; the handle is closed there
  sockaddr_storage ss{};
  int len = sizeof(ss);
  r = uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&ss), &len);
  if (r < 0) return r;
  bound_address = formatAddress(ss);
  return 0;
}

void AdminServer::onConnection(uv_stream_t* listener, int status) {
  auto* self = static_cast<AdminServer*>(listener->data);
  if (status < 0 || self->closing_) return;
  if (self->connections_.size() >= self->options_.max_connections) {
    acceptAndClose(self->loop_, listener);
    return;
  }
  auto conn = std::make_shared<AdminConnection>(*self);
  AdminConnection* raw = conn.get();
  self->connections_.emplace(raw, std::move(conn));
  if (raw->start(listener) != 0) raw->close();
}

void AdminServer::onConnectionClosed(AdminConnection* conn) {
  connections_.erase(conn);
  maybeFinishClose();
}

void AdminServer::close(std::function<void()> done) {
  if (closing_) return;
  closing_ = true;
  close_done_ = std::move(done);
  if (listener_open_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), onListenerClosed);
  }
  // Closing erases nothing synchronously (that happens in close callbacks), so iterating is safe.
  for (auto& [raw, conn] : connections_) raw->close();
  if (!listener_open_ && connections_.empty()) {
    // Nothing was ever opened: still report from the loop, never from inside close().
    uv_tcp_init(loop_, &listener_);
    listener_open_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), onListenerClosed);
  }
}

void AdminServer::onListenerClosed(uv_handle_t* handle) {
  auto* self = static_cast<AdminServer*>(handle->data);
  self->listener_open_ = false;
  self->maybeFinishClose();
}

void AdminServer::maybeFinishClose() {
  if (!closing_ || listener_open_ || !connections_.empty() || !close_done_) return;
  std::function<void()> done = std::move(close_done_);
  done();  // may destroy *this
}

bool authorized(const AdminRequest& request, std::string_view token) {
  if (token.empty()) return true;
  std::string_view value = request.headers.get("authorization");
  constexpr std::string_view kScheme = "bearer ";
  if (value.size() < kScheme.size() || !iequals(value.substr(0, kScheme.size()), kScheme)) {
    return false;
  }
  std::string_view given = value.substr(kScheme.size());
  while (!given.empty() && given.front() == ' ') given.remove_prefix(1);
  // Constant time in the token's length: every byte is compared whatever the first mismatch.
  unsigned diff = given.size() == token.size() ? 0 : 1;
  for (size_t i = 0; i < token.size(); ++i) {
    const unsigned char a = static_cast<unsigned char>(token[i]);
    const unsigned char b = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= a ^ b;
  }
  return diff == 0;
}

void respondMethodNotAllowed(const AdminResponder& responder, std::string_view allow) {
  std::string headers = "Allow: ";
  headers += allow;
  headers += "\r\n";
  std::string body = "method not allowed; use ";
  body += allow;
  body += '\n';
  responder.respond(405, "text/plain; charset=utf-8", body, headers);
}

bool requirePost(const AdminRequest& request, const AdminResponder& responder) {
  if (request.method == "POST") return true;
  respondMethodNotAllowed(responder, "POST");
  return false;
}

bool isLoopback(const config::SocketAddress& address) { return config::isLoopbackAddress(address); }

}  // namespace cutover
