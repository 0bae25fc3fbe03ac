// TLS to backends, from config to OpenSSL (the client-side sibling of proxy/listener_tls.h): one
// immutable client context per backend with `tls`, built where config is loaded (startup, libuv's
// thread pool on reloads, `cutover --check`), shared by every connection of the snapshot.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/loader.h"
#include "net/tls_context.h"

namespace cutover {

// Parallel to config.backends; null for a plain backend.
using BackendTlsContexts = std::vector<std::shared_ptr<const TlsClientContext>>;

// Reads the CA, client certificate and key of every TLS backend. Problems become config errors
// naming the file, and the line and key that named it:
//   cutover.yaml:9:13: backends.api.tls.ca: /etc/tls/ca.pem: cannot load CA: ...
BackendTlsContexts buildBackendTls(const config::Config& config, const std::string& file,
                                   std::vector<config::Error>& errors);

// The name sent (SNI) and verified for endpoint `e` of `b`: tls.sni, else the DNS name the endpoint
// was resolved from (data-plane config), else empty (an IP endpoint: its address is verified).
std::string backendTlsName(const config::Backend& b, size_t e);

// Every CA, certificate and key path the backends name, for the file watchers.
std::vector<std::string> backendTlsFiles(const config::Config& config);

}  // namespace cutover
