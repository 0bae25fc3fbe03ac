// Path normalisation: tables of targets and what the router and the backend then see.
#include "common/path_normalize.h"

#include <doctest/doctest.h>

#include <chrono>
#include <random>
#include <string>

using namespace cutover;

namespace {

using EscapedSlashes = PathOptions::EscapedSlashes;

struct Case {
  const char* in;
  const char* out;  // nullptr = rejected
};

// Runs every case; a case whose output equals its input must report Unchanged.
void runTable(const PathOptions& options, std::initializer_list<Case> cases) {
  for (const Case& c : cases) {
    std::string target = c.in;
    PathStatus st = normalizePath(target, options);
    CAPTURE(c.in);
    if (c.out == nullptr) {
      CHECK(st == PathStatus::Invalid);
      CHECK(target == c.in);  // left as received, for the access log
      continue;
    }
    CHECK(target == c.out);
    CHECK(st == (std::string(c.in) == c.out ? PathStatus::Unchanged : PathStatus::Rewritten));
  }
}

}  // namespace

TEST_CASE("already-normal targets are unchanged") {
  runTable(PathOptions{}, {
                              {"/", "/"},
                              {"/api/limited", "/api/limited"},
                              {"/api/limited/", "/api/limited/"},
                              {"/a%20b/%3B%2C", "/a%20b/%3B%2C"},
                              {"/a.b/..c/c../.../x.", "/a.b/..c/c../.../x."},
                              {"/API/Limited", "/API/Limited"},
                              {"/q?x=%zz&y=//./..", "/q?x=%zz&y=//./.."},
                              {"*", "*"},
                              {"", ""},
                          });
}

TEST_CASE("unreserved escapes are decoded and other escapes upper-cased") {
  runTable(PathOptions{}, {
                              {"/api/fetch-kibana-dat%61", "/api/fetch-kibana-data"},
                              {"/%61%70%69/limited", "/api/limited"},
                              {"/a%2d%2E%5f%7e%30", "/a-._~0"},
                              {"/a%41%5A%7A", "/aAZz"},
                              {"/a%3b%2c%c3%a9", "/a%3B%2C%C3%A9"},
                              {"/a%25%32%46", "/a%252F"},  // "%25" stays: no double decoding
                              {"/a%2526", "/a%2526"},
                          });
}

TEST_CASE("dot-segments are removed and never climb above the root") {
  runTable(PathOptions{}, {
                              {"/./api/limited", "/api/limited"},
                              {"/x/../api/limited", "/api/limited"},
                              {"/a/b/../../api/limited", "/api/limited"},
                              {"/../api/limited", "/api/limited"},
                              {"/../../..", "/"},
                              {"/..", "/"},
                              {"/.", "/"},
                              {"/a/.", "/a/"},
                              {"/a/b/..", "/a/"},
                              {"/a/./b/../c", "/a/c"},
                              {"/a/%2e/b", "/a/b"},
                              {"/a/%2E%2e/b", "/b"},
                              {"/a/.%2e/b?q=/../x", "/b?q=/../x"},
                          });
}

TEST_CASE("repeated slashes are merged, a trailing slash stays") {
  runTable(PathOptions{}, {
                              {"//api/limited", "/api/limited"},
                              {"/api//limited", "/api/limited"},
                              {"///api///limited//", "/api/limited/"},
                              {"//", "/"},
                              {"/a//../b", "/b"},
                              {"/a/.//./b", "/a/b"},
                          });
}

TEST_CASE("malformed escapes and encoded NUL are rejected") {
  runTable(PathOptions{}, {
                              {"/api/%zz", nullptr},
                              {"/api/%4", nullptr},
                              {"/api/%", nullptr},
                              {"/api/%g1", nullptr},
                              {"/api/%00", nullptr},
                              {"/api/%4?x", nullptr},
                              {"//x/%0", nullptr},  // checked even when other work is found
                          });
  PathOptions keep;
  keep.escaped_slashes = EscapedSlashes::Keep;
  keep.normalize_path = false;
  keep.merge_slashes = false;
  runTable(keep, {{"/api/%00", nullptr}, {"/api/%zz", nullptr}, {"/a//./b", "/a//./b"}});
}

