// The session's log line's uidl=HASH/NEW, as Dovecot's %{uidl_change}
// tells an administrator when unique-ids changed (and clients will
// download everything again): a short hash of the mailbox's unique-id
// listing at the session's end, and how many of its ids were not in the
// listing the previous session ended with. That listing is kept beside
// the index (INDEX.uidls: the ids' 64-bit hashes, sorted), as the user.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/maildrop.h"

namespace popd::mailbox {

struct UidlChange {
  std::string hash;                  // 8 hex digits; the same listing, the same hash
  std::optional<std::size_t> added;  // ids new since the last session; none if there is no record
  std::string note;                  // why the record could not be read or written
};

// The listing of `drop` (numbered anew after a commit) against the record
// at `path`, which it then replaces.
UidlChange record_uidl_change(const protocol::Maildrop& drop, const std::string& path, uid_t owner);

// The record's form: a header line, then the sorted hashes, 8 bytes each.
std::string format_uidl_hashes(const std::vector<std::uint64_t>& sorted);
std::optional<std::vector<std::uint64_t>> parse_uidl_hashes(std::string_view text);

}  // namespace popd::mailbox
