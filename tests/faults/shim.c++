// A fault-injection shim for tests, loaded with LD_PRELOAD into popd. It
// counts the calls that change files under FAULT_SCOPE (colon-separated path
// prefixes) and, at call number FAULT_AT:
//   FAULT_MODE=kill   SIGKILLs the process before the call;
//   FAULT_MODE=power  does the same after undoing every write and truncate
//                     that no fsync has made durable yet (a power cut);
//   FAULT_MODE=torn   the same, but undoes only some of them, chosen at
//                     random (seeded by FAULT_AT): the disk wrote back part
//                     of what was pending, in any order;
//   FAULT_MODE=fail   makes the call fail with FAULT_ERRNO (default ENOSPC),
//                     and every later one too if FAULT_PERSIST=1.
// With FAULT_STALL_HANDOVER=SECONDS, an unprivileged process's sendmsg()
// that passes two descriptors (the pre-auth process's hand-over of the
// connection to the session) first sleeps that long: a stalled pre-auth
// process. Writes are split into FAULT_CHUNK-byte pieces (default 65536), each a call
// of its own, so a kill can land in the middle of a large write. With
// FAULT_REPORT=FILE the number of calls is written there at exit, and with
// FAULT_TRACE=FILE one line per call (for checking the order of fsyncs).
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

struct Undo {
  off_t offset;
  std::string old_bytes;  // what was there; the file's old size bounds it
  off_t old_size;
};

struct State {
  std::vector<std::string> scope;
  long at = 0;
  long count = 0;
  std::string mode;
  int error = ENOSPC;
  bool persist = false;
  std::size_t chunk = 65536;
  std::string report, trace;
  unsigned stall_handover = 0;
  std::map<ino_t, std::pair<int, std::vector<Undo>>> unsynced;  // inode -> (dup fd, undo log)
  bool busy = false;
};

State& state() {
  static State* s = [] {
    auto* st = new State;
    if (const char* v = getenv("FAULT_SCOPE")) {
      std::string all = v;
      for (std::size_t start = 0; start <= all.size();) {
        auto end = all.find(':', start);
        if (end == std::string::npos) end = all.size();
        if (end > start) st->scope.push_back(all.substr(start, end - start));
        start = end + 1;
      }
    }
    if (const char* v = getenv("FAULT_AT")) st->at = atol(v);
    if (const char* v = getenv("FAULT_MODE")) st->mode = v;
    if (const char* v = getenv("FAULT_ERRNO")) st->error = atoi(v);
    if (const char* v = getenv("FAULT_PERSIST")) st->persist = atoi(v) != 0;
    if (const char* v = getenv("FAULT_CHUNK")) st->chunk = strtoul(v, nullptr, 10);
    if (const char* v = getenv("FAULT_REPORT")) st->report = v;
    if (const char* v = getenv("FAULT_TRACE")) st->trace = v;
    if (const char* v = getenv("FAULT_STALL_HANDOVER")) st->stall_handover = strtoul(v, nullptr, 10);
    return st;
  }();
  return *s;
}

template <typename F>
F real(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

bool in_scope(const std::string& path) {
  for (const auto& prefix : state().scope)
    if (path.compare(0, prefix.size(), prefix) == 0) return true;
  return false;
}

std::string path_of(int fd) {
  char link[64], target[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof target - 1);
  return n > 0 ? std::string(target, n) : std::string();
}

bool fd_in_scope(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return false;
  return in_scope(path_of(fd));
}

void trace(const char* call, const std::string& what) {
  if (state().trace.empty()) return;
  if (FILE* f = fopen(state().trace.c_str(), "a")) {
    fprintf(f, "%ld %s %s\n", state().count, call, what.c_str());
    fclose(f);
  }
}

void power_cut(bool torn) {
  auto pwrite_ = real<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite64");
  auto ftruncate_ = real<int (*)(int, off_t)>("ftruncate64");
  unsigned seed = static_cast<unsigned>(state().at);
  for (auto& [inode, entry] : state().unsynced) {
    auto& [fd, log] = entry;
    for (auto undo = log.rbegin(); undo != log.rend(); ++undo) {
      if (torn && rand_r(&seed) % 2 == 0) continue;  // this one reached the disk
      ftruncate_(fd, undo->old_size);
      pwrite_(fd, undo->old_bytes.data(), undo->old_bytes.size(), undo->offset);
      ftruncate_(fd, undo->old_size);
    }
  }
}

// Called before each counted call: true means fail it.
bool point(const char* call, const std::string& what) {
  State& s = state();
  ++s.count;
  trace(call, what);
  if (s.at <= 0 || s.count < s.at) return false;
  if (s.mode == "kill" || s.mode == "power" || s.mode == "torn") {
    if (s.count == s.at) {
      if (s.mode != "kill") power_cut(s.mode == "torn");
      kill(getpid(), SIGKILL);
    }
    return false;
  }
  if (s.mode == "fail" && (s.count == s.at || s.persist)) {
    errno = s.error;
    return true;
  }
  return false;
}

void remember(int fd, off_t offset, size_t size) {
  State& s = state();
  if (s.mode != "power" && s.mode != "torn") return;
  struct stat st;
  if (fstat(fd, &st) != 0) return;
  auto& entry = s.unsynced[st.st_ino];
  if (entry.second.empty() && entry.first == 0) entry.first = dup(fd);
  Undo undo{offset, {}, st.st_size};
  if (offset < st.st_size) {
    undo.old_bytes.resize(std::min<off_t>(size, st.st_size - offset));
    auto pread_ = real<ssize_t (*)(int, void*, size_t, off_t)>("pread64");
    ssize_t n = pread_(fd, undo.old_bytes.data(), undo.old_bytes.size(), offset);
    undo.old_bytes.resize(n > 0 ? n : 0);
  }
  entry.second.push_back(std::move(undo));
}

void synced(int fd) {
  struct stat st;
  if (fstat(fd, &st) == 0) {
    auto it = state().unsynced.find(st.st_ino);
    if (it != state().unsynced.end()) it->second.second.clear();
  }
}

ssize_t chunked_pwrite(int fd, const char* data, size_t size, off_t offset, const char* call) {
  auto pwrite_ = real<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite64");
  size_t done = 0;
  while (done < size) {
    size_t n = std::min(size - done, state().chunk);
    if (point(call, path_of(fd) + " @" + std::to_string(offset + done) + "+" + std::to_string(n)))
      return done > 0 ? static_cast<ssize_t>(done) : -1;
    remember(fd, offset + done, n);
    ssize_t w = pwrite_(fd, data + done, n, offset + done);
    if (w < 0) return done > 0 ? static_cast<ssize_t>(done) : -1;
    done += w;
  }
  return static_cast<ssize_t>(done);
}

struct Guard {  // the shim's own calls are not counted
  bool active;
  Guard() : active(!state().busy) { state().busy = true; }
  ~Guard() {
    if (active) state().busy = false;
  }
};

struct Reporter {
  ~Reporter() {
    if (!state().report.empty())
      if (FILE* f = fopen(state().report.c_str(), "w")) {
        fprintf(f, "%ld\n", state().count);
        fclose(f);
      }
  }
} reporter;

}  // namespace

