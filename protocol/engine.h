// The POP3 protocol engine (RFC 1939, 2449): client bytes in, reply bytes
// out. It makes no system calls, so it is tested on byte strings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/maildrop.h"
#include "protocol/trace.h"

namespace popd::protocol {

// What the session has done, for the log line at its end.
struct SessionStats {
  std::string auth;  // how the user logged in: "user" (USER/PASS), "sasl-plain", "sasl-login"; empty if not
  std::uint64_t retrieved_messages = 0;
  std::uint64_t retrieved_bytes = 0;
  std::uint64_t top_messages = 0;
  std::uint64_t deleted_messages = 0;  // only counted once committed
  std::uint64_t kept_messages = 0;     // in the maildrop at the end
  std::uint64_t kept_bytes = 0;
  bool commit_failed = false;
  bool too_many_failures = false;      // the connection closed after failed logins
  bool too_many_connections = false;   // refused by --max-per-ip
  std::string uidl;                    // set by the server: "HASH/NEW" (mailbox/uidl_change.h)
};

// User names go to PAM, syslog and file names: printable, no slash, no
// leading dash or dot, bounded. Bytes >= 0x80 are allowed for UTF-8 names.
bool valid_user_name(std::string_view name);

// What the connection offers around the protocol, and how it bends for
// clients that need it.
struct Features {
  bool stls = false;         // STLS may be offered (a certificate is configured)
  bool tls_active = false;   // TLS is already up (implicit TLS, or after STLS)
  bool require_tls = false;  // no USER, PASS or AUTH without TLS
  // --workaround outlook-no-nuls: a NUL in a message is sent as 0x80 (as
  // Dovecot does), since Outlook ends the message at a NUL.
  bool outlook_no_nuls = false;
  // --workaround oe-ns-eoh: a message whose header has no empty line after
  // it gets one, which Outlook Express and Netscape Mail need.
  bool oe_ns_eoh = false;
  // --login-delay: CAPA's LOGIN-DELAY, in seconds; 0, none.
  int login_delay = 0;
  // --expire: CAPA's EXPIRE, in days; -1, NEVER.
  int expire_days = -1;
};

class Engine {
 public:
  enum class State { authorization, transaction, closed };

  // With a trace, every client line (redacted) and reply is shown to it.
  Engine(Authenticator& authenticator, Output& output, Features features = {}, Trace* trace = nullptr);

  void greet();
  // Appends client bytes to the input buffer.
  void receive(std::string_view bytes);
  // True when a complete command line is waiting in the input buffer.
  bool command_waiting() const;
  // Answers the next complete command line, if any.
  void step();
  // Replies to a login decided elsewhere (the session process of privilege
  // separation): the PASS or AUTH reply, and TRANSACTION if accepted.
  void apply_login(const Login& login);
  // The session must end now (idle timeout, time limit): says why and
  // closes without committing.
  void abort(std::string_view reason);

  // After STLS was accepted: true once, and command_waiting() is false until
  // then. The caller flushes the reply, throws away pending input (a client
  // may not smuggle plaintext commands past the handshake, CVE-2011-0411),
  // and calls tls_started() once the handshake succeeded.
  bool take_tls_request();
  void discard_pending_input();
  void tls_started();

  State state() const { return state_; }
  bool closed() const { return state_ == State::closed; }
  // The login was accepted and another process serves the session now;
  // pending_input() is what it must get.
  bool handed_off() const { return handed_off_; }
  const std::string& user() const { return user_; }
  // Also what the maildrop holds now, or after a committed QUIT.
  SessionStats stats() const;
  // How the login that another process answered was made (privilege
  // separation), for stats().auth.
  void set_mechanism(std::string_view mechanism) { mechanism_ = mechanism; }
  // Input received but not yet answered (handed on when the process changes).
  std::string_view pending_input() const;

 private:
  void dispatch(std::string_view line);
  void authorization(std::string_view verb, std::string_view args);
  void transaction(std::string_view verb, std::string_view args);
  void capa();
  void user_command(std::string_view args);
  void pass_command(std::string_view args);
  void auth_command(std::string_view args);
  // The SASL exchange a client line answers: none (a command), PLAIN's
  // response, or LOGIN's user name or password.
  enum class Sasl { none, plain, login_user, login_password };
  void sasl_response(Sasl step, std::string_view line);
  void sasl_plain(std::string_view response);
  void stls_command();
  bool plaintext_refused();
  void login(const std::string& user, std::string_view password);
  // Replies `text` and counts the failure; the last one closes.
  void login_failed(std::string_view text);
  void quit();
  void stat();
  void list(std::string_view args);
  void uidl(std::string_view args);
  void retr(std::string_view args);
  void top(std::string_view args);
  void dele(std::string_view args);
  void rset();
  void send_message(std::size_t index, std::optional<std::uint64_t> body_lines);
  // Parses a message number argument; on error replies and returns false.
  bool message_number(std::string_view arg, std::size_t& index);

  void ok(std::string_view text);
  void err(std::string_view text);

  Authenticator& authenticator_;
  Trace* trace_;
  std::optional<TracedOutput> traced_;  // before out_, which may be it
  Output& out_;
  Features features_;
  bool tls_requested_ = false;
  Sasl sasl_ = Sasl::none;
  bool handed_off_ = false;
  State state_ = State::authorization;
  std::string input_;
  std::size_t consumed_ = 0;
  bool discarding_long_line_ = false;
  std::string user_;
  std::string mechanism_;  // of the last login attempt
  bool have_user_ = false;
  bool committed_ = false;
  int failures_ = 0;
  Maildrop* maildrop_ = nullptr;
  std::vector<bool> deleted_;
  SessionStats stats_;
  std::string converted_;  // a RETR body with CRLF and byte-stuffing
  std::string workaround_scratch_;  // a message's bytes with NULs replaced
};

}  // namespace popd::protocol
