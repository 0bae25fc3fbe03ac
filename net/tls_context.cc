#include "net/tls_context.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <ctime>

#include "net/tls_transport.h"

namespace cutover {

namespace {

// Mozilla's "intermediate" list for TLS 1.2 (forward secret AEAD only); TLS 1.3 keeps OpenSSL's
// default suites (all AEAD).
constexpr const char* kCiphers12 =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";

std::string lastSslError() {
  unsigned long e = ERR_peek_last_error();
  std::string out;
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    const char* reason = ERR_reason_error_string(e);
    out = reason != nullptr ? reason : buf;
  }
  ERR_clear_error();
  return out.empty() ? "unknown OpenSSL error" : out;
}

std::string dateOf(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return "?";
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

int64_t unixOf(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

// DNS names of a certificate: SAN dNSName entries, else the subject CN.
std::vector<std::string> dnsNames(X509* x) {
  std::vector<std::string> names;
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  if (sans != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(sans, i);
      if (g->type != GEN_DNS) continue;
      const unsigned char* d = ASN1_STRING_get0_data(g->d.dNSName);
      names.emplace_back(reinterpret_cast<const char*>(d), ASN1_STRING_length(g->d.dNSName));
    }
    GENERAL_NAMES_free(sans);
  }
  if (names.empty()) {
    char cn[256] = {0};
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) > 0) {
      names.emplace_back(cn);
    }
  }
  for (auto& n : names)
    for (auto& c : n) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  return names;
}

bool nameMatches(const std::string& pattern, const std::string& host) {
  if (pattern == host) return true;
  if (pattern.size() > 2 && pattern[0] == '*' && pattern[1] == '.') {
    size_t dot = host.find('.');
    return dot != std::string::npos && dot > 0 &&
           host.compare(dot, std::string::npos, pattern, 1, std::string::npos) == 0;
  }
  return false;
}

int64_t nowSeconds() { return static_cast<int64_t>(time(nullptr)); }

}  // namespace

// ---- ticket keys ------------------------------------------------------------------------------

void TlsTicketKeys::rotateLocked(int64_t now_s) {
  Key k;
  RAND_bytes(k.name, sizeof k.name);
  RAND_bytes(k.aes, sizeof k.aes);
  RAND_bytes(k.hmac, sizeof k.hmac);
  k.created_s = now_s;
  keys_.insert(keys_.begin(), k);
  if (keys_.size() > 2) keys_.resize(2);
}

TlsTicketKeys::Key TlsTicketKeys::current(int64_t now_s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (keys_.empty() || now_s - keys_.front().created_s >= period_s_) rotateLocked(now_s);
  return keys_.front();
}

bool TlsTicketKeys::find(const unsigned char* name, int64_t now_s, Key& out, bool& renew) {
  std::lock_guard<std::mutex> lock(mu_);
  if (keys_.empty() || now_s - keys_.front().created_s >= period_s_) rotateLocked(now_s);
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (std::memcmp(keys_[i].name, name, sizeof keys_[i].name) != 0) continue;
    out = keys_[i];
    renew = i != 0;
    return true;
  }
  return false;
}

// ---- server context ---------------------------------------------------------------------------

struct TlsServerContext::Impl {
  struct Cert {
    SSL_CTX* ctx = nullptr;
    std::vector<std::string> names;
  };
  std::vector<Cert> certs;
  std::shared_ptr<TlsTicketKeys> keys;
  ~Impl() {
    for (auto& c : certs) SSL_CTX_free(c.ctx);
  }
};

namespace {

int ticketKeyCb(SSL* ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx, int enc) {
  auto* impl = static_cast<TlsServerContext::Impl*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (impl == nullptr || !impl->keys) return -1;
  TlsTicketKeys::Key k;
  bool renew = false;
  if (enc == 1) {
    k = impl->keys->current(nowSeconds());
    if (RAND_bytes(iv, 16) != 1) return -1;
    std::memcpy(key_name, k.name, 16);
  } else if (!impl->keys->find(key_name, nowSeconds(), k, renew)) {
    return 0;  // unknown or expired key: a full handshake
  }
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, 32),
                         OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_end()};
  if (EVP_MAC_CTX_set_params(hctx, params) != 1) return -1;
  if (EVP_CipherInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes, iv, enc) != 1) return -1;
  return renew ? 2 : 1;
}