extern "C" {

ssize_t pwrite64(int fd, const void* data, size_t size, off_t offset) {
  Guard g;
  if (!g.active || !fd_in_scope(fd))
    return real<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite64")(fd, data, size, offset);
  return chunked_pwrite(fd, static_cast<const char*>(data), size, offset, "pwrite");
}

ssize_t pwrite(int fd, const void* data, size_t size, off_t offset) { return pwrite64(fd, data, size, offset); }

ssize_t write(int fd, const void* data, size_t size) {
  Guard g;
  auto write_ = real<ssize_t (*)(int, const void*, size_t)>("write");
  if (!g.active || !fd_in_scope(fd)) return write_(fd, data, size);
  off_t offset = lseek(fd, 0, SEEK_CUR);
  ssize_t n = chunked_pwrite(fd, static_cast<const char*>(data), size, offset, "write");
  if (n > 0) lseek(fd, offset + n, SEEK_SET);
  return n;
}

int fsync(int fd) {
  Guard g;
  auto fsync_ = real<int (*)(int)>("fsync");
  if (!g.active) return fsync_(fd);
  struct stat st;
  bool directory = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
  if (!(directory ? in_scope(path_of(fd) + "/") : fd_in_scope(fd))) return fsync_(fd);
  if (point("fsync", path_of(fd))) return -1;
  int result = fsync_(fd);
  if (result == 0) synced(fd);
  return result;
}

int fdatasync(int fd) { return fsync(fd); }

int ftruncate64(int fd, off_t length) {
  Guard g;
  auto ftruncate_ = real<int (*)(int, off_t)>("ftruncate64");
  if (!g.active || !fd_in_scope(fd)) return ftruncate_(fd, length);
  if (point("ftruncate", path_of(fd) + " to " + std::to_string(length))) return -1;
  remember(fd, length, 1 << 30);
  return ftruncate_(fd, length);
}

int ftruncate(int fd, off_t length) { return ftruncate64(fd, length); }

int rename(const char* from, const char* to) {
  Guard g;
  auto rename_ = real<int (*)(const char*, const char*)>("rename");
  if (!g.active || !(in_scope(from) || in_scope(to))) return rename_(from, to);
  if (point("rename", std::string(from) + " -> " + to)) return -1;
  return rename_(from, to);
}

int unlink(const char* path) {
  Guard g;
  auto unlink_ = real<int (*)(const char*)>("unlink");
  if (!g.active || !in_scope(path)) return unlink_(path);
  if (point("unlink", path)) return -1;
  return unlink_(path);
}

ssize_t sendmsg(int socket, const struct msghdr* message, int flags) {
  auto sendmsg_ = real<ssize_t (*)(int, const struct msghdr*, int)>("sendmsg");
  const cmsghdr* header = CMSG_FIRSTHDR(message);
  if (state().stall_handover && geteuid() != 0 && header && header->cmsg_type == SCM_RIGHTS &&
      header->cmsg_len == CMSG_LEN(2 * sizeof(int)))
    sleep(state().stall_handover);
  return sendmsg_(socket, message, flags);
}

}  // extern "C"
