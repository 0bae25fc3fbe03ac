// AdminServer on a real loop with a real TCP client: keep-alive and pipelining in order, answers
// given later from a timer, 400/408/413/405, HEAD, a dropped responder, the bearer-token check,
// lingering close, close() with connections open.
#include "proxy/admin_server.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "config/loader.h"

using namespace cutover;

namespace {

// Connects to 127.0.0.1:port, sends `request`, reads until the server closes (5 s bound).
std::string exchange(int port, const std::string& request, bool half_close = false) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    size_t off = 0;
    while (off < request.size()) {
      ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    if (half_close) ::shutdown(fd, SHUT_WR);
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

// A server on a fresh loop; run(client) performs `client(port)` on another thread while the loop
// runs, then closes the server and checks every handle was released.
struct Harness {
  uv_loop_t loop;
  Harness() { uv_loop_init(&loop); }
  ~Harness() { CHECK(uv_loop_close(&loop) == 0); }

  template <typename Client>
  void run(AdminServer::Handler handler, Client client,
           AdminServer::Options options = AdminServer::Options{}) {
    config::SocketAddress address;
    REQUIRE(config::parseSocketAddress("127.0.0.1:0", address));
    auto server = std::make_unique<AdminServer>(&loop, address, std::move(handler), options);
    std::string bound;
    REQUIRE(server->start(bound) == 0);
    REQUIRE(bound.rfind("127.0.0.1:", 0) == 0);
    const int port = std::stoi(bound.substr(bound.find(':') + 1));
    REQUIRE(port > 0);

    struct Ctx {
      std::unique_ptr<AdminServer>* server;
      bool closed = false;
    } ctx{&server};
    uv_async_t done;
    done.data = &ctx;
    uv_async_init(&loop, &done, [](uv_async_t* a) {
      auto* c = static_cast<Ctx*>(a->data);
      (*c->server)->close([c] {
        c->closed = true;
        c->server->reset();
      });
      uv_close(reinterpret_cast<uv_handle_t*>(a), nullptr);
    });
    std::thread t([&] {
      client(port);
      uv_async_send(&done);
    });
    uv_run(&loop, UV_RUN_DEFAULT);
    t.join();
    CHECK(ctx.closed);
  }
};

void echoHandler(const AdminRequest& req, AdminResponder res) {
  std::string body = req.method + " " + req.path + " q=" + req.query + " body=" + req.body +
                     " x=" + std::string(req.headers.get("x-test"));
  res.respond(200, "text/plain", body, "X-Extra: 1\r\n");
}

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = 0; (p = s.find(needle, p)) != std::string::npos; p += needle.size()) ++n;
  return n;
}

}  // namespace

