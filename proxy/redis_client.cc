#include "proxy/redis_client.h"

#include <arpa/inet.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>

#include <cstdint>
#include <random>

#include "proxy/log.h"

namespace cutover {

namespace {

RedisClient::Reply convert(const redisReply* r) {
  RedisClient::Reply out;
  using K = RedisClient::Reply::Kind;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.kind = K::String;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.kind = K::Status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.kind = K::Error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.kind = K::Integer;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.kind = K::Array;
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default:
      out.kind = K::Nil;
  }
  return out;
}

bool isNumericHost(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

GrowingBackoff RedisClient::reconnectBackoff(uint64_t seed) {
  return GrowingBackoff(std::chrono::seconds(1), 1.5, std::chrono::seconds(30), 0.2, seed);
}

RedisClient::RedisClient(uv_loop_t* loop, Options options, StateListener on_state)
    : loop_(loop),
      opt_(std::move(options)),
      on_state_(std::move(on_state)),
      backoff_(reconnectBackoff(std::random_device{}())) {
  uv_timer_init(loop_, &timeout_timer_);
  uv_timer_init(loop_, &backoff_timer_);
  timeout_timer_.data = backoff_timer_.data = resolve_req_.data = this;
  open_handles_ = 2;
}

RedisClient::~RedisClient() = default;

void RedisClient::setSubscription(std::string channel,
                                  std::function<void(const std::string&)> on_message) {
  channel_ = std::move(channel);
  on_message_ = std::move(on_message);
}

void RedisClient::start() {
  if (state_ != State::Idle) return;
  resolve();
}

void RedisClient::resolve() {
  if (isNumericHost(opt_.host)) {
    connectTo(opt_.host);
    return;
  }
  // getaddrinfo runs on the thread pool: a slow DNS server never stalls the loop.
  state_ = State::Resolving;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(loop_, &resolve_req_, onResolved, opt_.host.c_str(), nullptr, &hints);
  if (rc != 0) {
    fail(std::string("resolve: ") + uv_strerror(rc));
    return;
  }
  resolving_ = true;
}

void RedisClient::onResolved(uv_getaddrinfo_t* req, int status, struct addrinfo* res) {
  auto* self = static_cast<RedisClient*>(req->data);
  self->resolving_ = false;
  std::string ip;
  if (status == 0 && res != nullptr) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (res->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, buf, sizeof buf);
    } else {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(res->ai_addr)->sin6_addr, buf,
                sizeof buf);
    }
    ip = buf;
  }
  uv_freeaddrinfo(res);
  if (self->state_ == State::Closed) {
    self->maybeClosed();
    return;
  }
  if (ip.empty()) {
    self->fail("resolve " + self->opt_.host + ": " +
               (status == 0 ? std::string("no address") : uv_strerror(status)));
    return;
  }
  self->connectTo(ip);
}

void RedisClient::connectTo(const std::string& ip) {
  state_ = State::Connecting;
  redisAsyncContext* ac = redisAsyncConnect(ip.c_str(), opt_.port);  // non-blocking connect
  if (ac == nullptr) {
    fail("connect: out of memory");
    return;
  }
  if (ac->err != 0) {
    std::string why = std::string("connect: ") + ac->errstr;
    redisAsyncFree(ac);
    fail(why);
    return;
  }
  ac->data = this;
  if (redisLibuvAttach(ac, loop_) != REDIS_OK) {
    redisAsyncFree(ac);
    fail("connect: cannot attach to the loop");
    return;
  }
  redisAsyncSetConnectCallback(ac, onConnectCb);
  redisAsyncSetDisconnectCallback(ac, onDisconnectCb);
  ac_ = ac;
  connect_deadline_ms_ = static_cast<int64_t>(uv_now(loop_)) + opt_.connect_timeout_ms;
  armTimeoutTimer();
}

void RedisClient::onConnectCb(const redisAsyncContext* cac, int status) {
  auto* self = static_cast<RedisClient*>(cac->data);
  if (self == nullptr || cac != self->ac_) return;
  self->connect_deadline_ms_ = 0;
  if (status != REDIS_OK) {
    // hiredis frees the context once this returns.
    std::string why = std::string("connect: ") + cac->errstr;
    self->ac_ = nullptr;
    self->fail(why);
    return;
  }
  self->onConnected();
}

