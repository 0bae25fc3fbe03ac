// The filter contract, run through a real Worker and Stream on a real loop and socket: order of
// onRequest/onResponse, Paused then resume() or localReply() from a timer, onCancel when the client
// leaves while paused, and onComplete exactly once in every case.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/loader.h"
#include "filters/filter.h"
#include "proxy/log.h"
#include "proxy/snapshot.h"
#include "proxy/worker.h"

using namespace cutover;

namespace {

// What the test filters did, in order, across the worker thread.
struct Journal {
  std::mutex mu;
  std::vector<std::string> events;
  void add(std::string e) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(std::move(e));
  }
  std::vector<std::string> get() {
    std::lock_guard<std::mutex> lock(mu);
    return events;
  }
  int count(const std::string& e) {
    int n = 0;
    for (const auto& x : get()) n += x == e;
    return n;
  }
};

enum class Then { Continue, PauseResume, PauseReply };

// A filter that records its phases and, for PauseResume/PauseReply, pauses and finishes from a
// timer 50 ms later. The timer is heap-allocated and freed in its close callback.
class TestFilter final : public Filter {
 public:
  TestFilter(std::string name, Then then, Journal& j)
      : name_(std::move(name)), then_(then), j_(j) {}
  ~TestFilter() override {
    if (timer_ != nullptr) cancelTimer();
  }
  FilterStatus onRequest(FilterCallbacks& cb) override {
    j_.add(name_ + ".request");
    if (then_ == Then::Continue) return FilterStatus::Continue;
    cb_ = &cb;
    timer_ = new uv_timer_t;
    uv_timer_init(cb.loop(), timer_);
    timer_->data = this;
    uv_timer_start(timer_, onTimer, 50, 0);
    return FilterStatus::Paused;
  }
  void onResponse(FilterCallbacks&, ResponseHead&) override { j_.add(name_ + ".response"); }
  void onCancel() override {
    j_.add(name_ + ".cancel");
    cancelTimer();
  }
  void onComplete(const StreamInfo& info) override {
    j_.add(name_ + ".complete:" + std::to_string(info.status));
  }

