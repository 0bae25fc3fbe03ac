// The `fleet:` section: defaults, every key, and file:line:col errors naming the key.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "config/loader.h"

using namespace cutover::config;

namespace {

const std::string kBase =
    "listeners:\n"
    "  - name: public\n"
    "    address: 127.0.0.1:8080\n"
    "backends:\n"
    "  legacy: { endpoints: [\"127.0.0.1:9001\"] }\n"
    "  new: { endpoints: [\"127.0.0.1:9002\"] }\n"
    "routes:\n"
    "  - name: default\n"
    "    match: { prefix: / }\n"
    "    split: { new: 10, legacy: 90 }\n";  // the fleet section starts on line 11

std::vector<std::string> errorsOf(const std::string& yaml) {
  LoadResult result = loadString(yaml, "cutover.yaml");
  std::vector<std::string> out;
  for (const Error& error : result.errors) out.push_back(error.str());
  return out;
}

}  // namespace

TEST_CASE("no fleet section: fleet mode is off") {
  LoadResult r = loadString(kBase, "cutover.yaml");
  REQUIRE(r.ok());
  CHECK_FALSE(r.config->fleet.enabled);
  CHECK(dumpYaml(*r.config).find("fleet") == std::string::npos);
}

TEST_CASE("fleet section: defaults, every key, and a dump that loads back the same") {
  ::setenv("CUTOVER_TEST_REDIS_PASSWORD", "pw", 1);
  LoadResult r = loadString(kBase +
                                "fleet:\n"
                                "  redis: redis.default.svc:6380\n"
                                "  password_env: CUTOVER_TEST_REDIS_PASSWORD\n"
                                "  key_prefix: \"cutover:dashboard:\"\n"
                                "  timeout: 50ms\n"
                                "  replica_id: pod-1\n",
                            "cutover.yaml");
  for (const Error& e : r.errors) INFO(e.str());
  REQUIRE(r.ok());
  const Fleet& f = r.config->fleet;
  CHECK(f.enabled);
  CHECK(f.host == "redis.default.svc");
  CHECK(f.port == 6380);
  CHECK(f.password == "pw");
  CHECK(f.key_prefix == "cutover:dashboard:");
  CHECK(f.timeout == std::chrono::milliseconds(50));
  CHECK(f.replica_id == "pod-1");
  const std::string dumped = dumpYaml(*r.config);
  CHECK(dumped.find("pw\n") == std::string::npos);  // the secret is never dumped
  LoadResult again = loadString(dumped, "dump.yaml");
  REQUIRE(again.ok());
  CHECK(dumpYaml(*again.config) == dumped);

  LoadResult d = loadString(kBase + "fleet: { redis: \"[::1]:6379\" }\n", "cutover.yaml");
  REQUIRE(d.ok());
  CHECK(d.config->fleet.host == "::1");
  CHECK(d.config->fleet.password.empty());
  CHECK(d.config->fleet.key_prefix == "cutover:");
  CHECK(d.config->fleet.timeout == std::chrono::milliseconds(20));
  CHECK(d.config->fleet.replica_id.empty());
  ::unsetenv("CUTOVER_TEST_REDIS_PASSWORD");
}

TEST_CASE("fleet section errors name file, line, column and key") {
  ::unsetenv("CUTOVER_TEST_REDIS_UNSET");
  CHECK(errorsOf(kBase + "fleet:\n  password_env: X\n") ==
        std::vector<std::string>{
            "cutover.yaml:12:3: fleet: missing required key 'redis'",
            "cutover.yaml:12:17: fleet.password_env: environment variable X is not set or empty"});
  CHECK(errorsOf(kBase + "fleet:\n  redis: 127.0.0.1\n") ==
        std::vector<std::string>{"cutover.yaml:12:10: fleet.redis: expected host:port (e.g. "
                                 "127.0.0.1:6379 or redis:6379), got '127.0.0.1'"});
  CHECK(errorsOf(kBase + "fleet:\n  redis: a:6379\n  password_env: CUTOVER_TEST_REDIS_UNSET\n") ==
        std::vector<std::string>{"cutover.yaml:13:17: fleet.password_env: environment variable "
                                 "CUTOVER_TEST_REDIS_UNSET is not set or empty"});
  CHECK(errorsOf(kBase + "fleet:\n  redis: a:6379\n  timeout: 0ms\n").size() == 1);
  CHECK(errorsOf(kBase + "fleet:\n  redis: a:6379\n  key_prefix: \"a b\"\n") ==
        std::vector<std::string>{"cutover.yaml:13:15: fleet.key_prefix: expected 1..200 "
                                 "printable characters without spaces, got 'a b'"});
  CHECK(errorsOf(kBase + "fleet:\n  redis: a:6379\n  replica_id: \"a/b\"\n") ==
        std::vector<std::string>{"cutover.yaml:13:15: fleet.replica_id: must be 1..64 letters, "
                                 "digits, '_', '-' or '.', got 'a/b'"});
  CHECK(errorsOf(kBase + "fleet:\n  redis: a:6379\n  pasword_env: X\n") ==
        std::vector<std::string>{"cutover.yaml:13:3: fleet: unknown key 'pasword_env' (did you "
                                 "mean 'password_env'?)"});
}
