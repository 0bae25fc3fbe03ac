#include "config/route_table.h"

#include <cstring>

namespace cutover::config {

namespace {

bool equalsLower(std::string_view path, std::string_view lower_key) {
  for (size_t i = 0; i < path.size(); ++i) {
    char c = path[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    if (c != lower_key[i]) return false;
  }
  return true;
}

}  // namespace

std::shared_ptr<const RouteTable> RouteTable::build(const std::vector<Route>& routes) {
  if (routes.size() <= kScanMax) return nullptr;
  return std::make_shared<const RouteTable>(routes);
}

RouteTable::RouteTable(const std::vector<Route>& routes) : route_count_(routes.size()) {
  // Size each table for its key count at load factor <= 1/2 before inserting.
  size_t counts[2] = {0, 0};
  for (const Route& r : routes) ++counts[r.match.case_sensitive ? 0 : 1];
  for (int m = 0; m < 2; ++m) {
    if (counts[m] == 0) continue;
    size_t size = 16;
    while (size < 2 * counts[m]) size *= 2;
    tables_[m].slots.resize(size);
  }
  for (size_t i = 0; i < routes.size(); ++i) {
    const RouteMatch& m = routes[i].match;
    bool insensitive = !m.case_sensitive;
    std::string key = m.path;
    if (insensitive) {
      for (char& c : key) c = lower(c);
    }
    insert(tables_[insensitive ? 1 : 0], key, m.kind == RouteMatch::Kind::Exact,
           static_cast<uint32_t>(i), !m.header.empty());
  }
  for (Table& t : tables_) finish(t);
  pending_.clear();
  pending_.shrink_to_fit();
}

void RouteTable::insert(Table& t, std::string_view key, bool exact, uint32_t route,
                        bool conditional) {
  uint64_t h = kSeed;
  for (char c : key) h = step(h, c);
  size_t mask = t.slots.size() - 1;
  for (size_t b = bucket(h, mask);; b = (b + 1) & mask) {
    Slot& s = t.slots[b];
    if (s.list_len == 0) {
      s.hash = h;
      s.key_off = static_cast<uint32_t>(keys_.size());
      s.key_len = static_cast<uint32_t>(key.size());
      s.exact = exact;
      s.list_off = static_cast<uint32_t>(pending_.size());  // until finish()
      s.list_len = 1;
      keys_.append(key);
      pending_.push_back({route});
      // A route without a header condition ends the list: later ones with this key never win.
      if (!conditional) pending_.back().push_back(UINT32_MAX);
      if (key.size() > t.max_len) t.max_len = key.size();
      if (t.lengths.size() <= key.size()) t.lengths.resize(key.size() + 1, 0);
      t.lengths[key.size()] |= exact ? kExactLen : kPrefixLen;
      return;
    }
    if (s.hash == h && s.exact == exact && s.key_len == key.size() &&
        std::memcmp(keys_.data() + s.key_off, key.data(), key.size()) == 0) {
      std::vector<uint32_t>& list = pending_[s.list_off];
      if (list.back() == UINT32_MAX) return;  // closed by an unconditional route
      list.push_back(route);
      if (!conditional) list.push_back(UINT32_MAX);
      return;
    }
  }
}

void RouteTable::finish(Table& t) {
  for (Slot& s : t.slots) {
    if (s.list_len == 0) continue;
    std::vector<uint32_t>& list = pending_[s.list_off];
    if (list.back() == UINT32_MAX) list.pop_back();
    s.list_off = static_cast<uint32_t>(lists_.size());
    s.list_len = static_cast<uint32_t>(list.size());
    lists_.insert(lists_.end(), list.begin(), list.end());
  }
}

const RouteTable::Slot* RouteTable::find(const Table& t, bool insensitive, uint64_t h,
                                         std::string_view key, bool exact) const {
  size_t mask = t.slots.size() - 1;
  for (size_t b = bucket(h, mask);; b = (b + 1) & mask) {
    const Slot& s = t.slots[b];
    if (s.list_len == 0) return nullptr;
    if (s.hash != h || s.exact != exact || s.key_len != key.size()) continue;
    std::string_view stored(keys_.data() + s.key_off, s.key_len);
    if (insensitive ? equalsLower(key, stored) : stored == key) return &s;
  }
}

}  // namespace cutover::config
