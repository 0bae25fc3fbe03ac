#include "proxy/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "config/loader.h"
#include "filters/circuit_breaker.h"
#include "filters/health_state.h"
#include "filters/registry.h"
#include "filters/retry_budget.h"
#include "filters/state_store.h"
#include "filters/token_bucket.h"
#include "proxy/clock.h"
#include "proxy/health_checker.h"
#include "proxy/worker.h"

namespace cutover {

std::string jsonEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(ch);
        }
    }
  }
  return out;
}

void logEvent(const char* level, const char* event, const std::string& fields) {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(ms / 1000);
  tm t{};
  gmtime_r(&secs, &t);
  char ts[64];
  snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900, t.tm_mon + 1,
           t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, static_cast<int>(ms % 1000));
  std::string line = std::string("{\"ts\":\"") + ts + "\",\"level\":\"" + level +
                     "\",\"event\":\"" + event + "\"";
  if (!fields.empty()) line += "," + fields;
  line += "}\n";
  // One write per line: lines from several threads never interleave.
  ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
  (void)n;
}

Server::Server(std::string config_path) : config_path_(std::move(config_path)) {}

Server::~Server() = default;

std::shared_ptr<const Snapshot> Server::buildSnapshot(std::shared_ptr<const config::Config> cfg) {
  auto snap = std::make_shared<Snapshot>();
  snap->config = std::move(cfg);
  snap->generation = ++generation_;
  for (const std::string& name : snap->config->filters) {
    if (name == "router") continue;
    auto f = makeFilterFactory(name, *snap->config, *state_, SteadyClock::instance());
    if (f) snap->filters.push_back(std::move(f));
  }
  for (const config::Backend& be : snap->config->backends) {
    BackendRuntime rt;
    if (be.circuit_breaker.enabled) {
      rt.breaker = state_->breaker(be.name, be.circuit_breaker);
      std::string name = be.name;
      rt.breaker->setListener([name](BreakerState from, BreakerState to, std::string_view why) {
        logEvent(to == BreakerState::Open ? "warn" : "info", "breaker_transition",
                 "\"backend\":\"" + jsonEscape(name) + "\",\"from\":\"" +
                     std::string(breakerStateName(from)) + "\",\"to\":\"" +
                     std::string(breakerStateName(to)) + "\",\"reason\":\"" + jsonEscape(why) +
                     "\"");
      });
    }
    rt.limits = state_->concurrency(be.name, be.circuit_breaker);
    rt.budget = state_->retryBudget(be.name);
    if (be.health_check.enabled) {
      std::vector<std::string> eps;
      for (const auto& e : be.endpoints) eps.push_back(e.text);
      rt.health = state_->health(be.name, eps, be.health_check);
    }
    if (be.rate_limit) rt.limiter = state_->backendLimiter(be.name, *be.rate_limit);
    snap->backends.push_back(std::move(rt));
  }
  return snap;
}

int Server::bindListener(const config::Listener& l, uint32_t workers, BoundListener& out) {
  out.name = l.name;
  out.address = l.address.text;
  sockaddr_storage addr = l.address.addr;
  socklen_t len = l.address.len;
  for (uint32_t i = 0; i < workers; ++i) {
    int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (addr.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    // Listening from here on, so connections queue before the worker adopts the socket.
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd, 4096) != 0) {
      int err = errno;
      ::close(fd);
      return -err;
    }
    if (i == 0) {
      // Port 0: every further worker socket binds the port the kernel chose for the first.
      socklen_t alen = sizeof(addr);
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen);
      len = alen;
      char host[INET6_ADDRSTRLEN] = {0};
      uint16_t port = 0;
      if (addr.ss_family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(&addr);
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
        out.bound = std::string(host) + ":" + std::to_string(port);
      } else {
        auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
        out.bound = "[" + std::string(host) + "]:" + std::to_string(port);
      }
    }
    out.fds.push_back(fd);
  }
  return 0;
}

