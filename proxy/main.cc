// cutover: a sidecar reverse proxy for moving traffic from a legacy backend to its replacement.
//
//   cutover --config FILE [--state-dir DIR]   run
//   cutover --check FILE     validate FILE, print every error, exit non-zero if any
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "config/loader.h"
#include "proxy/backend_tls.h"
#include "proxy/listener_tls.h"
#include "proxy/server.h"

namespace {

void usage() {
  fprintf(stderr,
          "usage: cutover --config FILE [--state-dir DIR]   run the proxy (DIR keeps a rollback\n"
          "                                                  and the last good config; wins over\n"
          "                                                  the config's state_dir)\n"
          "       cutover --check FILE    validate a config file and exit\n"
          "       cutover --version\n");
}

}  // namespace

int main(int argc, char** argv) {
  // libuv's thread pool (4 threads by default) runs DNS lookups, access-log writes, config reads
  // and state-dir fsyncs for the whole process; a lookup stuck on a dead DNS server holds a thread
  // for the resolver's timeout. More threads keep the others moving. Set before any pool use; an
  // operator's own UV_THREADPOOL_SIZE wins.
  setenv("UV_THREADPOOL_SIZE", "16", 0);
  std::string config_path;
  std::string state_dir;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "--config" || a == "-c") && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "--state-dir" && i + 1 < argc) {
      state_dir = argv[++i];
    } else if (a == "--check" && i + 1 < argc) {
      config_path = argv[++i];
      check = true;
    } else if (a == "--version") {
      printf("cutover %s\n", CUTOVER_VERSION);
      return 0;
    } else {
      usage();
      return 2;
    }
  }
  if (config_path.empty()) {
    usage();
    return 2;
  }
  if (check) {
    cutover::config::LoadResult res = cutover::config::loadFile(config_path);
    if (res.ok()) {
      // Certificates and keys are read and checked like the server does at load.
      std::vector<cutover::config::Error> errors;
      cutover::buildListenerTls(*res.config, config_path,
                                std::make_shared<cutover::TlsTicketKeys>(), errors);
      cutover::buildBackendTls(*res.config, config_path, errors);
      for (auto& e : errors) res.errors.push_back(std::move(e));
    }
    for (const auto& e : res.errors) fprintf(stderr, "%s\n", e.str().c_str());
    if (!res.ok()) {
      fprintf(stderr, "%zu error(s) in %s\n", res.errors.size(), config_path.c_str());
      return 1;
    }
    printf("%s: OK\n", config_path.c_str());
    return 0;
  }
  signal(SIGPIPE, SIG_IGN);
  cutover::Server server(config_path, state_dir);
  return server.run();
}
