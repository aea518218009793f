#include "server/trace.h"

#include <fcntl.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
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

SessionTrace::SessionTrace(int fd) { attach(fd); }

void SessionTrace::attach(int fd) {
  fd_ = fd;
  off_t at = ::lseek(fd, 0, SEEK_CUR);
  size_ = at > 0 ? at : 0;
  std::string before = held();
  text_.clear();
  left_out_ = 0;
  add(before);
  flush();
}

std::string SessionTrace::held() const {
  if (left_out_ == 0) return text_;
  return "# popd: " + std::to_string(left_out_) + " bytes of the login phase left out here (params.h)\n" + text_;
}

SessionTrace::~SessionTrace() { flush(); }

// Once in a file, written at each whole line, for whoever reads along: it
// shows what happened up to the moment, even while a session lingers.
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
  if (fd_ < 0) {
    // In memory the latest part is kept: the login, not what came first.
    text_ += bytes;
    if (text_.size() <= params::max_preauth_trace) return;
    std::size_t cut = text_.find('\n', text_.size() / 2);
    cut = cut == std::string::npos ? text_.size() / 2 : cut + 1;
    text_.erase(0, cut);
    left_out_ += cut;
    return;
  }
  if (size_ + bytes.size() > params::max_trace_bytes) {
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

std::optional<std::string> trace_directory(const std::string& dir_template, const std::string& user) {
  std::size_t at = user.find('@');
  bool has_domain = at != std::string::npos && at + 1 < user.size();
  // An empty %u, %n or %d would name the directory above: not traced.
  for (std::size_t i = 0; i + 1 < dir_template.size(); ++i) {
    if (dir_template[i] != '%') continue;
    char sequence = dir_template[++i];
    if ((sequence == 'u' && user.empty()) || (sequence == 'n' && at == 0) || (sequence == 'd' && !has_domain))
      return std::nullopt;
  }
  return expand_path(dir_template, user, "");
}

TraceFile create_trace_file(const std::string& directory, bool make, const std::string& user,
                            const std::string& peer) {
  TraceFile file;
  sys::UniqueFd dir = open_safe_directory(directory, ::geteuid(), make, file.error);
  if (!dir) {
    if (!file.error.empty())
      syslog(LOG_WARNING, "trace: user=%s: %s; not traced", escaped(user).c_str(), printable(file.error).c_str());
    return file;
  }
  // The name a client gave, as a file name no shell or terminal trips on.
  std::string name = user;
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view("._@+=-").find(c) == std::string_view::npos)
      c = '_';
  name += "-" + local_time("%Y%m%d-%H%M%S") + "-" + std::to_string(::getpid());
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

TraceFile create_trace_file(const Options& options, const std::string& user, const std::string& peer) {
  auto directory = trace_directory(options.trace_dir, user);
  if (!directory) return {};
  return create_trace_file(*directory, options.trace_dir.find('%') == std::string::npos, user, peer);
}

void TraceFiles::record(const std::string& user, std::string_view transcript) {
  if (options_.trace_dir.empty() || user.empty()) return;
  auto directory = trace_directory(options_.trace_dir, user);
  if (!directory) {
    current_ = nullptr;
    return;
  }
  auto found = std::find_if(files_.begin(), files_.end(), [&](const Named& f) { return f.directory == *directory; });
  if (found == files_.end()) {
    bool make = options_.trace_dir.find('%') == std::string::npos;
    files_.push_back(Named{*directory, create_trace_file(*directory, make, user, peer_)});
    found = std::prev(files_.end());
  }
  current_ = &found->file;
  // Each file holds the whole connection; the offset stays at the end,
  // where the session, which shares it, appends.
  for (Named& named : files_) {
    int fd = named.file.fd.get();
    if (fd >= 0 && (::ftruncate(fd, named.file.header) != 0 || ::lseek(fd, named.file.header, SEEK_SET) < 0 ||
                    !sys::write_all(fd, transcript)))
      named.file.fd.reset();
  }
}

}  // namespace popd::server
