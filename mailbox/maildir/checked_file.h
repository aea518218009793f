// The text files popd keeps for a Maildir (the journal of QUIT's
// deletions, the sizes file), each replaced as a whole: a first line that
// names the kind, the body, and a last line "end HEX" with an XXH3-64 of
// all before it, so that a torn or stale write is found.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <xxhash.h>

#include "sys/fd.h"

namespace popd::mailbox::maildir {

// Writes a checked text into `path`.new, renamed over `path` by finish():
// piece by piece, so that the text for a 100,000-message Maildir never
// lies whole in memory. One not finished is removed.
class CheckedFile {
 public:
  CheckedFile(std::string path, std::string_view magic);
  ~CheckedFile();
  CheckedFile(const CheckedFile&) = delete;
  CheckedFile& operator=(const CheckedFile&) = delete;

  void add(std::string_view text);
  // Writes the end line, fdatasync()s the file if `durable`, and renames it
  // into place. false: `error` says why, and nothing replaced `path`.
  bool finish(bool durable, std::string& error);

 private:
  bool flush();

  std::string path_, temporary_;
  sys::UniqueFd fd_;
  int error_ = 0;  // of the first write that failed
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> hash_;
  std::string buffer_;
};

// The body of a text CheckedFile wrote with `magic`, lines each ended by
// '\n'; nullopt if it is another kind, or damaged.
std::optional<std::string_view> checked_body(std::string_view text, std::string_view magic);

}  // namespace popd::mailbox::maildir
