#include "proxy/listener_tls.h"

#include <algorithm>

namespace cutover {

ListenerTlsContexts buildListenerTls(const config::Config& config, const std::string& file,
                                     const std::shared_ptr<TlsTicketKeys>& keys,
                                     std::vector<config::Error>& errors) {
  ListenerTlsContexts out(config.listeners.size());
  for (size_t i = 0; i < config.listeners.size(); ++i) {
    const config::Listener& l = config.listeners[i];
    if (!l.tls) continue;
    TlsServerOptions o;
    for (const auto& c : l.tls->certificates) o.certificates.push_back({c.cert, c.key});
    o.min_version = l.tls->min_version;
    o.client_ca = l.tls->client_ca;
    o.client_cert = static_cast<TlsClientCert>(l.tls->client_cert);
    o.session_id_context = l.name;
    o.ticket_keys = keys;
    std::vector<TlsLoadError> errs;
    out[i] = TlsServerContext::build(o, errs);
    const std::string base = "listeners[" + std::to_string(i) + "].tls.";
    for (const TlsLoadError& e : errs) {
      config::Error ce;
      ce.file = file;
      config::SourcePos at = l.tls->client_ca_at;
      if (e.certificate >= 0 && static_cast<size_t>(e.certificate) < l.tls->certificates.size()) {
        const config::TlsCertificate& c = l.tls->certificates[e.certificate];
        at = e.field == "key" ? c.key_at : c.cert_at;
        ce.path = base + "certificates[" + std::to_string(e.certificate) + "]." + e.field;
      } else {
        ce.path = base + e.field;
      }
      ce.line = at.line;
      ce.column = at.column;
      ce.message = e.message;
      errors.push_back(std::move(ce));
    }
    if (!errs.empty()) out[i] = nullptr;
  }
  return out;
}

std::vector<std::string> listenerTlsFiles(const config::Config& config) {
  std::vector<std::string> files;
  for (const config::Listener& l : config.listeners) {
    if (!l.tls) continue;
    for (const auto& c : l.tls->certificates) {
      files.push_back(c.cert);
      files.push_back(c.key);
    }
    if (!l.tls->client_ca.empty()) files.push_back(l.tls->client_ca);
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

}  // namespace cutover
