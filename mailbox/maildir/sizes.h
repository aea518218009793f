// The sizes popd counted of Maildir messages whose names carry no ,W=:
// kept in the --index file, keyed by base name (which never changes while
// a message lives), so that a warm login opens no message. An entry is
// used only for a name it knows; the file's checksum guards against a torn
// write, and a file that is not the user's own is not read.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailbox/maildir/listing.h"

namespace popd::mailbox::maildir {

class Sizes {
 public:
  // Reads the file at `path`; none, or one that fails its checks, is empty.
  void load(const std::string& path);
  std::optional<std::uint64_t> find(std::string_view base) const;
  std::size_t count() const { return line_starts_.size(); }

  // Writes the counted sizes of `listing` (those not from ,W=) to `path`,
  // by a new file renamed into place.
  static bool save(const std::string& path, const Listing& listing, std::string& error);

 private:
  // The base name and size of the line that starts at `offset` in text_.
  std::pair<std::string_view, std::uint64_t> entry_at(std::uint32_t offset) const;

  std::string text_;
  // Where each line starts in text_, in order of base name: 32 bits do,
  // as text_ holds at most params::maildir_list_limit bytes.
  std::vector<std::uint32_t> line_starts_;
  mutable std::size_t next_ = 0;  // where find() looks first
};

}  // namespace popd::mailbox::maildir
