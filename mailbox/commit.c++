#include "mailbox/commit.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>

#include <xxhash.h>

#include "io/fd.h"
#include "io/file.h"
#include "mailbox/digest.h"
#include "params.h"

namespace popd::mailbox {
namespace {

// Journal layout (host byte order; it never leaves the host):
//   Header, the original bytes of [begin, kept_end), a checksum of both;
//   later, once the rewrite is durable, a Trailer.
// The checksums guard against torn and lost writes, not against an
// adversary (the journal is the user's own file): version 2 uses XXH3-128,
// an order of magnitude faster than the SHA-256 of version 1, which
// recovery still reads (a journal left by an older popd).
constexpr char header_magic_v1[16] = "popd-journal-1\n";
constexpr char header_magic_v2[16] = "popd-journal-2\n";
constexpr char trailer_magic[16] = "popd-rewritten\n";

// The journal's checksum of a given version, 32 bytes (XXH3-128 padded).
class Checksum {
 public:
  explicit Checksum(int version) : version_(version) {
    if (version_ != 1) XXH3_128bits_reset(state_.get());
  }
  void update(std::string_view bytes) {
    if (version_ == 1) sha256_.update(bytes);
    else XXH3_128bits_update(state_.get(), bytes.data(), bytes.size());
  }
  Digest::Value finish() {
    if (version_ == 1) return sha256_.finish();
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state_.get()));
    Digest::Value value{};
    std::memcpy(value.data(), canonical.digest, sizeof canonical.digest);
    return value;
  }
  static Digest::Value of(int version, std::string_view bytes) {
    Checksum checksum(version);
    checksum.update(bytes);
    return checksum.finish();
  }

 private:
  struct FreeState {
    void operator()(XXH3_state_t* state) const { XXH3_freeState(state); }
  };
  int version_;
  Digest sha256_;
  std::unique_ptr<XXH3_state_t, FreeState> state_{XXH3_createState()};
};

constexpr int current_version = 2;

struct Header {
  char magic[16];
  std::uint64_t device, inode;
  std::uint64_t begin;     // first byte rewritten
  std::uint64_t kept_end;  // end of the rewritten data: the new file size
  std::uint64_t end;       // the file size before the rewrite
};

struct Trailer {
  char magic[16];
  std::uint64_t kept_end, end;
  Digest::Value stale;  // checksum of [kept_end, end) before the truncate
  Digest::Value check;  // checksum of the fields above
};

std::uint64_t trailer_offset(const Header& header) {
  return sizeof header + (header.kept_end - header.begin) + sizeof(Digest::Value);
}

std::string_view bytes_of(const auto& value) {
  return {reinterpret_cast<const char*>(&value), sizeof value};
}

// Termination signals wait until the commit is over; SIGKILL is what the
// journal is for.
class SignalsDeferred {
 public:
  SignalsDeferred() {
    sigset_t set;
    sigemptyset(&set);
    for (int signal : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGALRM, SIGPIPE}) sigaddset(&set, signal);
    sigprocmask(SIG_BLOCK, &set, &saved_);
  }
  ~SignalsDeferred() { sigprocmask(SIG_SETMASK, &saved_, nullptr); }

 private:
  sigset_t saved_;
};

bool fail(std::string& error, std::string_view what) {
  error = std::string(what) + ": " + io::error_text(errno);
  return false;
}

// Checksums [begin, end) of fd.
bool hash_range(int fd, int version, std::uint64_t begin, std::uint64_t end, Digest::Value& value) {
  Checksum digest(version);
  std::string buffer(params::read_block, '\0');
  for (std::uint64_t at = begin; at < end;) {
    std::size_t n = std::min<std::uint64_t>(buffer.size(), end - at);
    if (!io::pread_all(fd, buffer.data(), n, at)) return false;
    digest.update(std::string_view(buffer.data(), n));
    at += n;
  }
  value = digest.finish();
  return true;
}

// Copies [from, from + length) to `to` <= from, front to back, so that no
// byte is overwritten before it was read.
bool move_down(int fd, std::uint64_t from, std::uint64_t to, std::uint64_t length, std::string& buffer) {
  for (std::uint64_t done = 0; done < length;) {
    std::size_t n = std::min<std::uint64_t>(buffer.size(), length - done);
    if (!io::pread_all(fd, buffer.data(), n, from + done)) return false;
    if (!io::pwrite_all(fd, std::string_view(buffer.data(), n), to + done)) return false;
    done += n;
  }
  return true;
}