 private:
  static void onTimer(uv_timer_t* t) {
    auto* self = static_cast<TestFilter*>(t->data);
    FilterCallbacks* cb = self->cb_;
    Then then = self->then_;
    self->j_.add(self->name_ + ".timer");
    self->cancelTimer();
    if (then == Then::PauseResume) {
      cb->resume();
    } else {
      cb->localReply(418, Reason::None, "x-test: paused-reply\r\n", "short and stout\n");
    }
  }
  void cancelTimer() {
    uv_close(reinterpret_cast<uv_handle_t*>(timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    timer_ = nullptr;
  }
  std::string name_;
  Then then_;
  Journal& j_;
  FilterCallbacks* cb_ = nullptr;
  uv_timer_t* timer_ = nullptr;
};

class TestFactory final : public FilterFactory {
 public:
  TestFactory(std::string name, Then then, Journal& j)
      : name_(std::move(name)), then_(then), j_(j) {}
  std::string_view name() const override { return name_; }
  size_t filterSize() const override { return sizeof(TestFilter); }
  Filter* createAt(void* mem) const override {
    return constructFilter<TestFilter>(mem, name_, then_, j_);
  }

 private:
  std::string name_;
  Then then_;
  Journal& j_;
};

// A port nothing listens on: connecting to it is refused at once.
uint16_t closedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

struct Harness {
  Journal journal;
  std::unique_ptr<Worker> worker;
  uint16_t port = 0;

  explicit Harness(std::vector<std::pair<std::string, Then>> chain) {
    std::string yaml =
        "listeners: [{name: p, address: 127.0.0.1:0}]\n"
        "filters: [router]\n"
        "access_log: {mode: off}\n"
        "backends: {legacy: {endpoints: [\"127.0.0.1:" +
        std::to_string(closedPort()) +
        "\"]}}\n"
        "routes: [{name: r, match: {prefix: /}, split: {legacy: 100}}]\n";
    config::LoadResult res = config::loadString(yaml, "t.yaml");
    REQUIRE(res.ok());
    auto snap = std::make_shared<Snapshot>();
    snap->config = res.config;
    snap->generation = 1;
    for (auto& [name, then] : chain) {
      snap->filters.push_back(std::make_unique<TestFactory>(name, then, journal));
    }
    snap->backends.resize(res.config->backends.size());

    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    socklen_t len = sizeof(a);
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);

    int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    auto sink = std::make_shared<AccessLogSink>(devnull, true);
    worker = std::make_unique<Worker>(0, snap, sink);
    worker->start();
    worker->addListener("p", fd);
  }
  ~Harness() {
    worker->stopNow(/*force=*/true);
    worker->join();
  }

  int connect() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    return fd;
  }
  // Sends a GET and reads until the peer closes or 3 s pass.
  std::string roundTrip(int fd) {
    std::string req = "GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    REQUIRE(::send(fd, req.data(), req.size(), 0) == static_cast<ssize_t>(req.size()));
    std::string out;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  // Waits (bounded) until `event` was journaled `n` times.
  bool waitFor(const std::string& event, int n = 1) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (std::chrono::steady_clock::now() < deadline) {
      if (journal.count(event) >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }
};

}  // namespace

TEST_CASE("a paused filter resumes from a timer; the chain goes on to the router") {
  Harness h({{"a", Then::Continue}, {"b", Then::PauseResume}, {"c", Then::Continue}});
  int fd = h.connect();
  std::string resp = h.roundTrip(fd);
  ::close(fd);
  // The backend port is closed: after the resume the router answers 502.
  CHECK(resp.rfind("HTTP/1.1 502", 0) == 0);
  CHECK(resp.find("x-cutover-reason: upstream_connect_failure") != std::string::npos);
  REQUIRE(h.waitFor("c.complete:502"));
  std::vector<std::string> want = {"a.request", "b.request", "b.timer", "c.request"};
  std::vector<std::string> got = h.journal.get();
  REQUIRE(got.size() >= want.size());
  CHECK(std::vector<std::string>(got.begin(), got.begin() + 4) == want);
  CHECK(h.journal.count("a.complete:502") == 1);
  CHECK(h.journal.count("b.complete:502") == 1);
  CHECK(h.journal.count("c.complete:502") == 1);
  CHECK(h.journal.count("b.cancel") == 0);
}

TEST_CASE("a paused filter answers from a timer; later filters never run, all complete once") {
  Harness h({{"a", Then::Continue}, {"b", Then::PauseReply}, {"c", Then::Continue}});
  int fd = h.connect();
  std::string resp = h.roundTrip(fd);
  ::close(fd);
  CHECK(resp.rfind("HTTP/1.1 418", 0) == 0);
  CHECK(resp.find("x-test: paused-reply") != std::string::npos);
  CHECK(resp.find("short and stout") != std::string::npos);
  REQUIRE(h.waitFor("b.complete:418"));
  CHECK(h.journal.count("c.request") == 0);
  CHECK(h.journal.count("a.complete:418") == 1);
  CHECK(h.journal.count("c.complete:418") == 1);  // created, so completed, though it never ran
}

TEST_CASE("a client leaving while a filter is paused cancels it and completes every filter once") {
  Harness h({{"a", Then::Continue}, {"b", Then::PauseResume}});
  int fd = h.connect();
  std::string req = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
  REQUIRE(::send(fd, req.data(), req.size(), 0) == static_cast<ssize_t>(req.size()));
  REQUIRE(h.waitFor("b.request"));
  linger lg{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));  // close with a reset
  ::close(fd);
  REQUIRE(h.waitFor("b.complete:0"));
  CHECK(h.journal.count("b.cancel") == 1);
  CHECK(h.journal.count("b.timer") == 0);
  CHECK(h.journal.count("a.complete:0") == 1);
  CHECK(h.journal.count("b.complete:0") == 1);
}
