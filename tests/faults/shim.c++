// A fault-injection shim for tests, loaded with LD_PRELOAD into popd. It
// counts the calls that change files under FAULT_SCOPE (colon-separated path
// prefixes) and, at call number FAULT_AT:
//   FAULT_MODE=kill   SIGKILLs the process before the call;
//   FAULT_MODE=power  does the same after undoing what a power cut would
//                     lose: every write, truncate and allocation that no
//                     fsync of the file has made durable, and every new
//                     name, rename and unlink that no fsync of its
//                     directory has;
//   FAULT_MODE=torn   the same, but the disk wrote back part of what was
//                     pending: each 512-byte sector of a pending write is
//                     undone or kept at random (seeded by FAULT_AT), and the
//                     directory kept only its changes up to a random one;
//   FAULT_BAD_SECTORS=PATH  reads of PATH at 4096-aligned offsets but the
//                     first fail with EIO (see pread64 below).
//   FAULT_MODE=fail   makes the call fail with FAULT_ERRNO (default ENOSPC),
//                     and every later one too if FAULT_PERSIST=1. With
//                     FAULT_LOSE=FILE, a failed fsync also loses what it was
//                     to make durable, as Linux may after EIO (the pages
//                     are marked clean, the disk never gets them): reads
//                     still see it, no later fsync makes it durable, and a
//                     power cut undoes it; FILE gets one line per lost
//                     write ("path offset old-size old-bytes-in-hex"), for
//                     a test to play that power cut after this process.
// With FAULT_STALL_HANDOVER=SECONDS, an unprivileged process's sendmsg()
// that passes two descriptors (the pre-auth process's hand-over of the
// connection to the session) first sleeps that long: a stalled pre-auth
// process. Writes are split into FAULT_CHUNK-byte pieces (default 65536),
// each a call of its own, so a kill can land in the middle of a large
// write. With FAULT_REPORT=FILE the number of calls is written there at
// exit, and with FAULT_TRACE=FILE one line per call (for checking the order
// of fsyncs).
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
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
  // A truncate or an allocation changes the size, which a file system
  // journals: after a power cut it took effect whole or not at all.
  bool whole = false;
};

// A change of names in a directory that no fsync of the directory has made
// durable yet. Until then an unlinked file, or one a rename replaced, lives
// on under `backup` (a hidden name in the same directory), so that a power
// cut can put it back.
struct NameChange {
  enum Kind { created, renamed, unlinked } kind;
  std::string path;    // the name made, renamed to, or unlinked
  std::string from;    // renamed: the old name
  std::string backup;  // what `path` named before, if anything
};

struct State {
  std::vector<std::string> scope;
  long at = 0;
  long count = 0;
  std::string mode;
  int error = ENOSPC;
  bool persist = false;
  std::size_t chunk = 65536;
  std::string report, trace, lose;
  unsigned stall_handover = 0;
  std::map<ino_t, std::pair<int, std::vector<Undo>>> unsynced;  // inode -> (dup fd, undo log)
  std::vector<std::pair<int, Undo>> lost;                        // (dup fd, undo): a failed fsync lost it
  std::map<std::string, std::vector<NameChange>> names;          // directory -> changes not yet durable
  long backups = 0;
  bool busy = false;