// Writes the journal under a temporary name and renames it into place.
bool write_journal(int fd, const Header& header, const std::string& journal, io::UniqueFd& out,
                   std::string& error) {
  std::string temporary = journal + ".new";
  ::unlink(temporary.c_str());
  out.reset(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out) return fail(error, "cannot create recovery journal " + temporary);
  Checksum digest(current_version);
  digest.update(bytes_of(header));
  bool ok = io::write_all(out.get(), bytes_of(header));
  std::string buffer(params::read_block, '\0');
  for (std::uint64_t at = header.begin; ok && at < header.kept_end;) {
    std::size_t n = std::min<std::uint64_t>(buffer.size(), header.kept_end - at);
    std::string_view chunk(buffer.data(), n);
    ok = io::pread_all(fd, buffer.data(), n, at) && io::write_all(out.get(), chunk);
    digest.update(chunk);
    at += n;
  }
  ok = ok && io::write_all(out.get(), bytes_of(digest.finish())) && ::fsync(out.get()) == 0 &&
       ::rename(temporary.c_str(), journal.c_str()) == 0 && io::sync_directory_of(journal);
  if (!ok) {
    fail(error, "cannot write recovery journal " + journal);
    ::unlink(temporary.c_str());
    out.reset();
  }
  return ok;
}

// Puts the journal's original bytes back: the file is then as it was.
bool restore(int fd, int journal_fd, const Header& header) {
  std::string buffer(params::read_block, '\0');
  for (std::uint64_t at = header.begin; at < header.kept_end;) {
    std::size_t n = std::min<std::uint64_t>(buffer.size(), header.kept_end - at);
    if (!io::pread_all(journal_fd, buffer.data(), n, sizeof header + (at - header.begin))) return false;
    if (!io::pwrite_all(fd, std::string_view(buffer.data(), n), at)) return false;
    at += n;
  }
  return ::fsync(fd) == 0;
}

bool remove_journal(const std::string& journal) {
  return ::unlink(journal.c_str()) == 0 && io::sync_directory_of(journal);
}

// Moves the kept bytes down over the removed ranges.
bool rewrite(int fd, const std::vector<Range>& removed, std::uint64_t end) {
  std::string buffer(params::read_block, '\0');
  std::uint64_t to = removed.front().begin;
  for (std::size_t i = 0; i < removed.size(); ++i) {
    std::uint64_t from = removed[i].end;
    std::uint64_t until = i + 1 < removed.size() ? removed[i + 1].begin : end;
    if (!move_down(fd, from, to, until - from, buffer)) return false;
    to += until - from;
  }
  return ::fsync(fd) == 0;
}

bool mark_rewritten(int fd, int journal_fd, const Header& header) {
  Trailer trailer{};
  std::memcpy(trailer.magic, trailer_magic, sizeof trailer.magic);
  trailer.kept_end = header.kept_end;
  trailer.end = header.end;
  if (!hash_range(fd, current_version, header.kept_end, header.end, trailer.stale)) return false;
  trailer.check = Checksum::of(current_version, bytes_of(trailer).substr(0, offsetof(Trailer, check)));
  return io::pwrite_all(journal_fd, bytes_of(trailer), trailer_offset(header)) &&
         ::fsync(journal_fd) == 0;
}

// Puts the original bytes back (idempotent) and drops the journal. Mail
// appended after the original end is not touched.
RecoveryResult roll_back(int fd, int journal_fd, const Header& header, const std::string& journal) {
  if (!restore(fd, journal_fd, header) || !remove_journal(journal))
    return {false, "cannot roll back an interrupted commit: " + io::error_text(errno)};
  return {true, "rolled back an interrupted commit; no deletion took effect"};
}


}  // namespace

bool remove_ranges(int fd, const std::vector<Range>& removed, const std::string& journal,
                   std::string& error) {
  if (removed.empty()) return true;
  SignalsDeferred deferred;
  struct stat st;
  if (::fstat(fd, &st) != 0) return fail(error, "cannot stat mailbox");
  std::uint64_t end = st.st_size;
  if (removed.back().end > end) {
    error = "mailbox shrank during the session";
    return false;
  }
  std::uint64_t removed_bytes = 0;
  for (const Range& range : removed) removed_bytes += range.end - range.begin;
  Header header{};
  std::memcpy(header.magic, header_magic_v2, sizeof header.magic);
  header.device = st.st_dev;
  header.inode = st.st_ino;
  header.begin = removed.front().begin;
  header.end = end;
  header.kept_end = end - removed_bytes;

  // Nothing kept after the first removed byte: one truncate does it, and a
  // truncate is atomic, so no journal is needed.
  if (header.kept_end == header.begin) {
    if (::ftruncate(fd, static_cast<off_t>(header.begin)) != 0) return fail(error, "cannot truncate mailbox");
    if (::fsync(fd) != 0) return fail(error, "cannot sync mailbox");
    return true;
  }

  io::UniqueFd journal_fd;
  if (!write_journal(fd, header, journal, journal_fd, error)) return false;
  if (!rewrite(fd, removed, end) || !mark_rewritten(fd, journal_fd.get(), header) ||
      ::ftruncate(fd, static_cast<off_t>(header.kept_end)) != 0) {
    fail(error, "cannot rewrite mailbox");
    // Undo now; if that fails, the journal stays and the next session
    // rolls back, since the truncate did not happen.
    if (restore(fd, journal_fd.get(), header)) remove_journal(journal);
    return false;
  }
  if (::fsync(fd) != 0) {
    // The stale bytes are gone and cannot be put back: the journal stays,
    // and the next session completes the commit.
    return fail(error, "deletions may have taken effect, but the disk did not confirm them");
  }
  remove_journal(journal);  // if this fails, recovery finds the truncate done
  return true;
}

