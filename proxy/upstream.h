// Connections to backends and the per-worker, per-endpoint keep-alive pool.
//
// UpstreamConnection states:
//   Connecting ──connected──▶ Active (owned by one Stream) ──response done, reusable──▶ Idle (pool)
//        │                      ▲                                                      │
//        └─fail/timeout─▶ Closing ◀──error / not reusable / idle timeout / peer close ──┘
// An idle pooled connection keeps reading so a backend's close is noticed before reuse.
//
// Connections and pools see their worker only through an UpstreamContext (below).
#pragma once

#include <uv.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "common/intrusive_list.h"
#include "http/http1_codec.h"
#include "net/tcp_transport.h"
#include "net/tls_transport.h"

namespace prometheus {
class Counter;
}

namespace cutover {

class UpstreamConnection;
class UpstreamPool;
class ConcurrencyLimits;

// What upstream connections and their pools need from the worker that owns them, and nothing
// more: the loop (their timers and sockets), the worker's shared read buffer, whether it is
// draining (then no connection goes back to a pool), the transport a new connection uses, and the
// count of connections opened and closed (the context frees a closed one). Worker implements it;
// unit tests give a fake with fake transports. Called per connection or per event, never per byte.
class UpstreamContext {
 public:
  virtual uv_loop_t* loop() = 0;
  // Reads land here and are consumed before the read callback returns.
  virtual char* readBuffer() = 0;
  virtual size_t readBufferSize() const = 0;
  // The worker is past the first phase of a drain (its listeners are closed): a finished backend
  // connection closes instead of going back to its pool. (While it still accepts, pools stay.)
  virtual bool poolsClosing() const = 0;
  // The transport a new connection to `pool` uses, or nullptr for a TCP socket embedded in the
  // connection. A given transport belongs to the context and outlives the connection (it is not
  // reused before upstreamClosed() for that connection).
  virtual Transport* upstreamTransport(UpstreamPool& pool) = 0;
  virtual void upstreamCreated() = 0;
  // `c` is closed (its timer and transport close callbacks ran): the context frees it.
  virtual void upstreamClosed(UpstreamConnection* c) = 0;

