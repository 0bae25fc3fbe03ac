// The admin API's routes (loopback by default; mutations are POST only and, when a token is
// configured, need "Authorization: Bearer <token>"):
//   GET  /metrics /healthz /ready /config /stats
//   POST /stats/reset /reload /drain[?delay=5s] /rollback /rollback/clear
#include <chrono>
#include <string>

#include "config/loader.h"
#include "proxy/admin_server.h"
#include "proxy/log.h"
#include "proxy/server.h"

namespace cutover {

namespace {

std::string reloadJson(const Server::ReloadResult& r, uint64_t generation) {
  std::string out = "{\"ok\":";
  out += r.ok ? "true" : "false";
  out += ",\"generation\":" + std::to_string(generation);
  out += ",\"changes\":[";
  for (size_t i = 0; i < r.changes.size(); ++i) {
    if (i > 0) out += ",";
    appendJsonString(out, r.changes[i]);
  }
  out += "],\"errors\":[";
  for (size_t i = 0; i < r.errors.size(); ++i) {
    if (i > 0) out += ",";
    appendJsonString(out, r.errors[i]);
  }
  out += "]}\n";
  return out;
}

constexpr std::string_view kJson = "application/json";
constexpr std::string_view kText = "text/plain; charset=utf-8";

}  // namespace

void Server::handleAdmin(const AdminRequest& req, AdminResponder res) {
  const std::string& p = req.path;
  bool mutation = p == "/stats/reset" || p == "/reload" || p == "/drain" || p == "/rollback" ||
                  p == "/rollback/clear";
  if (mutation) {
    if (!requirePost(req, res)) return;  // 405 with Allow: POST
    if (!admin_token_.empty() && !authorized(req, admin_token_)) {
      res.respond(401, kText, "unauthorized\n", "WWW-Authenticate: Bearer\r\n");
      return;
    }
  } else if (req.method != "GET" && req.method != "HEAD") {
    respondMethodNotAllowed(res, "GET");
    return;
  }

  if (p == "/metrics") {
    res.respond(200, "text/plain; version=0.0.4; charset=utf-8", metricsText());
  } else if (p == "/healthz") {
    res.respond(200, kText, "ok\n");
  } else if (p == "/ready") {
    if (ready()) {
      res.respond(200, kText, "ready\n");
    } else {
      res.respond(503, kText, draining_ ? "draining\n" : "starting\n");
    }
  } else if (p == "/config") {
    res.respond(200, "application/yaml", configYaml());
  } else if (p == "/stats") {
    res.respond(200, kJson, statsJson());
  } else if (p == "/stats/reset") {
    resetStats();
    res.respond(200, kJson, "{\"ok\":true}\n");
  } else if (p == "/reload") {
    reload("admin", [this, res](const ReloadResult& r) {
      res.respond(r.ok ? 200 : 400, kJson, reloadJson(r, snapshot_->generation));
    });
  } else if (p == "/drain") {
    // ?delay=DURATION overrides timeouts.drain_delay for this drain (e.g. delay=0s: stop
    // accepting at once). Ignored, like the whole call, when a drain is already running.
    int64_t delay_ms = -1;
    if (!req.query.empty()) {
      config::Duration d{};
      if (req.query.rfind("delay=", 0) != 0 || !config::parseDuration(req.query.substr(6), d) ||
          d > std::chrono::minutes(10)) {
        res.respond(400, kJson,
                    "{\"ok\":false,\"error\":\"the only parameter is delay=DURATION (0s..10m), "
                    "e.g. delay=5s\"}\n");
        return;
      }
      delay_ms = d.count();
    }
    const bool already = draining_;
    res.respond(202, kJson,
                std::string("{\"ok\":true,\"draining\":true,\"already\":") +
                    (already ? "true" : "false") + "}\n");
    startDrain("admin", delay_ms);
  } else if (p == "/rollback") {
    bool changed = rollback("admin");
    res.respond(200, kJson,
                std::string("{\"ok\":true,\"rollback_active\":true,\"changed\":") +
                    (changed ? "true" : "false") + "}\n");
  } else if (p == "/rollback/clear") {
    bool changed = clearRollback("admin");
    res.respond(200, kJson,
                std::string("{\"ok\":true,\"rollback_active\":false,\"changed\":") +
                    (changed ? "true" : "false") + "}\n");
  } else {
    res.respond(404, kText, "not found\n");
  }
}

}  // namespace cutover