  bool power_model() const { return mode == "power" || mode == "torn" || !lose.empty(); }
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
    if (const char* v = getenv("FAULT_LOSE")) st->lose = v;
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

std::string directory_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
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

auto pwrite_() { return real<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite64"); }
auto ftruncate_() { return real<int (*)(int, off_t)>("ftruncate64"); }
auto rename_() { return real<int (*)(const char*, const char*)>("rename"); }
auto unlink_() { return real<int (*)(const char*)>("unlink"); }

// Puts back what `undo` overwrote; `sectors`: only a random part of it,
// 512 bytes at a time, as a disk that wrote some sectors back.
void put_back(int fd, const Undo& undo, unsigned* sectors) {
  if (sectors && undo.whole && rand_r(sectors) % 2 == 0) return;  // it reached the disk
  if (!sectors || undo.whole) {
    ftruncate_()(fd, undo.old_size);
    pwrite_()(fd, undo.old_bytes.data(), undo.old_bytes.size(), undo.offset);
    ftruncate_()(fd, undo.old_size);
    return;
  }
  for (std::size_t at = 0; at < undo.old_bytes.size(); at += 512)
    if (rand_r(sectors) % 2 == 0)
      pwrite_()(fd, undo.old_bytes.data() + at, std::min<std::size_t>(512, undo.old_bytes.size() - at),
                undo.offset + at);
  if (rand_r(sectors) % 2 == 0) ftruncate_()(fd, undo.old_size);
}

void undo_names(const std::vector<NameChange>& changes, std::size_t keep) {
  for (std::size_t i = changes.size(); i-- > keep;) {
    const NameChange& c = changes[i];
    if (c.kind == NameChange::created) unlink_()(c.path.c_str());
    if (c.kind == NameChange::renamed) rename_()(c.path.c_str(), c.from.c_str());
    if (!c.backup.empty()) rename_()(c.backup.c_str(), c.path.c_str());
  }
  // The changes that reached the disk leave no backup behind.
  for (std::size_t i = 0; i < keep; ++i)
    if (!changes[i].backup.empty()) unlink_()(changes[i].backup.c_str());
}

void power_cut(bool torn) {
  unsigned seed = static_cast<unsigned>(state().at);
  for (auto& [inode, entry] : state().unsynced) {
    auto& [fd, log] = entry;
    for (auto undo = log.rbegin(); undo != log.rend(); ++undo) put_back(fd, *undo, torn ? &seed : nullptr);
  }
  for (auto lost = state().lost.rbegin(); lost != state().lost.rend(); ++lost) put_back(lost->first, lost->second, nullptr);
  for (auto& [directory, changes] : state().names)
    undo_names(changes, torn && !changes.empty() ? rand_r(&seed) % (changes.size() + 1) : 0);
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

void remember(int fd, off_t offset, size_t size, bool whole = false) {
  State& s = state();
  if (!s.power_model()) return;
  struct stat st;
  if (fstat(fd, &st) != 0) return;
  auto& entry = s.unsynced[st.st_ino];
  if (entry.second.empty() && entry.first == 0) entry.first = dup(fd);
  Undo undo{offset, {}, st.st_size, whole};
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

// A failed fsync with FAULT_LOSE: what it was to make durable never will be.
void lose(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return;
  auto it = state().unsynced.find(st.st_ino);
  if (it == state().unsynced.end()) return;
  FILE* log = fopen(state().lose.c_str(), "a");
  for (Undo& undo : it->second.second) {
    if (log) {
      fprintf(log, "%s %lld %lld ", path_of(fd).c_str(), static_cast<long long>(undo.offset),
              static_cast<long long>(undo.old_size));
      for (unsigned char c : undo.old_bytes) fprintf(log, "%02x", c);
      fprintf(log, "\n");
    }
    state().lost.emplace_back(it->second.first, std::move(undo));
  }
  if (log) fclose(log);
  it->second.second.clear();
}

// A directory fsync makes its name changes durable: the backups go.
void names_synced(const std::string& directory) {
  auto it = state().names.find(directory);
  if (it == state().names.end()) return;
  for (const NameChange& c : it->second)
    if (!c.backup.empty()) unlink_()(c.backup.c_str());
  state().names.erase(it);
}

std::string backup_name(const std::string& path) {
  return directory_of(path) + "/.shim-backup-" + std::to_string(getpid()) + "-" + std::to_string(++state().backups);
}

ssize_t chunked_pwrite(int fd, const char* data, size_t size, off_t offset, const char* call) {
  size_t done = 0;
  while (done < size) {
    size_t n = std::min(size - done, state().chunk);
    if (point(call, path_of(fd) + " @" + std::to_string(offset + done) + "+" + std::to_string(n)))
      return done > 0 ? static_cast<ssize_t>(done) : -1;
    remember(fd, offset + done, n);
    ssize_t w = pwrite_()(fd, data + done, n, offset + done);
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

// Opening with O_CREAT: a new name, undone by a power cut until its
// directory is synced. Not a counted call.
int opened(const char* path, int flags, int fd, bool existed) {
  if (fd >= 0 && (flags & O_CREAT) && !existed && state().power_model() && in_scope(path))
    state().names[directory_of(path)].push_back({NameChange::created, path, {}, {}});
  return fd;
}

bool exists(const char* path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

}  // namespace

extern "C" {

// FAULT_BAD_SECTORS=PATH: reads of PATH at a non-zero multiple of 4096
// (where a journal keeps its slots and progress records) fail with EIO,
// as over a bad sector. Not counted as points.
ssize_t pread64(int fd, void* buffer, size_t size, off_t offset) {
  static const char* bad = getenv("FAULT_BAD_SECTORS");
  if (bad && offset > 0 && offset % 4096 == 0 && path_of(fd) == bad) {
    errno = EIO;
    return -1;
  }
  return real<ssize_t (*)(int, void*, size_t, off_t)>("pread64")(fd, buffer, size, offset);
}

ssize_t pread(int fd, void* buffer, size_t size, off_t offset) { return pread64(fd, buffer, size, offset); }

ssize_t pwrite64(int fd, const void* data, size_t size, off_t offset) {
  Guard g;
  if (!g.active || !fd_in_scope(fd)) return pwrite_()(fd, data, size, offset);
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
  std::string path = path_of(fd);
  if (!(directory ? in_scope(path + "/") : fd_in_scope(fd))) return fsync_(fd);
  if (point("fsync", path)) {
    if (!state().lose.empty() && !directory) lose(fd);
    return -1;
  }
  int result = fsync_(fd);
  if (result == 0 && directory) names_synced(path);
  if (result == 0 && !directory) synced(fd);
  return result;
}

int fdatasync(int fd) { return fsync(fd); }

int ftruncate64(int fd, off_t length) {
  Guard g;
  if (!g.active || !fd_in_scope(fd)) return ftruncate_()(fd, length);
  if (point("ftruncate", path_of(fd) + " to " + std::to_string(length))) return -1;
  remember(fd, length, 1 << 30, true);
  return ftruncate_()(fd, length);
}

int ftruncate(int fd, off_t length) { return ftruncate64(fd, length); }

int posix_fallocate64(int fd, off_t offset, off_t length) {
  Guard g;
  auto fallocate_ = real<int (*)(int, off_t, off_t)>("posix_fallocate64");
  if (!g.active || !fd_in_scope(fd)) return fallocate_(fd, offset, length);
  if (point("fallocate", path_of(fd) + " @" + std::to_string(offset) + "+" + std::to_string(length))) return errno;
  remember(fd, offset, length, true);
  return fallocate_(fd, offset, length);
}

int posix_fallocate(int fd, off_t offset, off_t length) { return posix_fallocate64(fd, offset, length); }

int rename(const char* from, const char* to) {
  Guard g;
  if (!g.active || !(in_scope(from) || in_scope(to))) return rename_()(from, to);
  if (point("rename", std::string(from) + " -> " + to)) return -1;
  if (!state().power_model()) return rename_()(from, to);
  NameChange change{NameChange::renamed, to, from, {}};
  if (exists(to)) {
    change.backup = backup_name(to);
    if (link(to, change.backup.c_str()) != 0) change.backup.clear();
  }
  int result = rename_()(from, to);
  if (result == 0) state().names[directory_of(to)].push_back(change);
  else if (!change.backup.empty()) unlink_()(change.backup.c_str());
  return result;
}

// An unlink counted as a point; `path` is in scope.
int counted_unlink(const char* path) {
  if (point("unlink", path)) return -1;
  if (!state().power_model()) return unlink_()(path);
  // Kept under a hidden name until the directory is synced.
  std::string backup = backup_name(path);
  if (rename_()(path, backup.c_str()) != 0) return -1;
  state().names[directory_of(path)].push_back({NameChange::unlinked, path, {}, backup});
  return 0;
}

int unlink(const char* path) {
  Guard g;
  if (!g.active || !in_scope(path)) return unlink_()(path);
  return counted_unlink(path);
}

// unlinkat of a file relative to a directory (a Maildir's cur/ and new/):
// an unlink of the path it names.
int unlinkat(int directory, const char* path, int flags) {
  auto unlinkat_ = real<int (*)(int, const char*, int)>("unlinkat");
  Guard g;
  std::string full = path[0] == '/' || directory == AT_FDCWD ? path : path_of(directory) + "/" + path;
  if (!g.active || flags != 0 || !in_scope(full)) return unlinkat_(directory, path, flags);
  return counted_unlink(full.c_str());
}

// open and open64: the mode is there only with O_CREAT or O_TMPFILE.
int open_through(const char* name, const char* path, int flags, va_list args) {
  mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(args, mode_t) : 0;
  Guard g;
  bool existed = g.active && (flags & O_CREAT) && exists(path);
  return opened(path, flags, real<int (*)(const char*, int, ...)>(name)(path, flags, mode), existed);
}

int open(const char* path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  int fd = open_through("open", path, flags, args);
  va_end(args);
  return fd;
}

int open64(const char* path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  int fd = open_through("open64", path, flags, args);
  va_end(args);
  return fd;
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
