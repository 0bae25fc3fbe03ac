#include "common/http_message.h"

#include <cstring>

namespace cutover {

namespace {
inline char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }
}  // namespace

bool iequalsSameSize(const char* a, const char* b, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

void HeaderMap::add(std::string_view name, std::string_view value) {
  Entry e;
  e.name_off = static_cast<uint32_t>(storage_.size());
  e.name_len = static_cast<uint32_t>(name.size());
  storage_.append(name).append(": ", 2);
  e.value_off = static_cast<uint32_t>(storage_.size());
  e.value_len = static_cast<uint32_t>(value.size());
  storage_.append(value).append("\r\n", 2);
  entries_.push_back(e);
}

std::string_view HeaderMap::get(std::string_view name) const {
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (!removed(i) && iequals(this->name(i), name)) return value(i);
  }
  return {};
}

bool HeaderMap::has(std::string_view name) const {
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (!removed(i) && iequals(this->name(i), name)) return true;
  }
  return false;
}

size_t HeaderMap::count(std::string_view name) const {
  size_t n = 0;
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (!removed(i) && iequals(this->name(i), name)) ++n;
  }
  return n;
}

size_t HeaderMap::remove(std::string_view name) {
  // Entries are tombstoned (name_len = 0) rather than erased: storage offsets stay valid and
  // removal never moves memory. Header names are never empty, so 0 is free as a marker.
  size_t n = 0;
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (!removed(i) && iequals(this->name(i), name)) {
      entries_[i].name_len = 0;
      ++n;
    }
  }
  return n;
}

void HeaderMap::set(std::string_view name, std::string_view value) {
  remove(name);
  add(name, value);
}

void HeaderMap::clear() {
  storage_.clear();
  entries_.clear();
  open_ = in_value_ = false;
}

void HeaderMap::appendName(const char* p, size_t n) {
  if (!open_) {
    entries_.push_back(Entry{static_cast<uint32_t>(storage_.size()), 0, 0, 0});
    open_ = true;
    in_value_ = false;
  }
  storage_.append(p, n);
  entries_.back().name_len += static_cast<uint32_t>(n);
}

void HeaderMap::appendValue(const char* p, size_t n) {
  if (!open_) return;  // a value without a name cannot come from the parser
  Entry& e = entries_.back();
  if (!in_value_) {
    storage_.append(": ", 2);
    e.value_off = static_cast<uint32_t>(storage_.size());
    in_value_ = true;
  }
  storage_.append(p, n);
  e.value_len += static_cast<uint32_t>(n);
}

std::string_view HeaderMap::endEntry() {
  if (!open_) return {};
  Entry& e = entries_.back();
  if (!in_value_) {
    storage_.append(": ", 2);
    e.value_off = static_cast<uint32_t>(storage_.size());
    e.value_len = 0;
  }
  uint32_t skip = 0;
  while (skip < e.value_len &&
         (storage_[e.value_off + skip] == ' ' || storage_[e.value_off + skip] == '\t')) {
    ++skip;
  }
  if (skip > 0) {  // rare: keep the line canonical, the value right after ": "
    e.value_len -= skip;
    std::memmove(storage_.data() + e.value_off, storage_.data() + e.value_off + skip, e.value_len);
  }
  while (e.value_len > 0 && (storage_[e.value_off + e.value_len - 1] == ' ' ||
                             storage_[e.value_off + e.value_len - 1] == '\t')) {
    --e.value_len;
  }
  storage_.resize(e.value_off + e.value_len);
  storage_.append("\r\n", 2);
  open_ = in_value_ = false;
  return {storage_.data() + e.value_off, e.value_len};
}

void HeaderMap::serialize(std::string& out) const {
  LineRun run(out);
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (!removed(i)) run.add(line(i));
  }
  run.flush();
}

bool RequestHead::idempotent() const {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "TRACE" ||
         method == "PUT" || method == "DELETE";
}

std::string_view RequestHead::path() const {
  std::string_view t = target;
  size_t q = t.find('?');
  return q == std::string_view::npos ? t : t.substr(0, q);
}

void RequestHead::clear() {
  method.clear();
  target.clear();
  version_major = version_minor = 1;
  headers.clear();
  keep_alive = true;
  chunked = false;
  has_content_length = false;
  content_length = 0;
  upgrade = false;
  expect_continue = false;
}

void ResponseHead::clear() {
  status = 0;
  reason.clear();
  version_major = version_minor = 1;
  headers.clear();
  keep_alive = true;
  chunked = false;
  has_content_length = false;
  content_length = 0;
}

std::string_view reasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 417:
      return "Expectation Failed";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

}  // namespace cutover
