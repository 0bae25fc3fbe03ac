// Loading a config: YAML text → validated, immutable config::Config, or every error found.
//
// Errors carry file, line and column (from yaml-cpp marks, 1-based) and the key path, and print as
//   cutover.yaml:14:7: routes[1].split: weights must sum to 100, got 110
// Loading never stops at the first error: all of them are collected so `cutover --check` can list
// them at once. Nothing here touches the network; reading the file is the caller's business when it
// runs on an event loop (loadString), or a plain blocking read at startup/--check (loadFile).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"

namespace cutover::config {

struct Error {
  std::string file;
  int line = 0;      // 1-based; 0 when unknown (e.g. file unreadable)
  int column = 0;    // 1-based
  std::string path;  // key path, e.g. "routes[1].split"
  std::string message;
  std::string str() const;  // "file:line:col: path: message"
};

struct LoadResult {
  std::shared_ptr<const Config> config;  // null when errors is non-empty
  std::vector<Error> errors;
  bool ok() const { return errors.empty() && config != nullptr; }
};

// The largest config file read: a bigger one is refused with a clear error.
constexpr size_t kMaxConfigFileBytes = 16 * 1024 * 1024;
// The largest admin token file read.
constexpr size_t kMaxTokenFileBytes = 4096;

// Reads a whole regular file of at most `max_bytes` with blocking reads (startup, --check, or a
// thread-pool job). A FIFO, socket, device or directory is refused without waiting (opened with
// O_NONBLOCK, then fstat); so is a file larger than `max_bytes`. On failure `error` says why
// ("No such file or directory", "not a regular file (a FIFO)", "larger than 16 MiB").
bool readRegularFile(const std::string& path, size_t max_bytes, std::string& out,
                     std::string& error);

// Parses and validates `text`; `file` is used only for error messages and Config::file.
LoadResult loadString(const std::string& text, const std::string& file);
// Reads `path` with readRegularFile (at most kMaxConfigFileBytes), then loadString.
LoadResult loadFile(const std::string& path);

// Effective config rendered back as YAML (for the admin /config endpoint): every default made
// explicit, the filter chain in its configured order.
std::string dumpYaml(const Config& config);

// Parsers shared with the filters' own checks. Return false (and leave `out`) on bad input.
bool parseDuration(const std::string& text, Duration& out);  // "250ms", "15s", "1m", "1h"
bool parseRate(const std::string& text, uint32_t& count,
               Duration& per);  // "5/min", "10/s", "100/h"
bool parseSocketAddress(const std::string& text, SocketAddress& out);
// "host:port" with an RFC 1123 host name (labels of letters, digits and '-', optional trailing
// dot, last label not all digits) and a port 1..65535. Syntax only: nothing is resolved.
bool parseDnsName(const std::string& text, DnsName& out);
// 127.0.0.0/8 or ::1.
bool isLoopbackAddress(const SocketAddress& address);

}  // namespace cutover::config
