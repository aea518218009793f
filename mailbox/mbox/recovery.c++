#include "mailbox/mbox/commit.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "mailbox/mbox/journal.h"
#include "sys/file.h"

namespace popd::mailbox {
namespace {

using namespace journal;

// A refusal while a marker says a sync failed in this boot; nullopt when
// there is none, or one of an earlier boot, which is removed (the disk
// holds what it holds now). Without a boot id to compare (no /proc), or a
// marker that cannot be read or is empty, it holds.
std::optional<RecoveryResult> held_by_failed_sync(const std::string& journal) {
  std::string path = failed_sync_marker(journal), now = this_boot();
  struct stat st;
  bool held = !now.empty() && ::lstat(failed_sync_marker_of_this_boot(journal).c_str(), &st) == 0;
  if (!held) {
    sys::OwnFile marker = sys::open_own_file(path, O_RDONLY, ::geteuid());
    if (!marker.fd && marker.refused.empty() && marker.error == ENOENT) return std::nullopt;
    if (!marker.fd)
      return RecoveryResult{false,
                            path + ": " + (marker.refused.empty() ? sys::error_text(marker.error) : marker.refused) +
                                "; recovery journal " + journal + " not applied",
                            "Mailbox cannot be checked for an interrupted commit, try again later"};
    char boot[64] = {};
    ssize_t n = ::read(marker.fd.get(), boot, sizeof boot - 1);
    if (n > 0 && !now.empty() && std::string(boot, n) != now) {
      ::unlink(path.c_str());
      sys::sync_directory_of(path);
      return std::nullopt;
    }
  }
  return RecoveryResult{false,
                        "a sync of recovery journal " + journal + " or of the mailbox failed in this boot; what is "
                        "read back may not be what the disk holds: left alone until the system restarts, or " + path +
                            "* is removed",
                        "Mailbox waits for the disk to be checked"};
}

// With no journal to be seen: a refusal if the mailbox says a commit's
// journal is in another directory than the one there now.
std::optional<RecoveryResult> pending_elsewhere(int fd, const std::string& journal) {
  FileId recorded{};
  ssize_t n = ::fgetxattr(fd, pending_attribute, &recorded, sizeof recorded);
  if (n < 0) return std::nullopt;  // none (ENODATA), or no attributes here
  auto now = directory_id(journal);
  if (n == sizeof recorded && now && same_file_id(recorded, *now)) {
    clear_pending(fd);  // the commit ended, or never began
    return std::nullopt;
  }
  return RecoveryResult{false,
                        "the mailbox was being committed with recovery journal " + journal + " in another directory "
                        "than the one there now (a home not mounted?); left alone until it is back (attribute " +
                            pending_attribute + " of the mailbox)",
                        "Mailbox cannot be checked for an interrupted commit, try again later"};
}

// A journal that names another mailbox file, or expects other bytes than
// the mailbox holds, is left alone, and so is the mailbox.
RecoveryResult does_not_fit(const std::string& path, const std::string& what) {
  return {false,
          "recovery journal " + path + " does not fit the mailbox (" + what + "); not applied, left alone: see "
          "RECOVERY in popd(8)",
          "Recovery journal does not fit the mailbox"};
}

// What a failed check of a bound journal means.
RecoveryResult refused(Fit fit, const std::string& path, const std::string& what) {
  if (a_sync_failed || fit == Fit::unreadable)
    return {false, "cannot check recovery journal " + path + " against the mailbox: " + sys::error_text(errno)};
  return does_not_fit(path, what);
}

RecoveryResult recover_rolled_forward(int fd, sys::UniqueFd journal_fd, const std::string& path,
                                      std::uint64_t journal_size) {
  Header3 header{};
  std::optional<Journal> journal;
  if (pread_value(journal_fd.get(), header, 0))
    journal = Journal::open(fd, journal_fd.get(), journal_size, header);
  // A journal gets its name only once it is durable, so this one was
  // damaged afterwards; without it a half-moved mailbox cannot be put
  // right. Touch nothing and let an administrator look.
  std::string damaged = "recovery journal " + path + " is damaged; mailbox left alone";
  if (!journal) return {false, damaged};
  auto now = file_id(fd);
  if (journal->bound() ? !now || !same_file_id(journal->bindings().spool, *now)
                       : !same_file(fd, header.device, header.inode))
    return does_not_fit(path, "another file");
  journal->adopt(std::move(journal_fd));
  struct stat st;
  if (::fstat(fd, &st) != 0) return {false, "cannot stat mailbox: " + sys::error_text(errno)};
  std::uint64_t size = st.st_size;
  auto cannot_read = [&] {
    return RecoveryResult{false, "cannot read recovery journal " + path + " or the mailbox: " + sys::error_text(errno)};
  };
  auto cannot_complete = [] { return RecoveryResult{false, "cannot complete an interrupted commit: " + sys::error_text(errno)}; };
  auto drop_journal = [&](const std::string& done) {
    if (!remove_journal(path)) return RecoveryResult{false, "cannot remove recovery journal " + path};
    clear_pending(fd);
    return RecoveryResult{true, done};
  };

  bool marked = journal->marked();
  bool cut = marked && !journal->marker_in_place();
  if (journal->unreadable()) return cannot_read();
  if (cut) return drop_journal("completed an interrupted commit");  // every step done, the marker since cut or overwritten
  if (size < header.end) return does_not_fit(path, "the mailbox is shorter than the plan");
  if (!marked) {
    Resume from = journal->resume();
    if (journal->unreadable()) return cannot_read();
    if (from.damaged) return {false, damaged};
    if (journal->bound()) {
      // Its record written again and durable first.
      Fit fit = journal->reaffirm(from) ? journal->fits_from(from) : Fit::unreadable;
      if (fit == Fit::differs && from.step == 0 && !from.redo)
        return drop_journal("an interrupted commit had moved nothing and the mailbox was changed since; "
                            "no deletion took effect");
      if (fit != Fit::yes) return refused(fit, path, "it holds other bytes than the plan expects");
    }
    if (!journal->run(from)) return cannot_complete();
  } else if (journal->bound()) {
    Fit fit = journal->reaffirm_marker() ? journal->fits_after() : Fit::unreadable;
    if (fit != Fit::yes) return refused(fit, path, "the kept mail or the bytes to cut differ");
  }
  if (size > header.end) {
    // Mail delivered after the crash follows the stale bytes: remove them
    // by a commit of their own, whose journal replaces this one.
    std::string error;
    if (!commit_removal(fd, {{header.kept_end, header.end}}, path, error))
      return {false, "cannot complete an interrupted commit: " + error};
    return {true, "completed an interrupted commit; mail delivered since is kept"};
  }
  if (!journal->finish(path, marked)) return cannot_complete();
  clear_pending(fd);
  return {true, "completed an interrupted commit"};
}

// --- versions 1 and 2: journals of an older popd, rolled back ---------------
//
// Header, the original bytes of [begin, kept_end), a checksum of both;
// once the rewrite was durable, a Trailer.

constexpr char header_magic_v1[16] = "popd-journal-1\n";
constexpr char header_magic_v2[16] = "popd-journal-2\n";
constexpr char trailer_magic[16] = "popd-rewritten\n";

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

// Puts the journal's original bytes back (idempotent) and drops the
// journal. Mail appended after the original end is not touched.
RecoveryResult roll_back(int fd, int journal_fd, const Header& header, const std::string& journal) {
  if (!copy(journal_fd, sizeof header, header.kept_end - header.begin, fd, header.begin) || !sync(fd) ||
      !remove_journal(journal))
    return {false, "cannot roll back an interrupted commit: " + sys::error_text(errno)};
  return {true, "rolled back an interrupted commit; no deletion took effect"};
}

RecoveryResult recover_old(int fd, int journal_fd, const std::string& journal, std::uint64_t journal_size,
                           int version, const Header& header) {
  std::uint64_t backup_end = sizeof header + (header.kept_end - header.begin);
  Digest::Value stored{}, computed{};
  bool complete = header.begin <= header.kept_end && header.kept_end <= header.end &&
                  journal_size >= backup_end + sizeof stored &&
                  hash_range(journal_fd, version, 0, backup_end, computed);
  if (!complete || !pread_value(journal_fd, stored, backup_end) || stored != computed)
    return {false, "recovery journal " + journal + " is damaged; mailbox left alone"};
  if (!same_file(fd, header.device, header.inode)) return does_not_fit(journal, "another file");

  Trailer trailer{};
  bool rewritten = pread_value(journal_fd, trailer, backup_end + sizeof stored) &&
                   std::memcmp(trailer.magic, trailer_magic, sizeof trailer.magic) == 0 &&
                   trailer.check == Checksum::of(version, bytes_of(trailer).substr(0, offsetof(Trailer, check))) &&
                   trailer.kept_end == header.kept_end && trailer.end == header.end;
  if (!rewritten) return roll_back(fd, journal_fd, header, journal);
  // Before the truncate, rolling back is always possible; after it, the
  // commit is complete. It happened if [kept_end, end) no longer holds the
  // stale bytes.
  struct stat st;
  if (::fstat(fd, &st) != 0) return {false, "cannot stat mailbox: " + sys::error_text(errno)};
  bool truncated = static_cast<std::uint64_t>(st.st_size) < header.end;
  if (!truncated) {
    Digest::Value now{};
    if (!hash_range(fd, version, header.kept_end, header.end, now))
      return {false, "cannot read mailbox: " + sys::error_text(errno)};
    truncated = now != trailer.stale;
  }
  if (!truncated) return roll_back(fd, journal_fd, header, journal);
  if (!remove_journal(journal)) return {false, "cannot remove recovery journal " + journal};
  return {true, "completed an interrupted commit"};
}

}  // namespace

RecoveryResult recover(int fd, const std::string& journal) {
  // Where others may write beside it, a journal another user planted
  // could write anything into this mailbox: only the user's own is read.
  sys::OwnFile file = sys::open_own_file(journal, O_RDWR, ::geteuid());
  auto unknown = [&](const std::string& why) {
    return RecoveryResult{false, "cannot tell whether a commit was cut short: " + why,
                          "Mailbox cannot be checked for an interrupted commit, try again later"};
  };
  if (!file.fd && file.refused.empty() && file.error == ENOENT) {
    // No journal, or none to be seen: a home that is not there (NFS or
    // autofs down), or an empty mount point in its place, may hold one.
    struct stat directory;
    bool found = ::stat(sys::directory_of(journal).c_str(), &directory) == 0;
    if (!found || !S_ISDIR(directory.st_mode))
      return unknown("the directory of recovery journal " + journal + " is not there (" +
                     sys::error_text(found ? ENOTDIR : errno) + ")");
    if (auto elsewhere = pending_elsewhere(fd, journal)) return *elsewhere;
    return {};
  }
  if (!file.fd && file.refused.empty())
    return unknown("cannot open recovery journal " + journal + ": " + sys::error_text(file.error));
  if (auto held = held_by_failed_sync(journal)) return *held;
  // Nor one from where another user could have put back an old one of the
  // user's own, which names this very mailbox but not its present bytes.
  std::string why;
  if (!sys::only_owner_changes_directory_of(journal, ::geteuid(), ::getegid(), why))
    return {false, "recovery journal " + journal + " is where others can change it (" + why + "); not applied",
            "Recovery journal is where others can change it"};
  if (!file.fd)
    return {false, "recovery journal " + journal + " " + file.refused + "; not applied, mailbox left alone",
            "Recovery journal is not the user's own file"};
  sys::UniqueFd journal_fd = std::move(file.fd);
  SignalsDeferred deferred;
  struct stat journal_st;
  if (::fstat(journal_fd.get(), &journal_st) != 0)
    return {false, "cannot stat recovery journal " + journal + ": " + sys::error_text(errno)};
  Header header{};
  if (!pread_value(journal_fd.get(), header, 0))
    return {false, "recovery journal " + journal + " is damaged; mailbox left alone"};
  std::uint64_t size = journal_st.st_size;
  if (std::memcmp(header.magic, magic_v3, sizeof header.magic) == 0 ||
      std::memcmp(header.magic, magic_v4, sizeof header.magic) == 0 ||
      std::memcmp(header.magic, magic_v5, sizeof header.magic) == 0) {
    a_sync_failed = false;
    RecoveryResult result = recover_rolled_forward(fd, std::move(journal_fd), journal, size);
    if (!result.ok && a_sync_failed) mark_failed_sync(journal);
    return result;
  }
  int version = std::memcmp(header.magic, header_magic_v1, sizeof header.magic) == 0   ? 1
                : std::memcmp(header.magic, header_magic_v2, sizeof header.magic) == 0 ? 2
                                                                                       : 0;
  if (version == 0) return {false, "recovery journal " + journal + " is damaged; mailbox left alone"};
  return recover_old(fd, journal_fd.get(), journal, size, version, header);
}

}  // namespace popd::mailbox
