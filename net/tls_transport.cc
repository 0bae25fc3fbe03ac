#include "net/tls_transport.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cstring>

namespace cutover {

namespace {

// Plaintext handed up is decrypted into one buffer per thread (one TLS record at most): the TCP
// read buffer still holds the ciphertext it came from.
thread_local char tls_plain_buf[16 * 1024];

int bioWriteCb(BIO* b, const char* data, int len) {
  static_cast<TlsTransport*>(BIO_get_data(b))->bioWrite(data, len);
  return len;
}

int bioReadCb(BIO* b, char* out, int len) {
  BIO_clear_retry_flags(b);
  int n = static_cast<TlsTransport*>(BIO_get_data(b))->bioRead(out, len);
  if (n == 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  return n;
}

long bioCtrlCb(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

int bioCreateCb(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

BIO_METHOD* bioMethod() {
  static BIO_METHOD* m = [] {
    BIO_METHOD* meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cutover-tls");
    BIO_meth_set_write(meth, bioWriteCb);
    BIO_meth_set_read(meth, bioReadCb);
    BIO_meth_set_ctrl(meth, bioCtrlCb);
    BIO_meth_set_create(meth, bioCreateCb);
    return meth;
  }();
  return m;
}

TlsFailure classify(unsigned long err) {
  if (ERR_GET_LIB(err) != ERR_LIB_SSL) return TlsFailure::Other;
  switch (ERR_GET_REASON(err)) {
    case SSL_R_NO_SHARED_CIPHER:
      return TlsFailure::NoSharedCipher;
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
      return TlsFailure::ProtocolVersion;
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      return TlsFailure::NoClientCert;
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
      return TlsFailure::BadCertificate;
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
      return TlsFailure::NotTls;
    default:
      return TlsFailure::Other;
  }
}

// Printable ASCII only: the value goes into a request header.
void appendSafe(std::string& out, const unsigned char* d, int len) {
  for (int i = 0; i < len; ++i) out.push_back(d[i] >= 0x20 && d[i] < 0x7f ? char(d[i]) : '?');
}

std::string describePeer(X509* x) {
  std::string out;
  BIO* mem = BIO_new(BIO_s_mem());
  if (mem != nullptr) {
    X509_NAME_print_ex(mem, X509_get_subject_name(x), 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    char* p = nullptr;
    long n = BIO_get_mem_data(mem, &p);
    appendSafe(out, reinterpret_cast<const unsigned char*>(p), static_cast<int>(n));
    BIO_free(mem);
  }
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  if (sans == nullptr) return out;
  std::string san;
  for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(sans, i);
    const ASN1_STRING* s = nullptr;
    const char* kind = nullptr;
    if (g->type == GEN_DNS) {
      s = g->d.dNSName, kind = "DNS:";
    } else if (g->type == GEN_URI) {
      s = g->d.uniformResourceIdentifier, kind = "URI:";
    } else if (g->type == GEN_EMAIL) {
      s = g->d.rfc822Name, kind = "email:";
    }
    if (s == nullptr) continue;
    if (!san.empty()) san += ',';
    san += kind;
    appendSafe(san, ASN1_STRING_get0_data(s), ASN1_STRING_length(s));
  }
  GENERAL_NAMES_free(sans);
  if (!san.empty()) out += "; SAN=" + san;
  return out;
}

}  // namespace

const char* tlsFailureName(TlsFailure f) {
  switch (f) {
    case TlsFailure::NoSharedCipher:
      return "no_shared_cipher";
    case TlsFailure::ProtocolVersion:
      return "protocol_version";
    case TlsFailure::NoClientCert:
      return "no_client_cert";
    case TlsFailure::BadCertificate:
      return "bad_certificate";
    case TlsFailure::NotTls:
      return "not_tls";
    case TlsFailure::Timeout:
      return "timeout";
    case TlsFailure::Other:
      return "other";
  }
  return "other";
}

TlsTransport::TlsTransport(uv_loop_t* loop, TcpTransport& tcp,
                           std::shared_ptr<const TlsServerContext> ctx)
    : loop_(loop), tcp_(tcp), server_ctx_(std::move(ctx)) {
  init(server_ctx_->defaultCtx());
  SSL_set_accept_state(ssl_);
}

TlsTransport::TlsTransport(uv_loop_t* loop, TcpTransport& tcp,
                           std::shared_ptr<const TlsClientContext> ctx, const std::string& sni,
                           const std::string& verify_ip)
    : loop_(loop), tcp_(tcp), client_ctx_(std::move(ctx)) {
  init(client_ctx_->ctx());
  SSL_set_connect_state(ssl_);
  if (!sni.empty()) {
    SSL_set_tlsext_host_name(ssl_, sni.c_str());
    if (client_ctx_->verify()) SSL_set1_host(ssl_, sni.c_str());
  } else if (!verify_ip.empty() && client_ctx_->verify()) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), verify_ip.c_str());
  }
}

const char* upstreamTlsReasonName(size_t i) {
  return i < kTlsFailureCount ? tlsFailureName(static_cast<TlsFailure>(i)) : "verify_failed";
}

void TlsTransport::setSession(const TlsSession& s) {
  if (!s) return;
  // A copy again: a connection that ends without close_notify marks its session not resumable,
  // and the shared one must stay good for the next connection.
  SSL_SESSION* copy = SSL_SESSION_dup(s.get());
  if (copy == nullptr) return;
  SSL_set_session(ssl_, copy);
  SSL_SESSION_free(copy);  // the SSL holds its own reference
}

int TlsTransport::onNewSession(ssl_session_st* s) {
  if (hcb_ == nullptr) return 0;
  // A copy: OpenSSL marks the connection's own session not resumable when the connection ends
  // without a close_notify (a backend's Connection: close), which would spoil this one too.
  SSL_SESSION* copy = SSL_SESSION_dup(s);
  if (copy != nullptr) hcb_->onTlsSession(TlsSession(copy, SSL_SESSION_free));
  return 0;  // OpenSSL keeps (and frees) its own reference
}

int tlsClientNewSession(ssl_st* ssl, ssl_session_st* s) {
  auto* t = static_cast<TlsTransport*>(SSL_get_app_data(ssl));
  return t != nullptr ? t->onNewSession(s) : 0;
}

void TlsTransport::init(void* ssl_ctx) {
  tcp_.setCallbacks(this);
  ssl_ = SSL_new(static_cast<SSL_CTX*>(ssl_ctx));
  BIO* bio = BIO_new(bioMethod());
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // one BIO both ways; SSL owns it
  SSL_set_app_data(ssl_, this);
}

TlsTransport::~TlsTransport() { SSL_free(ssl_); }

const char* TlsTransport::version() const { return SSL_get_version(ssl_); }
const char* TlsTransport::cipher() const { return SSL_get_cipher_name(ssl_); }
bool TlsTransport::resumed() const { return SSL_session_reused(ssl_) == 1; }

int TlsTransport::bioRead(char* out, int len) {
  size_t n = std::min(in_len_, static_cast<size_t>(len));
  if (n == 0) return 0;
  std::memcpy(out, in_ptr_, n);
  in_ptr_ += n;
  in_len_ -= n;
  return static_cast<int>(n);
}

int TlsTransport::connect(uv_loop_t* loop, const sockaddr* addr, char* read_buf,
                          size_t read_buf_size) {
  return tcp_.connect(loop, addr, read_buf, read_buf_size);
}

void TlsTransport::onTransportConnected() {
  if (closing_) return;
  tcp_.readStart();
  drive();  // the ClientHello
}

int TlsTransport::readStart() {
  if (closing_ || !tcp_.initialized()) return UV_EINVAL;
  reading_ = true;
  int rc = tcp_.readStart();
  if (rc == 0 && hs_done_ && (in_len_ > 0 || SSL_pending(ssl_) > 0)) scheduleDrive();
  return rc;
}

void TlsTransport::readStop() {
  reading_ = false;
  // During the handshake TCP keeps reading: OpenSSL needs the bytes and hands up nothing.
  if (hs_done_) tcp_.readStop();
}

void TlsTransport::scheduleDrive() {
  if (!timer_init_) {
    uv_timer_init(loop_, &timer_);
    timer_.data = this;
    timer_init_ = true;
  }
  uv_timer_start(&timer_, onTimer, 0, 0);
}

void TlsTransport::onTimer(uv_timer_t* t) {
  auto* self = static_cast<TlsTransport*>(t->data);
  if (self->closing_ || !self->reading_) return;
  self->drive();
  self->keepUnconsumedInput();
}

void TlsTransport::onTransportData(const char* data, size_t len) {
  if (closing_) return;
  bytes_in_ += len;
  if (in_len_ > 0) {
    in_buf_.append(data, len);  // in_ptr_ pointed into in_buf_ (never into an older TCP read)
    in_ptr_ = in_buf_.data() + (in_buf_.size() - in_len_ - len);
    in_len_ += len;
  } else {
    in_ptr_ = data;
    in_len_ = len;
  }
  drive();
  keepUnconsumedInput();
}

void TlsTransport::keepUnconsumedInput() {
  if (closing_) {
    in_len_ = 0;
    std::string().swap(in_buf_);
    return;
  }
  if (in_len_ == 0) {
    in_ptr_ = nullptr;
    std::string().swap(in_buf_);
    return;
  }
  if (!in_buf_.empty() && in_ptr_ >= in_buf_.data() && in_ptr_ < in_buf_.data() + in_buf_.size()) {
    in_buf_.erase(0, static_cast<size_t>(in_ptr_ - in_buf_.data()));
  } else {
    in_buf_.assign(in_ptr_, in_len_);  // copied out of TCP's read buffer, which is reused
  }
  in_ptr_ = in_buf_.data();
}

void TlsTransport::drive() {
  if (!hs_done_) {
    ERR_clear_error();
    int rc = SSL_do_handshake(ssl_);
    if (rc != 1) {
      int e = SSL_get_error(ssl_, rc);
      flushOut();  // this flight (or the alert) in one write
      if (e == SSL_ERROR_WANT_READ || closing_) return;
      handshakeFailed();
      return;
    }
    hs_done_ = true;
    flushOut();
    if (X509* peer = SSL_get0_peer_certificate(ssl_);
        peer != nullptr && SSL_get_verify_result(ssl_) == X509_V_OK) {
      peer_subject_ = describePeer(peer);
    }
    if (hcb_ != nullptr) hcb_->onTlsHandshakeDone();
    if (closing_) return;
    if (client_ctx_ && cb_ != nullptr) cb_->onTransportConnected();
    if (closing_) return;
    if (!early_.empty()) {
      std::string early = std::move(early_);
      std::string().swap(early_);
      writePlain(early.data(), early.size());
      if (closing_) return;
    }
    if (!reading_) {
      tcp_.readStop();
      return;
    }
  }
  while (reading_ && !closing_ && !eof_reported_) {
    ERR_clear_error();
    int n = SSL_read(ssl_, tls_plain_buf, sizeof tls_plain_buf);
    if (n > 0) {
      if (cb_ != nullptr) cb_->onTransportData(tls_plain_buf, static_cast<size_t>(n));
      continue;
    }
    int e = SSL_get_error(ssl_, n);
    flushOut();
    if (e == SSL_ERROR_WANT_READ) break;
    if (e == SSL_ERROR_ZERO_RETURN) {
      // close_notify: the peer finished sending.
      eof_reported_ = true;
      if (cb_ != nullptr) cb_->onTransportEof();
      return;
    }
    fail(UV_EPROTO);  // garbage or a fatal alert after the handshake
    return;
  }
  flushOut();
}

void TlsTransport::handshakeFailed() {
  unsigned long err = ERR_peek_last_error();
  TlsFailure reason = classify(err);
  std::string detail;
  if (err != 0) {
    const char* r = ERR_reason_error_string(err);
    detail = r != nullptr ? r : "unknown";
  } else {
    detail = "handshake failed";
  }
  if (client_ctx_) {
    long v = SSL_get_verify_result(ssl_);
    if (v != X509_V_OK) {
      verify_failed_ = true;
      reason = TlsFailure::BadCertificate;
      detail = X509_verify_cert_error_string(v);
    }
  }
  ERR_clear_error();
  if (hcb_ != nullptr) hcb_->onTlsHandshakeFailed(reason, detail);
  fail(UV_EPROTO);
}

void TlsTransport::flushOut() {
  if (out_.empty() || closing_) {
    out_.clear();
    return;
  }
  // TcpTransport writes what the kernel takes at once and copies only the rest.
  tcp_.write(out_.data(), out_.size());
  std::string().swap(out_);  // an idle connection keeps no buffer
}

void TlsTransport::writePlain(const char* data, size_t len) {
  while (len > 0 && !closing_) {
    ERR_clear_error();
    int chunk = static_cast<int>(std::min<size_t>(len, 1 << 30));
    int n = SSL_write(ssl_, data, chunk);
    if (n <= 0) {
      // Our BIO takes everything, so this is a fatal error: reported on a later loop turn.
      ERR_clear_error();
      out_.clear();
      pending_error_ = UV_EPROTO;
      close();
      return;
    }
    data += n;
    len -= static_cast<size_t>(n);
  }
}

void TlsTransport::write(const char* data, size_t len) {
  if (closing_ || len == 0) return;
  if (!hs_done_) {
    early_.append(data, len);
    return;
  }
  writePlain(data, len);
  flushOut();
}

void TlsTransport::write2(std::string_view a, std::string_view b) {
  if (closing_) return;
  if (!hs_done_) {
    early_.append(a);
    early_.append(b);
    return;
  }
  writePlain(a.data(), a.size());
  writePlain(b.data(), b.size());
  flushOut();  // both pieces' records in one TCP write
}

void TlsTransport::shutdownWrite() {
  if (closing_ || !tcp_.initialized()) return;
  if (hs_done_) {
    ERR_clear_error();
    SSL_shutdown(ssl_);  // queues close_notify; we do not wait for the peer's
    ERR_clear_error();
    flushOut();
  }
  tcp_.shutdownWrite();  // FIN once the ciphertext before it is written
}

void TlsTransport::close() {
  if (closing_) return;
  closing_ = true;
  reading_ = false;
  out_.clear();
  if (timer_init_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
      auto* self = static_cast<TlsTransport*>(h->data);
      self->timer_closed_ = true;
      self->maybeReportClosed();
    });
  }
  tcp_.close();
}

