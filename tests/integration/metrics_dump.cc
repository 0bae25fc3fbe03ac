// Prints Metrics::serialize() for a config file (with a few requests recorded), so CTest can pipe
// the exposition through `promtool check metrics`.
#include <cstdio>

#include "config/loader.h"
#include "proxy/metrics.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: metrics_dump CONFIG\n");
    return 2;
  }
  cutover::config::LoadResult r = cutover::config::loadFile(argv[1]);
  if (!r.ok()) {
    for (const auto& e : r.errors) std::fprintf(stderr, "%s\n", e.str().c_str());
    return 1;
  }
  cutover::Metrics metrics("0.1.0");
  auto snap = metrics.forConfig(*r.config);
  metrics.setWeights(*r.config, *r.config, false);
  metrics.setConfigInfo(*r.config, 1);
  metrics.onReloadResult(true);
  cutover::StreamInfo info;
  info.route = 0;
  info.backend = 0;
  info.status = 200;
  info.start_ns = 1;
  info.end_ns = 12'000'000;
  snap->recordRequest(info);
  info.status = 503;
  info.reason = cutover::Reason::CircuitOpen;
  snap->recordRequest(info);
  std::fputs(metrics.serialize().c_str(), stdout);
  return 0;
}
