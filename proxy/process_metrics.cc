#include "proxy/process_metrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace cutover {

namespace {

prometheus::MetricFamily family(const char* name, const char* help, prometheus::MetricType type,
                                double value) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(m);
  return f;
}

// Whole small procfs file; empty on error.
std::string readProc(const char* path) {
  std::string out;
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

// Seconds since the epoch at boot, from /proc/stat's btime.
double bootTime() {
  std::string stat = readProc("/proc/stat");
  size_t p = stat.find("\nbtime ");
  if (p == std::string::npos) return -1;
  return std::strtod(stat.c_str() + p + 7, nullptr);
}

}  // namespace

std::vector<prometheus::MetricFamily> collectProcessMetrics() {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));

  // /proc/self/stat: fields after the parenthesised command name (which may hold spaces).
  std::string stat = readProc("/proc/self/stat");
  size_t close_paren = stat.rfind(')');
  if (close_paren != std::string::npos && ticks > 0) {
    // Field 3 (state) is the first after ") "; utime 14, stime 15, starttime 22, vsize 23, rss 24.
    double field[25] = {};
    const char* p = stat.c_str() + close_paren + 2;
    for (int i = 3; i <= 24; ++i) {
      if (i > 3) field[i] = std::strtod(p, nullptr);
      const char* sp = std::strchr(p, ' ');
      if (sp == nullptr) break;
      p = sp + 1;
    }
    out.push_back(family("process_cpu_seconds_total",
                         "Total user and system CPU time spent in "
                         "seconds.",
                         MetricType::Counter, (field[14] + field[15]) / ticks));
    const double boot = bootTime();
    if (boot > 0) {
      out.push_back(family("process_start_time_seconds",
                           "Start time of the process since unix epoch in seconds.",
                           MetricType::Gauge, boot + field[22] / ticks));
    }
    out.push_back(family("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                         MetricType::Gauge, field[23]));
    out.push_back(family("process_resident_memory_bytes", "Resident memory size in bytes.",
                         MetricType::Gauge, field[24] * page));
  }

  if (DIR* d = ::opendir("/proc/self/fd")) {
    double n = 0;
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
    out.push_back(family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge,
                         n - 1));  // minus the directory's own descriptor
  }
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    out.push_back(family("process_max_fds", "Maximum number of open file descriptors.",
                         MetricType::Gauge, static_cast<double>(rl.rlim_cur)));
  }
  return out;
}

}  // namespace cutover
