// TLS for listeners, from config to OpenSSL: the bridge between config/ (plain paths, positions)
// and net/ (TlsServerContext), which know nothing of each other. Called where config is loaded:
// at startup, on libuv's thread pool during a reload, and by `cutover --check`.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/loader.h"
#include "net/tls_context.h"

namespace cutover {

// Parallel to config.listeners; null for a plain listener.
using ListenerTlsContexts = std::vector<std::shared_ptr<const TlsServerContext>>;

// Reads and checks every certificate, key and CA file of every TLS listener. Problems become
// config errors naming the file and the line and key that named the file:
//   cutover.yaml:7:15: listeners[0].tls.certificates[0].cert: /etc/tls/a.pem: certificate expired
//   2026-01-01
// `keys` (session ticket keys) is shared by every context so resumption survives reloads.
ListenerTlsContexts buildListenerTls(const config::Config& config, const std::string& file,
                                     const std::shared_ptr<TlsTicketKeys>& keys,
                                     std::vector<config::Error>& errors);

// Every certificate, key and CA path the config names (deduplicated), for the file watchers.
std::vector<std::string> listenerTlsFiles(const config::Config& config);

}  // namespace cutover
