// The byte stream under the HTTP code. Plain TCP today (TcpTransport); TLS will be a second
// implementation over OpenSSL memory BIOs with the same interface, so connections, streams and
// upstream requests never touch sockets directly.
//
// Contract (libuv's): a call either fails at once and never calls back, or succeeds and calls back
// later. Callbacks are never made from inside a call into the transport. After close(), exactly one
// onTransportClosed() follows on a later loop turn, and only then may the owner free the transport.
#pragma once

#include <uv.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace cutover {

class TransportCallbacks {
 public:
  virtual ~TransportCallbacks() = default;
  // Bytes read; valid only during the call (they live in the worker's shared read buffer).
  virtual void onTransportData(const char* data, size_t len) = 0;
  // Peer finished sending (FIN). Writing may still be possible.
  virtual void onTransportEof() = 0;
  // A read, write or connect failed (libuv error code). The transport is closing itself;
  // onTransportClosed follows.
  virtual void onTransportError(int err) = 0;
  // Outgoing connection established.
  virtual void onTransportConnected() {}
  // Pending write bytes went from above the low watermark to zero.
  virtual void onTransportDrained() {}
  // The handle is closed. The owner may free the transport now (and nothing earlier).
  virtual void onTransportClosed() = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual void setCallbacks(TransportCallbacks* cb) = 0;
  // Client side: initialises and starts connecting to `addr`; reads land in `read_buf`. Either
  // fails at once (never calling back; close() is still needed) or reports onTransportConnected or
  // onTransportError later.
  virtual int connect(uv_loop_t* loop, const sockaddr* addr, char* read_buf,
                      size_t read_buf_size) = 0;
  // Whether connect() (or accept) got as far as initialising the handle. If not, close() has
  // nothing to close and no onTransportClosed() follows.
  virtual bool initialized() const = 0;
  virtual int readStart() = 0;
  virtual void readStop() = 0;
  // Queues bytes; what cannot be written at once is copied and written in order. A failure is
  // reported through onTransportError on a later loop turn.
  virtual void write(const char* data, size_t len) = 0;
  void write(std::string_view s) { write(s.data(), s.size()); }
  // Two pieces in one system call when possible (a response head and the first body bytes).
  virtual void write2(std::string_view a, std::string_view b) = 0;
  virtual size_t pendingBytes() const = 0;
  // Sends FIN once pending bytes are written.
  virtual void shutdownWrite() = 0;
  // Idempotent. Drops pending writes.
  virtual void close() = 0;
  virtual bool isClosing() const = 0;
  // Peer address as text without port, for X-Forwarded-For, logs and rate-limit keys.
  virtual std::string peerAddress() const = 0;
};

}  // namespace cutover
