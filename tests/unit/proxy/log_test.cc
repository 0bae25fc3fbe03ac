// JSON logging: exact escaping, event line layout, and the access log's buffered writer on a real
// libuv loop (flush to a file, close lifecycle, mode filtering, bounded backlog).
#include "proxy/log.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace cutover;

namespace {

std::string json(std::string_view s) {
  std::string out;
  appendJsonString(out, s);
  return out;
}

struct TempFile {
  std::string path;
  TempFile() {
    char tmpl[] = "/tmp/cutover_log_test_XXXXXX";
    int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    ::close(fd);
    path = tmpl;
  }
  ~TempFile() { ::unlink(path.c_str()); }
  std::string read() const {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
};

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string l; std::getline(ss, l);) out.push_back(l);
  return out;
}

AccessRecord record(uint16_t status, Reason reason = Reason::None) {
  AccessRecord r;
  r.ts_ms = 1795747801123;  // 2026-11-27T02:50:01.123Z
  r.request_id = "req-1";
  r.client = "127.0.0.1";
  r.method = "GET";
  r.path = "/api/config?x=\"1\"";
  r.route = "config";
  r.backend = "new";
  r.endpoint = "127.0.0.1:9002";
  r.status = status;
  r.duration_ms = 12.3456;
  r.upstream_ms = 11.5;
  r.bytes_in = 0;
  r.bytes_out = 512;
  r.attempts = 1;
  r.reason = reason;
  return r;
}

// Runs the loop until `done` is set (bounded: the loop has nothing else to wait for).
void runUntil(uv_loop_t* loop, const bool& done) {
  for (int i = 0; i < 1000 && !done; ++i) uv_run(loop, UV_RUN_ONCE);
  REQUIRE(done);
}

}  // namespace

TEST_CASE("JSON strings: quotes, backslashes and control characters are escaped") {
  CHECK(json("plain") == "\"plain\"");
  CHECK(json("a\"b\\c") == R"("a\"b\\c")");
  CHECK(json("l1\nl2\r\t") == R"("l1\nl2\r\t")");
  CHECK(json(std::string_view("\x00\x01\x1f\b\f", 5)) == R"("\u0000\u0001\u001f\b\f")");
  CHECK(json("\x1b[31m") == R"("\u001b[31m")");
  CHECK(json("") == "\"\"");
}

TEST_CASE("JSON strings: valid UTF-8 passes through, invalid bytes become U+FFFD") {
  CHECK(json("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") ==
        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
  CHECK(json("a\xff"
             "b") ==
        "\"a\xef\xbf\xbd"
        "b\"");
  CHECK(json("\xc0\xaf") == "\"\xef\xbf\xbd\xef\xbf\xbd\"");                  // overlong '/'
  CHECK(json("\xed\xa0\x80") == "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");  // surrogate
  CHECK(json("\xe2\x82") == "\"\xef\xbf\xbd\xef\xbf\xbd\"");  // truncated at the end
  CHECK(json("\xf4\x90\x80\x80") == "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
}

TEST_CASE("event line: timestamp, level, event, then fields; numbers and booleans unquoted") {
  std::string name = "public";
  std::string line = log::EventLog::format(1795747801123, log::Level::Info, "listening",
                                           {{"listener", name},
                                            {"address", "127.0.0.1:8080"},
                                            {"worker", 0},
                                            {"big", uint64_t{1} << 63},
                                            {"neg", -5},
                                            {"ratio", 0.25},
                                            {"ok", true},
                                            {"note", std::string_view("a\"b")}});
  CHECK(
      line ==
      R"({"ts":"2026-11-27T02:50:01.123Z","level":"info","event":"listening","listener":"public",)"
      R"("address":"127.0.0.1:8080","worker":0,"big":9223372036854775808,"neg":-5,"ratio":0.25,)"
      R"("ok":true,"note":"a\"b"})");
  CHECK(log::EventLog::format(0, log::Level::Warn, "x", {{"nan", 0.0 / 0.0}}) ==
        R"({"ts":"1970-01-01T00:00:00.000Z","level":"warn","event":"x","nan":null})");
}

TEST_CASE("EventLog writes one line per event and honours the minimum level") {
  TempFile file;
  int fd = ::open(file.path.c_str(), O_WRONLY | O_APPEND);
  REQUIRE(fd >= 0);
  log::EventLog events(fd, log::Level::Info);
  events.write(log::Level::Debug, "hidden", {});
  events.write(log::Level::Info, "reload", {{"result", "success"}, {"generation", 2}});
  events.write(log::Level::Error, "bind_failed", {{"error", "EADDRINUSE"}});
  ::close(fd);
  auto l = lines(file.read());
  REQUIRE(l.size() == 2);
  CHECK(l[0].find(R"("level":"info","event":"reload","result":"success","generation":2})") !=
        std::string::npos);
  CHECK(l[1].find(R"("level":"error","event":"bind_failed")") != std::string::npos);
}

TEST_CASE("access line carries every field in order") {
  std::string out;
  AccessRecord r = record(200);
  r.failover = true;
  r.rate_limited_dry_run = true;
  formatAccessRecord(out, r);
  CHECK(
      out ==
      R"({"ts":"2026-11-27T02:50:01.123Z","request_id":"req-1","client":"127.0.0.1","method":"GET",)"
      R"("path":"/api/config?x=\"1\"","route":"config","backend":"new","endpoint":"127.0.0.1:9002",)"
      R"("status":200,"duration_ms":12.346,"upstream_ms":11.500,"bytes_in":0,"bytes_out":512,)"
      R"("attempts":1,"reason":"none","flags":["rate_limited_dry_run","failover"]})"
      "\n");
  out.clear();
  AccessRecord local = record(429, Reason::RateLimited);
  local.upstream_ms = -1;
  local.backend = "";
  formatAccessRecord(out, local);
  CHECK(out.find(R"("upstream_ms":null)") != std::string::npos);
  CHECK(out.find(R"("reason":"rate_limited","flags":[]})") != std::string::npos);
}

TEST_CASE("AccessLog flushes every line to the file through the loop and closes cleanly") {
  TempFile file;
  std::string error;
  auto sink = AccessLogSink::open(file.path, error);
  REQUIRE(sink != nullptr);
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    auto access = std::make_unique<AccessLog>(&loop, sink, AccessLog::Options{});
    for (int i = 0; i < 1000; ++i) CHECK(access->append(record(200)));
    // 1000 lines pass 64 KiB: a write went to the thread pool while we were appending.
    CHECK(access->writing());
    bool closed = false;
    access->close([&] {
      closed = true;
      access.reset();  // the documented place to free it
    });
    runUntil(&loop, closed);
    CHECK(access == nullptr);
  }
  CHECK(uv_run(&loop, UV_RUN_NOWAIT) == 0);
  CHECK(uv_loop_close(&loop) == 0);
  auto l = lines(file.read());
  CHECK(l.size() == 1000);
  for (const std::string& line : l) {
    REQUIRE(line.front() == '{');
    REQUIRE(line.back() == '}');
  }
}

