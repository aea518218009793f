// The command line: popd's public contract, documented in --help and popd.8.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <variant>

#include "io/tls.h"
#include "mailbox/format.h"
#include "mailbox/uids.h"

namespace popd {

struct Options {
  std::string mailbox = "/var/mail/%u";
  mailbox::Format mailbox_format = mailbox::Format::automatic;  // from the prefix of --mailbox
  std::string journal = "%h/.popd-journal";
  std::string index = "%h/.popd-index";  // mailbox/mbox/index.h
  mailbox::UidScheme uidl_scheme = mailbox::UidScheme::popd;
  std::string uidvalidity = "%h/.popd-uidvalidity";  // mailbox/uids.h
  // popd --list-uids MAILBOX: print the unique-ids and exit.
  std::string list_uids;
  // popd --explain USER: print what a login of USER would do, and exit.
  std::string explain_user;
  std::string pam_service = "popd";
  // --userdb passwd-file:PATH: virtual users from Dovecot's passwd-file
  // (auth/passwd_file.h) instead of PAM; PATH may hold %d, the domain.
  std::string passwd_file;
  std::string mail_user;      // the account of entries without uid and gid
  std::string home_template;  // the home of entries without one (%u, %n, %d)
  bool allow_weak_schemes = false;
  // Accounts with a smaller uid (system accounts) may not log in; root
  // never may. Unset: UID_MIN of /etc/login.defs (auth/account.h).
  std::optional<uid_t> first_valid_uid;
  int timeout_seconds = 600;
  int max_session_seconds = 86400;  // total connection time
  int login_timeout_seconds = 60;   // connection time before a login
  // RFC 2449's LOGIN-DELAY: a user's next login no sooner (server/login_delay.h); 0, none.
  int login_delay_seconds = 0;
  // RFC 2449's EXPIRE: mail goes this many days after it was first
  // retrieved (mailbox/expiry.h); -1, never.
  int expire_days = -1;
  // Concurrent connections from one client address, counted by the
  // monitor (server/per_ip.h) in PRIVSEP_DIR-per-ip; 0, no limit.
  int max_per_ip = 0;
  // Session transcripts, passwords left out (server/trace.h): a directory
  // template with %u, %n and %d; a session is traced where it exists.
  std::string trace_dir;
  std::chrono::milliseconds failure_delay{2000};
  io::TlsSettings tls;        // tls.certificate set: STLS offered
  bool tls_implicit = false;  // POP3S: TLS from the first byte
  bool require_tls = false;   // no USER, PASS or AUTH without TLS
  // Privilege separation: the account and the empty directory the
  // pre-authentication process runs as and in, when popd starts as root.
  std::string privsep_user = "popd";  // "nobody" if there is no such account
  std::string privsep_dir = "/run/popd";
  // Behind a load balancer: the connection starts with a PROXY protocol
  // header naming the client, accepted only from these addresses.
  bool proxy_protocol = false;
  // Other hosts lock the spool too (NFS and the like, also found by
  // statfs): a dotlock is stale only by age (mailbox/lock.h).
  bool shared_spool = false;
  // Maildir: at QUIT, the messages RETR sent move to cur/ with the S
  // (seen) flag, as Dovecot does, for users who also read the Maildir.
  bool maildir_mark_seen = false;
  // --workaround outlook-no-nuls,oe-ns-eoh: what legacy clients need of
  // the messages sent (protocol::Features).
  bool outlook_no_nuls = false;
  bool oe_ns_eoh = false;
  // popd --hash-password [--scheme S]: print a passwd-file password field.
  bool hash_password = false;
  std::string password_scheme = "CRYPT";
  std::string proxy_from = "127.0.0.1,::1";

  bool tls_configured() const { return !tls.certificate.empty(); }
};

// What to do instead of serving: print `text` to stdout (status 0) or
// stderr (status 2) and exit.
struct Exit {
  int status;
  std::string text;
};

std::variant<Options, Exit> parse_options(int argc, const char* const* argv);
std::string usage();

// Expands %u (user name), %h (home directory) and %% in a path template.
// %u the user, %n the name before '@', %d the domain after it (empty if
// none), %h the home, %% a '%'.
std::string expand_path(std::string_view path_template, std::string_view user, std::string_view home);
// true if the template has only the sequences expand_path knows.
bool valid_path_template(std::string_view path_template);

}  // namespace popd
