#include "config/yaml_util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace cutover::config::detail {

namespace {

// Plain decimal integer with an optional leading '-'. `overflow` tells "too big" from "not a
// number" so the range message can be given instead of a type message.
bool parseInteger(const std::string& text, int64_t& out, bool& overflow) {
  overflow = false;
  size_t i = 0;
  bool negative = false;
  if (!text.empty() && text[0] == '-') {
    negative = true;
    i = 1;
  }
  if (i == text.size()) return false;
  uint64_t value = 0;
  const uint64_t limit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  for (; i < text.size(); ++i) {
    char c = text[i];
    if (c < '0' || c > '9') return false;
    uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (limit - digit) / 10) {
      overflow = true;
    } else {
      value = value * 10 + digit;
    }
  }
  if (overflow) return false;
  out = negative ? -static_cast<int64_t>(value) : static_cast<int64_t>(value);
  return true;
}

std::string formatSize(uint64_t bytes) {
  if (bytes != 0 && bytes % (1024 * 1024 * 1024) == 0) {
    return std::to_string(bytes / (1024 * 1024 * 1024)) + "GiB";
  }
  if (bytes != 0 && bytes % (1024 * 1024) == 0)
    return std::to_string(bytes / (1024 * 1024)) + "MiB";
  if (bytes != 0 && bytes % 1024 == 0) return std::to_string(bytes / 1024) + "KiB";
  return std::to_string(bytes);
}

size_t editDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// "db.internal:9001": looks like host:port with a name in it, as opposed to plain garbage.
bool looksLikeHostName(const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) return false;
  bool letter = false;
  for (size_t i = 0; i < colon; ++i) {
    char c = text[i];
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alpha && !(c >= '0' && c <= '9') && c != '.' && c != '-') return false;
    letter = letter || alpha;
  }
  for (size_t i = colon + 1; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
  }
  return letter;
}

bool isScalar(Errors& errors, const YAML::Node& node, const std::string& path,
              const char* expected) {
  if (node.IsScalar()) return true;
  errors.add(node, path, std::string("expected ") + expected + ", got " + describe(node));
  return false;
}

}  // namespace

void Errors::add(const YAML::Mark& mark, const std::string& path, std::string message) {
  Error error;
  error.file = file_;
  if (!mark.is_null()) {
    error.line = mark.line + 1;
    error.column = mark.column + 1;
  }
  error.path = path;
  error.message = std::move(message);
  errors_.push_back(std::move(error));
}

void Errors::add(const YAML::Node& at, const std::string& path, std::string message) {
  add(at.IsDefined() ? at.Mark() : YAML::Mark::null_mark(), path, std::move(message));
}

std::vector<Error> Errors::take() {
  std::stable_sort(errors_.begin(), errors_.end(), [](const Error& a, const Error& b) {
    return a.line != b.line ? a.line < b.line : a.column < b.column;
  });
  return std::move(errors_);
}