int Server::run() {
  config::LoadResult res = config::loadFile(config_path_);
  if (!res.ok()) {
    for (const auto& e : res.errors) {
      logEvent("error", "config_error", "\"error\":\"" + jsonEscape(e.str()) + "\"");
    }
    return 1;
  }
  state_ = std::make_unique<StateStore>();
  snapshot_ = buildSnapshot(res.config);
  const config::Config& cfg = *snapshot_->config;

  uv_loop_init(&loop_);
  // Signals first: a SIGTERM right after "listening" must drain, not kill.
  uv_signal_init(&loop_, &sigterm_);
  uv_signal_init(&loop_, &sigint_);
  uv_signal_init(&loop_, &sighup_);
  sigterm_.data = sigint_.data = sighup_.data = this;
  uv_signal_start(&sigterm_, onSignal, SIGTERM);
  uv_signal_start(&sigint_, onSignal, SIGINT);
  uv_signal_start(&sighup_, onSignal, SIGHUP);
  uv_timer_init(&loop_, &check_);
  uv_timer_init(&loop_, &drain_deadline_);
  check_.data = drain_deadline_.data = this;
  for (const config::Listener& l : cfg.listeners) {
    BoundListener b;
    int rc = bindListener(l, cfg.workers, b);
    if (rc != 0) {
      logEvent("error", "listen_failed",
               "\"listener\":\"" + jsonEscape(l.name) + "\",\"address\":\"" +
                   jsonEscape(l.address.text) + "\",\"error\":\"" + jsonEscape(strerror(-rc)) +
                   "\"");
      for (auto& bl : listeners_) {
        for (int fd : bl.fds) ::close(fd);
      }
      for (int fd : b.fds) ::close(fd);
      return 1;
    }
    listeners_.push_back(std::move(b));
  }

  for (uint32_t i = 0; i < cfg.workers; ++i) {
    workers_.push_back(std::make_unique<Worker>(*this, i, snapshot_));
  }
  for (auto& bl : listeners_) {
    for (uint32_t i = 0; i < cfg.workers; ++i) workers_[i]->addListener(bl.name, bl.fds[i]);
  }
  for (auto& w : workers_) w->start();
  health_ = std::make_unique<HealthChecker>(&loop_);
  health_->update(*snapshot_);
  for (auto& bl : listeners_) {
    for (uint32_t i = 0; i < cfg.workers; ++i) {
      logEvent("info", "listening",
               "\"listener\":\"" + jsonEscape(bl.name) + "\",\"address\":\"" + bl.bound +
                   "\",\"worker\":" + std::to_string(i));
    }
  }
  logEvent("info", "started",
           "\"workers\":" + std::to_string(cfg.workers) + ",\"config\":\"" +
               jsonEscape(config_path_) + "\",\"generation\":" +
               std::to_string(snapshot_->generation));


  uv_run(&loop_, UV_RUN_DEFAULT);
  for (auto& w : workers_) w->join();
  workers_.clear();
  uv_loop_close(&loop_);
  logEvent("info", "stopped", "");
  return 0;
}

void Server::onSignal(uv_signal_t* s, int signum) {
  auto* self = static_cast<Server*>(s->data);
  if (signum == SIGHUP) {
    logEvent("info", "sighup", "");
    return;
  }
  self->startDrain(signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

void Server::startDrain(const char* why) {
  if (draining_) return;
  draining_ = true;
  const config::Config& cfg = *snapshot_->config;
  logEvent("info", "drain_started",
           std::string("\"why\":\"") + why + "\",\"timeout_ms\":" +
               std::to_string(cfg.timeouts.drain.count()));
  for (auto& w : workers_) w->drain();
  health_->stop();
  uv_timer_start(&check_, onCheck, 20, 20);
  uv_timer_start(&drain_deadline_, onDrainDeadline,
                 static_cast<uint64_t>(cfg.timeouts.drain.count()), 0);
}

void Server::onCheck(uv_timer_t* t) {
  auto* self = static_cast<Server*>(t->data);
  for (auto& w : self->workers_) {
    if (!w->finished()) return;
  }
  logEvent("info", "drained", "");
  uv_close(reinterpret_cast<uv_handle_t*>(&self->check_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&self->drain_deadline_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&self->sigterm_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&self->sigint_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&self->sighup_), nullptr);
}

void Server::onDrainDeadline(uv_timer_t* t) {
  auto* self = static_cast<Server*>(t->data);
  logEvent("warn", "drain_timeout", "");
  for (auto& w : self->workers_) w->stopNow();
}

}  // namespace cutover
