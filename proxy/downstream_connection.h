// A client connection. Reads requests one at a time (pipelined bytes wait in `pending_` until the
// current exchange ends, so responses leave in request order), hands each to a Stream, and after
// a 101 from the backend becomes a two-way byte tunnel.
//
// States:
//   Idle ──first byte──▶ ReadingHead ──head──▶ Active ──response done──▶ Idle (keep-alive)
//                              │                  │ 101 ▶ Tunnel
//                              └── error/timeout ─┴──────────────▶ Closing ──close cb──▶ freed
//
// A connection sees its worker only through a ConnectionContext (below).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/intrusive_list.h"
#include "config/config.h"
#include "filters/filter.h"
#include "http/http1_codec.h"
#include "net/tcp_transport.h"
#include "net/tls_transport.h"

namespace cutover {

class AccessLog;
class Stream;
class UpstreamConnection;
class DownstreamConnection;
struct Snapshot;

// What a client connection needs from the worker that accepted it, and nothing more: the loop and
// shared read buffer (its socket), the clock and the worker's timeout lists (deadlines are swept
// by the worker), the running snapshot (limits and timeouts), whether the worker is draining,
// pooled request decoders and streams, a scratch buffer (overwritten by the next user), the access
// log for requests refused before they became a stream, and the end of the connection. Worker
// implements it. Called per request or per event, never per byte.
class ConnectionContext {
 public:
  // Timeout lists: a connection sits in exactly one (DownstreamConnection::list).
  enum class List : uint8_t { None, Header, Idle, Active };

  virtual uv_loop_t* loop() = 0;
  virtual char* readBuffer() = 0;
  virtual size_t readBufferSize() const = 0;
  virtual int64_t nowMs() const = 0;
  virtual const std::shared_ptr<const Snapshot>& snapshot() const = 0;
  virtual bool draining() const = 0;
  // Drain phase 2: the listeners are closed; a connection that has not been served gets a short
  // grace to send its request instead of its idle timeout.
  virtual bool listenersClosed() const = 0;
  static constexpr int64_t kFreshGraceMs = 1000;
  virtual std::string& scratch() = 0;
  // Null when the worker's loop is not running.
  virtual AccessLog* accessLog() = 0;
  virtual RequestDecoder* acquireDecoder(RequestDecoderCallbacks& cb,
                                         const config::Limits& limits) = 0;
  virtual void releaseDecoder(RequestDecoder* d) = 0;
  virtual Stream* acquireStream() = 0;
  virtual void releaseStream(Stream* s) = 0;
  // Moves `c` to list `to` (after setting its deadline_ms).
  virtual void moveConnection(DownstreamConnection* c, List to) = 0;
  // `c` is closed (or never opened): the context frees it.
  virtual void connectionClosed(DownstreamConnection* c) = 0;

