// DnsResolver on a real loop (the name "localhost" comes from /etc/hosts: no network), the merge of
// resolved sets into the data-plane config, and the lifetime rules: a name removed or the resolver
// closed while a lookup is in flight (run under ASan by tools/test.sh).
#include "proxy/dns_resolver.h"

#include <doctest/doctest.h>
#include <prometheus/registry.h>

#include <map>
#include <string>
#include <thread>

#include "config/loader.h"

using namespace cutover;

namespace {

config::DnsName dnsName(const std::string& host, uint16_t port) {
  config::DnsName n;
  n.host = host;
  n.port = port;
  n.text = host + ":" + std::to_string(port);
  return n;
}

config::SocketAddress numeric(const std::string& text) {
  config::SocketAddress a;
  REQUIRE(config::parseSocketAddress(text, a));
  return a;
}

std::shared_ptr<config::Config> configWith(std::vector<config::DnsName> names) {
  auto cfg = std::make_shared<config::Config>();
  config::Backend be;
  be.name = "app";
  be.dns = std::move(names);
  cfg->backends.push_back(be);
  return cfg;
}

double sample(prometheus::Registry& registry, const std::string& family,
              const std::map<std::string, std::string>& labels) {
  for (const auto& f : registry.Collect()) {
    if (f.name != family) continue;
    for (const auto& m : f.metric) {
      std::map<std::string, std::string> got;
      for (const auto& l : m.label) got[l.name] = l.value;
      if (got != labels) continue;
      return f.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
    }
  }
  return -1;
}

struct Loop {
  uv_loop_t loop{};
  Loop() { uv_loop_init(&loop); }
  ~Loop() { CHECK(uv_loop_close(&loop) == 0); }  // every handle and request was freed
  // Runs until `done` or 10 s; true when done.
  template <typename F>
  bool runUntil(F done) {
    for (int i = 0; i < 1000 && !done(); ++i) {
      uv_run(&loop, UV_RUN_NOWAIT);
      if (!done()) uv_sleep(10);
    }
    return done();
  }
};

}  // namespace

TEST_CASE("socketAddressFrom writes what parseSocketAddress writes") {
  for (const char* text : {"127.0.0.2:8080", "[::1]:9001", "[2001:db8::1]:443"}) {
    INFO(text);
    config::SocketAddress parsed = numeric(text);
    config::SocketAddress made;
    uint16_t port = static_cast<uint16_t>(
        std::stoi(std::string(text).substr(std::string(text).rfind(':') + 1)));
    REQUIRE(socketAddressFrom(reinterpret_cast<const sockaddr*>(&parsed.addr), port, made));
    CHECK(made.text == parsed.text);
    CHECK(made.len == parsed.len);
  }
}

TEST_CASE("withResolvedEndpoints appends each name's set after the numeric endpoints, once") {
  auto file = configWith(
      {dnsName("a.example", 80), dnsName("b.example", 80), dnsName("pending.example", 80)});
  file->backends[0].endpoints.push_back(numeric("10.0.0.1:80"));
  DnsResolver::Resolved resolved;
  resolved["a.example:80"] = {numeric("10.0.0.1:80"), numeric("10.0.0.2:80")};  // .1 is numeric
  resolved["b.example:80"] = {numeric("10.0.0.2:80"), numeric("10.0.0.3:80")};  // .2 from a
  auto cfg = withResolvedEndpoints(file, resolved);
  const config::Backend& be = cfg->backends[0];
  REQUIRE(be.endpoints.size() == 3);
  CHECK(be.endpoints[0].text == "10.0.0.1:80");
  CHECK(be.endpoints[1].text == "10.0.0.2:80");
  CHECK(be.endpoints[2].text == "10.0.0.3:80");
  CHECK(be.endpoint_dns == std::vector<int32_t>{-1, 0, 1});
  CHECK(file->backends[0].endpoints.size() == 1);  // the file config is untouched
  // /config shows the names as written, not the addresses they resolved to.
  std::string dump = config::dumpYaml(*cfg);
  INFO(dump);
  CHECK(dump.find("endpoints: [10.0.0.1:80, a.example:80, b.example:80, pending.example:80]") !=
        std::string::npos);

  auto plain = std::make_shared<config::Config>();
  plain->backends.emplace_back();
  plain->backends[0].endpoints.push_back(numeric("10.0.0.1:80"));
  CHECK(withResolvedEndpoints(plain, resolved) == plain);  // no names: the same config
}

