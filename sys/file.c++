#include "sys/file.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "sys/fd.h"

namespace popd::sys {

bool pread_all(int fd, char* buffer, std::size_t size, std::uint64_t offset) {
  while (size > 0) {
    ssize_t n = ::pread(fd, buffer, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) {
      errno = EIO;  // the file is shorter than it should be
      return false;
    }
    buffer += n, size -= n, offset += n;
  }
  return true;
}

bool pwrite_all(int fd, std::string_view data, std::uint64_t offset) {
  while (!data.empty()) {
    ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    data.remove_prefix(n);
    offset += n;
  }
  return true;
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    data.remove_prefix(n);
  }
  return true;
}

std::string directory_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

bool sync_directory_of(const std::string& path) {
  UniqueFd fd(::open(directory_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  return fd && ::fsync(fd.get()) == 0;
}

bool only_owner_changes_directory_of(const std::string& path, uid_t owner, gid_t group, std::string& why) {
  std::string directory = directory_of(path);
  struct stat st;
  if (::stat(directory.c_str(), &st) != 0) {
    why = "cannot look at " + directory + ": " + error_text(errno);
    return false;
  }
  bool sticky = st.st_mode & S_ISVTX;
  if (st.st_uid != owner && st.st_uid != 0)
    why = directory + " belongs to uid " + std::to_string(st.st_uid);
  else if ((st.st_mode & S_IWOTH) && !sticky)
    why = directory + " is writable by everyone";
  else if ((st.st_mode & S_IWGRP) && !sticky && st.st_gid != group)
    why = directory + " is writable by group " + std::to_string(st.st_gid);
  else
    return true;
  return false;
}

std::string error_text(int error_number) { return std::strerror(error_number); }

bool wait_readable(int fd, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 60'000)));
    if (ready > 0) return true;
    if (ready < 0 && errno != EINTR) return false;
  }
}

bool replace_file(const std::string& path, std::string_view text, bool sync, std::string& error) {
  std::string temporary = path + ".XXXXXX";
  UniqueFd fd(::mkostemp(temporary.data(), O_CLOEXEC));  // 0600, made anew
  if (!fd || !write_all(fd.get(), text) || (sync && ::fsync(fd.get()) != 0) ||
      ::rename(temporary.c_str(), path.c_str()) != 0) {
    error = temporary + ": " + error_text(errno);
    if (fd) ::unlink(temporary.c_str());
    return false;
  }
  // A directory the user may not read (mode -wx) cannot be opened to be
  // synced: the file is in place, as durable as that directory allows.
  if (sync && !sync_directory_of(path) && errno != EACCES) {
    error = path + " is written, but its directory is not synced: " + error_text(errno);
    return false;
  }
  return true;
}

OwnFile open_own_file(const std::string& path, int flags, uid_t owner) {
  OwnFile file;
  file.fd.reset(::open(path.c_str(), flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!file.fd) file.error = errno;
  // What could not be opened (a link, another's file without access) is
  // looked at by name, for the reason only; what was opened, by itself.
  struct stat& st = file.st;
  if (file.fd ? ::fstat(file.fd.get(), &st) != 0 : ::lstat(path.c_str(), &st) != 0) {
    if (file.fd) file.error = errno;
    file.fd.reset();
    return file;
  }
  if (S_ISLNK(st.st_mode))
    file.refused = "is a symbolic link";
  else if (!S_ISREG(st.st_mode))
    file.refused = "is not a regular file";
  else if (st.st_uid != owner)
    file.refused = "belongs to uid " + std::to_string(st.st_uid) + ", not " + std::to_string(owner);
  else if (st.st_nlink != 1)
    file.refused = "has " + std::to_string(st.st_nlink) + " names";
  if (!file.refused.empty()) file.fd.reset();
  return file;
}

OwnText read_own_file(const std::string& path, uid_t owner, std::uint64_t limit) {
  OwnText read;
  OwnFile file = open_own_file(path, O_RDONLY, owner);
  read.refused = !file.refused.empty();
  if (!file.fd) {
    if (file.error != ENOENT || !file.refused.empty())
      read.note = path + ": " + (file.refused.empty() ? error_text(file.error) : file.refused) + ": not read";
    return read;
  }
  read.st = file.st;
  if (static_cast<std::uint64_t>(file.st.st_size) > limit) {
    read.note = path + ": larger than " + std::to_string(limit) + " bytes: not read";
    return read;
  }
  read.text.resize(static_cast<std::size_t>(file.st.st_size));
  if (!pread_all(file.fd.get(), read.text.data(), read.text.size(), 0)) {
    read.note = path + ": " + error_text(errno) + ": not read";
    read.text.clear();
  }
  return read;
}

}  // namespace popd::sys
