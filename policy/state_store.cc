#include "policy/state_store.h"

#include <random>

namespace cutover {

namespace {

uint64_t randomSeed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

template <class Map>
void sweepMap(Map& map, uint64_t generation) {
  std::erase_if(map, [generation](const auto& kv) { return kv.second.generation < generation; });
}

}  // namespace

StateStore::StateStore(uint64_t seed) : seeds_(seed) {}
StateStore::StateStore() : StateStore(randomSeed()) {}

bool StateStore::LimitParams::operator==(const LimitParams& o) const {
  return bucket.interval_ns == o.bucket.interval_ns &&
         bucket.tolerance_ns == o.bucket.tolerance_ns && bucket.burst == o.bucket.burst &&
         key == o.key && header == o.header && max_keys == o.max_keys;
}

StateStore::LimitParams StateStore::limitParams(const config::RateLimit& limit) {
  return LimitParams{BucketParams::from(limit), limit.key,
                     limit.key == config::RateLimit::Key::Header ? limit.header : std::string(),
                     limit.max_keys};
}

template <class T, class Params, class Make>
std::shared_ptr<T> StateStore::lookup(std::map<std::string, Slot<T, Params>>& map,
                                      const std::string& name, const Params& params, Make make) {
  auto it = map.find(name);
  if (it == map.end() || !(it->second.params == params)) {
    Slot<T, Params> slot{params, make(), generation_};
    it = map.insert_or_assign(name, std::move(slot)).first;
  }
  it->second.generation = generation_;
  return it->second.object;
}

std::shared_ptr<BucketTable> StateStore::rateLimitTable(const std::string& key,
                                                        const config::RateLimit& limit) {
  std::lock_guard lock(mu_);
  return lookup(tables_, key, limitParams(limit),
                [&] { return std::make_shared<BucketTable>(limit); });
}

std::shared_ptr<TokenBucket> StateStore::backendLimiter(const std::string& backend,
                                                        const config::RateLimit& limit) {
  std::lock_guard lock(mu_);
  return lookup(backend_limiters_, backend, limitParams(limit),
                [&] { return std::make_shared<TokenBucket>(limit); });
}

std::shared_ptr<CircuitBreaker> StateStore::breaker(const std::string& backend,
                                                    const config::CircuitBreaker& cfg) {
  std::lock_guard lock(mu_);
  return lookup(breakers_, backend, cfg,
                [&] { return std::make_shared<CircuitBreaker>(cfg, seeds_.next()); });
}

std::shared_ptr<RetryBudget> StateStore::retryBudget(const std::string& backend) {
  std::lock_guard lock(mu_);
  return lookup(budgets_, backend, NoParams{}, [] { return std::make_shared<RetryBudget>(); });
}

std::shared_ptr<ConcurrencyLimits> StateStore::concurrency(const std::string& backend,
                                                           const config::CircuitBreaker& cfg) {
  std::lock_guard lock(mu_);
  auto limits = lookup(concurrency_, backend, NoParams{},
                       [] { return std::make_shared<ConcurrencyLimits>(); });
  limits->setLimits(cfg);
  return limits;
}

std::shared_ptr<HealthState> StateStore::health(const std::string& backend,
                                                const std::vector<std::string>& endpoints,
                                                const config::HealthCheck& cfg) {
  std::lock_guard lock(mu_);
  return lookup(health_, backend, HealthParams{endpoints, cfg}, [&] {
    return std::make_shared<HealthState>(endpoints.size(), cfg, seeds_.next());
  });
}

void StateStore::sweep() {
  std::lock_guard lock(mu_);
  sweepMap(tables_, generation_);
  sweepMap(backend_limiters_, generation_);
  sweepMap(breakers_, generation_);
  sweepMap(budgets_, generation_);
  sweepMap(concurrency_, generation_);
  sweepMap(health_, generation_);
  ++generation_;
}

size_t StateStore::size() const {
  std::lock_guard lock(mu_);
  return tables_.size() + backend_limiters_.size() + breakers_.size() + budgets_.size() +
         concurrency_.size() + health_.size();
}

}  // namespace cutover