 protected:
  ~UpstreamContext() = default;
};

// What a Stream hears from its upstream connection.
class UpstreamCallbacks {
 public:
  virtual ~UpstreamCallbacks() = default;
  virtual void onUpstreamConnected() = 0;
  virtual void onUpstreamHead(ResponseHead& head) = 0;
  virtual void onUpstreamBody(const char* data, size_t len) = 0;
  virtual void onUpstreamComplete() = 0;
  // Failure before/while exchanging: kind tells connect error, timeout, reset or bad response.
  // TlsVerify: the backend's certificate did not verify (otherwise handled as Connect).
  enum class Failure { Connect, Timeout, Reset, BadResponse, TlsVerify };
  virtual void onUpstreamFailure(Failure f, int err) = 0;
  virtual void onUpstreamDrained() = 0;
  // The bytes of one read were all handed over (a chance to flush what was held for batching).
  virtual void onUpstreamReadDone() {}
  // Tunnel mode only: bytes from the backend after a 101.
  virtual void onUpstreamTunnelData(const char* data, size_t len) = 0;
  virtual void onUpstreamTunnelClosed() = 0;
};

class UpstreamConnection final : public ListHook,
                                 public TransportCallbacks,
                                 public ResponseDecoderCallbacks,
                                 private TlsHandshakeCallbacks {
 public:
  enum class State : uint8_t { Connecting, Active, Idle, Tunnel, Closing };

  // On `transport` when given (see UpstreamContext::upstreamTransport), else on its own TCP socket,
  // wrapped in TLS (client mode) when the pool's backend has `tls`.
  UpstreamConnection(UpstreamContext& ctx, UpstreamPool& pool, Transport* transport = nullptr);
  ~UpstreamConnection() override;
  // Starts connecting; returns a libuv error (and never calls back) on immediate failure.
  int connect(UpstreamCallbacks* owner, uint32_t connect_timeout_ms);
  // Takes an idle connection for a new exchange.
  void attach(UpstreamCallbacks* owner);
  // Expect a response to `method`; arms the idle timer for the wait.
  void beginExchange(std::string_view method, uint32_t idle_timeout_ms);
  void write(const char* data, size_t len) { transport_->write(data, len); }
  void write(std::string_view s) { transport_->write(s); }
  size_t pendingBytes() const { return transport_->pendingBytes(); }
  void pauseReading() {
    read_paused_ = true;
    transport_->readStop();
  }
  void resumeReading();
  // Exchange finished: back to the pool if `reusable`, else close.
  void release(bool reusable);
  // Switch to byte tunnel (after 101); feed any bytes already read past the head.
  void startTunnel();
  // Parked in the pool: keep reading to notice a close, and close after `idle_timeout_ms`.
  void beginIdle(uint64_t idle_timeout_ms);
  void shutdownWrite() { transport_->shutdownWrite(); }
  void close();
  // This connection counts against a backend's max_connections until it closes.
  void holdConnectionSlot(std::shared_ptr<ConcurrencyLimits> limits) {
    conn_limits_ = std::move(limits);
  }

  State state() const { return state_; }
  bool reused() const { return reused_; }
  bool receivedBytes() const { return received_bytes_; }
  UpstreamPool& pool() { return pool_; }

 private:
  void onTransportData(const char* data, size_t len) override;
  void onTransportEof() override;
  void onTransportError(int err) override;
  void onTransportConnected() override;
  void onTransportDrained() override;
  void onTransportClosed() override;
  void onResponseHead(ResponseHead& head) override;
  void onResponseBody(const char* data, size_t len) override;
  void onResponseComplete() override;
  void onTlsHandshakeDone() override {}
  void onTlsHandshakeFailed(TlsFailure reason, const std::string& detail) override;
  void onTlsSession(TlsSession s) override;
  static void onTimer(uv_timer_t* t);
  static void onTimerClosed(uv_handle_t* h);
  void fail(UpstreamCallbacks::Failure f, int err);
  void decodeResponse(const char* data, size_t len);
  void armTimer(uint64_t ms);

  UpstreamContext& ctx_;
  UpstreamPool& pool_;
  TcpTransport tcp_;                   // unused when a transport was given
  std::unique_ptr<TlsTransport> tls_;  // over tcp_, for a TLS backend
  Transport* transport_;               // &tcp_, tls_ or the given one
  ResponseDecoder decoder_;
  uv_timer_t timer_{};
  UpstreamCallbacks* owner_ = nullptr;
  std::shared_ptr<ConcurrencyLimits> conn_limits_;
  uint64_t idle_timeout_ms_ = 0;
  uint64_t exchange_start_ms_ = 0;
  uint64_t last_read_ms_ = 0;
  bool read_paused_ = false;  // backpressure from the client: silence is not the backend's
  State state_ = State::Connecting;
  bool reused_ = false;
  bool received_bytes_ = false;
  bool complete_ = false;
  bool unusable_ = false;  // response framing left the connection in doubt: never reuse
  bool transport_closed_ = false;
  bool timer_closed_ = false;
  bool timer_armed_ = false;
  bool tls_verify_failed_ = false;
};

// A TLS backend's settings for its pools (per worker): the client context, the name sent and
// verified (empty: verify the endpoint's IP address), and the failure counters by reason
// (TlsFailure, then "verify_failed" last), null when metrics are off.
struct UpstreamTls {
  std::shared_ptr<const TlsClientContext> ctx;
  std::string sni;
  std::array<prometheus::Counter*, kUpstreamTlsReasons> failures{};
};

// Keep-alive connections to one endpoint, owned by one worker.
class UpstreamPool {
 public:
  UpstreamPool(UpstreamContext& ctx, std::string backend, std::string address,
               const sockaddr_storage& addr);
  ~UpstreamPool();
  // An idle connection, or nullptr.
  UpstreamConnection* takeIdle();
  UpstreamConnection* create();
  void putIdle(UpstreamConnection* c);
  void removeIdle(UpstreamConnection* c);
  void closeIdle();
  void configure(uint32_t max_idle, uint64_t idle_timeout_ms) {
    max_idle_ = max_idle;
    idle_timeout_ms_ = idle_timeout_ms;
  }
  uint64_t idleTimeoutMs() const { return idle_timeout_ms_; }
  const sockaddr* addr() const { return reinterpret_cast<const sockaddr*>(&addr_); }
  const std::string& address() const { return address_; }
  const std::string& backend() const { return backend_; }
  // TLS for new connections (null ctx: plain). Idle connections stay unless TLS is switched on or
  // off or the name changes; the cached session is dropped when the context changes.
  void configureTls(UpstreamTls tls);
  const UpstreamTls& tls() const { return tls_; }
  const TlsSession& tlsSession() const { return session_; }
  void setTlsSession(TlsSession s) { session_ = std::move(s); }
  size_t idleCount() const { return idle_.size(); }
  uint64_t connectionsOpened() const { return opened_; }

 private:
  UpstreamContext& ctx_;
  std::string backend_;
  std::string address_;
  sockaddr_storage addr_;
  IntrusiveList<UpstreamConnection> idle_;
  uint32_t max_idle_ = 64;
  uint64_t idle_timeout_ms_ = 30000;
  uint64_t opened_ = 0;
  UpstreamTls tls_;
  TlsSession session_;  // the last one a backend issued, offered by the next new connection
};

}  // namespace cutover