void RedisClient::onConnected() {
  if (opt_.password.empty()) {
    onReady();
    return;
  }
  state_ = State::Authenticating;
  uint64_t id = next_id_++;
  pending_[id] =
      Pending{static_cast<int64_t>(uv_now(loop_)) + std::max<int64_t>(opt_.timeout_ms, 1000),
              [this](bool ok, const Reply& r) {
                if (ok && r.kind != Reply::Kind::Error) {
                  onReady();
                  return;
                }
                // A wrong password is retried with backoff (it may be rotated in
                // Redis first), and said clearly every time.
                log::error("fleet_redis_auth_failed",
                           {{"connection", opt_.name},
                            {"redis", opt_.host + ":" + std::to_string(opt_.port)},
                            {"error", r.str}});
                fail("AUTH failed: " + r.str);
              }};
  if (!send({"AUTH", opt_.password}, id)) {
    failSoon("AUTH could not be sent");
    return;
  }
  armTimeoutTimer();
}

void RedisClient::onReady() {
  if (!channel_.empty()) {
    state_ = State::Authenticating;  // until SUBSCRIBE is confirmed
    const char* argv[] = {"SUBSCRIBE", channel_.c_str()};
    size_t lens[] = {9, channel_.size()};
    if (redisAsyncCommandArgv(ac_, onSubscribeCb, nullptr, 2, argv, lens) != REDIS_OK) {
      failSoon("SUBSCRIBE could not be sent");
    }
    return;
  }
  markUp();
}

void RedisClient::markUp() {
  state_ = State::Up;
  backoff_.reset();
  last_error_.clear();
  if (!reported_up_) {
    reported_up_ = true;
    reported_down_ = false;
    log::info("fleet_redis_up",
              {{"connection", opt_.name}, {"redis", opt_.host + ":" + std::to_string(opt_.port)}});
    if (on_state_) on_state_(true, "");
  }
}

void RedisClient::onSubscribeCb(redisAsyncContext* ac, void* reply, void*) {
  auto* self = static_cast<RedisClient*>(ac->data);
  if (reply == nullptr || self == nullptr || ac != self->ac_) return;
  Reply r = convert(static_cast<redisReply*>(reply));
  if (r.kind == Reply::Kind::Error) {
    self->fail("SUBSCRIBE: " + r.str);
    return;
  }
  if (r.kind != Reply::Kind::Array || r.elements.size() < 3) return;
  const std::string& type = r.elements[0].str;
  if (type == "subscribe") {
    self->markUp();
  } else if (type == "message" && self->on_message_) {
    self->on_message_(r.elements[2].str);
  }
}

bool RedisClient::command(std::vector<std::string> argv, Callback cb) {
  if (state_ != State::Up || !channel_.empty()) return false;
  uint64_t id = next_id_++;
  pending_[id] = Pending{static_cast<int64_t>(uv_now(loop_)) + opt_.timeout_ms, std::move(cb)};
  if (!send(argv, id)) return false;  // failed at once: the callback is dropped
  armTimeoutTimer();
  return true;
}

