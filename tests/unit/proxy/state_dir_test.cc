// The state dir: rollback state format, the broken-file state_dir scan, and atomic writes on the
// thread pool (a real loop in a temp directory).
#include "proxy/state_dir.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace cutover;

namespace {
std::string tempDir() {
  char tmpl[] = "/tmp/cutover-state-test-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  return tmpl;
}
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

TEST_CASE("rollback state round-trips, control bytes in actor and reason become spaces") {
  RollbackState s{true, 1765000000, "ali\nce", "v2 5xx\r\nfake_key 1"};
  std::string text = formatRollbackState(s);
  CHECK(text ==
        "cutover-state 1\nrollback_active 1\nsince 1765000000\nactor ali ce\n"
        "reason v2 5xx  fake_key 1\n");
  RollbackState back;
  REQUIRE(parseRollbackState(text, back));
  CHECK(back.active);
  CHECK(back.since_s == 1765000000);
  CHECK(back.actor == "ali ce");
  CHECK(back.reason == "v2 5xx  fake_key 1");
  CHECK_FALSE(parseRollbackState("rollback_active 1\n", back));
  CHECK_FALSE(parseRollbackState("", back));
}

TEST_CASE("state_dir is read from a config text that does not load") {
  CHECK(scanStateDir("listeners: [\nstate_dir: /var/lib/cutover\n") == "/var/lib/cutover");
  CHECK(scanStateDir("state_dir: \"/a b/c\"  # the emptyDir\nroutes: {\n") == "/a b/c");
  CHECK(scanStateDir("  state_dir: /nested/is/not/top\n").empty());
  CHECK(scanStateDir("state_dir: ~\n").empty());
  CHECK(scanStateDir("routes: []\n").empty());
}

TEST_CASE("writes land atomically, in order, the newest queued contents win, callbacks once") {
  std::string dir = tempDir();
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    StateDir sd(&loop, dir + "/");
    CHECK(sd.dir() == dir);
    std::string err;
    REQUIRE(sd.prepare(err));
    RollbackState none;
    CHECK_FALSE(sd.readRollback(none, err));  // nothing yet, and not an error
    CHECK(err.empty());

    std::vector<std::string> calls;
    auto note = [&](const char* what) {
      return [&calls, what](bool ok, const std::string& e) {
        calls.push_back(std::string(what) + (ok ? ":ok" : ":" + e));
      };
    };
    sd.writeRollback({true, 10, "a", ""}, note("first"));   // in flight
    sd.writeLastGood("listeners: []\n", note("good"));      // queued
    sd.writeRollback({true, 20, "b", ""}, note("second"));  // queued
    sd.writeRollback({false, 0, "", ""}, note("third"));    // replaces "second"'s contents
    CHECK_FALSE(sd.idle());
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(sd.idle());
    CHECK(calls == std::vector<std::string>{"first:ok", "good:ok", "second:ok", "third:ok"});
    RollbackState got{true, 1, "x", "y"};
    REQUIRE(sd.readRollback(got, err));
    CHECK_FALSE(got.active);
    std::string text;
    REQUIRE(sd.readLastGood(text, err));
    CHECK(text == "listeners: []\n");
    CHECK(access((dir + "/.rollback.state.tmp").c_str(), F_OK) != 0);  // no temp left behind
  }
  uv_loop_close(&loop);
}

TEST_CASE("a state_dir that is a file cannot be prepared, and a write failure is reported") {
  std::string dir = tempDir();
  std::string file = dir + "/plain";
  std::ofstream(file) << "x";
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    StateDir sd(&loop, file);
    std::string err;
    CHECK_FALSE(sd.prepare(err));
    CHECK(err.find("is not a directory") != std::string::npos);
    bool called = false;
    sd.writeRollback({true, 1, "", ""}, [&](bool ok, const std::string& e) {
      called = true;
      CHECK_FALSE(ok);
      CHECK(e.find("cannot create") != std::string::npos);
    });
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(called);
  }
  uv_loop_close(&loop);
  CHECK(slurp(file) == "x");
}
