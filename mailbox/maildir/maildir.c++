#include "mailbox/maildir/maildir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include <xxhash.h>

#include "mailbox/maildir/deletions.h"
#include "mailbox/maildir/message.h"
#include "mailbox/maildir/old_ids.h"
#include "mailbox/maildir/seen.h"
#include "mailbox/maildir/sizes.h"
#include "mailbox/format.h"
#include "mailbox/lock.h"
#include "sys/file.h"

namespace popd::mailbox::maildir {
namespace {

using Outcome = protocol::Login::Outcome;

sys::UniqueFd open_folder(int maildir_fd, Folder folder) {
  return sys::UniqueFd(::openat(maildir_fd, folder_name(folder), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

// The id another server gave the message, or its base name, or where that
// is not a valid unique-id, a hash of it; appended to `out`.
void append_uid_of(const Listing& listing, const Entry& entry, std::string& out) {
  if (std::string_view old = listing.old_id(entry); !old.empty()) {
    out += old;
    return;
  }
  std::string_view base = listing.base(entry);
  if (valid_uid(base)) {
    out += base;
    return;
  }
  XXH128_hash_t hash = XXH3_128bits(base.data(), base.size());
  char id[33];
  std::snprintf(id, sizeof id, "%016llx%016llx", static_cast<unsigned long long>(hash.high64),
                static_cast<unsigned long long>(hash.low64));
  out += id;
}

}  // namespace

bool list_uids(const std::string& path, UidScheme scheme, std::string& out, std::string& error) {
  if (!scheme_fits(Format::maildir, scheme)) {
    error = "this --uidl-scheme is for mbox spools, not Maildirs";
    return false;
  }
  sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  Listing listing;
  std::string skipped;
  if (!fd || !scan(fd.get(), listing, skipped)) {
    error = sys::error_text(errno);
    return false;
  }
  adopt_old_ids(fd.get(), scheme, listing);
  for (std::size_t i = 0; i < listing.size(); ++i) {
    out += std::to_string(i + 1) + " ";
    append_uid_of(listing, listing[i], out);
    out += '\n';
  }
  return true;
}

Maildir::Opened Maildir::open(const std::string& path, const StateFiles& files, Settings settings) {
  Opened result;
  auto refuse = [&](Outcome outcome, std::string text) {
    result.outcome = outcome;
    result.text = std::move(text);
    return std::move(result);
  };
  if (!scheme_fits(Format::maildir, settings.scheme))
    return refuse(Outcome::temporary, "This --uidl-scheme is for mbox spools, not Maildirs");
  std::unique_ptr<Maildir> maildir(new Maildir());
  maildir->journal_ = files.journal;
  maildir->sizes_path_ = files.index;
  maildir->maildir_fd_.reset(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  int fd = maildir->maildir_fd_.get();
  if (fd < 0) {
    if (errno != ENOENT) return refuse(Outcome::temporary, "Cannot open Maildir: " + sys::error_text(errno));
    // Nothing delivered yet: an empty maildrop, and nothing made.
    result.outcome = Outcome::accepted;
    result.maildir = std::move(maildir);
    return result;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) return refuse(Outcome::temporary, "Cannot open Maildir: " + sys::error_text(errno));
  if (st.st_uid != ::geteuid()) return refuse(Outcome::forbidden, "Maildir is not the user's own");
  if (!open_folder(fd, Folder::new_mail) || !open_folder(fd, Folder::current))
    return refuse(Outcome::forbidden, "Not a Maildir: no new/ or cur/ directory");
  std::string error;
  if (Outcome locked = maildir->lock(error); locked != Outcome::accepted) return refuse(locked, error);
  Recovered recovered = complete_deletions(fd, maildir->journal_);
  result.notes = recovered.note;
  if (!recovered.ok) return refuse(Outcome::temporary, "Maildir has an unfinished commit; see the server's log");
  std::string skipped;
  if (!scan(fd, maildir->listing_, skipped))
    return refuse(Outcome::temporary, "Cannot list Maildir: " + sys::error_text(errno));
  if (!skipped.empty())
    result.notes += (result.notes.empty() ? "" : "; ") + std::string("not a message file, left out: ") + skipped;
  adopt_old_ids(fd, settings.scheme, maildir->listing_);
  maildir->count_sizes(result.notes);
  if (settings.mark_seen) maildir->retrieved_.resize(maildir->listing_.size());
  result.outcome = Outcome::accepted;
  result.maildir = std::move(maildir);
  return result;
}

// flock on the Maildir's directory, which no delivery agent takes. NFS
// makes flock an fcntl lock, which needs a file open for writing, not a
// directory: there, an fcntl lock on a file beside the journal (the
// user's, outside the Maildir), which NFS's lock manager shares between
// hosts.
protocol::Login::Outcome Maildir::lock(std::string& error) {
  if (::flock(maildir_fd_.get(), LOCK_EX | LOCK_NB) == 0) return Outcome::accepted;
  if (errno == EWOULDBLOCK) {
    error = "Maildir is in use by another session";
    return Outcome::in_use;
  }
  std::string path = journal_ + ".lock";
  lock_fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  struct stat st;
  if (!lock_fd_ || ::fstat(lock_fd_.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) {
    error = "Cannot lock Maildir: no lock file " + path;
    return Outcome::temporary;
  }
  std::string why;
  switch (lock_whole_file(lock_fd_.get(), true, why)) {
    case LockStatus::locked: return Outcome::accepted;
    case LockStatus::busy: error = "Maildir is in use by another session"; return Outcome::in_use;
    case LockStatus::failed: break;
  }
  error = "Cannot lock Maildir: " + why;
  return Outcome::temporary;
}

// Sizes from ,W= first, then the sizes file, then counted. A message that
// cannot be read (gone since the listing, or not the user's to read) is
// left out of this session's maildrop and named in `notes`.
void Maildir::count_sizes(std::string& notes) {
  Sizes known;
  known.load(sizes_path_);
  std::size_t used = 0;
  std::vector<bool> unreadable(listing_.size());
  bool any_unreadable = false;
  for (std::size_t i = 0; i < listing_.size(); ++i) {
    Entry& entry = listing_[i];
    if (entry.sized) continue;
    std::optional<std::uint64_t> size = known.find(listing_.base(entry));
    if (size) {
      ++used;
    } else if (sys::UniqueFd fd = open_message(i); !fd || !(size = wire_size(fd.get()))) {
      notes += (notes.empty() ? "" : "; ") + std::string("cannot read ") + std::string(listing_.name(entry)) + ": " +
               sys::error_text(errno) + ", left out";
      unreadable[i] = any_unreadable = true;
      continue;
    } else {
      sizes_changed_ = true;
    }
    entry.size = *size;
    entry.sized = true;
  }
  if (any_unreadable) listing_.remove(unreadable);
  if (used != known.count()) sizes_changed_ = true;  // some it knows are gone
}

std::string Maildir::uid(std::size_t index) const {
  std::string id;
  append_uid_of(listing_, listing_[index], id);
  return id;
}

void Maildir::append_uid(std::size_t index, std::string& out) const { append_uid_of(listing_, listing_[index], out); }

sys::UniqueFd Maildir::open_message(std::size_t index) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    const Entry& entry = listing_[index];
    std::string path = std::string(folder_name(entry.folder)) + "/" + std::string(listing_.name(entry));
    // Never out of the Maildir: no symbolic link is followed, and a FIFO
    // does not block.
    sys::UniqueFd fd(::openat(maildir_fd_.get(), path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    struct stat st;
    if (fd && ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode)) return fd;
    if (fd || errno != ENOENT || attempt > 0 || !refresh_names()) break;
  }
  return {};
}

// Renamed since the listing (flags set, moved to cur/, as a mail reader
// does to many at once): every message's name as it is now, from one new
// listing, by base name.
bool Maildir::refresh_names() {
  Listing now;
  std::string skipped;
  if (!scan(maildir_fd_.get(), now, skipped)) return false;
  std::vector<std::uint32_t> by_base(now.size());
  for (std::uint32_t i = 0; i < by_base.size(); ++i) by_base[i] = i;
  std::sort(by_base.begin(), by_base.end(), [&](auto a, auto b) { return now.base(now[a]) < now.base(now[b]); });
  for (std::size_t i = 0; i < listing_.size(); ++i) {
    Entry& entry = listing_[i];
    std::string_view base = listing_.base(entry);
    auto at = std::lower_bound(by_base.begin(), by_base.end(), base,
                               [&](std::uint32_t k, std::string_view key) { return now.base(now[k]) < key; });
    if (at == by_base.end() || now.base(now[*at]) != base) continue;
    const Entry& found = now[*at];
    if (found.folder != entry.folder || now.name(found) != listing_.name(entry))
      listing_.rename(entry, found.folder, now.name(found));
  }
  return true;
}

bool Maildir::verify(std::size_t index) {
  open_fd_ = open_message(index);
  open_index_ = index;
  return static_cast<bool>(open_fd_);
}

bool Maildir::send(std::size_t index, std::optional<std::uint64_t> body_lines, protocol::MessageSink& sink) {
  if (!open_fd_ || open_index_ != index) open_fd_ = open_message(index);
  sys::UniqueFd fd = std::move(open_fd_);
  bool sent = fd && send_message(fd.get(), body_lines, sink);
  if (sent && !body_lines && index < retrieved_.size()) retrieved_[index] = true;
  return sent;
}

bool Maildir::commit(const std::vector<bool>& deleted, std::string& error) {
  open_fd_.reset();
  bool deleting = std::find(deleted.begin(), deleted.end(), true) != deleted.end();
  if (deleting && !delete_messages(maildir_fd_.get(), listing_, deleted, journal_, error)) return false;
  if (!retrieved_.empty()) {
    for (std::size_t i = 0; i < deleted.size(); ++i)
      if (deleted[i]) retrieved_[i] = false;
    mark_seen(maildir_fd_.get(), listing_, retrieved_);  // after the deletions, and only if they were done
    retrieved_.clear();  // the numbers change now
  }
  if (deleting) {
    listing_.remove(deleted);
    sizes_changed_ = true;
  }
  return true;
}

bool Maildir::save_index(std::string& error) {
  if (!sizes_changed_ || sizes_path_.empty()) return true;
  sizes_changed_ = !Sizes::save(sizes_path_, listing_, error);
  return !sizes_changed_;
}

}  // namespace popd::mailbox::maildir
