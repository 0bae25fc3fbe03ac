// Helpers for reading a yaml-cpp tree while collecting every error (internal to config/).
//
// The loader never stops at the first problem: each reader checks one node, reports what is wrong
// with file:line:col and the key path, and leaves the output untouched so loading can go on.
// Nothing here throws: yaml-cpp calls that can throw (operator[] on absent keys, as<T>) are avoided
// in favour of iteration, Type() and Scalar().
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "config/loader.h"

namespace cutover::config::detail {

// Collects errors for one file.
class Errors {
 public:
  explicit Errors(std::string file) : file_(std::move(file)) {}

  void add(const YAML::Mark& mark, const std::string& path, std::string message);
  void add(const YAML::Node& at, const std::string& path, std::string message);
  size_t count() const { return errors_.size(); }
  // Sorted by position, for a readable --check listing.
  std::vector<Error> take();

 private:
  std::string file_;
  std::vector<Error> errors_;
};

// "routes" + "name" -> "routes.name"; "" + "name" -> "name".
std::string joinPath(const std::string& path, const std::string& key);
// "routes" + 1 -> "routes[1]".
std::string indexPath(const std::string& path, size_t index);
std::string lowerCase(std::string text);
// "'text'", for messages.
std::string quoted(const std::string& text);
// "a, b, c".
std::string joinNames(const std::vector<std::string>& names);
// A request path: starts with '/', printable ASCII without spaces.
bool isPath(const std::string& text);
// Largest exact unit: 1500ms -> "1500ms", 60000ms -> "1m"; parseDuration reads it back.
std::string formatDuration(Duration duration);
// Shortest decimal text that reads back as the same double ("0.2", not "0.20000000000000001").
std::string formatDouble(double value);
// "a map", "a sequence", "null" or "'text'" – for "expected X, got Y" messages.
std::string describe(const YAML::Node& node);
// RFC 9110 token characters (header and cookie names).
bool isToken(const std::string& text);
// Names used as metric labels and header values: [A-Za-z0-9_.-]+.
bool isName(const std::string& text);

// Scalar readers: on bad input report at `node` under `path` and return false leaving `out`.
bool readInt(Errors& errors, const YAML::Node& node, const std::string& path, int64_t min,
             int64_t max, int64_t& out);
bool readUint32(Errors& errors, const YAML::Node& node, const std::string& path, uint32_t min,
                uint32_t max, uint32_t& out);
// Byte sizes: a plain integer or one with a KiB/MiB/GiB suffix.
bool readSize(Errors& errors, const YAML::Node& node, const std::string& path, uint32_t min,
              uint32_t max, uint32_t& out);
bool readSize(Errors& errors, const YAML::Node& node, const std::string& path, uint64_t min,
              uint64_t max, uint64_t& out);
bool readDouble(Errors& errors, const YAML::Node& node, const std::string& path, double min,
                double max, double& out);
bool readBool(Errors& errors, const YAML::Node& node, const std::string& path, bool& out);
bool readString(Errors& errors, const YAML::Node& node, const std::string& path, std::string& out);
bool readDuration(Errors& errors, const YAML::Node& node, const std::string& path, Duration min,
                  Duration max, Duration& out);
bool readAddress(Errors& errors, const YAML::Node& node, const std::string& path,
                 SocketAddress& out);

// One YAML map being read. Construction checks the node is a map (null counts as empty when
// `null_is_empty`), reports unknown and duplicate keys, and indexes the known ones.
class MapReader {
 public:
  MapReader(Errors& errors, const YAML::Node& node, std::string path,
            std::vector<std::string> known, bool null_is_empty = false);

  bool ok() const { return ok_; }
  bool has(const std::string& key) const { return find(key) != nullptr; }
  // The value node; only call when has(key).
  const YAML::Node& value(const std::string& key) const { return find(key)->value; }
  const YAML::Node& node() const { return node_; }
  const std::string& path() const { return path_; }
  std::string path(const std::string& key) const { return joinPath(path_, key); }
  Errors& errors() const { return errors_; }
  // Reports "missing required key" and returns false when absent.
  bool require(const std::string& key) const;

  // Typed getters: false when absent or invalid (errors reported), `out` untouched then.
  bool getUint32(const std::string& key, uint32_t min, uint32_t max, uint32_t& out) const;
  bool getSize(const std::string& key, uint32_t min, uint32_t max, uint32_t& out) const;
  bool getSize(const std::string& key, uint64_t min, uint64_t max, uint64_t& out) const;
  bool getDouble(const std::string& key, double min, double max, double& out) const;
  bool getBool(const std::string& key, bool& out) const;
  bool getString(const std::string& key, std::string& out) const;
  bool getDuration(const std::string& key, Duration min, Duration max, Duration& out) const;
  bool getAddress(const std::string& key, SocketAddress& out) const;
  // A TLS version, "1.2" or "1.3", as 12 or 13.
  bool getTlsVersion(const std::string& key, int& out) const;

 private:
  struct Entry {
    std::string key;
    YAML::Node key_node;
    YAML::Node value;
  };
  const Entry* find(const std::string& key) const;

  Errors& errors_;
  YAML::Node node_;
  std::string path_;
  std::vector<Entry> entries_;
  bool ok_ = false;
};

}  // namespace cutover::config::detail
