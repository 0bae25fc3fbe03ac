// TLS over a TcpTransport, presenting the same Transport interface upward (composition: it is the
// TcpTransport's callbacks). OpenSSL is driven through a small memory BIO of our own: ciphertext
// read from TCP is handed to OpenSSL straight from the worker's read buffer (only bytes OpenSSL
// has not consumed when reading pauses are copied), and everything OpenSSL writes during one call
// is collected and written to TCP in one write (one write per TLS flight). With
// SSL_MODE_RELEASE_BUFFERS an idle connection holds no OpenSSL read/write buffers and the BIO holds
// none either. Flow control is TCP's: pendingBytes() counts ciphertext not yet taken by the kernel
// and onTransportDrained() is forwarded, so a write that cannot finish never spins the loop.
//
//   Handshake ──done──▶ Open ──close_notify / FIN──▶ (EOF reported)
//       └─ failure (reason) ──▶ closed          close() anywhere ──▶ one onTransportClosed
//
// Server mode wraps an accepted TcpTransport (after a plaintext PROXY header, if any). Client mode
// (for backends): connect(), then the handshake, then onTransportConnected(). Contract as
// net/transport.h: no callback from inside a call; bytes buffered when reading resumes are
// delivered on a later loop turn (a zero timer, initialised only when needed).
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "net/tcp_transport.h"
#include "net/tls_context.h"

struct ssl_st;
struct ssl_session_st;

namespace cutover {

// Bounded reasons for a failed handshake (metric label values).
enum class TlsFailure : uint8_t {
  NoSharedCipher,
  ProtocolVersion,
  NoClientCert,
  BadCertificate,
  NotTls,
  Timeout,
  Other
};
constexpr size_t kTlsFailureCount = 7;
const char* tlsFailureName(TlsFailure f);
// Reasons of a failed handshake to a backend: the TlsFailure values, then "verify_failed" (the
// backend's certificate did not verify).
constexpr size_t kUpstreamTlsReasons = kTlsFailureCount + 1;
const char* upstreamTlsReasonName(size_t i);

// A client session (OpenSSL's SSL_SESSION), kept to resume a later connection to the same backend.
using TlsSession = std::shared_ptr<ssl_session_st>;
// OpenSSL's new-session callback of client contexts (tls_context.cc installs it): hands the
// session to the connection's TlsTransport (SSL app data).
int tlsClientNewSession(ssl_st* ssl, ssl_session_st* s);

class TlsHandshakeCallbacks {
 public:
  virtual ~TlsHandshakeCallbacks() = default;
  // The handshake completed; runs before any data is handed up.
  virtual void onTlsHandshakeDone() = 0;
  // The handshake failed (`detail` is OpenSSL's reason); the transport is closing itself and
  // onTransportError / onTransportClosed follow.
  virtual void onTlsHandshakeFailed(TlsFailure reason, const std::string& detail) = 0;
  // Client mode: the server issued a session (TLS 1.3: a ticket after the handshake) that a later
  // connection can resume with (setSession).
  virtual void onTlsSession(TlsSession) {}
};

class TlsTransport final : public Transport, private TransportCallbacks {
 public:
  // Server side over `tcp`, already accepted (the caller owns `tcp` and keeps it alive until
  // onTransportClosed).
  TlsTransport(uv_loop_t* loop, TcpTransport& tcp, std::shared_ptr<const TlsServerContext> ctx);
  // Client side: call connect(); `sni` is sent and, when the context verifies, checked against
  // the certificate; without `sni`, a non-empty `verify_ip` (the address connected to) is checked
  // against the certificate's IP SANs instead.
  TlsTransport(uv_loop_t* loop, TcpTransport& tcp, std::shared_ptr<const TlsClientContext> ctx,
               const std::string& sni, const std::string& verify_ip = {});
  ~TlsTransport() override;
  TlsTransport(const TlsTransport&) = delete;
  TlsTransport& operator=(const TlsTransport&) = delete;