TEST_CASE("encoded slash and backslash: rejected by default, kept or decoded when configured") {
  runTable(PathOptions{}, {
                              {"/api%2Flimited", nullptr},
                              {"/api%2flimited", nullptr},
                              {"/api%5Climited", nullptr},
                              {"/api%5climited", nullptr},
                          });
  PathOptions keep;
  keep.escaped_slashes = EscapedSlashes::Keep;
  runTable(keep, {
                     {"/api%2Flimited", "/api%2Flimited"},
                     {"/api%2flimited", "/api%2Flimited"},
                     {"/a/..%2F..%2Fb", "/a/..%2F..%2Fb"},  // not a separator, so no dot-segment
                     {"/x%5c", "/x%5C"},
                 });
  PathOptions decode;
  decode.escaped_slashes = EscapedSlashes::Decode;
  runTable(decode, {
                       {"/api%2Flimited", "/api/limited"},
                       {"/api%2F%2Flimited", "/api/limited"},
                       {"/a/b%2F..%2F..%2Fc", "/c"},
                       {"/x%5Cy", "/x\\y"},
                   });
}

TEST_CASE("each step can be turned off on its own") {
  PathOptions no_normalize;
  no_normalize.normalize_path = false;
  runTable(no_normalize, {
                             {"/a/./b/../c", "/a/./b/../c"},
                             {"/dat%61%3b", "/dat%61%3b"},
                             {"//a//b", "/a/b"},
                         });
  PathOptions no_merge;
  no_merge.merge_slashes = false;
  runTable(no_merge, {
                         {"//a//b", "//a//b"},
                         {"/a//../b", "/a/b"},
                         {"/a/./b", "/a/b"},
                     });
}

TEST_CASE("normalising a normalised target changes nothing, for random targets") {
  std::mt19937 rng(12345);
  const char alphabet[] = {'/', '/', '/', '.', '.', '.', 'a', 'B', '%', '2', 'e',
                           'E', 'f', 'F', '5', 'c', '6', '1', '0', '?', 'z'};
  for (EscapedSlashes action :
       {EscapedSlashes::Reject, EscapedSlashes::Keep, EscapedSlashes::Decode}) {
    for (int merge = 0; merge < 2; ++merge) {
      PathOptions options;
      options.escaped_slashes = action;
      options.merge_slashes = merge == 1;
      for (int i = 0; i < 20000; ++i) {
        std::string target = "/";
        size_t len = rng() % 16;
        for (size_t j = 0; j < len; ++j) target += alphabet[rng() % sizeof(alphabet)];
        std::string once = target;
        if (normalizePath(once, options) == PathStatus::Invalid) continue;
        std::string twice = once;
        CAPTURE(target);
        CHECK(normalizePath(twice, options) == PathStatus::Unchanged);
        CHECK(twice == once);
        CHECK(once.size() <= target.size());
        CHECK(once.substr(once.find('?') == std::string::npos ? once.size() : once.find('?')) ==
              target.substr(target.find('?') == std::string::npos ? target.size()
                                                                  : target.find('?')));
      }
    }
  }
}

// Not a test: prints the cost of one call for a normal target and for one that is rewritten.
// Run with: path_normalize_test -tc='*call cost*' --no-skip
TEST_CASE("call cost of normalizePath" * doctest::skip()) {
  for (const char* input :
       {"/api/fetch-kibana-data?from=now-15m&to=now", "/./api//fetch-kibana-dat%61?from=now-15m"}) {
    std::string target;
    target.reserve(64);
    const int rounds = 1000000;
    size_t sink = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < rounds; ++i) {
      target.assign(input);  // within the reserved capacity: no allocation
      sink += static_cast<size_t>(normalizePath(target, PathOptions{})) + target.size();
    }
    double ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() /
        rounds;
    std::string line = std::string(input) + ": " + std::to_string(ns) +
                       " ns/call including the copy (" + std::to_string(sink % 7) + ")";
    MESSAGE(line);
  }
}