TEST_CASE("a name is resolved on the thread pool, counted, and its set reported once") {
  Loop l;
  prometheus::Registry registry;
  int changes = 0;
  DnsResolver dns(&l.loop, registry, [&] { ++changes; });
  auto cfg = configWith({dnsName("localhost", 8080)});
  dns.track(*cfg);
  CHECK_FALSE(dns.settled());  // nothing answered yet: /ready says 503
  CHECK(dns.resolved().empty());
  REQUIRE(l.runUntil([&] { return dns.settled(); }));
  CHECK(changes == 1);
  REQUIRE(dns.resolved().count("localhost:8080") == 1);
  const auto& set = dns.resolved().at("localhost:8080");
  REQUIRE_FALSE(set.empty());
  bool v4 = false;
  for (const auto& a : set) v4 = v4 || a.text == "127.0.0.1:8080";
  CHECK(v4);
  std::map<std::string, std::string> labels{{"backend", "app"}, {"name", "localhost:8080"}};
  CHECK(sample(registry, "cutover_dns_endpoints", labels) == static_cast<double>(set.size()));
  labels["result"] = "success";
  CHECK(sample(registry, "cutover_dns_resolutions_total", labels) == 1);

  // A reload with the same name: no new lookup, no change.
  dns.track(*cfg);
  uv_run(&l.loop, UV_RUN_NOWAIT);
  CHECK(sample(registry, "cutover_dns_resolutions_total", labels) == 1);
  CHECK(changes == 1);

  std::string json;
  dns.appendJson(json);
  CHECK(json.find("\"name\":\"localhost:8080\",\"backends\":[\"app\"],\"addresses\":[") == 2);

  // Removed by a reload: its set and gauges go, its counters stay.
  dns.track(config::Config{});
  CHECK(dns.resolved().empty());
  CHECK(dns.settled());
  labels.erase("result");
  CHECK(sample(registry, "cutover_dns_endpoints", labels) == -1);
  dns.close();
  uv_run(&l.loop, UV_RUN_DEFAULT);
}

TEST_CASE("a name removed while its lookup is in flight: the callback only frees it") {
  Loop l;
  prometheus::Registry registry;
  int changes = 0;
  DnsResolver dns(&l.loop, registry, [&] { ++changes; });
  dns.track(*configWith({dnsName("localhost", 80)}));
  dns.track(config::Config{});  // before the loop ran the lookup's callback
  dns.close();
  uv_run(&l.loop, UV_RUN_DEFAULT);  // returns once the lookup's callback and the closes ran
  CHECK(changes == 0);
  CHECK(dns.resolved().empty());
}

TEST_CASE("closing the resolver with lookups in flight, then nudging, is safe") {
  Loop l;
  prometheus::Registry registry;
  int changes = 0;
  auto dns = std::make_unique<DnsResolver>(&l.loop, registry, [&] { ++changes; });
  auto cfg = configWith({dnsName("localhost", 80), dnsName("localhost", 81)});
  dns->track(*cfg);
  auto nudge = dns->nudge();
  dns->close();
  dns->close();  // idempotent
  uv_run(&l.loop, UV_RUN_DEFAULT);
  dns.reset();
  CHECK(changes == 0);
  // A snapshot may outlive the resolver: a worker's nudge after close does nothing.
  auto data = withResolvedEndpoints(cfg, {{"localhost:80", {numeric("127.0.0.1:80")}}});
  nudge->connectFailed(*data, 0, 0);
  nudge->connectFailed(*data, 0, 7);  // out of range: ignored
}

TEST_CASE("a connect error to a resolved address looks its name up again early") {
  Loop l;
  prometheus::Registry registry;
  DnsResolver dns(&l.loop, registry, [] {});
  auto cfg = configWith({dnsName("localhost", 80)});
  cfg->backends[0].dns_refresh = std::chrono::hours(1);
  dns.track(*cfg);
  REQUIRE(l.runUntil([&] { return dns.settled(); }));
  std::map<std::string, std::string> labels{
      {"backend", "app"}, {"name", "localhost:80"}, {"result", "success"}};
  CHECK(sample(registry, "cutover_dns_resolutions_total", labels) == 1);
  auto data = withResolvedEndpoints(cfg, dns.resolved());
  REQUIRE_FALSE(data->backends[0].endpoints.empty());
  // From another thread, as a worker would; rate-limited to one early lookup per second.
  std::thread worker([&] { dns.nudge()->connectFailed(*data, 0, 0); });
  worker.join();
  CHECK(l.runUntil([&] { return sample(registry, "cutover_dns_resolutions_total", labels) == 2; }));
  dns.close();
  uv_run(&l.loop, UV_RUN_DEFAULT);
}