 protected:
  ~ConnectionContext() = default;
};

class DownstreamConnection final : public ListHook,
                                   public TransportCallbacks,
                                   public TlsHandshakeCallbacks,
                                   public RequestDecoderCallbacks {
 public:
  // TlsHandshake: on a TLS listener, after the PROXY header if any, until the handshake is done
  // (within the listener's tls.handshake_timeout, on the Header list); then Idle.
  enum class State : uint8_t {
    ProxyHeader,
    TlsHandshake,
    Idle,
    ReadingHead,
    Active,
    Tunnel,
    Closing
  };

  explicit DownstreamConnection(ConnectionContext& ctx);
  ~DownstreamConnection() override;
  // Accepts from the listening socket and starts reading. On failure the connection closes.
  // With `proxy_protocol`, the first bytes must be a PROXY protocol header (within
  // timeouts.header_read); its source address becomes peer().
  // `listener` indexes the snapshot's listeners (TLS settings and context; -1 = plain).
  void start(uv_stream_t* server, bool proxy_protocol = false, int listener = -1);

  Transport& transport() { return *transport_; }
  // True on a TLS listener (X-Forwarded-Proto: https).
  bool secure() const { return tls_ != nullptr; }
  // The verified client certificate ("subject; SAN=..."), empty without one.
  const std::string& clientCertSubject() const;
  // The listener's TLS settings, or null.
  const config::ListenerTls* tlsConfig() const { return tls_cfg_; }
  State state() const { return state_; }
  int64_t deadline_ms = 0;  // for the worker's sweep of its timeout lists
  uint8_t list = 0;         // ConnectionContext::List it is in

  // ---- from the Stream ----
  // The exchange is over. `reusable` = the connection may carry another request.
  void onStreamDone(bool reusable);
  // The backend answered 101: splice the client to `up` both ways.
  void startTunnel(UpstreamConnection* up);
  void tunnelData(const char* data, size_t len);  // bytes from the backend side
  void tunnelClosed();                            // backend side ended
  // Rollback: closes the tunnel (both sides, FIN) if it runs to a non-stable backend.
  bool closeTunnelIfOffStable();
  void pauseReading();
  void resumeReading();
  // Answer a request the decoder rejected or that timed out, then close.
  // Answers a request that never became a stream (malformed head, header timeout) with a local
  // reply, counts and logs it like any other, and closes. `detail` is the parser's verdict.
  void rejectAndClose(int status, Reason reason, std::string_view detail);
  // Close now, dropping anything pending.
  void abort();
  // The drain deadline passed: the exchange in progress (if any) ends with reason `draining`,
  // then abort().
  void onDrainDeadline();
  // Worker drain: close politely (FIN, lingering) if idle between requests after serving one;
  // otherwise the exchange in progress ends with Connection: close (a connection that has not
  // sent a request yet is served once, then closed).
  void drain();
  // Worker drain: a WebSocket/upgrade tunnel is closed on both sides (FIN to the backend, then a
  // lingering close toward the client), logged with reason `draining`. Not a tunnel: abort().
  void closeTunnel();
  // True once a request head has been read on this connection.
  bool served() const { return served_; }
  // A timeout list deadline passed: 408 while reading a head, else close.
  void onDeadline();
  const std::string& peer() const { return peer_; }

 private:
  // TransportCallbacks
  void onTransportData(const char* data, size_t len) override;
  void onTransportEof() override;
  void onTransportError(int err) override;
  void onTransportDrained() override;
  void onTransportClosed() override;
  // TlsHandshakeCallbacks
  void onTlsHandshakeDone() override;
  void onTlsHandshakeFailed(TlsFailure reason, const std::string& detail) override;
  // RequestDecoderCallbacks
  void onRequestHead(RequestHead& head) override;
  void onRequestBody(const char* data, size_t len) override;
  void onRequestComplete() override;

  void onProxyHeaderData(const char* data, size_t len);
  void countProxyHeaderError();
  // Wraps the TCP transport in TLS and waits for the handshake; `early` = bytes already read.
  void startTls(const char* early, size_t early_len);
  void process(const char* data, size_t len);
  void processPending();
  void becomeIdle();
  void closeConnection();

  ConnectionContext& ctx_;
  TcpTransport tcp_;
  std::unique_ptr<TlsTransport> tls_;  // on a TLS listener; wraps tcp_
  Transport* transport_ = &tcp_;       // what the connection reads and writes: tls_ or tcp_
  // Captured at start from the snapshot of the time (the config and context stay alive with it).
  std::shared_ptr<const Snapshot> tls_snap_;
  const config::ListenerTls* tls_cfg_ = nullptr;
  int listener_ = -1;
  RequestDecoder* decoder_ = nullptr;
  Stream* stream_ = nullptr;
  UpstreamConnection* tunnel_ = nullptr;
  std::unique_ptr<std::string> pending_;  // bytes read past the current request
  std::string peer_;
  State state_ = State::Idle;
  bool in_process_ = false;
  bool stream_done_ = false;
  bool reusable_ = false;
  bool peer_eof_ = false;
  bool read_paused_ = false;
  bool close_after_write_ = false;
  bool lingering_ = false;
  bool served_ = false;
};

}  // namespace cutover
