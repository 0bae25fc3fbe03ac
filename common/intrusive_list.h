// A minimal intrusive doubly-linked list: O(1) insert/remove with no allocation, for timeout lists
// and pools whose members are owned elsewhere.
#pragma once

namespace cutover {

struct ListHook {
  ListHook* prev = nullptr;
  ListHook* next = nullptr;
  bool linked() const { return prev != nullptr; }
};

// T must derive from ListHook (one list at a time per hook).
template <typename T>
class IntrusiveList {
 public:
  IntrusiveList() { head_.prev = head_.next = &head_; }
  IntrusiveList(const IntrusiveList&) = delete;
  IntrusiveList& operator=(const IntrusiveList&) = delete;

  bool empty() const { return head_.next == &head_; }
  size_t size() const { return size_; }
  T* front() const { return empty() ? nullptr : static_cast<T*>(head_.next); }
  T* back() const { return empty() ? nullptr : static_cast<T*>(head_.prev); }
  // The item after `item` (which must be in this list), or null at the end.
  T* next(const T* item) const {
    const ListHook* n = static_cast<const ListHook*>(item)->next;
    return n == &head_ ? nullptr : static_cast<T*>(const_cast<ListHook*>(n));
  }
  void pushBack(T* item) {
    ListHook* h = item;
    h->prev = head_.prev;
    h->next = &head_;
    head_.prev->next = h;
    head_.prev = h;
    ++size_;
  }
  void remove(T* item) {
    ListHook* h = item;
    if (!h->linked()) return;
    h->prev->next = h->next;
    h->next->prev = h->prev;
    h->prev = h->next = nullptr;
    --size_;
  }
  T* popBack() {
    T* t = back();
    if (t != nullptr) remove(t);
    return t;
  }
  T* popFront() {
    T* t = front();
    if (t != nullptr) remove(t);
    return t;
  }
  // Next element after `item`, or nullptr at the end.
  T* next(T* item) const {
    ListHook* n = static_cast<ListHook*>(item)->next;
    return n == &head_ ? nullptr : static_cast<T*>(n);
  }

 private:
  ListHook head_;
  size_t size_ = 0;
};

}  // namespace cutover
