#include "filters/request_id.h"

#include <doctest/doctest.h>

#include <set>
#include <string>

#include "tests/unit/filters/fake_callbacks.h"

using namespace cutover;
using cutover::testing::FakeCallbacks;

namespace {

bool isHex32(std::string_view s) {
  if (s.size() != 32) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("a missing x-request-id is generated and echoed on the response") {
  config::Route route;
  RequestIdFactory factory;
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) {
    FakeCallbacks cb(route);
    testing::BuiltFilter f(factory);
    REQUIRE(f->onRequest(cb) == FilterStatus::Continue);
    const std::string id(cb.request().headers.get("x-request-id"));
    REQUIRE(isHex32(id));
    REQUIRE(cb.responseHeader("x-request-id") == id);
    ids.insert(id);
  }
  CHECK(ids.size() == 1000);
}

TEST_CASE("a valid client id is kept") {
  config::Route route;
  FakeCallbacks cb(route);
  cb.request().headers.add("X-Request-Id", "abc-123 from client");
  RequestIdFilter f;
  CHECK(f.onRequest(cb) == FilterStatus::Continue);
  CHECK(cb.request().headers.get("x-request-id") == "abc-123 from client");
  CHECK(cb.request().headers.count("x-request-id") == 1);
  CHECK(cb.responseHeader("x-request-id") == "abc-123 from client");
}

TEST_CASE("duplicates collapse to the first valid id") {
  config::Route route;
  FakeCallbacks cb(route);
  cb.request().headers.add("x-request-id", "first");
  cb.request().headers.add("x-request-id", "second");
  RequestIdFilter f;
  f.onRequest(cb);
  CHECK(cb.request().headers.count("x-request-id") == 1);
  CHECK(cb.request().headers.get("x-request-id") == "first");
  CHECK(cb.responseHeader("x-request-id") == "first");
}

TEST_CASE("too long or unprintable ids are replaced") {
  config::Route route;
  for (const std::string& bad : {std::string(201, 'a'), std::string("tab\there"),
                                 std::string("caf\xc3\xa9"), std::string()}) {
    FakeCallbacks cb(route);
    cb.request().headers.add("x-request-id", bad);
    RequestIdFilter f;
    f.onRequest(cb);
    const std::string id(cb.request().headers.get("x-request-id"));
    CHECK(isHex32(id));
    CHECK(cb.request().headers.count("x-request-id") == 1);
    CHECK(cb.responseHeader("x-request-id") == id);
  }
  CHECK(validRequestId(std::string(200, 'a')));
  CHECK_FALSE(validRequestId(std::string(201, 'a')));
}
