// The standard process_* metrics (as the Prometheus client libraries name them), read from
// /proc/self when /metrics is scraped: process_start_time_seconds, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_cpu_seconds_total, process_open_fds, process_max_fds.
//
// Runs on the main thread's loop, inside the admin listener's /metrics handler. Reading procfs is
// a few small reads of kernel-generated text (no disk behind them, microseconds), acceptable once
// per scrape; the request path never calls it. A value that cannot be read is left out.
#pragma once

#include <prometheus/metric_family.h>

#include <vector>

namespace cutover {

std::vector<prometheus::MetricFamily> collectProcessMetrics();

}  // namespace cutover
