// --expire DAYS (RFC 2449's EXPIRE): mail a client left on the server goes
// DAYS after it was first retrieved. When each message was first
// retrieved is kept by unique-id in a per-user file beside the index
// (INDEX.retrieved), never in the mailbox; at QUIT the messages retrieved
// DAYS or more ago are deleted together with those the client deleted,
// in the mailbox's one all-or-nothing commit.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mailbox/store.h"

namespace popd::mailbox {

using Clock = std::chrono::system_clock;

// The file's records: unique-id -> first retrieved. Lines that do not
// read as a record, or a time after `now`, are left out: a damaged file
// can only make mail stay longer, never go sooner.
std::map<std::string, Clock::time_point> parse_retrieved(std::string_view text, Clock::time_point now);
std::string format_retrieved(const std::map<std::string, Clock::time_point>& records);

// A Store that passes everything to `inner` and keeps the records.
class ExpiringStore final : public Store {
 public:
  ExpiringStore(std::unique_ptr<Store> inner, std::string records_path, uid_t owner, std::chrono::days after);

  std::size_t count() const override { return inner_->count(); }
  std::uint64_t size(std::size_t index) const override { return inner_->size(index); }
  std::string uid(std::size_t index) const override { return inner_->uid(index); }
  void append_uid(std::size_t index, std::string& out) const override { inner_->append_uid(index, out); }
  bool verify(std::size_t index) override { return inner_->verify(index); }
  bool send(std::size_t index, std::optional<std::uint64_t> body_lines, protocol::MessageSink& sink) override;
  // Records what this session retrieved first, then commits `deleted`
  // and every message retrieved `after` ago or more.
  bool commit(const std::vector<bool>& deleted, std::string& error) override;
  void refresh_lock() override { inner_->refresh_lock(); }
  bool save_index(std::string& error) override { return inner_->save_index(error); }

  // For the log: how many the last commit deleted as expired; why the
  // records could not be read or written, if so.
  std::size_t expired() const { return expired_; }
  const std::string& note() const { return note_; }

 private:
  std::unique_ptr<Store> inner_;
  std::string path_;
  uid_t owner_;
  std::chrono::days after_;
  std::vector<bool> retrieved_;  // by RETR in this session
  std::size_t expired_ = 0;
  std::string note_;
};

}  // namespace popd::mailbox