TEST_CASE("pipelined keep-alive requests are answered in order, then Connection: close") {
  std::string got;
  Harness h;
  h.run(echoHandler, [&](int port) {
    got = exchange(port,
                   "GET /stats?format=json HTTP/1.1\r\nHost: a\r\nX-Test: one\r\n\r\n"
                   "POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                   "GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  });
  CHECK(count(got, "HTTP/1.1 200 OK\r\n") == 3);
  const size_t a = got.find("GET /stats q=format=json body= x=one");
  const size_t b = got.find("POST /reload q= body=abc x=");
  const size_t c = got.find("GET /last q= body= x=");
  REQUIRE(a != std::string::npos);
  REQUIRE(b != std::string::npos);
  REQUIRE(c != std::string::npos);
  CHECK(a < b);
  CHECK(b < c);
  CHECK(count(got, "X-Extra: 1\r\n") == 3);
  CHECK(count(got, "Connection: close\r\n") == 1);
}

TEST_CASE("an answer given later from a timer reaches the client; the next request waits for it") {
  struct Later {
    uv_timer_t timer;
    AdminResponder res;
  };
  Harness h;
  std::vector<std::unique_ptr<Later>> pending;
  std::string got;
  h.run(
      [&](const AdminRequest& req, AdminResponder res) {
        if (req.path != "/slow") {
          res.respond(200, "text/plain", "fast");
          return;
        }
        pending.push_back(std::make_unique<Later>());
        Later* l = pending.back().get();
        l->res = std::move(res);
        uv_timer_init(&h.loop, &l->timer);
        l->timer.data = l;
        uv_timer_start(
            &l->timer,
            [](uv_timer_t* t) {
              auto* self = static_cast<Later*>(t->data);
              CHECK(self->res.respond(200, "text/plain", "slow"));
              CHECK(!self->res.respond(200, "text/plain", "twice"));  // once only
              uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
            },
            30, 0);
      },
      [&](int port) {
        got = exchange(port,
                       "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
                       "GET /fast HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
      });
  const size_t slow = got.find("\r\n\r\nslow");
  const size_t fast = got.find("\r\n\r\nfast");
  REQUIRE(slow != std::string::npos);
  REQUIRE(fast != std::string::npos);
  CHECK(slow < fast);
  CHECK(got.find("twice") == std::string::npos);
}

TEST_CASE("malformed request gets 400 and the connection closes") {
  Harness h;
  std::string got;
  int calls = 0;
  h.run(
      [&](const AdminRequest&, AdminResponder res) {
        ++calls;
        res.respond(200, "text/plain", "no");
      },
      [&](int port) {
        got = exchange(port, "GET /x HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n");
      });
  CHECK(got.rfind("HTTP/1.1 400 ", 0) == 0);
  CHECK(got.find("Connection: close\r\n") != std::string::npos);
  CHECK(calls == 0);
}

TEST_CASE("connections beyond max_connections are closed at once; a freed slot serves again") {
  Harness h;
  AdminServer::Options options;
  options.max_connections = 2;
  std::string third, fourth;
  h.run(
      echoHandler,
      [&](int port) {
        auto open = [&] {
          int fd = ::socket(AF_INET, SOCK_STREAM, 0);
          sockaddr_in addr{};
          addr.sin_family = AF_INET;
          addr.sin_port = htons(static_cast<uint16_t>(port));
          addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
          REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
          return fd;
        };
        const int a = open();
        const int b = open();
        // Both idle slots are taken: the third connection gets no answer, only a close.
        third = exchange(port, "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        ::close(a);
        for (int i = 0; i < 200; ++i) {  // the slot is free once the server saw the close
          fourth = exchange(port, "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
          if (!fourth.empty()) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        ::close(b);
      },
      options);
  CHECK(third.empty());
  CHECK(fourth.rfind("HTTP/1.1 200 ", 0) == 0);
}

TEST_CASE("a body over the cap gets 413 without reaching the handler") {
  Harness h;
  std::string got;
  int calls = 0;
  AdminServer::Options options;
  options.max_body = 10;
  h.run(
      [&](const AdminRequest&, AdminResponder res) {
        ++calls;
        res.respond(200, "text/plain", "no");
      },
      [&](int port) {
        got = exchange(port,
                       "POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n01234567890");
      },
      options);
  CHECK(got.rfind("HTTP/1.1 413 ", 0) == 0);
  CHECK(calls == 0);
}

TEST_CASE("GET on a mutation path gets 405 with Allow: POST; HEAD gets headers only") {
  Harness h;
  std::string got;
  h.run(
      [&](const AdminRequest& req, AdminResponder res) {
        if (req.path == "/drain") {
          if (!requirePost(req, res)) return;
          res.respond(200, "text/plain", "draining");
          return;
        }
        res.respond(200, "text/plain", "healthy-body");
      },
      [&](int port) {
        got = exchange(port,
                       "GET /drain HTTP/1.1\r\nHost: a\r\n\r\n"
                       "POST /drain HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
                       "HEAD /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
      });
  CHECK(got.rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0) == 0);
  CHECK(got.find("Allow: POST\r\n") != std::string::npos);
  CHECK(got.find("draining") != std::string::npos);
  CHECK(got.find("Content-Length: 12\r\n") != std::string::npos);  // HEAD: length of the GET body
  CHECK(got.find("healthy-body") == std::string::npos);
}

TEST_CASE("a handler that drops its responder makes the client get 500, not a hang") {
  Harness h;
  std::string got;
  h.run([&](const AdminRequest&, AdminResponder) {},
        [&](int port) {
          got = exchange(port, "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        });
  CHECK(got.rfind("HTTP/1.1 500 ", 0) == 0);
}

TEST_CASE("close() completes with an idle keep-alive connection still open") {
  Harness h;
  std::string got;
  h.run(echoHandler, [&](int port) {
    // Reads until the server closes us, which happens when the test closes the server... so
    // instead read just the first response with a short timeout and leave the socket open.
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    std::string req = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
    REQUIRE(::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[1024];
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n > 0) got.assign(buf, static_cast<size_t>(n));
    // The server closes while we still hold the connection; the fd is closed after the loop ends.
    std::thread([fd] {
      char b[16];
      timeval t{5, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof(t));
      while (::recv(fd, b, sizeof(b), 0) > 0) {
      }
      ::close(fd);
    }).detach();
  });
  CHECK(got.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
}

TEST_CASE("bearer token: exact match only, scheme case-insensitive, no token = open") {
  AdminRequest req;
  CHECK(authorized(req, ""));
  CHECK(!authorized(req, "s3cret"));
  req.headers.add("Authorization", "Bearer s3cret");
  CHECK(authorized(req, "s3cret"));
  CHECK(!authorized(req, "s3cre"));
  CHECK(!authorized(req, "s3cret!"));
  CHECK(!authorized(req, "S3cret"));
  req.headers.set("authorization", "bearer s3cret");
  CHECK(authorized(req, "s3cret"));
  req.headers.set("authorization", "Basic s3cret");
  CHECK(!authorized(req, "s3cret"));
  req.headers.set("authorization", "Bearer ");
  CHECK(!authorized(req, "s3cret"));
}

TEST_CASE("loopback detection for the startup warning") {
  config::SocketAddress a;
  REQUIRE(config::parseSocketAddress("127.0.0.1:9901", a));
  CHECK(isLoopback(a));
  REQUIRE(config::parseSocketAddress("[::1]:9901", a));
  CHECK(isLoopback(a));
  REQUIRE(config::parseSocketAddress("0.0.0.0:9901", a));
  CHECK(!isLoopback(a));
  REQUIRE(config::parseSocketAddress("10.1.2.3:9901", a));
  CHECK(!isLoopback(a));
}

TEST_CASE("a client that half-closes after its request still gets a later answer") {
  struct Later {
    uv_timer_t timer;
    AdminResponder res;
  };
  Harness h;
  Later later;
  std::string got;
  h.run(
      [&](const AdminRequest&, AdminResponder res) {
        later.res = std::move(res);
        uv_timer_init(&h.loop, &later.timer);
        later.timer.data = &later;
        uv_timer_start(
            &later.timer,
            [](uv_timer_t* t) {
              static_cast<Later*>(t->data)->res.respond(200, "text/plain", "reloaded");
              uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
            },
            30, 0);
      },
      [&](int port) {
        got = exchange(port, "POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", true);
      });
  CHECK(got.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(got.find("reloaded") != std::string::npos);
  CHECK(got.find("Connection: close\r\n") != std::string::npos);
}

namespace {

// A connected socket to 127.0.0.1:port with a 5 s receive timeout.
int connectTo(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  return fd;
}

void sendAll(int fd, const std::string& data) {
  REQUIRE(::send(fd, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size()));
}

// Reads until `n` whole responses (each framed by Content-Length) arrived; stops early on EOF,
// an error or the receive timeout. `eof` tells whether the server closed.
std::string readResponses(int fd, size_t n, bool& eof) {
  std::string out;
  eof = false;
  auto complete = [&] {
    size_t pos = 0;
    for (size_t i = 0; i < n; ++i) {
      const size_t end = out.find("\r\n\r\n", pos);
      if (end == std::string::npos) return false;
      const size_t cl = out.find("Content-Length: ", pos);
      if (cl == std::string::npos || cl > end) return false;
      pos = end + 4 + std::stoul(out.substr(cl + 16));
      if (pos > out.size()) return false;
    }
    return true;
  };
  char buf[4096];
  while (!complete()) {
    ssize_t got = ::recv(fd, buf, sizeof(buf), 0);
    if (got <= 0) {
      eof = got == 0;
      break;
    }
    out.append(buf, static_cast<size_t>(got));
  }
  return out;
}

}  // namespace

TEST_CASE("a pipelined pair on one keep-alive connection is answered in order; it stays open") {
  Harness h;
  std::string pair, third;
  bool eof_after_pair = true, eof_at_end = false;
  int calls = 0;
  h.run(
      [&](const AdminRequest& req, AdminResponder res) {
        ++calls;
        echoHandler(req, std::move(res));
      },
      [&](int port) {
        const int fd = connectTo(port);
        sendAll(fd,
                "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
                "POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
        pair = readResponses(fd, 2, eof_after_pair);
        // The same connection serves a third request.
        sendAll(fd, "GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        third = readResponses(fd, 2, eof_at_end);  // asks for more than comes: reads to EOF
        ::close(fd);
      });
  CHECK(count(pair, "HTTP/1.1 200 OK\r\n") == 2);
  const size_t one = pair.find("GET /one q= body=");
  const size_t two = pair.find("POST /two q= body=hi");
  REQUIRE(one != std::string::npos);
  REQUIRE(two != std::string::npos);
  CHECK(one < two);
  CHECK(pair.find("Connection: close") == std::string::npos);
  CHECK(!eof_after_pair);
  CHECK(third.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(third.find("GET /three") != std::string::npos);
  CHECK(third.find("Connection: close\r\n") != std::string::npos);
  CHECK(eof_at_end);
  CHECK(calls == 3);
}

TEST_CASE("a malformed request after a good one: 200, then 400 and the connection closes") {
  Harness h;
  std::string got;
  int calls = 0;
  h.run(
      [&](const AdminRequest&, AdminResponder res) {
        ++calls;
        res.respond(200, "text/plain", "fine");
      },
      [&](int port) {
        got = exchange(port,
                       "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"
                       "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n"
                       "\r\nab"
                       "GET /never HTTP/1.1\r\nHost: a\r\n\r\n");  // exchange() reads to EOF
      });
  CHECK(got.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  const size_t bad = got.find("HTTP/1.1 400 Bad Request\r\n");
  REQUIRE(bad != std::string::npos);
  CHECK(got.find("Connection: close\r\n", bad) != std::string::npos);
  CHECK(count(got, "HTTP/1.1 ") == 2);
  CHECK(calls == 1);
}

TEST_CASE("a head not finished within header_timeout_ms gets 408 and the connection closes") {
  Harness h;
  AdminServer::Options options;
  options.header_timeout_ms = 50;
  std::string got;
  int calls = 0;
  h.run(
      [&](const AdminRequest&, AdminResponder res) {
        ++calls;
        res.respond(200, "text/plain", "no");
      },
      [&](int port) { got = exchange(port, "GET /slow HTTP/1.1\r\nHost: a\r\n"); }, options);
  CHECK(got.rfind("HTTP/1.1 408 Request Timeout\r\n", 0) == 0);
  CHECK(got.find("Connection: close\r\n") != std::string::npos);
  CHECK(calls == 0);
}

TEST_CASE("a large body over the cap gets 413, then a FIN, not a reset: lingering close") {
  Harness h;
  AdminServer::Options options;
  options.max_body = 10;
  std::string got;
  size_t sent = 0;
  ssize_t last_recv = 1;
  int calls = 0;
  h.run(
      [&](const AdminRequest&, AdminResponder res) {
        ++calls;
        res.respond(200, "text/plain", "no");
      },
      [&](int port) {
        const std::string body(16 * 1024 * 1024, 'x');
        const std::string request =
            "POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: " + std::to_string(body.size()) +
            "\r\n\r\n" + body;
        const int fd = connectTo(port);
        while (sent < request.size()) {
          ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
          if (n <= 0) break;
          sent += static_cast<size_t>(n);
        }
        char buf[4096];
        while ((last_recv = ::recv(fd, buf, sizeof(buf), 0)) > 0) {
          got.append(buf, static_cast<size_t>(last_recv));
        }
        ::close(fd);
      },
      options);
  CHECK(got.rfind("HTTP/1.1 413 Content Too Large\r\n", 0) == 0);
  CHECK(got.find("request body too large\n") != std::string::npos);
  CHECK(sent > 16 * 1024 * 1024);  // the server kept reading: the whole body went out
  CHECK(last_recv == 0);           // ended by the server's FIN, not a connection reset
  CHECK(calls == 0);
}

TEST_CASE("two pipelined requests, then a half-close: both are answered in order, then close") {
  Harness h;
  std::string got;
  h.run(echoHandler, [&](int port) {
    got = exchange(port,
                   "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
                   "GET /b HTTP/1.1\r\nHost: a\r\n\r\n",
                   true);
  });
  const size_t a = got.find("GET /a q=");
  const size_t b = got.find("GET /b q=");
  REQUIRE(a != std::string::npos);
  REQUIRE(b != std::string::npos);
  CHECK(a < b);
}

TEST_CASE("close() with a request awaiting its answer completes; the late answer is refused") {
  Harness h;
  AdminResponder held;
  std::atomic<bool> handled{false};
  int fd = -1;
  h.run(
      [&](const AdminRequest&, AdminResponder res) {
        held = std::move(res);
        handled = true;
      },
      [&](int port) {
        fd = connectTo(port);
        sendAll(fd, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
        for (int i = 0; i < 500 && !handled; ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
      });
  CHECK(handled);
  CHECK(!held.respond(200, "text/plain", "late"));
  if (fd >= 0) ::close(fd);
}
