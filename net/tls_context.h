// An immutable TLS server context built from validated settings (plain data: net/ knows no
// config). Built where config is loaded (reading the files is fine there: startup, libuv's thread
// pool on reloads, `--check`), shared by every connection accepted while its snapshot runs
// (std::shared_ptr; each connection keeps the context it started with, so a reload never
// disturbs a handshake or a connection in progress).
//
// One OpenSSL SSL_CTX per certificate, all configured alike; the first is the default and the
// SNI callback switches a connection to the certificate whose DNS names (SAN, else CN) match the
// name the client sent (exact, then one-label wildcard). Only net/tls_*.cc include OpenSSL.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace cutover {

// Session ticket keys shared by every context of a process (so a reload keeps resumption working),
// generated at random in memory, rotated every `period_s` and accepted for two periods.
// Thread-safe: OpenSSL calls it from every worker.
class TlsTicketKeys {
 public:
  struct Key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    int64_t created_s = 0;
  };
  explicit TlsTicketKeys(int64_t period_s = 3600) : period_s_(period_s) {}
  // The key to encrypt a new ticket with (rotating first when due).
  Key current(int64_t now_s);
  // The key named `name`, if still accepted; `renew` = an older key (the ticket is re-issued).
  bool find(const unsigned char* name, int64_t now_s, Key& out, bool& renew);
  int64_t periodSeconds() const { return period_s_; }

 private:
  void rotateLocked(int64_t now_s);
  std::mutex mu_;
  int64_t period_s_;
  std::vector<Key> keys_;  // newest first, at most 2
};

struct TlsCertificateFiles {
  std::string cert;  // PEM chain, leaf first
  std::string key;   // PEM private key (ECDSA or RSA)
};

enum class TlsClientCert : uint8_t { None, Optional, Require };

struct TlsServerOptions {
  std::vector<TlsCertificateFiles> certificates;  // first = default
  int min_version = 12;                           // 12 or 13
  std::string client_ca;                          // PEM bundle; needed unless client_cert None
  TlsClientCert client_cert = TlsClientCert::None;
  std::string session_id_context;  // e.g. the listener's name
  std::shared_ptr<TlsTicketKeys> ticket_keys;
};

// What was wrong, attached to the setting it concerns, for a file:line: key: message report.
struct TlsLoadError {
  int certificate = -1;  // index into certificates, or -1 for client_ca
  std::string field;     // "cert", "key" or "client_ca"
  std::string message;
};

struct TlsCertificateInfo {
  std::string name;         // the certificate's first DNS name (or CN), for metric labels
  int64_t not_after_s = 0;  // unix time
};

class TlsServerContext {
 public:
  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  // Reads and checks every file (readable, PEM, not expired, not yet valid, key matches the
  // certificate). Returns null with `errors` filled when anything is wrong.
  static std::shared_ptr<const TlsServerContext> build(const TlsServerOptions& options,
                                                       std::vector<TlsLoadError>& errors);

  const std::vector<TlsCertificateInfo>& certificates() const { return infos_; }
  // The default SSL_CTX (OpenSSL type, opaque here).
  void* defaultCtx() const;
  struct Impl;  // defined in tls_context.cc (OpenSSL's callbacks reach it)

 private:
  TlsServerContext() = default;
  std::unique_ptr<Impl> impl_;
  std::vector<TlsCertificateInfo> infos_;
};

// A client context (backend TLS, and the unit tests): trust `ca` (system store when empty),
// optional client certificate. Hostname verification is per connection (TlsTransport's sni).
struct TlsClientOptions {
  std::string ca;
  bool verify = true;
  std::string client_cert;
  std::string client_key;
  int min_version = 12;
};

class TlsClientContext {
 public:
  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;
  static std::shared_ptr<const TlsClientContext> build(const TlsClientOptions& options,
                                                       std::vector<TlsLoadError>& errors);
  void* ctx() const { return ctx_; }
  bool verify() const { return verify_; }

 private:
  TlsClientContext() = default;
  void* ctx_ = nullptr;  // SSL_CTX*
  bool verify_ = true;
};

}  // namespace cutover
