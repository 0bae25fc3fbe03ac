// HTTP/1.x message heads as the proxy sees them: a method or status, a target, a version and an
// ordered header list, stored in one contiguous buffer so a head costs one or two allocations.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace cutover {

// ASCII case-insensitive comparison for header names. The length test is inline: most
// comparisons end there.
bool iequalsSameSize(const char* a, const char* b, size_t n);
inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && iequalsSameSize(a.data(), b.data(), a.size());
}

// Fast case-insensitive test of a header name (a token, as the codec guarantees) against `lit`,
// which must be lower-case letters, digits and '-': OR-ing 0x20 into a token byte then lower-cases
// letters and leaves digits and '-' alone, and maps no other token byte onto those. Compares eight
// bytes at a time.
inline bool tokenIs(std::string_view name, std::string_view lit) {
  if (name.size() != lit.size()) return false;
  size_t i = 0;
  for (; i + 8 <= name.size(); i += 8) {
    uint64_t a, b;
    std::memcpy(&a, name.data() + i, 8);
    std::memcpy(&b, lit.data() + i, 8);
    if ((a | 0x2020202020202020ull) != b) return false;
  }
  for (; i < name.size(); ++i) {
    if ((name[i] | 0x20) != lit[i]) return false;
  }
  return true;
}

// Ordered header list. Names keep their original spelling; lookups are case-insensitive. The
// storage holds each header as its wire line, "Name: value\r\n" (value trimmed), so forwarding
// unchanged headers copies blocks of lines.
class HeaderMap {
 public:
  struct Entry {
    uint32_t name_off, name_len, value_off, value_len;
  };

  void add(std::string_view name, std::string_view value);
  // First value of `name`, or empty view (use has() to tell empty from absent).
  std::string_view get(std::string_view name) const;
  bool has(std::string_view name) const;
  size_t count(std::string_view name) const;
  // Removes every header called `name`; returns how many went.
  size_t remove(std::string_view name);
  void set(std::string_view name, std::string_view value);  // remove + add
  void clear();

  size_t size() const { return entries_.size(); }
  std::string_view name(size_t i) const {
    return {storage_.data() + entries_[i].name_off, entries_[i].name_len};
  }
  std::string_view value(size_t i) const {
    return {storage_.data() + entries_[i].value_off, entries_[i].value_len};
  }
  bool removed(size_t i) const { return entries_[i].name_len == 0; }
  // Entry i's line, "Name: value\r\n", as it sits in storage. Every entry is stored in this
  // form, one after another, so the lines of consecutive entries are adjacent in memory and a run
  // of them is written with one copy (LineRun).
  std::string_view line(size_t i) const {
    const Entry& e = entries_[i];
    return {storage_.data() + e.name_off, e.value_off + e.value_len + 2 - e.name_off};
  }
  size_t bytes() const { return storage_.size(); }

  // Appends "Name: value\r\n" for every live header to `out`.
  void serialize(std::string& out) const;

  // Incremental building for the parser, which hands over spans as they arrive: the bytes go
  // straight into storage, with no scratch copy. appendName opens an entry if none is open.
  void appendName(const char* p, size_t n);
  void appendValue(const char* p, size_t n);
  // Closes the open entry, trimming spaces and tabs around its value; returns the value.
  std::string_view endEntry();

 private:
  std::string storage_;
  std::vector<Entry> entries_;
  bool open_ = false;      // an entry is being built
  bool in_value_ = false;  // ... and its value has started
};

// Appends header lines to `out`, coalescing lines that are adjacent in one HeaderMap's storage
// into a single append. Call flush() before writing anything else to `out`.
class LineRun {
 public:
  explicit LineRun(std::string& out) : out_(out) {}
  void add(std::string_view line) {
    if (begin_ + len_ == line.data()) {
      len_ += line.size();
      return;
    }
    flush();
    begin_ = line.data();
    len_ = line.size();
  }
  void flush() {
    if (len_ != 0) out_.append(begin_, len_);
    begin_ = nullptr;
    len_ = 0;
  }

 private:
  std::string& out_;
  const char* begin_ = nullptr;
  size_t len_ = 0;
};

struct RequestHead {
  std::string method;  // "GET"
  std::string target;  // origin-form after normalisation ("/path?q"); absolute-form is rewritten
  uint8_t version_major = 1;
  uint8_t version_minor = 1;
  HeaderMap headers;
  bool keep_alive = true;  // per version default and Connection header
  bool chunked = false;    // Transfer-Encoding: chunked
  bool has_content_length = false;
  uint64_t content_length = 0;
  bool upgrade = false;  // Connection: upgrade + Upgrade header present (not CONNECT)
  bool expect_continue = false;

  bool hasBody() const { return chunked || (has_content_length && content_length > 0); }
  bool idempotent() const;        // GET HEAD OPTIONS TRACE PUT DELETE
  std::string_view path() const;  // target without query
  void clear();
};

struct ResponseHead {
  uint16_t status = 0;
  std::string reason;
  uint8_t version_major = 1;
  uint8_t version_minor = 1;
  HeaderMap headers;
  bool keep_alive = true;
  bool chunked = false;
  bool has_content_length = false;
  uint64_t content_length = 0;
  void clear();
};

std::string_view reasonPhrase(int status);

}  // namespace cutover
