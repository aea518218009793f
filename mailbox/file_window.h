// A read-only window of the spool, mapped into memory: RETR and TOP read
// messages straight from the page cache, not copied into a buffer first
// (that copy took two fifths of a RETR session's own time), and the index
// check reads a line of each message without copying the spool.
//
// A mapped file that someone cuts short while it is mapped (the spool's
// locks bind only those who take them) makes a read of the lost pages raise
// SIGBUS, which would kill the session. The window's handler maps zeros over
// the window instead and marks it cut short: the caller ends the reply as
// broken, as it does when a read comes back short.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace popd::mailbox {

class FileWindow {
 public:
  FileWindow() = default;
  FileWindow(const FileWindow&) = delete;
  FileWindow& operator=(const FileWindow&) = delete;
  ~FileWindow();

  // The bytes [begin, end) of `fd`, a file of `file_size` bytes, mapped
  // anew unless the window holds them: a window maps at least `size`
  // bytes, so that it serves the messages that follow too. nullopt if they
  // lie beyond file_size or cannot be mapped (nor guarded: at most eight
  // windows exist at once).
  std::optional<std::string_view> bytes(int fd, std::uint64_t begin, std::uint64_t end, std::uint64_t file_size,
                                        std::uint64_t size);
  // Whether a read through this window found the file cut short; what it
  // read from then on were zeros.
  bool cut_short() const;
  void unmap();

 private:
  char* data_ = nullptr;
  std::uint64_t offset_ = 0;  // of data_ in the file
  std::uint64_t length_ = 0;
  int slot_ = -1;  // of the SIGBUS handler's guards, taken at the first mapping
};

}  // namespace popd::mailbox
