// ConfigWatcher on a real loop and a real directory: in-place writes, rename-over (editors), the
// Kubernetes ConfigMap `..data` symlink swap, unchanged bytes ignored, readNow, and close.
#include "proxy/config_watcher.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace cutover;
namespace fs = std::filesystem;

namespace {

void writeFile(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/cutover_watch_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { fs::remove_all(path); }
};

struct Fixture {
  uv_loop_t loop;
  uv_timer_t deadline;
  bool timed_out = false;
  std::vector<std::string> changes;
  std::vector<int> errors;
  std::unique_ptr<ConfigWatcher> watcher;

  Fixture() {
    uv_loop_init(&loop);
    uv_timer_init(&loop, &deadline);
    deadline.data = this;
  }
  ~Fixture() {
    bool closed = false;
    watcher->close([&] { closed = true; });
    uv_close(reinterpret_cast<uv_handle_t*>(&deadline), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(closed);
    CHECK(uv_loop_close(&loop) == 0);
  }
  void watch(const std::string& path, uint64_t debounce_ms = 20) {
    ConfigWatcher::Options options;
    options.debounce_ms = debounce_ms;
    watcher = std::make_unique<ConfigWatcher>(
        &loop, path, [this](std::string c) { changes.push_back(std::move(c)); },
        [this](int err, const std::string&) { errors.push_back(err); }, options);
    REQUIRE(watcher->start() == 0);
  }
  // Runs the loop until `n` changes were reported or `ms` passed (bounded wait, no sleep).
  void runFor(size_t n, uint64_t ms) {
    timed_out = false;
    uv_timer_start(
        &deadline, [](uv_timer_t* t) { static_cast<Fixture*>(t->data)->timed_out = true; }, ms, 0);
    while (!timed_out && changes.size() < n) uv_run(&loop, UV_RUN_ONCE);
    uv_timer_stop(&deadline);
  }
};

}  // namespace

TEST_CASE("an in-place write is reported once, with the new bytes, after the debounce") {
  TempDir dir;
  const fs::path file = dir.path / "cutover.yaml";
  writeFile(file, "a: 1\n");
  Fixture f;
  f.watch(file.string());
  f.watcher->prime("a: 1\n");
  // Several writes in a burst collapse into one read.
  writeFile(file, "a: 2\n");
  writeFile(file, "a: 3\n");
  f.runFor(1, 3000);
  REQUIRE(f.changes.size() == 1);
  CHECK(f.changes[0] == "a: 3\n");
  // Nothing more arrives for the same burst.
  f.runFor(2, 200);
  CHECK(f.changes.size() == 1);
}

TEST_CASE("rewriting identical bytes and touching other files report nothing") {
  TempDir dir;
  const fs::path file = dir.path / "cutover.yaml";
  writeFile(file, "same\n");
  Fixture f;
  f.watch(file.string());
  f.watcher->prime("same\n");
  writeFile(file, "same\n");
  writeFile(dir.path / "other.yaml", "x\n");
  f.runFor(1, 300);
  CHECK(f.changes.empty());
  CHECK(f.watcher->eventsSeen() > 0);  // the rewrite was seen, its bytes were not new
}

TEST_CASE("an editor's rename-over is reported") {
  TempDir dir;
  const fs::path file = dir.path / "cutover.yaml";
  writeFile(file, "v: 1\n");
  Fixture f;
  f.watch(file.string());
  f.watcher->prime("v: 1\n");
  writeFile(dir.path / ".cutover.yaml.swp", "v: 2\n");
  fs::rename(dir.path / ".cutover.yaml.swp", file);
  f.runFor(1, 3000);
  REQUIRE(f.changes.size() == 1);
  CHECK(f.changes[0] == "v: 2\n");
}

TEST_CASE("a ConfigMap-style ..data symlink swap is reported") {
  TempDir dir;
  // Layout kubelet creates: cutover.yaml -> ..data/cutover.yaml, ..data -> ..2026_1
  fs::create_directory(dir.path / "..2026_1");
  writeFile(dir.path / "..2026_1" / "cutover.yaml", "gen: 1\n");
  fs::create_directory_symlink("..2026_1", dir.path / "..data");
  fs::create_symlink("..data/cutover.yaml", dir.path / "cutover.yaml");
  Fixture f;
  f.watch((dir.path / "cutover.yaml").string());
  f.watcher->prime("gen: 1\n");
  // The swap: new directory, new symlink under a temporary name, renamed over ..data.
  fs::create_directory(dir.path / "..2026_2");
  writeFile(dir.path / "..2026_2" / "cutover.yaml", "gen: 2\n");
  fs::create_directory_symlink("..2026_2", dir.path / "..data_tmp");
  fs::rename(dir.path / "..data_tmp", dir.path / "..data");
  fs::remove_all(dir.path / "..2026_1");
  f.runFor(1, 3000);
  REQUIRE(f.changes.size() == 1);
  CHECK(f.changes[0] == "gen: 2\n");
}

TEST_CASE("readNow reads asynchronously, reports errors, and primes the last contents") {
  TempDir dir;
  const fs::path file = dir.path / "cutover.yaml";
  std::string big(200 * 1024, 'x');  // several read chunks
  writeFile(file, big);
  Fixture f;
  f.watch(file.string());
  int err = 1;
  std::string got;
  bool called = false;
  f.watcher->readNow([&](int e, std::string c) {
    called = true;
    err = e;
    got = std::move(c);
  });
  CHECK(!called);  // never from inside the call
  for (int i = 0; i < 1000 && !called; ++i) uv_run(&f.loop, UV_RUN_ONCE);
  REQUIRE(called);
  CHECK(err == 0);
  CHECK(got == big);

  ConfigWatcher missing(&f.loop, (dir.path / "absent.yaml").string(), {}, {});
  called = false;
  missing.readNow([&](int e, std::string) {
    called = true;
    err = e;
  });
  for (int i = 0; i < 1000 && !called; ++i) uv_run(&f.loop, UV_RUN_ONCE);
  REQUIRE(called);
  CHECK(err == UV_ENOENT);
  bool closed = false;
  missing.close([&] { closed = true; });
  for (int i = 0; i < 100 && !closed; ++i) uv_run(&f.loop, UV_RUN_ONCE);
  CHECK(closed);

  // The file's current bytes are now "last seen": rewriting them is not a change.
  writeFile(file, big);
  f.runFor(1, 300);
  CHECK(f.changes.empty());
}

TEST_CASE("readNow refuses a FIFO, a directory and an oversized file at once, without blocking") {
  TempDir dir;
  const fs::path fifo = dir.path / "fifo.yaml";
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);  // no writer: a blocking open or read never returns
  const fs::path big = dir.path / "big.yaml";
  writeFile(big, std::string(4096, 'x'));
  Fixture f;
  f.watch((dir.path / "cutover.yaml").string());
  struct Case {
    fs::path path;
    size_t max_bytes;
    int want;
  };
  for (const Case& c : {Case{fifo, 1024, UV_EFTYPE}, Case{dir.path, 1024, UV_EFTYPE},
                        Case{big, 1024, UV_EFBIG}, Case{big, 8192, 0}}) {
    CAPTURE(c.path.string());
    ConfigWatcher::Options options;
    options.max_bytes = c.max_bytes;
    ConfigWatcher w(&f.loop, c.path.string(), {}, {}, options);
    bool called = false;
    int err = 1;
    w.readNow([&](int e, std::string) {
      called = true;
      err = e;
    });
    for (int i = 0; i < 1000 && !called; ++i) uv_run(&f.loop, UV_RUN_ONCE);
    REQUIRE(called);
    CHECK(err == c.want);
    bool closed = false;
    w.close([&] { closed = true; });
    for (int i = 0; i < 100 && !closed; ++i) uv_run(&f.loop, UV_RUN_ONCE);
    CHECK(closed);
  }
}

TEST_CASE("close with a read in flight cancels it and completes after it") {
  TempDir dir;
  const fs::path file = dir.path / "cutover.yaml";
  writeFile(file, "x\n");
  uv_loop_t loop;
  uv_loop_init(&loop);
  auto watcher = std::make_unique<ConfigWatcher>(&loop, file.string(), nullptr, nullptr);
  REQUIRE(watcher->start() == 0);
  int err = 0;
  bool closed = false;
  watcher->readNow([&](int e, std::string) { err = e; });
  watcher->close([&] {
    closed = true;
    watcher.reset();
  });
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(closed);
  CHECK(err == UV_ECANCELED);
  CHECK(uv_loop_close(&loop) == 0);
}