RecoveryResult recover(int fd, const std::string& journal) {
  io::UniqueFd journal_fd(::open(journal.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
  if (!journal_fd) {
    if (errno == ENOENT) return {};
    return {false, "cannot open recovery journal " + journal + ": " + io::error_text(errno)};
  }
  SignalsDeferred deferred;
  struct stat journal_st, st;
  if (::fstat(journal_fd.get(), &journal_st) != 0 || ::fstat(fd, &st) != 0)
    return {false, "cannot stat recovery journal " + journal + ": " + io::error_text(errno)};

  Header header{};
  bool complete = io::pread_all(journal_fd.get(), reinterpret_cast<char*>(&header), sizeof header, 0);
  int version = std::memcmp(header.magic, header_magic_v1, sizeof header.magic) == 0   ? 1
                : std::memcmp(header.magic, header_magic_v2, sizeof header.magic) == 0 ? 2
                                                                                       : 0;
  complete = complete && version != 0 &&
                  header.begin <= header.kept_end && header.kept_end <= header.end &&
                  static_cast<std::uint64_t>(journal_st.st_size) >=
                      sizeof header + (header.kept_end - header.begin) + sizeof(Digest::Value);
  if (complete) {
    // Verify the backup against its checksum.
    Digest::Value stored{}, computed{};
    std::uint64_t backup_end = sizeof header + (header.kept_end - header.begin);
    Checksum digest(version);
    digest.update(bytes_of(header));
    std::string buffer(params::read_block, '\0');
    for (std::uint64_t at = sizeof header; complete && at < backup_end;) {
      std::size_t n = std::min<std::uint64_t>(buffer.size(), backup_end - at);
      complete = io::pread_all(journal_fd.get(), buffer.data(), n, at);
      digest.update(std::string_view(buffer.data(), n));
      at += n;
    }
    computed = digest.finish();
    complete = complete &&
               io::pread_all(journal_fd.get(), reinterpret_cast<char*>(stored.data()), stored.size(), backup_end) &&
               stored == computed;
  }
  if (!complete) {
    // A journal gets its name only once it is durable, so this one was
    // damaged afterwards. Without it a half-rewritten mailbox cannot be
    // repaired: touch nothing and let an administrator look.
    return {false, "recovery journal " + journal + " is damaged; mailbox left alone"};
  }
  if (header.device != static_cast<std::uint64_t>(st.st_dev) ||
      header.inode != static_cast<std::uint64_t>(st.st_ino)) {
    std::string aside = journal + ".orphan." + std::to_string(std::time(nullptr));
    if (::rename(journal.c_str(), aside.c_str()) != 0) return {false, "cannot set aside journal " + journal};
    return {true, "recovery journal belongs to another mailbox file; moved to " + aside};
  }

  Trailer trailer{};
  bool rewritten = io::pread_all(journal_fd.get(), reinterpret_cast<char*>(&trailer), sizeof trailer,
                                 trailer_offset(header)) &&
                   std::memcmp(trailer.magic, trailer_magic, sizeof trailer.magic) == 0 &&
                   trailer.check == Checksum::of(version, bytes_of(trailer).substr(0, offsetof(Trailer, check))) &&
                   trailer.kept_end == header.kept_end && trailer.end == header.end;
  if (!rewritten) return roll_back(fd, journal_fd.get(), header, journal);

  // Before the truncate, rolling back is always possible and is what a
  // failed QUIT promised; after it, the commit is complete. The truncate
  // happened if [kept_end, end) no longer holds the stale bytes.
  bool truncated = static_cast<std::uint64_t>(st.st_size) < header.end;
  if (!truncated) {
    Digest::Value now{};
    if (!hash_range(fd, version, header.kept_end, header.end, now))
      return {false, "cannot read mailbox: " + io::error_text(errno)};
    truncated = now != trailer.stale;
  }
  if (!truncated) return roll_back(fd, journal_fd.get(), header, journal);
  if (!remove_journal(journal)) return {false, "cannot remove recovery journal " + journal};
  return {true, "completed an interrupted commit"};
}

}  // namespace popd::mailbox