TEST_CASE("AccessLog timer flushes a small buffer within the flush interval") {
  TempFile file;
  std::string error;
  auto sink = AccessLogSink::open(file.path, error);
  uv_loop_t loop;
  uv_loop_init(&loop);
  AccessLog::Options options;
  options.flush_interval_ms = 10;
  AccessLog access(&loop, sink, options);
  access.append(record(200));
  CHECK(!access.writing());
  // The timer is unref'd, so keep the loop alive with a referenced one-shot timer.
  uv_timer_t guard;
  uv_timer_init(&loop, &guard);
  uv_timer_start(
      &guard, [](uv_timer_t*) {}, 50, 0);
  for (int i = 0; i < 100 && (access.buffered() > 0 || access.writing()); ++i) {
    uv_run(&loop, UV_RUN_ONCE);
  }
  CHECK(lines(file.read()).size() == 1);
  bool closed = false;
  access.close([&] { closed = true; });
  uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
  runUntil(&loop, closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("errors-only keeps 5xx, no-response and local replies; off keeps nothing") {
  TempFile file;
  std::string error;
  auto sink = AccessLogSink::open(file.path, error);
  uv_loop_t loop;
  uv_loop_init(&loop);
  AccessLog::Options options;
  options.mode = config::AccessLog::Mode::ErrorsOnly;
  AccessLog access(&loop, sink, options);
  CHECK(!access.append(record(200)));
  CHECK(!access.append(record(404)));
  CHECK(access.append(record(502)));
  CHECK(access.append(record(429, Reason::RateLimited)));
  CHECK(access.append(record(0)));
  access.configure(config::AccessLog::Mode::Off, 1.0);
  CHECK(!access.append(record(503)));
  bool closed = false;
  access.close([&] { closed = true; });
  runUntil(&loop, closed);
  CHECK(uv_loop_close(&loop) == 0);
  auto l = lines(file.read());
  REQUIRE(l.size() == 3);
  CHECK(l[0].find(R"("status":502)") != std::string::npos);
  CHECK(l[1].find(R"("status":429)") != std::string::npos);
  CHECK(l[2].find(R"("status":0)") != std::string::npos);
}

TEST_CASE("sampled mode keeps about the configured fraction") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  AccessLog::Options options;
  options.mode = config::AccessLog::Mode::Sampled;
  options.sample = 0.1;
  AccessLog access(&loop, std::make_shared<AccessLogSink>(-1, false), options);
  int kept = 0;
  for (int i = 0; i < 100000; ++i) kept += access.wants(200, Reason::None) ? 1 : 0;
  CHECK(kept > 9000);
  CHECK(kept < 11000);
  access.configure(config::AccessLog::Mode::Sampled, 0.0);
  for (int i = 0; i < 1000; ++i) CHECK(!access.wants(500, Reason::None));
  bool closed = false;
  access.close([&] { closed = true; });
  runUntil(&loop, closed);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("a writer that falls behind drops lines past the backlog bound and counts them") {
  TempFile file;
  std::string error;
  auto sink = AccessLogSink::open(file.path, error);
  uv_loop_t loop;
  uv_loop_init(&loop);
  AccessLog::Options options;
  options.flush_bytes = 1;           // the first line starts a write ...
  options.max_backlog = 100 * 1024;  // ... and the loop does not run while we append more
  AccessLog access(&loop, sink, options);
  const int total = 5000;
  for (int i = 0; i < total; ++i) access.append(record(200));
  CHECK(access.dropped() > 0);
  CHECK(sink->dropped() == access.dropped());  // the process-wide total the scrape exports
  CHECK(access.buffered() <= options.max_backlog);
  bool closed = false;
  access.close([&] { closed = true; });
  runUntil(&loop, closed);
  CHECK(uv_loop_close(&loop) == 0);
  CHECK(lines(file.read()).size() == total - access.dropped());
  CHECK(access.writeErrors() == 0);
}
