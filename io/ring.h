// The way replies take from the session process to the TLS relay (DESIGN):
// a ring of shared memory, so that the bytes of a RETR are not copied into
// a socket by one process and out of it by the other. The session writes
// into it; the relay encrypts straight out of it.
//
// Each side keeps its own position and only reads the other's, checked:
// a position that cannot be (ahead of what was written, or more than the
// ring holds apart) makes the ring broken() and the connection ends. The
// relay makes the memory, a memfd sealed against shrinking, so that no
// side can make the other's access fault.
//
// Waking is left to the caller, through descriptors: publish() and
// consume() say when the other side sleeps and must be woken.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "sys/fd.h"

namespace popd::io {

class Ring {
 public:
  // The relay's side: a new ring of params::ring_size bytes.
  static std::optional<Ring> create(std::string& error);
  // The size of its memfd: a control page and the ring.
  static std::size_t file_size();
  // The session's side, from a descriptor the relay passed: it must be a
  // sealed memfd of the ring's size.
  static std::optional<Ring> attach(sys::UniqueFd fd, std::string& error);

  Ring(Ring&& other) noexcept;
  Ring& operator=(Ring&&) = delete;
  Ring(const Ring&) = delete;
  ~Ring();

  int fd() const { return fd_.get(); }
  // The other side's position was impossible: nothing more can be trusted.
  bool broken() const { return broken_; }

  // --- The writer (session).
  // Free room after what is staged, in one piece (the ring is mapped twice
  // in a row); empty when full or broken.
  std::span<char> room();
  // `size` bytes were written at the start of room().
  void stage(std::size_t size) { staged_ += size; }
  std::size_t staged() const { return staged_; }
  // Makes the staged bytes the reader's. true: the reader sleeps, wake it.
  bool publish();
  // Before sleeping for `needed` bytes of room (at most half the ring):
  // true if there are still fewer (sleep), false if the reader made them
  // meanwhile.
  bool prepare_to_wait_for_room(std::size_t needed = 1);

  // --- The reader (relay).
  // What was published and not yet consumed, in one piece.
  std::string_view data();
  // The first `size` bytes of data() are done. true: the writer sleeps
  // and half the ring is free, wake it.
  bool consume(std::size_t size);
  // Before sleeping for data: true if there is still none (sleep), false
  // if the writer published some meanwhile.
  bool prepare_to_wait_for_data();

 private:
  struct Shared;
  Ring(sys::UniqueFd fd, char* base, std::size_t mapped);
  static std::optional<Ring> map(sys::UniqueFd fd, std::string& error);
  Shared& shared() const;
  char* data_start() const;
  // The other side's position, checked against ours.
  std::uint64_t published_by_writer();
  std::uint64_t consumed_by_reader();

  sys::UniqueFd fd_;
  char* base_ = nullptr;
  std::size_t mapped_ = 0;
  bool broken_ = false;
  std::uint64_t position_ = 0;  // ours: published (writer) or consumed (reader)
  std::size_t staged_ = 0;      // writer only
};

}  // namespace popd::io
