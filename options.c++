#include "options.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <iterator>
#include <string_view>

#include "io/proxy.h"
#include "params.h"

namespace popd {

namespace {

constexpr std::string_view version = "popd 0.1.0";

// Parses seconds (fractions allowed) within [minimum, one day].
bool parse_seconds(std::string_view text, double minimum, double& seconds) {
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  return error == std::errc() && end == text.data() + text.size() && seconds >= minimum && seconds <= 86400;
}

// Parses a whole number within [minimum, maximum], all of `text`.
template <typename Number>
bool parse_number(std::string_view text, Number minimum, Number maximum, Number& number) {
  Number parsed{};
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), parsed);
  if (error != std::errc() || end != text.data() + text.size() || parsed < minimum || parsed > maximum) return false;
  number = parsed;
  return true;
}

}  // namespace

std::string usage() {
  return R"(Usage: popd [OPTION]...
POP3 server for mbox spools and Maildirs: one session on standard input
and output, as started by xinetd or systemd socket activation (Accept=yes).

  --mailbox TEMPLATE     mailbox path; %u is the user name, %h the home
                         directory, %% a percent sign (default /var/mail/%u);
                         maildir:TEMPLATE or a trailing / is a Maildir,
                         mbox:TEMPLATE an mbox spool, else what is there
                         (a directory with cur/ and new/ is a Maildir)
  --journal TEMPLATE     recovery journal for interrupted commits
                         (default %h/.popd-journal)
  --index TEMPLATE       index of the mailbox, so that a login need not
                         read it all again (default %h/.popd-index)
  --uidl-scheme NAME     unique-ids as another server gave them: popd
                         (default), popa3d, dovecot, uw-imap or x-uidl;
                         for a Maildir popd, dovecot or courier
  --uidvalidity TEMPLATE where the dovecot and uw-imap schemes keep the
                         UIDVALIDITY once its message is deleted (default
                         %h/.popd-uidvalidity)
  --list-uids MAILBOX    print each message's number and unique-id as UIDL
                         would, reading MAILBOX only, and exit
  --explain USER         print what a login of USER would do (the account,
                         the mailbox and its files, the first unique-ids,
                         what would refuse it), changing nothing, and exit
  --shared-spool         other hosts lock the spool too: a dotlock is stale
                         only by age (found by itself on NFS, SMB, FUSE, ...)
  --maildir-mark-seen    at QUIT, move what RETR sent to cur/ with the S
                         flag (Maildir; off by default)
  --workaround NAMES     for legacy clients, comma-separated (default none):
                         outlook-no-nuls sends a NUL in a message as 0x80,
                         oe-ns-eoh ends a header that has no empty line
  --pam-service NAME     PAM service name (default popd)
  --userdb passwd-file:PATH
                         virtual users from Dovecot's passwd-file at PATH
                         (%d: the domain of user@domain) instead of PAM
  --mail-user NAME       the account whose uid and gid serve entries that
                         have none (say vmail)
  --home TEMPLATE        the home of entries that have none (%u, %n, %d)
  --allow-weak-schemes   accept entries in weak schemes: PLAIN, SHA and SSHA
                         (and -256, -512), PLAIN-MD5, MD5 and DES crypt
  --first-valid-uid UID  accounts with a smaller uid may not log in (default
                         UID_MIN of /etc/login.defs, else 1000); uid 0 never
  --timeout SECONDS      idle timeout (default 600, RFC 1939's minimum)
  --max-session SECONDS  total time a connection may last (default 86400)
  --login-timeout SECONDS
                         time a connection may take to log in (default 60)
  --expire DAYS          delete mail at QUIT this many days after it was first
                         retrieved (EXPIRE; default never)
  --max-per-ip N         concurrent connections from one client address (the
                         real one behind a PROXY header; IPv6: its /64;
                         default 0: any)
  --login-delay SECONDS  a user's logins at least this far apart (LOGIN-DELAY;
                         default 0: none)
  --trace-dir DIR        write transcripts of sessions, passwords left out,
                         into DIR (%u, %n, %d) where it exists, say
                         /var/log/popd-trace/%u (default none)
  --failure-delay SECONDS
                         delay before answering a failed login (default 2;
                         fractions allowed)
  --tls-cert FILE        PEM certificate (and chain): offers STLS
  --tls-key FILE         PEM private key, read before privileges are dropped
  --tls-implicit         TLS from the first byte (POP3S, port 995)
  --require-tls          no USER, PASS or AUTH before TLS is up
  --tls-ciphers LIST     TLS 1.2 ciphers (default: OpenSSL's system default)
  --tls-ciphersuites LIST
                         TLS 1.3 cipher suites (default: OpenSSL's)
  --privsep-user NAME    account for the pre-login process when started as
                         root (default popd, else nobody, but not with
                         TLS or --proxy-protocol)
  --privsep-dir DIR      empty directory it is chrooted to (default
                         /run/popd, created if missing)
  --proxy-protocol       connections start with a PROXY protocol header
                         (HAProxy, version 1 or 2) that names the client
  --proxy-from LIST      addresses and networks that may send one, comma-
                         separated (default 127.0.0.1,::1)
  --hash-password        read a password (from the terminal, asked twice,
                         or one line of standard input) and print it as a
                         passwd-file entry's password field, then exit
  --scheme NAME          its scheme: CRYPT (default: yescrypt), SHA512-CRYPT,
                         SHA256-CRYPT, BLF-CRYPT, ARGON2I or ARGON2ID
  --help                 show this help and exit
  --version              show the version and exit
)";
}

// Both GNU forms, --name value and --name=value, as systemd units and
// xinetd's server_args are written either way. Everything is checked here,
// before a byte is read from the client: a mistake in a unit file is one
// clear line on standard error (the journal, xinetd's log) and status 2 at
// the first connection, never a server that half works.
std::variant<Options, Exit> parse_options(int argc, const char* const* argv) {
  Options options;
  auto bad = [](std::string message) { return Exit{2, "popd: " + message + "\n" + usage()}; };
  std::string* const paths[] = {&options.mailbox, &options.journal, &options.index, &options.uidvalidity,
                                &options.home_template};
  struct Valued {
    std::string_view name;
    std::string* target;
  };
  std::string scheme, password_scheme, userdb;
  const Valued valued[] = {{"--mailbox", &options.mailbox},
                           {"--uidl-scheme", &scheme},
                           {"--uidvalidity", &options.uidvalidity},
                           {"--list-uids", &options.list_uids},
                           {"--explain", &options.explain_user},
                           {"--journal", &options.journal},
                           {"--index", &options.index},
                           {"--pam-service", &options.pam_service},
                           {"--tls-cert", &options.tls.certificate},
                           {"--tls-key", &options.tls.key},
                           {"--tls-ciphers", &options.tls.ciphers},
                           {"--tls-ciphersuites", &options.tls.ciphersuites},
                           {"--privsep-user", &options.privsep_user},
                           {"--privsep-dir", &options.privsep_dir},
                           {"--proxy-from", &options.proxy_from},
                           {"--scheme", &password_scheme},
                           {"--userdb", &userdb},
                           {"--mail-user", &options.mail_user},
                           {"--home", &options.home_template},
                           {"--trace-dir", &options.trace_dir},
                           {"--workaround", nullptr},
                           {"--timeout", nullptr},
                           {"--first-valid-uid", nullptr},
                           {"--max-session", nullptr},
                           {"--login-timeout", nullptr},
                           {"--login-delay", nullptr},
                           {"--expire", nullptr},
                           {"--max-per-ip", nullptr},
                           {"--failure-delay", nullptr}};

  struct Flag {
    std::string_view name;
    bool* target;
  };
  const Flag flags[] = {{"--tls-implicit", &options.tls_implicit},
                        {"--require-tls", &options.require_tls},
                        {"--proxy-protocol", &options.proxy_protocol},
                        {"--shared-spool", &options.shared_spool},
                        {"--maildir-mark-seen", &options.maildir_mark_seen},
                        {"--hash-password", &options.hash_password},
                        {"--allow-weak-schemes", &options.allow_weak_schemes}};

  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view name = arg, value;
    bool has_value = false;
    if (auto equals = arg.find('='); arg.starts_with("--") && equals != std::string_view::npos) {
      name = arg.substr(0, equals);
      value = arg.substr(equals + 1);
      has_value = true;
    }
    if (name == "--help") return Exit{0, usage()};
    if (name == "--version") return Exit{0, std::string(version) + "\n"};
    if (auto flag = std::find_if(std::begin(flags), std::end(flags), [&](const Flag& f) { return f.name == name; });
        flag != std::end(flags)) {
      if (has_value) return bad(std::string(name) + " takes no value");
      *flag->target = true;
      continue;
    }
    const Valued* option = nullptr;
    for (const Valued& v : valued)
      if (v.name == name) option = &v;
    if (!option) return bad("unknown option " + std::string(arg));
    if (!has_value) {
      if (i + 1 == argc) return bad(std::string(name) + " needs a value");
      value = argv[++i];
    }
    if (option->target) {
      if (value.empty()) return bad(std::string(name) + " needs a value");
      *option->target = value;
      // A template is checked now, not at login: "%d" would otherwise name
      // a literal path, the same one for every user.
      for (std::string* path : paths)
        if (option->target == path && !valid_path_template(value))
          return bad("bad path template for " + std::string(name) + ": only %u, %n, %d, %h and %% may follow %");
      // The monitor expands it before any account is looked up: no %h
      // (two homes expand it alike unless it has one; "%%h" has none).
      if (option->target == &options.trace_dir &&
          (!value.starts_with('/') || !valid_path_template(value) || expand_path(value, "", "%") != expand_path(value, "", "")))
        return bad("--trace-dir needs an absolute directory; only %u, %n, %d and %% may follow %");
      continue;
    }
    if (name == "--workaround") {
      for (std::string_view rest = value; !rest.empty();) {
        std::string_view one = rest.substr(0, rest.find(','));
        rest.remove_prefix(std::min(rest.size(), one.size() + 1));
        if (one == "outlook-no-nuls")
          options.outlook_no_nuls = true;
        else if (one == "oe-ns-eoh")
          options.oe_ns_eoh = true;
        else
          return bad("--workaround takes outlook-no-nuls and oe-ns-eoh, comma-separated");
      }
      continue;
    }
    if (name == "--max-per-ip") {
      if (!parse_number(value, 0, 10000, options.max_per_ip)) return bad("--max-per-ip needs a number from 0 to 10000");
      continue;
    }
    if (name == "--expire") {
      if (value == "never")
        options.expire_days = -1;
      else if (!parse_number(value, 0, 36500, options.expire_days))
        return bad("--expire needs a number of days from 0 to 36500, or never");
      continue;
    }
    if (name == "--first-valid-uid") {
      uid_t uid = 0;
      if (!parse_number<uid_t>(value, 1, static_cast<uid_t>(-2), uid))
        return bad("--first-valid-uid needs a uid from 1 to 4294967294");
      options.first_valid_uid = uid;
      continue;
    }
    // Limits are whole seconds (they become poll timeouts and deadlines);
    // only the failure delay takes fractions, for tests and busy hosts.
    double seconds = 0;
    if (name == "--login-delay") {
      if (!parse_seconds(value, 0, seconds) || seconds != static_cast<int>(seconds))
        return bad("--login-delay needs a whole number of seconds from 0 to 86400");
      options.login_delay_seconds = static_cast<int>(seconds);
    } else if (name == "--timeout" || name == "--max-session" || name == "--login-timeout") {
      if (!parse_seconds(value, 1, seconds) || seconds != static_cast<int>(seconds))
        return bad(std::string(name) + " needs a whole number of seconds from 1 to 86400");
      (name == "--timeout"       ? options.timeout_seconds
       : name == "--max-session" ? options.max_session_seconds
                                 : options.login_timeout_seconds) = static_cast<int>(seconds);
    } else {
      if (!parse_seconds(value, 0, seconds)) return bad("--failure-delay needs a number of seconds from 0 to 86400");
      options.failure_delay = std::chrono::milliseconds(static_cast<long>(seconds * 1000));
    }
  }
  if (!password_scheme.empty()) {
    if (!options.hash_password) return bad("--scheme goes with --hash-password");
    std::transform(password_scheme.begin(), password_scheme.end(), password_scheme.begin(),
                   [](unsigned char c) { return std::toupper(c); });
    const std::string_view made[] = {"CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2I", "ARGON2ID"};
    if (std::find(std::begin(made), std::end(made), password_scheme) == std::end(made))
      return bad("--scheme is CRYPT (yescrypt), SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, ARGON2I or ARGON2ID");
    options.password_scheme = password_scheme;
  }
  if (!userdb.empty() && userdb != "pam") {
    if (!userdb.starts_with("passwd-file:") || userdb.size() == 12 || userdb[12] != '/')
      return bad("--userdb is pam or passwd-file:/ABSOLUTE/PATH");
    options.passwd_file = userdb.substr(12);
    // %h is not known before the file is read.
    if (!valid_path_template(options.passwd_file) || options.passwd_file.find("%h") != std::string::npos)
      return bad("bad path template for --userdb passwd-file: only %u, %n, %d and %% may follow %");
  }
  if (!options.home_template.empty() &&
      (options.home_template[0] != '/' || options.home_template.find("%h") != std::string::npos))
    return bad("--home needs an absolute path; %u, %n and %d may be in it, not %h");
  if (options.passwd_file.empty() && (!options.mail_user.empty() || !options.home_template.empty() ||
                                      options.allow_weak_schemes))
    return bad("--mail-user, --home and --allow-weak-schemes go with --userdb passwd-file:PATH");
  options.mailbox_format = mailbox::take_format(options.mailbox);
  if (options.mailbox.empty()) return bad("--mailbox needs a path after its format");
  if (!scheme.empty()) {
    auto named = mailbox::uid_scheme_named(scheme);
    if (!named) return bad("--uidl-scheme is popd, popa3d, dovecot, uw-imap, x-uidl or courier");
    options.uidl_scheme = *named;
  }
  if (!mailbox::scheme_fits(options.mailbox_format, options.uidl_scheme))
    return bad(options.mailbox_format == mailbox::Format::maildir
                   ? "--uidl-scheme for a Maildir is popd, dovecot or courier"
                   : "--uidl-scheme courier is for Maildirs");
  if (!io::AddressList::parse(options.proxy_from))
    return bad("--proxy-from needs addresses or networks (ADDR or ADDR/BITS), comma-separated");
  if (options.tls.certificate.empty() != options.tls.key.empty())
    return bad("--tls-cert and --tls-key go together");
  if ((options.tls_implicit || options.require_tls) && !options.tls_configured())
    return bad("--tls-implicit and --require-tls need --tls-cert and --tls-key");
  return options;
}

std::string expand_path(std::string_view path_template, std::string_view user, std::string_view home) {
  std::string path;
  for (std::size_t i = 0; i < path_template.size(); ++i) {
    char c = path_template[i];
    if (c != '%' || i + 1 == path_template.size()) {
      path += c;
      continue;
    }
    std::size_t at = user.find('@');
    switch (path_template[++i]) {
      case 'u': path += user; break;
      case 'n': path += user.substr(0, at); break;
      case 'd': path += at == std::string_view::npos ? std::string_view() : user.substr(at + 1); break;
      case 'h': path += home; break;
      default: path += path_template[i]; break;  // "%%"
    }
  }
  return path;
}

bool valid_path_template(std::string_view path_template) {
  for (std::size_t i = 0; i < path_template.size(); ++i) {
    if (path_template[i] != '%') continue;
    if (i + 1 == path_template.size()) return false;
    char next = path_template[++i];
    if (std::string_view("unhd%").find(next) == std::string_view::npos) return false;
  }
  return !path_template.empty();
}

}  // namespace popd
