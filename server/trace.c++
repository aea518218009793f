#include "server/trace.h"

#include <fcntl.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include "params.h"
#include "server/log.h"
#include "sys/file.h"

namespace popd::server {
namespace {

// Written at once when a file's buffer grows past this.
constexpr std::size_t write_at = 64 << 10;

// Whether only root and `owner` can change the directory `fd`: theirs, and
// writable by no one else unless sticky (/tmp), where others cannot rename
// or remove what is not theirs.
bool safe_directory(int fd, const std::string& name, uid_t owner, std::string& error) {
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    error = name + ": " + sys::error_text(errno);
    return false;
  }
  if (st.st_uid != 0 && st.st_uid != owner)
    error = name + " belongs to uid " + std::to_string(st.st_uid);
  else if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX))
    error = name + " is writable by others";
  return error.empty();
}

// The directory at `path`, opened one name at a time without following a
// link, each safe_directory(); the last made (0700) if `make` and missing.
// None, with no error, where a directory does not exist: not traced.
sys::UniqueFd open_safe_directory(const std::string& path, uid_t owner, bool make, std::string& error) {
  sys::UniqueFd directory(::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!directory || !safe_directory(directory.get(), "/", owner, error)) return {};
  std::string reached;
  for (std::size_t at = 0; at < path.size();) {
    std::size_t end = std::min(path.find('/', at), path.size());
    std::string name = path.substr(at, end - at);
    at = end + 1;
    if (name.empty()) continue;
    reached += "/" + name;
    // ".." from a name such as "ann@..": never out of the template's place.
    if (name == "." || name == "..") {
      error = reached + ": a path through . or ..";
      return {};
    }
    int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    int fd = ::openat(directory.get(), name.c_str(), flags);
    if (fd < 0 && errno == ENOENT && make && at >= path.size() &&
        (::mkdirat(directory.get(), name.c_str(), 0700) == 0 || errno == EEXIST))
      fd = ::openat(directory.get(), name.c_str(), flags);
    if (fd < 0) {
      if (errno != ENOENT) error = reached + ": " + (errno == ELOOP ? "a symbolic link" : sys::error_text(errno));
      return {};
    }
    directory = sys::UniqueFd(fd);
    if (!safe_directory(fd, reached, owner, error)) return {};
  }
  return directory;
}

std::string local_time(const char* format) {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  char text[64];
  ::localtime_r(&now, &tm);
  return std::string(text, std::strftime(text, sizeof text, format, &tm));
}

}  // namespace

SessionTrace::SessionTrace(int fd) : fd_(fd) {
  off_t at = ::lseek(fd, 0, SEEK_CUR);
  size_ = at > 0 ? at : 0;
}

SessionTrace::~SessionTrace() { flush(); }

// Written at each whole line, for whoever reads along: a file shows what
// happened up to the moment, even while a session lingers or hangs.
void SessionTrace::client(std::string_view line) {
  if (!at_line_start_) add("\n");
  add("C: ");
  add(line);
  at_line_start_ = line.ends_with('\n');
  flush();
}

void SessionTrace::server(std::string_view bytes) {
  while (!bytes.empty()) {
    std::size_t end = std::min(bytes.find('\n'), bytes.size() - 1) + 1;
    if (at_line_start_) add("S: ");
    add(bytes.substr(0, end));
    at_line_start_ = bytes[end - 1] == '\n';
    bytes.remove_prefix(end);
  }
  if (at_line_start_) flush();
}

void SessionTrace::add(std::string_view bytes) {
  if (full_) return;
  std::uint64_t limit = fd_ < 0 ? params::max_preauth_trace : params::max_trace_bytes;
  if (size_ + bytes.size() > limit) {
    full_ = true;
    text_ += "\n# popd: the transcript stops here, at its limit (params.h)\n";
    return;
  }
  text_ += bytes;
  size_ += bytes.size();
  if (text_.size() >= write_at) flush();
}

void SessionTrace::flush() {
  if (fd_ < 0 || text_.empty()) return;
  if (!sys::write_all(fd_, text_)) {
    syslog(LOG_WARNING, "trace: %s; the rest of this session is not traced", sys::error_text(errno).c_str());
    full_ = true;
  }
  text_.clear();
}

TraceFile create_trace_file(const Options& options, const std::string& user, const std::string& peer) {
  TraceFile file;
  std::string directory = expand_path(options.trace_dir, user, "");
  bool fixed = directory == options.trace_dir;
  sys::UniqueFd dir = open_safe_directory(directory, ::geteuid(), fixed, file.error);
  if (!dir) {
    if (!file.error.empty())
      syslog(LOG_WARNING, "trace: user=%s: %s; not traced", escaped(user).c_str(), printable(file.error).c_str());
    return file;
  }
  std::string name = user + "-" + local_time("%Y%m%d-%H%M%S") + "-" + std::to_string(::getpid());
  for (int attempt = 1; attempt < 10 && !file.fd; ++attempt) {
    std::string tried = name + (attempt > 1 ? "-" + std::to_string(attempt) : "") + ".trace";
    file.fd = sys::UniqueFd(
        ::openat(dir.get(), tried.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    file.path = directory + "/" + tried;
    if (!file.fd && errno != EEXIST) break;
  }
  std::string header = "# popd trace: user=" + escaped(user) + " rhost=" + or_local(peer) +
                       " pid=" + std::to_string(::getpid()) + " at " + local_time("%Y-%m-%d %H:%M:%S %z") + "\n";
  if (!file.fd || ::fchmod(file.fd.get(), 0600) != 0 || !sys::write_all(file.fd.get(), header)) {
    file.error = file.path + ": " + sys::error_text(errno);
    syslog(LOG_WARNING, "trace: user=%s: %s; not traced", escaped(user).c_str(), printable(file.error).c_str());
    file.fd.reset();
    return file;
  }
  file.header = header.size();
  syslog(LOG_INFO, "trace: user=%s file=%s", escaped(user).c_str(), printable(file.path).c_str());
  return file;
}

void TraceFiles::record(const std::string& user, std::string_view transcript) {
  if (options_.trace_dir.empty() || user.empty()) return;
  if (user != user_) {
    user_ = user;
    file_ = create_trace_file(options_, user, peer_);
  }
  int fd = file_.fd.get();
  // The offset stays at the end: the session, which shares it, appends.
  if (fd < 0 || ::ftruncate(fd, file_.header) != 0 || ::lseek(fd, file_.header, SEEK_SET) < 0 ||
      !sys::write_all(fd, transcript))
    file_.fd.reset();
}

}  // namespace popd::server
