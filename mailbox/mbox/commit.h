// Committing deletions to an mbox in place, crash-safely.
//
// The mailbox keeps its inode: an MDA may hold it open while it waits for the
// lock. Only the part from the first removed byte on is rewritten, moving
// what is kept down in steps. Before the first move, a journal is made
// durable with the plan; before each step, a copy of just the bytes the
// step overwrites before it has read them (none where the bytes removed
// before a step are at least its size), in one of two slots that take
// turns, and a progress record. From then on a crash at any instant is
// completed by recover(), which every session runs before it reads the
// mailbox. See popd.8, RECOVERY.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "mailbox/mbox/range.h"

namespace popd::mailbox {


// Removes the sorted, disjoint `removed` ranges from the file open at `fd`
// (locked by the caller). Bytes past the last range, including any the file
// gained after it was parsed, are kept. true once the result is durable. On
// false the file is as it was, unless `error` says the deletions may have
// taken effect: then `journal` is left, and a later recover() completes
// them (after a failed sync, the first after a restart).
bool remove_ranges(int fd, const std::vector<Range>& removed, const std::string& journal,
                   std::string& error);

struct RecoveryResult {
  RecoveryResult() = default;
  RecoveryResult(bool ok_, std::string action_, std::string reply_ = {})
      : ok(ok_), action(std::move(action_)), reply(std::move(reply_)) {}

  bool ok = true;       // false: the mailbox must not be used now
  std::string action;   // what was done, for syslog; empty if nothing
  std::string reply;    // when not ok, for the client if not the usual text
};

// Completes an interrupted remove_ranges() on the file at `fd` (or, for the
// journal of an older popd, undoes it); refuses where it cannot tell
// whether one was cut short, or where the journal does not fit the file.
RecoveryResult recover(int fd, const std::string& journal);

}  // namespace popd::mailbox