int serverNameCb(SSL* ssl, int*, void* arg) {
  auto* impl = static_cast<TlsServerContext::Impl*>(arg);
  const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (sni == nullptr || impl->certs.size() < 2) return SSL_TLSEXT_ERR_OK;
  std::string host(sni);
  for (auto& c : host) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  // Exact names first, then wildcards, in certificate order; no match keeps the default.
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& cert : impl->certs) {
      for (const auto& n : cert.names) {
        bool wildcard = n.size() > 1 && n[0] == '*';
        if (wildcard != (pass == 1)) continue;
        if (nameMatches(n, host)) {
          if (cert.ctx != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, cert.ctx);
          return SSL_TLSEXT_ERR_OK;
        }
      }
    }
  }
  return SSL_TLSEXT_ERR_OK;
}

int alpnCb(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
           unsigned int inlen, void*) {
  static const unsigned char kProtos[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* sel = nullptr;
  if (SSL_select_next_proto(&sel, outlen, kProtos, sizeof kProtos, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;  // a client offering only h2 still gets HTTP/1.1 without ALPN
  }
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

// Checks the leaf certificate's dates; false with `message` when it is not valid now.
bool checkDates(X509* x, std::string& message) {
  if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
    message = "certificate expired " + dateOf(X509_get0_notAfter(x));
    return false;
  }
  if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
    message = "certificate not valid before " + dateOf(X509_get0_notBefore(x));
    return false;
  }
  return true;
}

}  // namespace

TlsServerContext::~TlsServerContext() = default;

void* TlsServerContext::defaultCtx() const { return impl_->certs.front().ctx; }

