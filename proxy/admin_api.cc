// The admin API's routes (loopback by default; mutations are POST only and, when a token is
// configured, need "Authorization: Bearer <token>"):
//   GET  /metrics /healthz /ready /config /stats
//   POST /stats/reset /reload /drain[?delay=5s] /rollback /rollback/clear (DELETE /rollback =
//   clear) POST /rollback takes ?close_tunnels=1, ?actor=NAME and ?reason=TEXT.
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

// Value of `key` in a query string, percent- and '+'-decoded; empty when absent.
std::string queryParam(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view item = query.substr(0, amp);
    size_t eq = item.find('=');
    if (item.substr(0, eq) == key) {
      std::string_view raw = eq == std::string_view::npos ? "" : item.substr(eq + 1);
      std::string out;
      for (size_t i = 0; i < raw.size(); ++i) {
        auto hex = [](char c) {
          return c >= '0' && c <= '9'   ? c - '0'
                 : c >= 'a' && c <= 'f' ? c - 'a' + 10
                 : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                        : -1;
        };
        if (raw[i] == '%' && i + 2 < raw.size() && hex(raw[i + 1]) >= 0 && hex(raw[i + 2]) >= 0) {
          out += static_cast<char>(hex(raw[i + 1]) * 16 + hex(raw[i + 2]));
          i += 2;
        } else {
          out += raw[i] == '+' ? ' ' : raw[i];
        }
      }
      return out;
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return {};
}

bool queryFlag(std::string_view query, std::string_view key) {
  std::string v = queryParam(query, key);
  return v == "1" || v == "true" || v == "yes";
}

// The answer to POST /rollback and its clearing, once the state is persisted (or not).
std::string rollbackJson(const RollbackState& state, bool changed, bool persisted,
                         const std::string& persist_error, bool close_tunnels) {
  std::string out = "{\"ok\":true,\"rollback_active\":";
  out += state.active ? "true" : "false";
  out += ",\"changed\":";
  out += changed ? "true" : "false";
  if (state.active) {
    out += ",\"since\":";
    appendJsonTimestamp(out, state.since_s * 1000);
    out += ",\"actor\":";
    appendJsonString(out, state.actor);
    out += ",\"reason\":";
    appendJsonString(out, state.reason);
  }
  out += ",\"persisted\":";
  out += persisted ? "true" : "false";
  if (!persist_error.empty()) {
    out += ",\"persist_error\":";
    appendJsonString(out, persist_error);
  }
  if (close_tunnels) out += ",\"close_tunnels\":true";
  out += "}\n";
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
    if (p == "/rollback" && req.method == "DELETE") {
      // DELETE /rollback clears it, like POST /rollback/clear.
    } else if (!requirePost(req, res)) {
      return;  // 405 with Allow: POST
    }
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
  } else if (p == "/rollback" && req.method == "POST") {
    if (draining_) {
      res.respond(503, kJson, "{\"ok\":false,\"error\":\"draining\"}\n");
      return;
    }
    RollbackRequest rr;
    rr.actor = queryParam(req.query, "actor");
    rr.reason = queryParam(req.query, "reason");
    const bool close_tunnels = queryFlag(req.query, "close_tunnels");
    // Answered once the state is durable (or failed to be): a 200 with persisted=true means the
    // rollback survives a restart. A second rollback changes nothing and writes nothing.
    const bool changed = !rollback_.active;
    auto answer = [this, res, changed, close_tunnels](bool ok, const std::string& err) {
      res.respond(200, kJson, rollbackJson(rollback_, changed, ok, err, close_tunnels));
    };
    if (changed) {
      rollback(rr, answer);
    } else {
      answer(persistent(), "");
    }
    if (close_tunnels) closeTunnelsOffStable();
  } else if (p == "/rollback/clear" || p == "/rollback") {
    if (draining_) {
      res.respond(503, kJson, "{\"ok\":false,\"error\":\"draining\"}\n");
      return;
    }
    const bool changed = rollback_.active;
    auto answer = [this, res, changed](bool ok, const std::string& err) {
      res.respond(200, kJson, rollbackJson(rollback_, changed, ok, err, false));
    };
    if (changed) {
      clearRollback("admin", answer);
    } else {
      answer(persistent(), "");
    }
  } else {
    res.respond(404, kText, "not found\n");
  }
}

}  // namespace cutover