void TlsTransport::fail(int err) {
  if (closing_) return;
  TransportCallbacks* cb = cb_;
  close();
  if (cb != nullptr) cb->onTransportError(err);
}

void TlsTransport::onTransportEof() {
  if (closing_) return;
  if (!hs_done_) {
    // A peer that sent part of a handshake and left counts as a failure; a bare TCP connect and
    // close (a port probe) does not.
    if (bytes_in_ > 0 && hcb_ != nullptr) {
      hcb_->onTlsHandshakeFailed(TlsFailure::Other, "peer closed during handshake");
    }
    fail(UV_EOF);
    return;
  }
  if (eof_reported_) return;
  eof_reported_ = true;  // FIN without close_notify: HTTP framing tells a truncated message
  if (cb_ != nullptr) cb_->onTransportEof();
}

void TlsTransport::onTransportError(int err) {
  // TCP is closing itself.
  if (closing_) return;
  TransportCallbacks* cb = cb_;
  close();
  if (cb != nullptr) cb->onTransportError(err);
}

void TlsTransport::onTransportDrained() {
  if (closing_ || !hs_done_) return;
  if (cb_ != nullptr) cb_->onTransportDrained();
}

void TlsTransport::onTransportClosed() {
  tcp_closed_ = true;
  closing_ = true;
  if (timer_init_ && !timer_closed_ && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&timer_))) {
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
      auto* self = static_cast<TlsTransport*>(h->data);
      self->timer_closed_ = true;
      self->maybeReportClosed();
    });
  }
  maybeReportClosed();
}

void TlsTransport::maybeReportClosed() {
  if (!tcp_closed_ || (timer_init_ && !timer_closed_) || closed_reported_) return;
  closed_reported_ = true;
  TransportCallbacks* cb = cb_;
  if (cb == nullptr) return;
  if (pending_error_ != 0) {
    int err = pending_error_;
    pending_error_ = 0;
    cb->onTransportError(err);
  }
  cb->onTransportClosed();  // the owner may free us (and the TCP transport): touch nothing after
}

}  // namespace cutover
