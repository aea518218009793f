#include "server/explain.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <system_error>
#include <utility>

#include "auth/account.h"
#include "mailbox/maildir/maildir.h"
#include "mailbox/mbox/spool.h"
#include "params.h"
#include "server/login.h"
#include "sys/fd.h"
#include "sys/file.h"

namespace popd::server {

bool unique_ids(const Options& options, std::string path, mailbox::Format format, std::size_t limit,
                std::string& out, std::string& error) {
  if (mailbox::format_at(format, path) == mailbox::Format::maildir) {
    std::string all;
    if (!mailbox::maildir::list_uids(path, options.uidl_scheme, all, error)) return false;
    for (std::size_t at = 0, lines = 0; at < all.size() && lines < limit; ++lines) {
      std::size_t end = all.find('\n', at);
      out.append(all, at, end - at + 1);
      at = end + 1;
    }
    return true;
  }
  sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    error = fd ? "not a regular file" : sys::error_text(errno);
    return false;
  }
  try {
    mailbox::FileSource source(fd.get(), st.st_size);
    mailbox::Mbox box = mailbox::parse(source, options.uidl_scheme);
    // A UIDVALIDITY kept after its message was deleted is the owner's.
    auto owner = auth::Account::with_uid(st.st_uid);
    if (owner && mailbox::needs_validity(box.scheme) && !box.validity &&
        (box.validity = mailbox::read_validity(expand_path(options.uidvalidity, owner->name, owner->home),
                                               st.st_uid, error)))
      box.renumber();
    if (!error.empty()) return false;
    for (std::size_t i = 0; i < box.messages.size() && i < limit; ++i) {
      out += std::to_string(i + 1) + " " + box.uid(i) + "\n";
      if (out.size() >= params::output_buffer && limit == SIZE_MAX)
        sys::write_all(STDOUT_FILENO, std::exchange(out, {}));
    }
    return true;
  } catch (const mailbox::NotMbox& e) {
    error = e.what();
  } catch (const std::system_error& e) {
    error = e.what();
  }
  return false;
}

int list_uids(const Options& options) {
  std::string path = options.list_uids, out, error;
  mailbox::Format format = mailbox::take_format(path);
  if (!unique_ids(options, path, format, SIZE_MAX, out, error)) {
    std::fprintf(stderr, "popd: %s: %s\n", path.c_str(), error.c_str());
    return 1;
  }
  return sys::write_all(STDOUT_FILENO, out) ? 0 : 1;
}

namespace {

std::string owner_name(uid_t uid) {
  auto account = auth::Account::with_uid(uid);
  return account ? account->name : std::to_string(uid);
}

// "PATH: absent" or its kind, owner, mode, size and age, as ls would.
std::string describe(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return path + ": " + (errno == ENOENT ? "absent" : sys::error_text(errno));
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  const char* kind = S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory" : S_ISLNK(st.st_mode) ? "symbolic link" : "special file";
  auto age = std::chrono::system_clock::now() - std::chrono::system_clock::from_time_t(st.st_mtime);
  return path + ": " + kind + ", owner " + owner_name(st.st_uid) + ", mode " + mode + ", " +
         std::to_string(st.st_size) + " bytes, changed " +
         std::to_string(std::chrono::duration_cast<std::chrono::seconds>(age).count()) + " s ago";
}

}  // namespace

int explain(const Options& options) {
  auto line = [](const std::string& text) { std::printf("%s\n", text.c_str()); };
  std::string source, why;
  line("user: " + options.explain_user);
  auto account = account_of(options, options.explain_user, source, why);
  if (!account) {
    line("refused: " + why + " (a client gets -ERR, its password unchecked here)");
    return 1;
  }
  uid_t first_valid = options.first_valid_uid.value_or(auth::system_uid_min());
  line("account: " + account->name + " uid " + std::to_string(account->uid) + " gid " + std::to_string(account->gid) +
       " home " + account->home + ", from " + source);
  // The rest is printed even so: what the mailbox holds still helps.
  bool refused = account->uid == 0 || account->uid < first_valid;
  if (refused)
    line("refused: uid " + std::to_string(account->uid) + " is below --first-valid-uid " +
         std::to_string(first_valid) + " (or root's)");
  if (!options.passwd_file.empty() && account->gid == 0) {
    refused = true;
    line("refused: gid 0 may not serve a virtual user");
  }
  auto user_path = [&](const std::string& path_template) {
    return expand_path(path_template, account->name, account->home);
  };
  std::string mailbox = user_path(options.mailbox);
  bool maildir = mailbox::format_at(options.mailbox_format, mailbox) == mailbox::Format::maildir;
  line(std::string("mailbox: ") + (maildir ? "Maildir " : "mbox ") + describe(mailbox));
  line("  shared file system (NFS and the like): " +
       std::string(options.shared_spool || mailbox::on_shared_file_system(mailbox) ? "yes" : "no"));
  if (!maildir) line("  dotlock: " + describe(mailbox + ".lock"));
  std::string index = user_path(options.index);
  line("journal: " + describe(user_path(options.journal)) +
       (::access(user_path(options.journal).c_str(), F_OK) == 0 ? " (a commit to finish: the next session recovers it)"
                                                                 : ""));
  line("index: " + describe(index));
  line("uidvalidity: " + describe(user_path(options.uidvalidity)));
  line("last login (--login-delay): " + describe(index + last_login_record));
  line("first retrievals (--expire): " + describe(index + retrieved_record));
  line("unique-id listing (the log's uidl=): " + describe(index + uidls_record));
  std::string ids, error;
  std::string scheme = mailbox::name_of(options.uidl_scheme);
  if (unique_ids(options, mailbox, options.mailbox_format, 5, ids, error))
    line("unique-ids (" + scheme + "), the first:\n" + (ids.empty() ? "  none: the mailbox is empty\n" : ids));
  else
    line("unique-ids (" + scheme + "): cannot read the mailbox: " + error);
  return refused ? 1 : 0;
}

}  // namespace popd::server
