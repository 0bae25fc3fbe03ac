#include "proxy/state_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "config/loader.h"

namespace cutover {

namespace {

constexpr size_t kMaxStateFileBytes = 64 * 1024;
constexpr size_t kMaxFieldBytes = 512;

// One line of printable text: control bytes become spaces, long values are cut.
std::string oneLine(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, kMaxFieldBytes)) {
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
  }
  return out;
}

std::string errnoText(const char* what, const std::string& path) {
  return std::string(what) + " " + path + ": " + strerror(errno);
}

// Temp file beside the target, fsync, rename over it, fsync the directory. Runs on the pool.
bool writeAtomically(const std::string& dir, const std::string& file, const std::string& data,
                     std::string& error) {
  const std::string target = dir + "/" + file;
  const std::string tmp = dir + "/." + file + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = errnoText("cannot create", tmp);
    return false;
  }
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = errnoText("cannot write", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return false;
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    error = errnoText("cannot fsync", tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return false;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    error = errnoText("cannot rename over", target);
    ::unlink(tmp.c_str());
    return false;
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);  // the rename itself durable; some filesystems refuse: the data is written
    ::close(dfd);
  }
  return true;
}

}  // namespace

std::string formatRollbackState(const RollbackState& s) {
  std::string out = "cutover-state 1\n";
  out += std::string("rollback_active ") + (s.active ? "1" : "0") + "\n";
  out += "since " + std::to_string(s.since_s) + "\n";
  out += "actor " + oneLine(s.actor) + "\n";
  out += "reason " + oneLine(s.reason) + "\n";
  if (!s.origin.empty()) out += "origin " + oneLine(s.origin) + "\n";
  return out;
}

bool parseRollbackState(const std::string& text, RollbackState& out) {
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line != "cutover-state 1") return false;
  RollbackState s;
  while (std::getline(in, line)) {
    size_t sp = line.find(' ');
    std::string key = line.substr(0, sp);
    std::string value = sp == std::string::npos ? "" : line.substr(sp + 1);
    if (key == "rollback_active") {
      s.active = value == "1";
    } else if (key == "since") {
      s.since_s = value.empty() ? 0 : std::strtoll(value.c_str(), nullptr, 10);
    } else if (key == "actor") {
      s.actor = value;
    } else if (key == "reason") {
      s.reason = value;
    } else if (key == "origin") {
      s.origin = value;
    }
  }
  out = std::move(s);
  return true;
}

std::string scanStateDir(const std::string& config_text) {
  std::istringstream in(config_text);
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("state_dir:")) continue;
    std::string v = line.substr(10);
    size_t hash = v.find(" #");
    if (hash != std::string::npos) v.resize(hash);
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.erase(0, 1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == '\r')) v.pop_back();
    if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) {
      v = v.substr(1, v.size() - 2);
    }
    if (v == "~" || v == "null") v.clear();
    return v;
  }
  return {};
}

struct StateDir::Job {
  StateDir* owner = nullptr;
  uv_work_t work{};
  const char* file = nullptr;
  std::string contents;
  std::vector<Done> done;
  bool ok = false;
  std::string error;
};

StateDir::StateDir(uv_loop_t* loop, std::string dir) : loop_(loop), dir_(std::move(dir)) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
}

StateDir::~StateDir() = default;

bool StateDir::prepare(std::string& error) {
  struct stat st {};
  if (::stat(dir_.c_str(), &st) != 0) {
    if (errno != ENOENT || ::mkdir(dir_.c_str(), 0700) != 0) {
      error = errnoText("cannot use state_dir", dir_);
      return false;
    }
    return true;
  }
  if (!S_ISDIR(st.st_mode)) {
    error = "state_dir " + dir_ + " is not a directory";
    return false;
  }
  if (::access(dir_.c_str(), W_OK | X_OK) != 0) {
    error = errnoText("cannot write in state_dir", dir_);
    return false;
  }
  return true;
}

bool StateDir::readRollback(RollbackState& out, std::string& error) const {
  std::string text;
  const std::string p = path(kRollbackFile);
  if (::access(p.c_str(), F_OK) != 0) return false;
  if (!config::readRegularFile(p, kMaxStateFileBytes, text, error)) return false;
  if (!parseRollbackState(text, out)) {
    error = p + ": not a cutover state file";
    return false;
  }
  return true;
}

bool StateDir::readLastGood(std::string& out, std::string& error) const {
  const std::string p = path(kLastGoodFile);
  if (::access(p.c_str(), F_OK) != 0) return false;
  return config::readRegularFile(p, config::kMaxConfigFileBytes, out, error);
}

void StateDir::writeRollback(const RollbackState& s, Done done) {
  enqueue(kRollbackFile, formatRollbackState(s), std::move(done));
}

void StateDir::writeLastGood(std::string text, Done done) {
  enqueue(kLastGoodFile, std::move(text), std::move(done));
}

void StateDir::enqueue(const char* file, std::string contents, Done done) {
  // A write still waiting for the same file is superseded: only the newest contents matter, and
  // every caller hears when they are durable.
  for (size_t i = in_flight_ ? 1 : 0; i < jobs_.size(); ++i) {
    if (jobs_[i]->file == file) {
      jobs_[i]->contents = std::move(contents);
      if (done) jobs_[i]->done.push_back(std::move(done));
      return;
    }
  }
  auto job = std::make_unique<Job>();
  job->owner = this;
  job->work.data = job.get();
  job->file = file;
  job->contents = std::move(contents);
  if (done) job->done.push_back(std::move(done));
  jobs_.push_back(std::move(job));
  startNext();
}

void StateDir::startNext() {
  if (in_flight_ || jobs_.empty()) return;
  in_flight_ = true;
  int rc = uv_queue_work(
      loop_, &jobs_.front()->work,
      [](uv_work_t* w) {
        auto* job = static_cast<Job*>(w->data);
        job->ok = writeAtomically(job->owner->dir_, job->file, job->contents, job->error);
      },
      [](uv_work_t* w, int status) {
        StateDir* self = static_cast<Job*>(w->data)->owner;
        std::unique_ptr<Job> job = std::move(self->jobs_.front());
        self->jobs_.pop_front();
        self->in_flight_ = false;
        if (status != 0) {
          job->ok = false;
          job->error = "write cancelled";
        }
        for (Done& d : job->done) d(job->ok, job->error);
        self->startNext();
      });
  if (rc != 0) {
    // uv_queue_work fails only without a work callback; report rather than block the loop.
    std::unique_ptr<Job> job = std::move(jobs_.front());
    jobs_.pop_front();
    in_flight_ = false;
    for (Done& d : job->done) d(false, uv_strerror(rc));
    startNext();
  }
}

}  // namespace cutover
