// Committing deletions to an mbox in place, crash-safely.
//
// The mailbox keeps its inode: an MDA may hold it open while it waits for the
// lock. Only the part from the first removed byte on is rewritten. Before the
// rewrite, a journal with the original bytes that will be overwritten is made
// durable; a crash at any instant is undone or completed by recover(), which
// every session runs before it reads the mailbox. See popd.8, RECOVERY.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace popd::mailbox {

struct Range {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

// Removes the sorted, disjoint `removed` ranges from the file open at `fd`
// (locked by the caller). Bytes past the last range, including any the file
// gained after it was parsed, are kept. true once the result is durable; on
// false the file is as it was, or `journal` is left for recover().
bool remove_ranges(int fd, const std::vector<Range>& removed, const std::string& journal,
                   std::string& error);

struct RecoveryResult {
  bool ok = true;       // false: the mailbox must not be used now
  std::string action;   // what was done, for syslog; empty if nothing
};

// Finishes or undoes an interrupted remove_ranges() on the file at `fd`.
RecoveryResult recover(int fd, const std::string& journal);

}  // namespace popd::mailbox
