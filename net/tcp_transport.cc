#include "net/tcp_transport.h"

#include <arpa/inet.h>

#include <cstring>

namespace cutover {

// Everything a write in flight needs. `inflight` is owned by the uv_write_t until its callback;
// new bytes go to `queued` meanwhile.
struct TcpTransport::WriteState {
  uv_write_t req{};
  std::string inflight;
  std::string queued;
  bool writing = false;
};

namespace {
struct ConnectReq {
  uv_connect_t req{};
};
struct ShutdownReq {
  uv_shutdown_t req{};
};
}  // namespace

TcpTransport::~TcpTransport() { delete ws_; }

int TcpTransport::init(uv_loop_t* loop, char* read_buf, size_t read_buf_size) {
  read_buf_ = read_buf;
  read_buf_size_ = static_cast<uint32_t>(read_buf_size);
  int rc = uv_tcp_init(loop, &tcp_);
  if (rc != 0) return rc;
  initialized_ = true;
  tcp_.data = this;
  return 0;
}

int TcpTransport::accept(uv_loop_t* loop, uv_stream_t* server, char* read_buf,
                         size_t read_buf_size) {
  int rc = init(loop, read_buf, read_buf_size);
  if (rc != 0) return rc;
  rc = uv_accept(server, reinterpret_cast<uv_stream_t*>(&tcp_));
  if (rc != 0) return rc;
  uv_tcp_nodelay(&tcp_, 1);
  return 0;
}

int TcpTransport::connect(uv_loop_t* loop, const sockaddr* addr, char* read_buf,
                          size_t read_buf_size) {
  int rc = init(loop, read_buf, read_buf_size);
  if (rc != 0) return rc;
  uv_tcp_nodelay(&tcp_, 1);
  auto* creq = new ConnectReq;
  creq->req.data = this;
  rc = uv_tcp_connect(&creq->req, &tcp_, addr, onConnect);
  if (rc != 0) {
    delete creq;
    return rc;
  }
  return 0;
}

void TcpTransport::onConnect(uv_connect_t* req, int status) {
  auto* creq = reinterpret_cast<ConnectReq*>(req);
  auto* self = static_cast<TcpTransport*>(req->data);
  delete creq;
  // On UV_ECANCELED the handle is closing and its owner already knows.
  if (status == UV_ECANCELED || self->closing_) return;
  if (status != 0) {
    self->fail(status);
    return;
  }
  if (self->cb_ != nullptr) self->cb_->onTransportConnected();
}

int TcpTransport::readStart() {
  if (closing_ || !initialized_) return UV_EINVAL;
  if (reading_) return 0;
  int rc = uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), onAlloc, onRead);
  if (rc == 0) reading_ = true;
  return rc;
}

void TcpTransport::readStop() {
  if (!reading_ || closing_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
}

void TcpTransport::onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  // The worker's shared buffer: data is consumed (or copied) synchronously in onRead, so one
  // buffer per thread serves every connection and idle connections hold none.
  auto* self = static_cast<TcpTransport*>(h->data);
  buf->base = self->read_buf_;
  buf->len = self->read_buf_size_;
}

void TcpTransport::onRead(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* self = static_cast<TcpTransport*>(s->data);
  if (self->closing_) return;
  if (n > 0) {
    if (self->cb_ != nullptr) self->cb_->onTransportData(buf->base, static_cast<size_t>(n));
    return;
  }
  if (n == UV_EOF) {
    self->readStop();
    if (self->cb_ != nullptr) self->cb_->onTransportEof();
    return;
  }
  if (n < 0) self->fail(static_cast<int>(n));
}

void TcpTransport::write(const char* data, size_t len) {
  if (closing_ || len == 0) return;
  if (ws_ == nullptr || (!ws_->writing && ws_->queued.empty())) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len));
    int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1);
    if (n == static_cast<int>(len)) return;
    if (n < 0 && n != UV_EAGAIN) {
      // Reported on a later turn through the close callback, never re-entrantly.
      pending_error_ = n;
      close();
      return;
    }
    if (n > 0) {
      data += n;
      len -= static_cast<size_t>(n);
    }
  }
  if (ws_ == nullptr) ws_ = new WriteState;
  ws_->queued.append(data, len);
  if (!ws_->writing) startWrite();
}

