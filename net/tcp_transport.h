// Transport over a libuv TCP handle, embedded in the object (h2o style) and freed only after its
// close callback. The write path tries uv_try_write first; only bytes the kernel did not take are
// copied into a write state that is allocated on demand and released once drained, so an idle
// connection holds no buffers.
#pragma once

#include <uv.h>

#include <string>

#include "net/transport.h"

namespace cutover {

class TcpTransport final : public Transport {
 public:
  TcpTransport() = default;
  ~TcpTransport() override;
  TcpTransport(const TcpTransport&) = delete;
  TcpTransport& operator=(const TcpTransport&) = delete;

  // Initialise as an accepted connection from `server`. Returns a libuv error code; on failure the
  // handle still needs close().
  int accept(uv_loop_t* loop, uv_stream_t* server, char* read_buf, size_t read_buf_size);
  // Initialise and start connecting. On immediate failure returns the error and never calls back
  // (the handle still needs close()).
  int connect(uv_loop_t* loop, const sockaddr* addr, char* read_buf, size_t read_buf_size) override;
  bool initialized() const override { return initialized_; }

  void setCallbacks(TransportCallbacks* cb) override { cb_ = cb; }
  int readStart() override;
  void readStop() override;
  void write(const char* data, size_t len) override;
  void write2(std::string_view a, std::string_view b) override;
  using Transport::write;
  size_t pendingBytes() const override;
  void shutdownWrite() override;
  void close() override;
  bool isClosing() const override { return closing_; }
  std::string peerAddress() const override;
  // The peer's socket address (with its port). Returns a libuv error code.
  int peerName(sockaddr_storage& out) const;

 private:
  struct WriteState;
  static void onAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void onRead(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
  static void onWrite(uv_write_t* req, int status);
  static void onConnect(uv_connect_t* req, int status);
  static void onShutdown(uv_shutdown_t* req, int status);
  static void onClose(uv_handle_t* h);
  int init(uv_loop_t* loop, char* read_buf, size_t read_buf_size);
  void startWrite();
  void fail(int err);

  uv_tcp_t tcp_{};
  TransportCallbacks* cb_ = nullptr;
  WriteState* ws_ = nullptr;  // non-null only while bytes are queued or a request is in flight
  char* read_buf_ = nullptr;  // the worker's shared read buffer
  uint32_t read_buf_size_ = 0;
  int pending_error_ = 0;
  bool initialized_ = false;
  bool reading_ = false;
  bool closing_ = false;
  bool shutdown_wanted_ = false;
};

// Accepts one pending connection from `server` and closes it at once (a connection over a limit):
// leaving it in the kernel's queue would only delay the refusal, and the listener would keep
// reporting it. The handle is owned here and freed in its close callback.
void acceptAndClose(uv_loop_t* loop, uv_stream_t* server);

}  // namespace cutover
