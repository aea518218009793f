// Where an mbox's bytes come from: a file read with pread (FileSource,
// mbox/spool.h) in the server, a string in the tests and the fuzzer.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <system_error>

namespace popd::mailbox {

class ByteSource {
 public:
  // Reads up to `size` bytes at `offset`; fewer only at the end of the data
  // (or when a file shrank since its size was taken: the parser and the
  // sender throw SpoolChanged then). Throws std::system_error when the data
  // cannot be read.
  virtual std::size_t read_at(std::uint64_t offset, char* buffer, std::size_t size) = 0;
  virtual std::uint64_t size() const = 0;

 protected:
  ~ByteSource() = default;
};

class StringSource final : public ByteSource {
 public:
  explicit StringSource(std::string_view data) : data_(data) {}
  std::size_t read_at(std::uint64_t offset, char* buffer, std::size_t size) override;
  std::uint64_t size() const override { return data_.size(); }

 private:
  std::string_view data_;
};

// A read came back shorter than the size the source was opened with: the
// file was cut short meanwhile (only a program that ignores the locks can
// do that). Nothing read is trusted; the session refuses and writes nothing.
struct SpoolChanged : std::system_error {
  SpoolChanged() : std::system_error(EIO, std::generic_category(), "mailbox changed while it was read") {}
};

// Memory that send() reads a message into, kept by the caller from one
// message to the next: a RETR of many large messages then allocates it
// once, rather than a fresh block (that the kernel zeroes page by page)
// for each. Empty until the first send() that needs it.
using ReadBuffer = std::unique_ptr<char[]>;

}  // namespace popd::mailbox
