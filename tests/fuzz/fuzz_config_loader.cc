// Any bytes as a config file: loadString must return (errors are fine, an escaping exception or a
// sanitizer report is a finding). A config that loads is dumped, the dump must load again and
// dump to the same text (dumpYaml promises a round trip).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "config/loader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cutover::config;
  std::string text(reinterpret_cast<const char*>(data), size);
  LoadResult first = loadString(text, "fuzz.yaml");
  if (!first.ok()) return 0;
  std::string dump = dumpYaml(*first.config);
  LoadResult second = loadString(dump, "dump.yaml");
  if (!second.ok()) {
    std::fprintf(stderr, "\n=== the dump of a loaded config does not load ===\n%s\n--- errors:\n",
                 dump.c_str());
    for (const Error& e : second.errors) std::fprintf(stderr, "%s\n", e.str().c_str());
    std::abort();
  }
  std::string again = dumpYaml(*second.config);
  if (again != dump) {
    std::fprintf(stderr,
                 "\n=== dump -> load -> dump differs ===\n--- first:\n%s\n--- second:\n%s\n",
                 dump.c_str(), again.c_str());
    std::abort();
  }
  return 0;
}
