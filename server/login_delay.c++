#include "server/login_delay.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>

#include "sys/file.h"

namespace popd::server {
namespace {

timespec timespec_of(std::chrono::system_clock::time_point time) {
  auto since = time.time_since_epoch();
  auto seconds = std::chrono::floor<std::chrono::seconds>(since);
  return {static_cast<time_t>(seconds.count()),
          static_cast<long>(std::chrono::duration_cast<std::chrono::nanoseconds>(since - seconds).count())};
}

std::chrono::system_clock::time_point time_of(const timespec& t) {
  return std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
      std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec)));
}

}  // namespace

LoginDelay login_delay_left(const std::string& path, uid_t owner, std::chrono::seconds delay,
                            std::chrono::system_clock::time_point now) {
  LoginDelay left;
  sys::OwnFile stamp = sys::open_own_file(path, O_RDONLY, owner);
  if (!stamp.fd) {
    if (!stamp.refused.empty()) left.note = path + " " + stamp.refused + ": not trusted, ignored";
    return left;
  }
  auto last = time_of(stamp.st.st_mtim);
  if (last <= now && now - last < delay)
    left.wait = std::chrono::ceil<std::chrono::seconds>(delay - (now - last));
  return left;
}

bool record_login(const std::string& path, uid_t owner, std::chrono::system_clock::time_point now,
                  std::string& error) {
  sys::OwnFile stamp = sys::open_own_file(path, O_RDONLY, owner);
  if (!stamp.fd && stamp.error == ENOENT && stamp.refused.empty()) {
    stamp.fd.reset(::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    stamp.error = errno;
  }
  if (!stamp.fd) {
    error = path + ": " + (stamp.refused.empty() ? sys::error_text(stamp.error) : stamp.refused);
    return false;
  }
  // No fsync: a time lost to a crash lets one login through early.
  timespec times[2] = {timespec_of(now), timespec_of(now)};
  if (::futimens(stamp.fd.get(), times) != 0) {
    error = path + ": " + sys::error_text(errno);
    return false;
  }
  return true;
}

}  // namespace popd::server
