// A user's mbox spool, opened, locked and parsed for one session: the
// Maildrop the protocol engine works on.
#pragma once

#include <memory>
#include <string>

#include "sys/fd.h"
#include "mailbox/file_window.h"
#include "mailbox/mbox/index.h"
#include "mailbox/lock.h"
#include "mailbox/mbox/mbox.h"
#include "mailbox/store.h"
#include "protocol/maildrop.h"

namespace popd::mailbox {

// Reads an open file with pread(2).
class FileSource final : public ByteSource {
 public:
  FileSource(int fd, std::uint64_t size) : fd_(fd), size_(size) {}
  std::size_t read_at(std::uint64_t offset, char* buffer, std::size_t size) override;
  std::uint64_t size() const override { return size_; }

 private:
  int fd_;
  std::uint64_t size_;
};

class Spool final : public Store {
 public:
  struct Opened {
    protocol::Login::Outcome outcome = protocol::Login::Outcome::temporary;
    std::string text;               // for the client when not accepted
    std::unique_ptr<Spool> spool;   // set when accepted
    std::string notes;              // stale lock taken over, recovery done: for syslog
  };
  // Locks, recovers and parses the mailbox at `path` for the calling user;
  // `scheme` gives the unique-ids.
  using Files = StateFiles;
  static Opened open(const std::string& path, const Files& files, UidScheme scheme = UidScheme::popd,
                     Locking locking = {});

  std::size_t count() const override { return mbox_.messages.size(); }
  std::uint64_t size(std::size_t index) const override { return mbox_.messages[index].size; }
  std::string uid(std::size_t index) const override { return mbox_.uid(index); }
  void append_uid(std::size_t index, std::string& out) const override { mbox_.append_uid(index, out); }
  bool verify(std::size_t index) override;
  bool send(std::size_t index, std::optional<std::uint64_t> body_lines,
            protocol::MessageSink& sink) override;
  bool commit(const std::vector<bool>& deleted, std::string& error) override;
  void refresh_lock() override { dotlock_.refresh(); }
  bool save_index(std::string& error) override;

 private:
  Spool() = default;

  std::string journal_;
  std::string index_;
  std::string uidvalidity_;
  bool index_current_ = false;  // the index on disk describes mbox_ and state_
  // mbox_ came from the index, trusted by the spool's state alone: each
  // message is checked before it is sent or moved (index.h).
  bool lazily_trusted_ = false;
  std::int64_t state_seen_ns_ = 0;  // when state_ was taken: racy or not (index.h)
  // The spool does not hold what the index said: the index is removed, so
  // that the next login parses the spool.
  void drop_index();
  FileState state_;             // of the spool as mbox_ describes it
  DotLock dotlock_;
  sys::UniqueFd fd_;  // closing it releases the fcntl lock
  Mbox mbox_;
  FileWindow window_;       // of the spool, for send()
  ReadBuffer read_buffer_;  // for send() of a message the window cannot hold
};

}  // namespace popd::mailbox
