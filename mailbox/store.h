// What a session holds of a user's mailbox, whatever its format: the
// protocol's Maildrop, and the upkeep the session owes it. A format
// implements it in a folder of its own (mailbox/mbox/, mailbox/maildir/)
// with what the formats share (locks, file windows, digests, unique-id
// schemes) here in mailbox/. Which format serves a login is
// chosen in one place: SystemLogin::open_mailbox (server/login.c++).
#pragma once

#include <string>

#include "protocol/maildrop.h"

namespace popd::mailbox {

// The per-user files a session keeps beside the mailbox, from the
// --journal, --index and --uidvalidity templates.
struct StateFiles {
  std::string journal;      // the recovery journal of an interrupted commit
  std::string index;        // what a login need not parse again
  std::string uidvalidity;  // where a deleted message's UIDVALIDITY is kept (mailbox/uids.h)
};

// How a session locks its mailbox.
struct Locking {
  // The monitor took the dotlock for this session; it keeps it fresh and
  // removes it after.
  bool dotlock_held = false;
  // Other hosts lock this mailbox too (DotLock::acquire).
  bool shared = false;
};

class Store : public protocol::Maildrop {
 public:
  // Call at least every minute: keeps the session's locks fresh.
  virtual void refresh_lock() = 0;
  // Call at the end, before the locks go: brings the index up to date.
  // false: it could not be written (`error` says why); the mailbox is fine.
  virtual bool save_index(std::string& error) = 0;
};

}  // namespace popd::mailbox