void TcpTransport::write2(std::string_view a, std::string_view b) {
  if (closing_) return;
  if (b.empty() || a.empty() || (ws_ != nullptr && (ws_->writing || !ws_->queued.empty()))) {
    write(a.data(), a.size());
    write(b.data(), b.size());
    return;
  }
  uv_buf_t bufs[2] = {uv_buf_init(const_cast<char*>(a.data()), static_cast<unsigned>(a.size())),
                      uv_buf_init(const_cast<char*>(b.data()), static_cast<unsigned>(b.size()))};
  int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), bufs, 2);
  if (n < 0 && n != UV_EAGAIN) {
    pending_error_ = n;
    close();
    return;
  }
  size_t done = n > 0 ? static_cast<size_t>(n) : 0;
  if (done < a.size()) {
    write(a.data() + done, a.size() - done);  // queues: the kernel took what it could
    write(b.data(), b.size());
  } else if (done - a.size() < b.size()) {
    write(b.data() + (done - a.size()), b.size() - (done - a.size()));
  }
}

void TcpTransport::startWrite() {
  ws_->inflight.swap(ws_->queued);
  ws_->queued.clear();
  ws_->writing = true;
  ws_->req.data = this;
  uv_buf_t b = uv_buf_init(ws_->inflight.data(), static_cast<unsigned>(ws_->inflight.size()));
  int rc = uv_write(&ws_->req, reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1, onWrite);
  if (rc != 0) {
    ws_->writing = false;
    pending_error_ = rc;
    close();
  }
}

void TcpTransport::onWrite(uv_write_t* req, int status) {
  auto* self = static_cast<TcpTransport*>(req->data);
  WriteState* ws = self->ws_;
  ws->writing = false;
  ws->inflight.clear();
  if (status == UV_ECANCELED || self->closing_) return;
  if (status != 0) {
    self->fail(status);
    return;
  }
  if (!ws->queued.empty()) {
    self->startWrite();
    return;
  }
  // Drained: give the memory back so an idle connection holds no buffers.
  delete ws;
  self->ws_ = nullptr;
  if (self->shutdown_wanted_) self->shutdownWrite();
  if (self->cb_ != nullptr) self->cb_->onTransportDrained();
}

size_t TcpTransport::pendingBytes() const {
  return ws_ == nullptr ? 0 : ws_->inflight.size() + ws_->queued.size();
}

void TcpTransport::shutdownWrite() {
  if (closing_ || !initialized_) return;
  if (pendingBytes() > 0) {
    shutdown_wanted_ = true;
    return;
  }
  shutdown_wanted_ = false;
  auto* sreq = new ShutdownReq;
  sreq->req.data = this;
  if (uv_shutdown(&sreq->req, reinterpret_cast<uv_stream_t*>(&tcp_), onShutdown) != 0) {
    delete sreq;
  }
}

void TcpTransport::onShutdown(uv_shutdown_t* req, int) {
  delete reinterpret_cast<ShutdownReq*>(req);
}

void TcpTransport::fail(int err) {
  if (closing_) return;
  TransportCallbacks* cb = cb_;
  pending_error_ = 0;
  close();
  // We are inside a libuv callback here, so telling the owner now is not re-entrant.
  if (cb != nullptr) cb->onTransportError(err);
}

void TcpTransport::close() {
  if (closing_) return;
  closing_ = true;
  reading_ = false;
  if (!initialized_) {
    // Never initialised: nothing to close, but keep the contract of a later callback-free state.
    return;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), onClose);
}

void TcpTransport::onClose(uv_handle_t* h) {
  auto* self = static_cast<TcpTransport*>(h->data);
  TransportCallbacks* cb = self->cb_;
  if (cb == nullptr) return;
  if (self->pending_error_ != 0) {
    int err = self->pending_error_;
    self->pending_error_ = 0;
    cb->onTransportError(err);
  }
  cb->onTransportClosed();  // the owner may free us here: touch nothing after
}

int TcpTransport::peerName(sockaddr_storage& out) const {
  int len = sizeof(out);
  return uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&out), &len);
}

void acceptAndClose(uv_loop_t* loop, uv_stream_t* server) {
  auto* tcp = new uv_tcp_t;
  if (uv_tcp_init(loop, tcp) != 0) {
    delete tcp;
    return;
  }
  uv_accept(server, reinterpret_cast<uv_stream_t*>(tcp));  // on failure there is nothing to close
  uv_close(reinterpret_cast<uv_handle_t*>(tcp),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
}

std::string TcpTransport::peerAddress() const {
  sockaddr_storage ss{};
  int len = sizeof(ss);
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    uv_ip4_name(reinterpret_cast<sockaddr_in*>(&ss), buf, sizeof(buf));
  } else if (ss.ss_family == AF_INET6) {
    uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&ss), buf, sizeof(buf));
  }
  return buf;
}

}  // namespace cutover
