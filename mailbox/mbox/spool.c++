#include "mailbox/mbox/spool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "sys/file.h"
#include "mailbox/format.h"
#include "mailbox/mbox/commit.h"
#include "params.h"

namespace popd::mailbox {

using Outcome = protocol::Login::Outcome;

std::size_t FileSource::read_at(std::uint64_t offset, char* buffer, std::size_t size) {
  if (offset >= size_) return 0;
  size = std::min<std::uint64_t>(size, size_ - offset);
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd_, buffer + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::system_error(errno, std::generic_category(), "cannot read mailbox");
    if (n == 0) break;  // shorter than when it was opened
    done += n;
  }
  return done;
}

Spool::Opened Spool::open(const std::string& path, const Files& files, UidScheme scheme, Locking locking) {
  Opened result;
  auto refuse = [&result](Outcome outcome, std::string text) {
    result.outcome = outcome;
    result.text = std::move(text);
    return std::move(result);
  };
  if (!scheme_fits(Format::mbox, scheme)) return refuse(Outcome::temporary, "The courier --uidl-scheme is for Maildirs");
  std::unique_ptr<Spool> spool(new Spool);
  spool->journal_ = files.journal;
  spool->index_ = files.index;
  spool->uidvalidity_ = files.uidvalidity;
  std::string error;

  // No spool file: no mail has come since the account was made. The
  // maildrop is empty and the session can change nothing, so nothing is
  // locked or created (liblockfile's helper refuses a lock for a missing
  // mailbox on a root:mail spool); the MDA creates the file with its owner,
  // group and mode as usual. Mail that arrives meanwhile waits for the next
  // session.
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 && errno == ENOENT) {
    result.outcome = Outcome::accepted;
    result.spool = std::move(spool);
    return result;
  }

  LockStatus dotlock = LockStatus::locked;
  if (locking.dotlock_held)
    spool->dotlock_ = DotLock::held_elsewhere(path);
  else
    dotlock = DotLock::acquire(path, spool->dotlock_, error, result.notes, locking.shared);
  switch (dotlock) {
    case LockStatus::locked: break;
    case LockStatus::busy: return refuse(Outcome::in_use, "Mailbox is locked by another session");
    case LockStatus::failed: return refuse(Outcome::temporary, "Cannot lock mailbox: " + error);
  }

  // O_NONBLOCK: opening a FIFO planted at the path must not hang us.
  spool->fd_.reset(::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!spool->fd_) {
    if (errno == ENOENT) {  // removed since the lstat: as if it had not been there
      spool->dotlock_.release();
      result.outcome = Outcome::accepted;
      result.spool = std::move(spool);
      return result;
    }
    if (errno == ELOOP) return refuse(Outcome::forbidden, "Mailbox is a symbolic link");
    if (errno == EISDIR) return refuse(Outcome::forbidden, "Mailbox is not a regular file");
    if (errno == EACCES || errno == EPERM) return refuse(Outcome::forbidden, "Mailbox is not accessible");
    return refuse(Outcome::temporary, "Cannot open mailbox: " + sys::error_text(errno));
  }
  if (::fstat(spool->fd_.get(), &st) != 0)
    return refuse(Outcome::temporary, "Cannot stat mailbox: " + sys::error_text(errno));
  if (!S_ISREG(st.st_mode)) return refuse(Outcome::forbidden, "Mailbox is not a regular file");
  if (st.st_uid != ::geteuid()) return refuse(Outcome::forbidden, "Mailbox is not owned by the user");

  switch (lock_whole_file(spool->fd_.get(), locking.shared, error)) {
    case LockStatus::locked: break;
    case LockStatus::busy: return refuse(Outcome::in_use, "Mailbox is locked by another process");
    case LockStatus::failed: return refuse(Outcome::temporary, error);
  }

  RecoveryResult recovery = recover(spool->fd_.get(), files.journal);
  if (!recovery.action.empty()) result.notes += (result.notes.empty() ? "" : "; ") + recovery.action;
  if (!recovery.ok)
    return refuse(Outcome::temporary, recovery.reply.empty() ? "Mailbox needs recovery that failed" : recovery.reply);

  try {
    if (::fstat(spool->fd_.get(), &st) != 0)
      return refuse(Outcome::temporary, "Cannot stat mailbox: " + sys::error_text(errno));
    FileSource source(spool->fd_.get(), st.st_size);
    spool->state_ = FileState::of(st);
    spool->state_seen_ns_ = now_ns();
    if (auto known = load_index(files.index, spool->fd_.get(), spool->state_, scheme, locking.shared,
                                &spool->lazily_trusted_)) {
      // An index checked in full because it was saved too soon after the
      // spool changed (racy) is saved again, so the next login need not;
      // a shared spool's is always checked in full, and need not be.
      spool->index_current_ = known->end == spool->state_.size && (spool->lazily_trusted_ || locking.shared);
      spool->mbox_ = parse_after(source, std::move(*known));
    } else {
      spool->mbox_ = parse(source, scheme);
    }
    if (needs_validity(scheme) && !spool->mbox_.validity) {
      std::string refused;
      if ((spool->mbox_.validity = read_validity(files.uidvalidity, ::geteuid(), refused))) spool->mbox_.renumber();
      if (!refused.empty()) {
        result.notes += (result.notes.empty() ? "" : "; ") + refused;
        return refuse(Outcome::temporary, "UIDVALIDITY file is not the user's own file");
      }
    }
  } catch (const NotMbox&) {
    return refuse(Outcome::forbidden, "Mailbox is not in mbox format");
  } catch (const SpoolChanged&) {
    return refuse(Outcome::temporary, "Mailbox changed while it was read, try again");
  } catch (const std::system_error& e) {
    return refuse(Outcome::temporary, e.what());
  }
  result.outcome = Outcome::accepted;
  result.spool = std::move(spool);
  return result;
}