std::string joinPath(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string indexPath(const std::string& path, size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

std::string quoted(const std::string& text) { return "'" + text + "'"; }

std::string joinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

bool isPath(const std::string& text) {
  if (text.empty() || text[0] != '/') return false;
  return std::all_of(text.begin(), text.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

std::string lowerCase(std::string text) {
  for (char& c : text) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return text;
}

std::string formatDuration(Duration duration) {
  int64_t ms = duration.count();
  if (ms != 0 && ms % 3600000 == 0) return std::to_string(ms / 3600000) + "h";
  if (ms != 0 && ms % 60000 == 0) return std::to_string(ms / 60000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string formatDouble(double value) {
  char buffer[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

std::string describe(const YAML::Node& node) {
  if (!node.IsDefined()) return "nothing";
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return node.size() == 0 ? "an empty map" : "a map";
    case YAML::NodeType::Sequence:
      return node.size() == 0 ? "an empty sequence" : "a sequence";
    case YAML::NodeType::Scalar:
      return quoted(node.Scalar());
    default:
      return "nothing";
  }
}

bool isToken(const std::string& text) {
  if (text.empty()) return false;
  for (unsigned char c : text) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

bool isName(const std::string& text) {
  if (text.empty() || text.size() > 64) return false;
  for (char c : text) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

bool readInt(Errors& errors, const YAML::Node& node, const std::string& path, int64_t min,
             int64_t max, int64_t& out) {
  if (!isScalar(errors, node, path, "an integer")) return false;
  int64_t value = 0;
  bool overflow = false;
  if (!parseInteger(node.Scalar(), value, overflow) && !overflow) {
    errors.add(node, path, "expected an integer, got " + quoted(node.Scalar()));
    return false;
  }
  if (overflow || value < min || value > max) {
    errors.add(
        node, path,
        "must be " + std::to_string(min) + ".." + std::to_string(max) + ", got " + node.Scalar());
    return false;
  }
  out = value;
  return true;
}

bool readUint32(Errors& errors, const YAML::Node& node, const std::string& path, uint32_t min,
                uint32_t max, uint32_t& out) {
  int64_t value = 0;
  if (!readInt(errors, node, path, min, max, value)) return false;
  out = static_cast<uint32_t>(value);
  return true;
}

bool readSize(Errors& errors, const YAML::Node& node, const std::string& path, uint32_t min,
              uint32_t max, uint32_t& out) {
  uint64_t value = 0;
  if (!readSize(errors, node, path, uint64_t{min}, uint64_t{max}, value)) return false;
  out = static_cast<uint32_t>(value);
  return true;
}

bool readSize(Errors& errors, const YAML::Node& node, const std::string& path, uint64_t min,
              uint64_t max, uint64_t& out) {
  static const char* kExpected = "a size in bytes like 65536, 64KiB or 1MiB";
  if (!isScalar(errors, node, path, kExpected)) return false;
  std::string text = node.Scalar();
  uint64_t multiplier = 1;
  static const std::pair<const char*, uint64_t> kSuffixes[] = {
      {"KiB", 1024}, {"MiB", 1024 * 1024}, {"GiB", 1024 * 1024 * 1024}};
  for (const auto& [suffix, factor] : kSuffixes) {
    size_t length = std::char_traits<char>::length(suffix);
    if (text.size() > length && text.compare(text.size() - length, length, suffix) == 0) {
      multiplier = factor;
      text.resize(text.size() - length);
      break;
    }
  }
  int64_t value = 0;
  bool overflow = false;
  bool parsed = parseInteger(text, value, overflow);
  if ((!parsed && !overflow) || (parsed && value < 0)) {
    errors.add(node, path, std::string("expected ") + kExpected + ", got " + quoted(node.Scalar()));
    return false;
  }
  if (overflow || static_cast<uint64_t>(value) > max / multiplier ||
      static_cast<uint64_t>(value) * multiplier < min) {
    errors.add(node, path,
               "must be " + formatSize(min) + ".." + formatSize(max) + ", got " + node.Scalar());
    return false;
  }
  out = static_cast<uint64_t>(value) * multiplier;
  return true;
}

bool readDouble(Errors& errors, const YAML::Node& node, const std::string& path, double min,
                double max, double& out) {
  if (!isScalar(errors, node, path, "a number")) return false;
  const std::string& text = node.Scalar();
  char* end = nullptr;
  double value = text.empty() ? 0 : std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(value) ||
      text.find_first_of("xXnN") != std::string::npos) {
    errors.add(node, path, "expected a number, got " + quoted(text));
    return false;
  }
  if (value < min || value > max) {
    errors.add(node, path,
               "must be " + formatDouble(min) + ".." + formatDouble(max) + ", got " + text);
    return false;
  }
  out = value;
  return true;
}

bool readBool(Errors& errors, const YAML::Node& node, const std::string& path, bool& out) {
  if (!isScalar(errors, node, path, "true or false")) return false;
  std::string text = lowerCase(node.Scalar());
  if (text == "true") {
    out = true;
  } else if (text == "false") {
    out = false;
  } else {
    errors.add(node, path, "expected true or false, got " + quoted(node.Scalar()));
    return false;
  }
  return true;
}

bool readString(Errors& errors, const YAML::Node& node, const std::string& path, std::string& out) {
  if (!isScalar(errors, node, path, "a string")) return false;
  out = node.Scalar();
  return true;
}

bool readDuration(Errors& errors, const YAML::Node& node, const std::string& path, Duration min,
                  Duration max, Duration& out) {
  static const char* kExpected = "a duration like 250ms, 15s, 1m or 1h";
  if (!isScalar(errors, node, path, kExpected)) return false;
  Duration value{};
  if (!parseDuration(node.Scalar(), value)) {
    errors.add(node, path, std::string("expected ") + kExpected + ", got " + quoted(node.Scalar()));
    return false;
  }
  if (value < min || value > max) {
    errors.add(
        node, path,
        "must be " + formatDuration(min) + ".." + formatDuration(max) + ", got " + node.Scalar());
    return false;
  }
  out = value;
  return true;
}

bool readAddress(Errors& errors, const YAML::Node& node, const std::string& path,
                 SocketAddress& out) {
  static const char* kExpected = "a numeric address like 127.0.0.1:8080 or [::1]:8080";
  if (!isScalar(errors, node, path, kExpected)) return false;
  const std::string& text = node.Scalar();
  if (parseSocketAddress(text, out)) return true;
  size_t colon = text.rfind(':');
  std::string port = colon == std::string::npos ? "" : text.substr(colon + 1);
  if (!port.empty() && port.size() <= 10 &&
      std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
      std::stoull(port) > 65535) {
    errors.add(node, path, "port must be 0..65535, got " + port);
  } else if (looksLikeHostName(text)) {
    errors.add(node, path,
               quoted(text) +
                   " needs a DNS lookup, which would block: use a numeric IP address "
                   "(only 'localhost' is understood)");
  } else {
    errors.add(node, path, std::string("expected ") + kExpected + ", got " + quoted(text));
  }
  return false;
}

MapReader::MapReader(Errors& errors, const YAML::Node& node, std::string path,
                     std::vector<std::string> known, bool null_is_empty)
    : errors_(errors), node_(node), path_(std::move(path)) {
  if (null_is_empty && node.IsNull()) {
    ok_ = true;
    return;
  }
  if (!node.IsMap()) {
    errors_.add(node, path_, "expected a map, got " + describe(node));
    return;
  }
  ok_ = true;
  for (auto it = node.begin(); it != node.end(); ++it) {
    // Copies: the iterator's pair is a temporary, so references into it would dangle.
    YAML::Node key_node = it->first;
    if (!key_node.IsScalar()) {
      errors_.add(key_node, path_, "expected a string key, got " + describe(key_node));
      continue;
    }
    const std::string& key = key_node.Scalar();
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      std::string message = "unknown key " + quoted(key);
      for (const std::string& candidate : known) {
        if (key.size() > 2 && editDistance(key, candidate) <= 2) {
          message += " (did you mean " + quoted(candidate) + "?)";
          break;
        }
      }
      errors_.add(key_node, path_, std::move(message));
      continue;
    }
    if (find(key) != nullptr) {
      errors_.add(key_node, path_, "duplicate key " + quoted(key));
      continue;
    }
    entries_.push_back(Entry{key, key_node, it->second});
  }
}

const MapReader::Entry* MapReader::find(const std::string& key) const {
  for (const Entry& entry : entries_) {
    if (entry.key == key) return &entry;
  }
  return nullptr;
}

bool MapReader::require(const std::string& key) const {
  if (has(key)) return true;
  errors_.add(node_, path_, "missing required key " + quoted(key));
  return false;
}

bool MapReader::getUint32(const std::string& key, uint32_t min, uint32_t max, uint32_t& out) const {
  return has(key) && readUint32(errors_, value(key), path(key), min, max, out);
}

bool MapReader::getSize(const std::string& key, uint32_t min, uint32_t max, uint32_t& out) const {
  return has(key) && readSize(errors_, value(key), path(key), min, max, out);
}

bool MapReader::getSize(const std::string& key, uint64_t min, uint64_t max, uint64_t& out) const {
  return has(key) && readSize(errors_, value(key), path(key), min, max, out);
}

bool MapReader::getDouble(const std::string& key, double min, double max, double& out) const {
  return has(key) && readDouble(errors_, value(key), path(key), min, max, out);
}

bool MapReader::getBool(const std::string& key, bool& out) const {
  return has(key) && readBool(errors_, value(key), path(key), out);
}

bool MapReader::getString(const std::string& key, std::string& out) const {
  return has(key) && readString(errors_, value(key), path(key), out);
}

bool MapReader::getDuration(const std::string& key, Duration min, Duration max,
                            Duration& out) const {
  return has(key) && readDuration(errors_, value(key), path(key), min, max, out);
}

bool MapReader::getTlsVersion(const std::string& key, int& out) const {
  std::string v;
  if (!getString(key, v)) return false;
  if (v == "1.2" || v == "1.3") {
    out = v == "1.2" ? 12 : 13;
    return true;
  }
  errors_.add(value(key), path(key), "must be \"1.2\" or \"1.3\", got " + quoted(v));
  return false;
}

bool MapReader::getAddress(const std::string& key, SocketAddress& out) const {
  return has(key) && readAddress(errors_, value(key), path(key), out);
}

}  // namespace cutover::config::detail
