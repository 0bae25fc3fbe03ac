#include "proxy/admin_server.h"

#include <arpa/inet.h>

#include <cstdio>
#include <cstdlib>

#include "config/loader.h"
#include "http/http1_codec.h"

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

}  // namespace

class AdminConnection;

// One uv_write: owns its bytes until the write callback.
struct WriteReq {
  uv_write_t req;
  std::string data;
  AdminConnection* conn;
};

// Shared by every copy of one AdminResponder.
struct AdminResponderState {
  std::weak_ptr<AdminConnection> conn;
  uint64_t request_seq = 0;
  bool done = false;
  ~AdminResponderState();
};

// One accepted admin connection. Owned by AdminServer::connections_ (a shared_ptr, so responders
// can hold weak references) and erased only in the last close callback of its two handles.
class AdminConnection final : public RequestDecoderCallbacks,
                              public std::enable_shared_from_this<AdminConnection> {
 public:
  explicit AdminConnection(AdminServer& server)
      : server_(server),
        decoder_(*this, RequestDecoder::Limits{server.options_.max_header_bytes,
                                               server.options_.max_uri_bytes}) {}

  // Initialises both handles; returns a libuv error after which close() must still be called.
  int init(uv_stream_t* listener) {
    uv_tcp_init(server_.loop_, &tcp_);
    tcp_.data = this;
    uv_timer_init(server_.loop_, &idle_);
    idle_.data = this;
    handles_open_ = 2;
    int r = uv_accept(listener, reinterpret_cast<uv_stream_t*>(&tcp_));
    if (r < 0) return r;
    sockaddr_storage ss{};
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      peer_ = formatAddress(ss);
    }
    armIdle();
    return uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), onAlloc, onRead);
  }

  void close() {
    if (closing_) return;
    closing_ = true;
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onClosed);
    uv_close(reinterpret_cast<uv_handle_t*>(&idle_), onClosed);
  }

  // Writes the answer to the current request if `seq` names it and it is still awaited.
  bool respond(uint64_t seq, int status, std::string_view content_type, std::string_view body,
               std::string_view extra_headers) {
    if (closing_ || !awaiting_response_ || seq != request_seq_) return false;
    awaiting_response_ = false;
    writing_response_ = true;
    writeResponse(status, content_type, body, extra_headers, !keep_alive_);
    return true;
  }

  // RequestDecoderCallbacks
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
      reject_status_ = 413;
      return;
    }
    if (head.expect_continue) writeRaw("HTTP/1.1 100 Continue\r\n\r\n");
  }
  void onRequestBody(const char* data, size_t len) override {
    if (reject_status_ != 0) return;
    if (request_.body.size() + len > server_.options_.max_body) {
      reject_status_ = 413;  // chunked body over the cap
      return;
    }
    request_.body.append(data, len);
  }
  void onRequestComplete() override {}

 private:
  static void onAlloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
    auto* self = static_cast<AdminConnection*>(handle->data);
    *buf = uv_buf_init(self->read_buf_, sizeof(self->read_buf_));
  }

  static void onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t*) {
    auto* self = static_cast<AdminConnection*>(stream->data);
    if (nread == 0) return;
    if (nread < 0) {
      // A client that half-closes after sending (nc, some scripts) still gets the answer to a
      // request already dispatched; otherwise, or on a real error, there is nothing left to do.
      if (nread == UV_EOF && (self->awaiting_response_ || self->writing_response_)) {
        uv_read_stop(stream);
        self->reading_paused_ = true;
        self->peer_done_ = true;
        self->keep_alive_ = false;
        if (self->writing_response_) self->close_after_write_ = true;
        return;
      }
      self->close();
      return;
    }
    self->armIdle();
    self->input_.append(self->read_buf_, static_cast<size_t>(nread));
    self->process();
  }

  static void onIdle(uv_timer_t* timer) {
    auto* self = static_cast<AdminConnection*>(timer->data);
    // A handler still working on an answer keeps the connection (it bounds its own time).
    if (!self->awaiting_response_) self->close();
  }

  static void onWrite(uv_write_t* req, int status) {
    std::unique_ptr<WriteReq> w(static_cast<WriteReq*>(req->data));
    AdminConnection* self = w->conn;
    --self->pending_writes_;
    if (self->closing_) return;
    if (status < 0 || (self->close_after_write_ && self->pending_writes_ == 0)) {
      self->close();
      return;
    }
    if (self->writing_response_ && self->pending_writes_ == 0) {
      // The answer is out: ready for the next (possibly already buffered) request.
      self->writing_response_ = false;
      if (self->peer_done_) {
        self->close();
        return;
      }
      self->decoder_.reset();
      self->reading_paused_ = false;
      uv_read_start(reinterpret_cast<uv_stream_t*>(&self->tcp_), onAlloc, onRead);
      self->process();
    }
  }

  static void onClosed(uv_handle_t* handle) {
    auto* self = static_cast<AdminConnection*>(handle->data);
    if (--self->handles_open_ == 0) self->server_.onConnectionClosed(self);  // frees *self
  }

  void armIdle() { uv_timer_start(&idle_, onIdle, server_.options_.idle_timeout_ms, 0); }

  // Feeds buffered input to the decoder while no request is being answered.
  void process() {
    while (!closing_ && !awaiting_response_ && !writing_response_ && !input_.empty()) {
      size_t consumed = 0;
      const DecodeStatus status = decoder_.execute(input_.data(), input_.size(), consumed);
      input_.erase(0, consumed);
      const bool stalled = status == DecodeStatus::Ok && consumed == 0;
      if (status == DecodeStatus::Error) {
        fail(decoder_.error().status, decoder_.error().reason);
        return;
      }
      if (reject_status_ != 0) {
        fail(reject_status_, "request body too large");
        return;
      }
      if (status == DecodeStatus::Upgrade) {
        fail(400, "upgrade not supported");
        return;
      }
      if (status == DecodeStatus::MessageComplete) dispatch();
      if (stalled) break;
    }
    // Pipelined requests pile up only while one is answered; stop reading past a bound.
    if (!closing_ && !reading_paused_ && input_.size() > server_.options_.max_body) {
      reading_paused_ = true;
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
    }
  }

  void dispatch() {
    awaiting_response_ = true;
    auto state = std::make_shared<AdminResponderState>();
    state->conn = weak_from_this();
    state->request_seq = ++request_seq_;
    AdminResponder responder(std::move(state));
    server_.handler_(request_, std::move(responder));
  }

  void fail(int status, std::string_view why) {
    keep_alive_ = false;
    awaiting_response_ = false;
    reading_paused_ = true;
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
    std::string body(why);
    body += '\n';
    is_head_ = false;
    writeResponse(status, "text/plain; charset=utf-8", body, {}, true);
  }

  void writeResponse(int status, std::string_view content_type, std::string_view body,
                     std::string_view extra_headers, bool close_after) {
    std::string out;
    out.reserve(128 + extra_headers.size() + (is_head_ ? 0 : body.size()));
    out += "HTTP/1.1 ";
    out += std::to_string(status);
    out += ' ';
    out += reasonPhrase(status);
    out += "\r\n";
    if (!content_type.empty()) {
      out += "Content-Type: ";
      out += content_type;
      out += "\r\n";
    }
    out += "Content-Length: ";
    out += std::to_string(body.size());
    out += "\r\nCache-Control: no-store\r\n";
    out += extra_headers;
    if (close_after) out += "Connection: close\r\n";
    out += "\r\n";
    if (!is_head_) out += body;
    close_after_write_ = close_after;
    writeRaw(std::move(out));
  }

  void writeRaw(std::string data) {
    auto* w = new WriteReq;
    w->data = std::move(data);
    w->req.data = w;
    w->conn = this;
    uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    ++pending_writes_;
    if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1, onWrite) < 0) {
      // Never called back: undo and give up on the connection.
      --pending_writes_;
      delete w;
      close();
    }
  }

  AdminServer& server_;
  uv_tcp_t tcp_;
  uv_timer_t idle_;
  RequestDecoder decoder_;
  AdminRequest request_;
  std::string peer_;
  std::string input_;
  char read_buf_[16 * 1024];
  uint64_t request_seq_ = 0;
  int handles_open_ = 0;
  int pending_writes_ = 0;
  int reject_status_ = 0;
  bool closing_ = false;
  bool awaiting_response_ = false;
  bool writing_response_ = false;
  bool close_after_write_ = false;
  bool keep_alive_ = true;
  bool is_head_ = false;
  bool reading_paused_ = false;
  bool peer_done_ = false;  // the client half-closed: answer what was asked, then close
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
    : loop_(loop), address_(address), handler_(std::move(handler)), options_(options) {
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
    auto* tcp = new uv_tcp_t;
    if (uv_tcp_init(self->loop_, tcp) != 0) {
      delete tcp;
      return;
    }
    uv_accept(listener, reinterpret_cast<uv_stream_t*>(tcp));
    uv_close(reinterpret_cast<uv_handle_t*>(tcp),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    return;
  }
  auto conn = std::make_shared<AdminConnection>(*self);
  AdminConnection* raw = conn.get();
  self->connections_.emplace(raw, std::move(conn));
  if (raw->init(listener) < 0) raw->close();
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