  void setHandshakeCallbacks(TlsHandshakeCallbacks* cb) { hcb_ = cb; }
  bool handshakeDone() const { return hs_done_; }
  // "TLSv1.3", "TLSv1.2" after the handshake.
  const char* version() const;
  const char* cipher() const;
  bool resumed() const;
  // Client mode, before connect(): offer `s` for resumption.
  void setSession(const TlsSession& s);
  // Client mode, after a failed handshake: the certificate did not verify (and why, OpenSSL's
  // verify error string).
  bool verifyFailed() const { return verify_failed_; }
  // OpenSSL's new-session callback (client contexts): hands the session on.
  int onNewSession(ssl_session_st* s);
  // The verified client certificate: subject in RFC 2253 form, then "; SAN=" and its alternative
  // names (DNS:..., URI:..., email:...) when it has any. Empty without a verified certificate.
  const std::string& peerSubject() const { return peer_subject_; }

  // Hands ciphertext read before the wrap (bytes that followed a PROXY header in the same read).
  // Call only from inside a read callback: it may call back at once.
  void receive(const char* data, size_t len) { onTransportData(data, len); }

  // Transport
  void setCallbacks(TransportCallbacks* cb) override { cb_ = cb; }
  int connect(uv_loop_t* loop, const sockaddr* addr, char* read_buf, size_t read_buf_size) override;
  bool initialized() const override { return tcp_.initialized(); }
  int readStart() override;
  void readStop() override;
  void write(const char* data, size_t len) override;
  void write2(std::string_view a, std::string_view b) override;
  using Transport::write;
  size_t pendingBytes() const override { return tcp_.pendingBytes() + early_.size(); }
  void shutdownWrite() override;
  void close() override;
  bool isClosing() const override { return closing_; }
  std::string peerAddress() const override { return tcp_.peerAddress(); }

  // The custom BIO's side (tls_transport.cc).
  int bioRead(char* out, int len);
  void bioWrite(const char* data, int len) { out_.append(data, static_cast<size_t>(len)); }

 private:
  // TransportCallbacks (from TCP)
  void onTransportData(const char* data, size_t len) override;
  void onTransportEof() override;
  void onTransportError(int err) override;
  void onTransportConnected() override;
  void onTransportDrained() override;
  void onTransportClosed() override;

  void init(void* ssl_ctx);
  void drive();
  void flushOut();
  void writePlain(const char* data, size_t len);
  void handshakeFailed();
  void fail(int err);
  void scheduleDrive();
  void keepUnconsumedInput();
  void maybeReportClosed();
  static void onTimer(uv_timer_t* t);

  uv_loop_t* loop_;
  TcpTransport& tcp_;
  TransportCallbacks* cb_ = nullptr;
  TlsHandshakeCallbacks* hcb_ = nullptr;
  std::shared_ptr<const TlsServerContext> server_ctx_;
  std::shared_ptr<const TlsClientContext> client_ctx_;
  ssl_st* ssl_ = nullptr;
  // Ciphertext being fed to OpenSSL: points into TCP's read buffer during onTransportData, or into
  // in_buf_ (bytes kept while reading was paused).
  const char* in_ptr_ = nullptr;
  size_t in_len_ = 0;
  std::string in_buf_;
  std::string out_;    // ciphertext produced by the current call, written to TCP at its end
  std::string early_;  // plaintext written before the handshake finished
  std::string peer_subject_;
  uv_timer_t timer_{};
  int pending_error_ = 0;
  uint64_t bytes_in_ = 0;
  bool timer_init_ = false;
  bool timer_closed_ = false;
  bool tcp_closed_ = false;
  bool hs_done_ = false;
  bool reading_ = false;
  bool closing_ = false;
  bool eof_reported_ = false;
  bool shutdown_wanted_ = false;
  bool closed_reported_ = false;
  bool verify_failed_ = false;
};

}  // namespace cutover