std::shared_ptr<const TlsServerContext> TlsServerContext::build(const TlsServerOptions& o,
                                                                std::vector<TlsLoadError>& errors) {
  const size_t errors_before = errors.size();
  std::shared_ptr<TlsServerContext> out(new TlsServerContext);
  out->impl_ = std::make_unique<Impl>();
  Impl& impl = *out->impl_;
  impl.keys = o.ticket_keys ? o.ticket_keys : std::make_shared<TlsTicketKeys>();
  ERR_clear_error();
  for (size_t i = 0; i < o.certificates.size(); ++i) {
    const TlsCertificateFiles& f = o.certificates[i];
    const int idx = static_cast<int>(i);
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == nullptr) {
      errors.push_back({idx, "cert", lastSslError()});
      continue;
    }
    impl.certs.push_back({ctx, {}});
    SSL_CTX_set_app_data(ctx, &impl);
    SSL_CTX_set_min_proto_version(ctx, o.min_version >= 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(
        ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_cipher_list(ctx, kCiphers12);
    SSL_CTX_set_dh_auto(ctx, 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpnCb, nullptr);
    // Resumption: stateless tickets under rotated keys, plus a server-side cache for clients
    // that resume TLS 1.2 by session id.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, 20480);
    SSL_CTX_set_timeout(ctx, static_cast<long>(impl.keys->periodSeconds()));
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticketKeyCb);
    std::string sid = o.session_id_context.empty() ? "cutover" : o.session_id_context;
    if (sid.size() > SSL_MAX_SID_CTX_LENGTH) sid.resize(SSL_MAX_SID_CTX_LENGTH);
    SSL_CTX_set_session_id_context(ctx, reinterpret_cast<const unsigned char*>(sid.data()),
                                   static_cast<unsigned>(sid.size()));
    SSL_CTX_set_tlsext_servername_callback(ctx, serverNameCb);
    SSL_CTX_set_tlsext_servername_arg(ctx, &impl);

    if (SSL_CTX_use_certificate_chain_file(ctx, f.cert.c_str()) != 1) {
      errors.push_back({idx, "cert", f.cert + ": cannot load certificate: " + lastSslError()});
      continue;
    }
    X509* leaf = SSL_CTX_get0_certificate(ctx);
    std::string msg;
    if (!checkDates(leaf, msg)) {
      errors.push_back({idx, "cert", f.cert + ": " + msg});
      continue;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, f.key.c_str(), SSL_FILETYPE_PEM) != 1) {
      const unsigned long e = ERR_peek_last_error();
      if (ERR_GET_LIB(e) == ERR_LIB_X509 && (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
                                             ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH)) {
        ERR_clear_error();
        errors.push_back(
            {idx, "key", f.key + ": private key does not match certificate " + f.cert});
      } else {
        errors.push_back({idx, "key", f.key + ": cannot load private key: " + lastSslError()});
      }
      continue;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      ERR_clear_error();
      errors.push_back({idx, "key", f.key + ": private key does not match certificate " + f.cert});
      continue;
    }
    impl.certs.back().names = dnsNames(leaf);
    TlsCertificateInfo info;
    info.name = impl.certs.back().names.empty() ? f.cert : impl.certs.back().names.front();
    info.not_after_s = unixOf(X509_get0_notAfter(leaf));
    out->infos_.push_back(std::move(info));

    if (o.client_cert != TlsClientCert::None) {
      if (SSL_CTX_load_verify_locations(ctx, o.client_ca.c_str(), nullptr) != 1) {
        if (i == 0) {
          errors.push_back({-1, "client_ca", o.client_ca + ": cannot load CA: " + lastSslError()});
        }
        continue;
      }
      STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(o.client_ca.c_str());
      if (names != nullptr) SSL_CTX_set_client_CA_list(ctx, names);
      int mode = SSL_VERIFY_PEER;
      if (o.client_cert == TlsClientCert::Require) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
      SSL_CTX_set_verify(ctx, mode, nullptr);
      SSL_CTX_set_verify_depth(ctx, 8);
    }
  }
  ERR_clear_error();
  if (errors.size() != errors_before || impl.certs.empty()) return nullptr;
  return out;
}

// ---- client context ---------------------------------------------------------------------------

TlsClientContext::~TlsClientContext() { SSL_CTX_free(static_cast<SSL_CTX*>(ctx_)); }

std::shared_ptr<const TlsClientContext> TlsClientContext::build(const TlsClientOptions& o,
                                                                std::vector<TlsLoadError>& errors) {
  const size_t errors_before = errors.size();
  std::shared_ptr<TlsClientContext> out(new TlsClientContext);
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) {
    errors.push_back({-1, "ca", lastSslError()});
    return nullptr;
  }
  out->ctx_ = ctx;
  out->verify_ = o.verify;
  SSL_CTX_set_min_proto_version(ctx, o.min_version >= 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_cipher_list(ctx, kCiphers12);
  static const unsigned char kProtos[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(ctx, kProtos, sizeof kProtos);
  // Sessions go to the connection (then its pool) for resumption; OpenSSL keeps none itself.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, tlsClientNewSession);
  if (o.verify) {
    int rc = o.ca.empty() ? SSL_CTX_set_default_verify_paths(ctx)
                          : SSL_CTX_load_verify_locations(ctx, o.ca.c_str(), nullptr);
    if (rc != 1) errors.push_back({-1, "ca", o.ca + ": cannot load CA: " + lastSslError()});
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  }
  if (!o.client_cert.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, o.client_cert.c_str()) != 1) {
      errors.push_back({-1, "client_cert", o.client_cert + ": " + lastSslError()});
    } else if (SSL_CTX_use_PrivateKey_file(ctx, o.client_key.c_str(), SSL_FILETYPE_PEM) != 1 ||
               SSL_CTX_check_private_key(ctx) != 1) {
      errors.push_back({-1, "client_key", o.client_key + ": " + lastSslError()});
    }
  }
  ERR_clear_error();
  if (errors.size() != errors_before) return nullptr;
  return out;
}

}  // namespace cutover