bool RedisClient::send(const std::vector<std::string>& argv, uint64_t id) {
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (const auto& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  if (ac_ == nullptr ||
      redisAsyncCommandArgv(ac_, onReplyCb, reinterpret_cast<void*>(static_cast<uintptr_t>(id)),
                            static_cast<int>(args.size()), args.data(), lens.data()) != REDIS_OK) {
    pending_.erase(id);
    return false;
  }
  return true;
}

void RedisClient::onReplyCb(redisAsyncContext* ac, void* reply, void* privdata) {
  auto* self = static_cast<RedisClient*>(ac->data);
  // A null reply: the context is being freed; what was pending is failed by fail().
  if (reply == nullptr || self == nullptr || ac != self->ac_) return;
  auto it = self->pending_.find(static_cast<uint64_t>(reinterpret_cast<uintptr_t>(privdata)));
  if (it == self->pending_.end()) return;  // timed out already
  Callback cb = std::move(it->second.cb);
  self->pending_.erase(it);
  Reply r = convert(static_cast<redisReply*>(reply));
  const bool ok = r.kind != Reply::Kind::Error;
  if (cb) cb(ok, r);
}

void RedisClient::onDisconnectCb(const redisAsyncContext* cac, int) {
  auto* self = static_cast<RedisClient*>(cac->data);
  if (self == nullptr || cac != self->ac_) return;  // a context we dropped ourselves
  // hiredis frees the context once this returns.
  std::string why =
      cac->err != 0 ? std::string("disconnected: ") + cac->errstr : std::string("disconnected");
  self->ac_ = nullptr;
  self->fail(why);
}

void RedisClient::armTimeoutTimer() {
  int64_t earliest = INT64_MAX;
  if (connect_deadline_ms_ != 0) earliest = connect_deadline_ms_;
  for (const auto& [id, p] : pending_) earliest = std::min(earliest, p.deadline_ms);
  if (earliest == INT64_MAX) {
    uv_timer_stop(&timeout_timer_);
    return;
  }
  const int64_t now = static_cast<int64_t>(uv_now(loop_));
  uv_timer_start(&timeout_timer_, onTimer,
                 static_cast<uint64_t>(std::max<int64_t>(0, earliest - now)), 0);
}

void RedisClient::onTimer(uv_timer_t* t) {
  auto* self = static_cast<RedisClient*>(t->data);
  const int64_t now = static_cast<int64_t>(uv_now(self->loop_));
  if (self->connect_deadline_ms_ != 0 && now >= self->connect_deadline_ms_) {
    self->fail(self->deferred_error_.empty() ? "connect timeout" : self->deferred_error_);
    return;
  }
  for (const auto& [id, p] : self->pending_) {
    if (now >= p.deadline_ms) {
      // Redis answers in order: one late reply means every later one is late too.
      self->fail("command timeout (" + std::to_string(self->opt_.timeout_ms) + "ms)");
      return;
    }
  }
  self->armTimeoutTimer();
}

void RedisClient::failSoon(const std::string& why) {
  // Inside hiredis' connect callback the context must not be freed (hiredis goes on using it
  // after the callback returns): the failure is handled on the next loop turn instead.
  deferred_error_ = why;
  connect_deadline_ms_ = static_cast<int64_t>(uv_now(loop_));
  armTimeoutTimer();
}

void RedisClient::reconnect(const std::string& why) {
  if (state_ == State::Up || state_ == State::Authenticating || state_ == State::Connecting) {
    fail(why);
  }
}

void RedisClient::fail(const std::string& why) {
  if (state_ == State::Closed) return;
  deferred_error_.clear();
  const bool was_up = reported_up_;
  connect_deadline_ms_ = 0;
  if (ac_ != nullptr) {
    redisAsyncContext* ac = ac_;
    ac_ = nullptr;  // its callbacks, run while it is freed, see a stale context and do nothing
    redisAsyncFree(ac);
  }
  state_ = State::Backoff;
  reported_up_ = false;
  uv_timer_stop(&timeout_timer_);
  const auto delay = backoff_.next();
  if (why != last_error_ || was_up) {
    log::warn("fleet_redis_error", {{"connection", opt_.name},
                                    {"redis", opt_.host + ":" + std::to_string(opt_.port)},
                                    {"error", why},
                                    {"retry_in_ms", delay.count()}});
    last_error_ = why;
  }
  uv_timer_start(&backoff_timer_, onBackoff, static_cast<uint64_t>(delay.count()), 0);
  failPending(why);
  if ((was_up || !reported_down_) && on_state_) {
    reported_down_ = true;
    on_state_(false, why);
  }
}

void RedisClient::failPending(const std::string& why) {
  auto pending = std::move(pending_);
  pending_.clear();
  Reply r;
  r.kind = Reply::Kind::Error;
  r.str = why;
  for (auto& [id, p] : pending) {
    if (p.cb) p.cb(false, r);
  }
}

void RedisClient::onBackoff(uv_timer_t* t) {
  auto* self = static_cast<RedisClient*>(t->data);
  if (self->state_ != State::Backoff) return;
  self->resolve();
}

void RedisClient::close(std::function<void()> done) {
  if (state_ == State::Closed) return;
  state_ = State::Closed;
  closed_ = std::move(done);
  pending_.clear();
  if (ac_ != nullptr) {
    redisAsyncContext* ac = ac_;
    ac_ = nullptr;
    redisAsyncFree(ac);  // the adapter closes its poll handle and frees it in the close callback
  }
  if (resolving_) uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_req_));
  auto onClose = [](uv_handle_t* h) {
    auto* self = static_cast<RedisClient*>(h->data);
    --self->open_handles_;
    self->maybeClosed();
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&timeout_timer_), onClose);
  uv_close(reinterpret_cast<uv_handle_t*>(&backoff_timer_), onClose);
}

void RedisClient::maybeClosed() {
  if (state_ != State::Closed || open_handles_ > 0 || resolving_ || !closed_) return;
  auto done = std::move(closed_);
  closed_ = nullptr;
  done();
}

}  // namespace cutover
