// A user's Maildir, opened, locked and listed for one session: the
// Maildrop the protocol engine works on. The maildrop is the messages of
// new/ and cur/ (not Maildir++ subfolders). A session that deletes nothing
// writes nothing into the Maildir (unless --maildir-mark-seen, seen.h); what popd keeps (the sizes it counted,
// the journal of QUIT's deletions) lives in the --index and --journal
// files, as for an mbox spool. See popd.8, MAILDIR.
#pragma once

#include <memory>
#include <string>

#include "mailbox/maildir/listing.h"
#include "mailbox/store.h"
#include "mailbox/uids.h"
#include "sys/fd.h"

namespace popd::mailbox::maildir {

struct Settings {
  UidScheme scheme = UidScheme::popd;
  bool mark_seen = false;  // --maildir-mark-seen (seen.h)
};

class Maildir final : public Store {
 public:
  struct Opened {
    protocol::Login::Outcome outcome = protocol::Login::Outcome::temporary;
    std::string text;                 // for the client when not accepted
    std::unique_ptr<Maildir> maildir;  // set when accepted
    std::string notes;                // deletions completed, files skipped: for syslog
  };
  // Locks (one session per Maildir: flock on its directory, which
  // deliveries never take), completes an interrupted commit, and lists the
  // Maildir at `path` for the calling user. None there: an empty maildrop.
  static Opened open(const std::string& path, const StateFiles& files, Settings settings = {});

  std::size_t count() const override { return listing_.size(); }
  std::uint64_t size(std::size_t index) const override { return listing_[index].size; }
  std::string uid(std::size_t index) const override;
  void append_uid(std::size_t index, std::string& out) const override;
  bool verify(std::size_t index) override;
  bool send(std::size_t index, std::optional<std::uint64_t> body_lines, protocol::MessageSink& sink) override;
  bool commit(const std::vector<bool>& deleted, std::string& error) override;
  void refresh_lock() override {}
  bool save_index(std::string& error) override;

 private:
  Maildir() = default;
  // Opens listing_[index], under its new name if it was renamed.
  sys::UniqueFd open_message(std::size_t index);
  void count_sizes(std::string& notes);
  bool refresh_names();
  protocol::Login::Outcome lock(std::string& error);

  sys::UniqueFd maildir_fd_;  // closing it releases the lock ...
  sys::UniqueFd lock_fd_;     // ... or this one's, where flock cannot lock a directory (NFS)
  Listing listing_;
  std::string journal_, sizes_path_;
  bool sizes_changed_ = false;  // the sizes file on disk lacks or has more than listing_'s
  std::vector<bool> retrieved_;  // by RETR, for --maildir-mark-seen; empty without it
  std::size_t open_index_ = 0;   // what verify() opened, for send()
  sys::UniqueFd open_fd_;
};

// popd --list-uids of a Maildir: "NUMBER UNIQUE-ID" lines as UIDL would
// give them, reading the Maildir only (no lock, nothing written).
bool list_uids(const std::string& path, UidScheme scheme, std::string& out, std::string& error);

}  // namespace popd::mailbox::maildir