void Spool::drop_index() {
  if (!index_.empty()) ::unlink(index_.c_str());
  index_.clear();
  lazily_trusted_ = false;
}

bool Spool::verify(std::size_t index) {
  if (!lazily_trusted_ || message_in_place(window_, fd_.get(), mbox_, index)) return true;
  drop_index();
  return false;
}

bool Spool::send(std::size_t index, std::optional<std::uint64_t> body_lines, protocol::MessageSink& sink) {
  const Message& message = mbox_.messages[index];
  try {
    // Messages that clients fetch one after the other lie one after the
    // other: one window serves many of them.
    std::uint64_t begin = message.content_offset;
    std::optional<std::string_view> content;
    if (message.content_length <= params::read_block)
      content = window_.bytes(fd_.get(), begin, begin + message.content_length, mbox_.end, params::read_block);
    if (!content) {  // larger than a window, or a file system that cannot map it: read
      FileSource source(fd_.get(), mbox_.end);
      return mailbox::send(source, message, body_lines, sink, read_buffer_);
    }
    mailbox::send(*content, message, body_lines, sink);
    return !window_.cut_short();
  } catch (const std::system_error&) {
    return false;
  }
}

bool Spool::commit(const std::vector<bool>& deleted, std::string& error) {
  window_.unmap();  // its offsets are the old spool's
  std::vector<Range> removed;
  for (std::size_t i = 0; i < deleted.size(); ++i) {
    if (!deleted[i]) continue;
    Range range{mbox_.messages[i].record_offset, mbox_.record_end(i)};
    if (!removed.empty() && removed.back().end == range.begin)
      removed.back().end = range.end;  // adjacent: one range
    else
      removed.push_back(range);
  }
  if (removed.empty()) return true;
  // Every message the commit moves or cuts is where the index says: the
  // index is never trusted for a write.
  if (lazily_trusted_) {
    std::size_t first = std::find(deleted.begin(), deleted.end(), true) - deleted.begin();
    if (!records_unchanged_from(fd_.get(), mbox_.end, mbox_.messages, first)) {
      drop_index();
      error = "the mailbox changed since it was indexed; nothing deleted";
      return false;
    }
  }
  // The first message may hold the UIDVALIDITY the ids need: kept first.
  if (needs_validity(mbox_.scheme) && mbox_.validity && deleted.at(0) &&
      !write_validity(uidvalidity_, *mbox_.validity, error))
    return false;
  if (!remove_ranges(fd_.get(), removed, journal_, error)) {
    index_.clear();  // the spool may be mid-commit: the next session decides
    return false;
  }
  // What the index says from now on: the spool as the commit left it.
  struct stat st;
  mbox_.remove(deleted);
  index_current_ = false;
  if (::fstat(fd_.get(), &st) != 0)
    index_.clear();  // the state is unknown: better no index than a wrong one
  else
    state_ = FileState::of(st), state_seen_ns_ = now_ns();
  return true;
}

bool Spool::save_index(std::string& error) {
  if (!fd_ || index_current_ || index_.empty()) return true;
  index_current_ = mailbox::save_index(index_, mbox_, state_, error, state_seen_ns_);
  return index_current_;
}

}  // namespace popd::mailbox
