#include "mailbox/mbox/commit.h"

#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "mailbox/mbox/journal.h"
#include "params.h"
#include "sys/file.h"

namespace popd::mailbox {

using namespace journal;

namespace journal {

// remove_ranges, also for a recovery that must remove stale bytes before new
// mail (the failed-sync flag is the caller's).
bool commit_removal(int fd, const std::vector<Range>& removed, const std::string& journal, std::string& error) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return fail(error, "cannot stat mailbox");
  std::uint64_t end = st.st_size;
  if (removed.back().end > end) {
    error = "mailbox shrank during the session";
    return false;
  }
  std::uint64_t removed_bytes = 0;
  for (const Range& range : removed) removed_bytes += range.end - range.begin;
  Header3 header{};
  std::memcpy(header.magic, magic_v5, sizeof header.magic);
  header.device = st.st_dev;
  header.inode = st.st_ino;
  header.begin = removed.front().begin;
  header.end = end;
  header.kept_end = end - removed_bytes;

  // Nothing kept after the first removed byte: one truncate does it, and a
  // truncate is atomic, so no journal is needed.
  if (header.kept_end == header.begin) {
    if (::ftruncate(fd, static_cast<off_t>(header.begin)) != 0) return fail(error, "cannot truncate mailbox");
    if (!sync(fd)) return fail(error, "cannot sync mailbox");
    return true;
  }

  // A journal another user could rename away and back would be replayed
  // over a later mailbox (recover() refuses it there too).
  std::string why;
  if (!sys::only_owner_changes_directory_of(journal, ::geteuid(), ::getegid(), why)) {
    error = "the recovery journal's directory can be changed by others: " + why;
    return false;
  }
  if (::getrandom(header.marker.data(), header.marker.size(), 0) != static_cast<ssize_t>(header.marker.size()))
    return fail(error, "cannot get random bytes");
  Moves moves(removed, end);
  std::uint64_t floor = std::clamp((header.kept_end - header.begin) / params::commit_steps, params::commit_step_floor,
                                   params::commit_step_ceiling);
  std::vector<Step> steps = moves.plan(header.begin, header.kept_end, floor);
  header.ranges = removed.size();
  header.steps = steps.size();
  Journal plan(5, fd, header, removed, std::move(steps));
  auto spool = file_id(fd);
  if (!spool || !plan.bind(*spool)) return fail(error, "cannot read mailbox");
  if (!mark_pending(fd, journal, error)) return false;
  bool named = true;
  // Once the journal is in place the commit goes through: now, or at the
  // next recovery.
  if (plan.create(journal, error, named) && plan.run({}) && plan.finish(journal, false)) {
    clear_pending(fd);
    return true;
  }
  if (!named) return false;
  int cause = errno;
  if (a_sync_failed) mark_failed_sync(journal);
  error = "deletions may have taken effect, but the disk did not confirm them (" + sys::error_text(cause) + "); " +
          (a_sync_failed ? "the next session after a restart completes them" : "the next session completes them");
  return false;
}

}  // namespace journal

bool remove_ranges(int fd, const std::vector<Range>& removed, const std::string& journal, std::string& error) {
  if (removed.empty()) return true;
  SignalsDeferred deferred;
  a_sync_failed = false;
  if (commit_removal(fd, removed, journal, error)) return true;
  // No journal named: nothing took effect. (Not in commit_removal, which a
  // recovery also calls while its own journal is still there.)
  struct stat st;
  if (::lstat(journal.c_str(), &st) != 0 && errno == ENOENT) clear_pending(fd);
  return false;
}

}  // namespace popd::mailbox
