#include "proxy/backend_tls.h"

namespace cutover {

BackendTlsContexts buildBackendTls(const config::Config& config, const std::string& file,
                                   std::vector<config::Error>& errors) {
  BackendTlsContexts out(config.backends.size());
  for (size_t i = 0; i < config.backends.size(); ++i) {
    const config::Backend& b = config.backends[i];
    if (!b.tls) continue;
    TlsClientOptions o;
    o.ca = b.tls->ca;
    o.verify = b.tls->verify;
    o.client_cert = b.tls->client_cert;
    o.client_key = b.tls->client_key;
    o.min_version = b.tls->min_version;
    std::vector<TlsLoadError> errs;
    out[i] = TlsClientContext::build(o, errs);
    for (const TlsLoadError& e : errs) {
      config::Error ce;
      ce.file = file;
      config::SourcePos at = e.field == "client_cert"  ? b.tls->client_cert_at
                             : e.field == "client_key" ? b.tls->client_key_at
                                                       : b.tls->ca_at;
      ce.path = "backends." + b.name + ".tls." + e.field;
      ce.line = at.line;
      ce.column = at.column;
      ce.message = e.message;
      errors.push_back(std::move(ce));
    }
    if (!errs.empty()) out[i] = nullptr;
  }
  return out;
}

std::string backendTlsName(const config::Backend& b, size_t e) {
  if (b.tls && !b.tls->sni.empty()) return b.tls->sni;
  if (e < b.endpoint_dns.size() && b.endpoint_dns[e] >= 0 &&
      static_cast<size_t>(b.endpoint_dns[e]) < b.dns.size()) {
    std::string host = b.dns[b.endpoint_dns[e]].host;
    if (!host.empty() && host.back() == '.') host.pop_back();
    return host;
  }
  return {};
}

std::vector<std::string> backendTlsFiles(const config::Config& config) {
  std::vector<std::string> files;
  for (const config::Backend& b : config.backends) {
    if (!b.tls) continue;
    for (const std::string* f : {&b.tls->ca, &b.tls->client_cert, &b.tls->client_key}) {
      if (!f->empty()) files.push_back(*f);
    }
  }
  return files;
}

}  // namespace cutover
