// An index over the routes' path conditions, built once per config, so finding the first matching
// route costs one pass over the request path instead of one comparison per route.
//
// Routes match in config order: the answer is the lowest route index whose path condition holds
// (exact: equal; prefix: the path starts with it; ASCII case-insensitively when the route says
// case_sensitive: false) and whose header condition the caller accepts. The table keeps, per
// distinct (path, exact|prefix, case rule) key, the route indices in config order, cut after the
// first one without a header condition (no later route with that key can ever be first). Keys live
// in two open-addressing hash tables, one with the paths as written and one with lower-cased
// paths for case-insensitive routes. A lookup hashes the request path incrementally (FNV-1a) and
// probes only at the lengths some prefix key has, and at the full length for exact keys:
//
//   path "/api/v1/items"   prefix lengths {1, 4, 7}   probes "/", "/api", "/api/v1"; exact: whole
//
// then takes the lowest accepted index among the candidate lists. No allocation per lookup.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace cutover::config {

class RouteTable {
 public:
  // Null when a linear scan is at least as fast (a handful of routes).
  static std::shared_ptr<const RouteTable> build(const std::vector<Route>& routes);
  // Always builds (tests and benchmarks).
  explicit RouteTable(const std::vector<Route>& routes);

  // Lowest route index whose path condition holds for `path` and for which `accept(index)` is
  // true, or -1.
  template <typename Accept>
  int match(std::string_view path, Accept&& accept) const;

  // The number of routes indexed (a table only answers for the route list it was built from).
  size_t routeCount() const { return route_count_; }

  // At or below this many routes build() returns null: comparing a few paths directly is cheaper
  // than hashing the request path.
  static constexpr size_t kScanMax = 8;

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_off = 0;
    uint32_t key_len = 0;
    uint32_t list_off = 0;
    uint32_t list_len = 0;  // 0 = empty slot
    bool exact = false;
  };
  // One case rule's keys.
  struct Table {
    std::vector<Slot> slots;       // power-of-two size, or empty when no route uses this case rule
    std::vector<uint8_t> lengths;  // [len] & kPrefixLen / kExactLen: some key has that length
    size_t max_len = 0;
  };
  static constexpr uint8_t kPrefixLen = 1;
  static constexpr uint8_t kExactLen = 2;
  static constexpr uint64_t kSeed = 14695981039346656037ull;
  static constexpr uint64_t kPrime = 1099511628211ull;

  static char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }
  static uint64_t step(uint64_t h, char c) { return (h ^ static_cast<unsigned char>(c)) * kPrime; }
  static size_t bucket(uint64_t h, size_t mask) { return (h ^ (h >> 29)) & mask; }

  void insert(Table& t, std::string_view key, bool exact, uint32_t route, bool conditional);
  void finish(Table& t);
  // The slot for `path[0..len)` as a key of kind `exact`, or null.
  const Slot* find(const Table& t, bool insensitive, uint64_t h, std::string_view key,
                   bool exact) const;
  template <typename Accept>
  void visit(const Slot* s, uint32_t& best, Accept& accept) const;
  template <typename Accept>
  void lookup(const Table& t, bool insensitive, std::string_view path, uint32_t& best,
              Accept& accept) const;

  Table tables_[2];  // [0] case-sensitive keys as written, [1] case-insensitive keys lower-cased
  std::string keys_;
  std::vector<uint32_t> lists_;
  // Build-time only: the candidate lists per key before they are packed into lists_.
  std::vector<std::vector<uint32_t>> pending_;
  size_t route_count_ = 0;
};

template <typename Accept>
void RouteTable::visit(const Slot* s, uint32_t& best, Accept& accept) const {
  if (s == nullptr) return;
  const uint32_t* list = lists_.data() + s->list_off;
  for (uint32_t i = 0; i < s->list_len && list[i] < best; ++i) {
    if (accept(list[i])) {
      best = list[i];
      return;
    }
  }
}

template <typename Accept>
void RouteTable::lookup(const Table& t, bool insensitive, std::string_view path, uint32_t& best,
                        Accept& accept) const {
  if (t.slots.empty()) return;
  const size_t n = path.size();
  const size_t stop = n < t.max_len ? n : t.max_len;  // no key is longer than max_len
  uint64_t h = kSeed;
  for (size_t i = 1; i <= stop; ++i) {
    h = step(h, insensitive ? lower(path[i - 1]) : path[i - 1]);
    if (t.lengths[i] & kPrefixLen) {
      visit(find(t, insensitive, h, path.substr(0, i), false), best, accept);
    }
  }
  // After the loop h covers the whole path when n <= max_len.
  if (n <= t.max_len && (t.lengths[n] & kExactLen)) {
    visit(find(t, insensitive, h, path, true), best, accept);
  }
}

template <typename Accept>
int RouteTable::match(std::string_view path, Accept&& accept) const {
  uint32_t best = UINT32_MAX;
  lookup(tables_[0], false, path, best, accept);
  lookup(tables_[1], true, path, best, accept);
  return best == UINT32_MAX ? -1 : static_cast<int>(best);
}

}  // namespace cutover::config
