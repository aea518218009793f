#include "protocol/engine.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <string.h>  // explicit_bzero
#include <utility>

#include "params.h"
#include "protocol/base64.h"
#include "protocol/stuffing.h"
#include "protocol/workarounds.h"

namespace popd::protocol {
namespace {

constexpr std::string_view crlf = "\r\n";

std::string upper(std::string_view word) {
  std::string result(word);
  for (char& c : result)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return result;
}

bool is_space(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Splits off the first space-separated word of `rest`.
std::string_view next_word(std::string_view& rest) {
  rest = trim(rest);
  std::size_t end = 0;
  while (end < rest.size() && !is_space(rest[end])) ++end;
  std::string_view word = rest.substr(0, end);
  rest = trim(rest.substr(end));
  return word;
}

// A decimal number without sign; false for anything else or on overflow.
bool parse_number(std::string_view text, std::uint64_t& value) {
  if (text.empty()) return false;
  for (char c : text)
    if (c < '0' || c > '9') return false;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && end == text.data() + text.size();
}

}  // namespace

bool valid_user_name(std::string_view name) {
  if (name.empty() || name.size() > params::max_user_name) return false;
  if (name.front() == '-' || name.front() == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return (u > 0x20 && u < 0x7f && c != '/') || u >= 0x80;
  });
}

namespace {

// The length of the whole lines at the start of `block` that fit in
// `limit` bytes; the first line alone if it does not fit.
std::size_t whole_lines(std::string_view block, std::size_t limit) {
  if (block.size() <= limit) return block.size();
  std::size_t last = limit > 0 ? block.rfind('\n', limit - 1) : std::string_view::npos;
  return (last == std::string_view::npos ? block.find('\n') : last) + 1;
}

void append_number(std::string& out, std::uint64_t number) {
  char digits[20];
  out.append(digits, std::to_chars(digits, std::end(digits), number).ptr);
}

// The lines "n value" of a LIST or UIDL listing for the messages not
// deleted, and its end, written in blocks of many lines: 100,000 lines cost
// no string and no write each.
template <typename AppendValue>
void write_listing(Output& out, const std::vector<bool>& deleted, AppendValue append_value) {
  std::string lines;
  for (std::size_t i = 0; i < deleted.size(); ++i) {
    if (deleted[i]) continue;
    append_number(lines, i + 1);
    lines += ' ';
    append_value(i, lines);
    lines += crlf;
    if (lines.size() >= params::direct_write) {
      out.write(lines);
      lines.clear();
    }
  }
  lines += ".\r\n";
  out.write(lines);
}

// Writes message lines to the output with RFC 1939 byte-stuffing and CRLF.
class StuffingSink final : public MessageSink {
 public:
  // `converted` is scratch space, kept by the engine across messages.
  StuffingSink(Output& out, std::string& converted) : out_(out), converted_(converted) {}
  void text(std::string_view part) override {
    if (part.empty()) return;
    if (at_line_start_ && part.front() == '.') out_.write(".");
    at_line_start_ = false;
    out_.write(part);
  }
  void end_line() override {
    out_.write(crlf);
    at_line_start_ = true;
  }
  // The body of a RETR: converted in pieces of whole lines, each written
  // at once, in place where the output lends room. The scratch space only
  // grows, so that it is never zeroed again, and no more than a piece
  // needs.
  void lines(std::string_view block) override {
    while (!block.empty()) {
      std::span<char> room = out_.room(stuffed_capacity(params::direct_write));
      std::size_t limit = params::stuffing_piece;
      if (!room.empty()) limit = std::min(limit, (room.size() - stuffed_capacity(0)) / 2);
      std::size_t take = whole_lines(block, limit);
      if (stuffed_capacity(take) <= room.size()) {
        out_.commit(stuff_lines(block.substr(0, take), room.data()));
      } else {
        if (converted_.size() < stuffed_capacity(take)) converted_.resize(stuffed_capacity(take));
        out_.write({converted_.data(), stuff_lines(block.substr(0, take), converted_.data())});
      }
      block.remove_prefix(take);
    }
    at_line_start_ = true;
  }

 private:
  Output& out_;
  bool at_line_start_ = true;
  std::string& converted_;
};

}  // namespace

Engine::Engine(Authenticator& authenticator, Output& output, Features features, Trace* trace)
    : authenticator_(authenticator),
      trace_(trace),
      traced_(trace ? std::optional<TracedOutput>(std::in_place, output, *trace) : std::nullopt),
      out_(traced_ ? *traced_ : output),
      features_(features) {}

void Engine::ok(std::string_view text) {
  out_.write(text.empty() ? "+OK" : "+OK ");
  out_.write(text);
  out_.write(crlf);
}

void Engine::err(std::string_view text) {
  out_.write("-ERR ");
  out_.write(text);
  out_.write(crlf);
}

void Engine::greet() { ok("POP3 server ready"); }

void Engine::receive(std::string_view bytes) {
  if (closed()) return;
  while (!bytes.empty()) {
    if (discarding_long_line_) {
      auto newline = bytes.find('\n');
      if (newline == std::string_view::npos) return;
      bytes.remove_prefix(newline);  // keep the '\n' to end the stored stub
      discarding_long_line_ = false;
    }
    auto newline = bytes.find('\n');
    auto chunk = bytes.substr(0, newline == std::string_view::npos ? bytes.size() : newline + 1);
    bytes.remove_prefix(chunk.size());
    input_.append(chunk);
    if (input_.back() == '\n') continue;
    // An unfinished line: keep no more of it than it takes to know it is too
    // long, so a client cannot make us buffer without end.
    auto last_newline = input_.rfind('\n');
    std::size_t line_start = last_newline == std::string::npos ? 0 : last_newline + 1;
    line_start = std::max(line_start, consumed_);
    constexpr std::size_t longest = std::max(params::max_command_line, params::max_sasl_line);
    if (input_.size() - line_start > longest) {
      input_.resize(line_start + longest + 1);
      discarding_long_line_ = true;
    }
  }
}

bool Engine::command_waiting() const {
  return !closed() && !tls_requested_ && input_.find('\n', consumed_) != std::string::npos;
}

bool Engine::take_tls_request() { return std::exchange(tls_requested_, false); }

void Engine::discard_pending_input() {
  explicit_bzero(input_.data(), input_.size());
  input_.clear();
  consumed_ = 0;
  discarding_long_line_ = false;
}

void Engine::tls_started() { features_.tls_active = true; }

std::string_view Engine::pending_input() const {
  return std::string_view(input_).substr(consumed_);
}

void Engine::step() {
  if (closed()) return;
  auto newline = input_.find('\n', consumed_);
  if (newline == std::string::npos) return;
  std::string_view line(input_.data() + consumed_, newline - consumed_);
  std::size_t raw_length = line.size() + 1;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);

  Sasl sasl = std::exchange(sasl_, Sasl::none);
  if (trace_) trace_->client(redacted({input_.data() + consumed_, raw_length}, sasl != Sasl::none));
  if (raw_length > (sasl != Sasl::none ? params::max_sasl_line : params::max_command_line))
    err("Command line too long");
  else if (line.find('\0') != std::string_view::npos)
    err("Command contains a NUL byte");
  else if (sasl != Sasl::none)
    sasl_response(sasl, line);
  else
    dispatch(line);

  consumed_ = newline + 1;
  // Wipe what was answered: it may hold a password.
  if (consumed_ == input_.size() || consumed_ > 4096) {
    explicit_bzero(input_.data(), consumed_);
    input_.erase(0, consumed_);
    consumed_ = 0;
  }
}

void Engine::abort(std::string_view reason) {
  if (closed()) return;
  err(reason);
  state_ = State::closed;
}

void Engine::dispatch(std::string_view line) {
  // Arguments keep their spaces: a password may begin or end with one.
  std::size_t verb_end = 0;
  while (verb_end < line.size() && !is_space(line[verb_end])) ++verb_end;
  std::string verb = upper(line.substr(0, verb_end));
  std::string_view args = line.substr(verb_end);
  if (verb == "CAPA") return capa();
  if (verb == "QUIT") return quit();
  if (state_ == State::authorization)
    authorization(verb, args);
  else
    transaction(verb, args);
}

void Engine::capa() {
  ok("Capability list follows");
  // Listed in both states, as RFC 2449 allows; not while --require-tls
  // still refuses them.
  if (!(features_.require_tls && !features_.tls_active)) out_.write("USER\r\nSASL PLAIN LOGIN\r\n");
  if (state_ == State::authorization && features_.stls && !features_.tls_active) out_.write("STLS\r\n");
  out_.write(
      "TOP\r\n"
      "UIDL\r\n"
      "PIPELINING\r\n"
      "RESP-CODES\r\n"
      "AUTH-RESP-CODE\r\n");
  out_.write(features_.expire_days < 0 ? "EXPIRE NEVER\r\n" : "EXPIRE " + std::to_string(features_.expire_days) + "\r\n");
  // RFC 2449: the least time between logins, in seconds.
  if (features_.login_delay > 0) out_.write("LOGIN-DELAY " + std::to_string(features_.login_delay) + "\r\n");
  out_.write(
      "IMPLEMENTATION popd\r\n"
      ".\r\n");
}

void Engine::authorization(std::string_view verb, std::string_view args) {
  if (verb == "STLS") return args.empty() ? stls_command() : err("Syntax: STLS");
  if (verb == "USER" || verb == "PASS" || verb == "AUTH") {
    if (plaintext_refused()) return;
    if (verb == "USER") return user_command(args);
    if (verb == "PASS") return pass_command(args);
    return auth_command(args);
  }
  static constexpr std::string_view later[] = {"STAT", "LIST", "RETR", "DELE", "NOOP",
                                                "RSET", "TOP",  "UIDL"};
  if (std::find(std::begin(later), std::end(later), verb) != std::end(later))
    return err("Not logged in yet: USER and PASS first");
  err("Unknown command");
}

void Engine::user_command(std::string_view args) {
  std::string_view name = next_word(args);
  have_user_ = false;
  if (name.empty() || !args.empty()) return err("Syntax: USER name");
  if (!valid_user_name(name)) return err("[AUTH] Invalid user name");
  user_.assign(name);
  have_user_ = true;
  ok("Send your password");
}

bool Engine::plaintext_refused() {
  if (!features_.require_tls || features_.tls_active) return false;
  err("[AUTH] TLS is required first: use STLS");
  return true;
}

void Engine::stls_command() {
  if (features_.tls_active) return err("TLS is already active");
  if (!features_.stls) return err("STLS is not available");
  ok("Begin TLS negotiation");
  tls_requested_ = true;
  have_user_ = false;
}

void Engine::pass_command(std::string_view args) {
  if (!have_user_) return err("USER first");
  have_user_ = false;
  // RFC 1939 allows spaces in the password: it is the rest of the line after
  // the single space that follows PASS.
  if (!args.empty() && is_space(args.front())) args.remove_prefix(1);
  mechanism_ = "user";
  login(user_, args);
}

// RFC 5034 AUTH: no argument lists the mechanisms; PLAIN (RFC 4616) and
// LOGIN, with or without an initial response. LOGIN has no RFC: Outlook
// and Outlook Express use it, as Microsoft's MS-XLOGIN documents it (a
// base64 "Username:" and "Password:" challenge, each answered in base64),
// so it is here, under the rules PLAIN follows.
void Engine::auth_command(std::string_view args) {
  have_user_ = false;
  std::string_view mechanism = next_word(args);
  std::string_view initial = next_word(args);
  if (mechanism.empty()) {
    ok("Supported mechanisms follow");
    out_.write("PLAIN\r\nLOGIN\r\n.\r\n");
    return;
  }
  std::string name = upper(mechanism);
  if (name != "PLAIN" && name != "LOGIN") return err("Unsupported authentication mechanism");
  if (!args.empty()) return err("Syntax: AUTH " + name + " [initial-response]");
  Sasl step = name == "PLAIN" ? Sasl::plain : Sasl::login_user;
  if (!initial.empty()) return sasl_response(step, initial);
  out_.write(step == Sasl::plain ? "+ \r\n" : "+ VXNlcm5hbWU6\r\n");  // "Username:"
  sasl_ = step;
}

// A client line in a SASL exchange, at `step`.
void Engine::sasl_response(Sasl step, std::string_view line) {
  if (line == "*") return err("Authentication cancelled");
  // "=" is an empty response (RFC 5034 section 4).
  auto decoded = line == "=" ? std::optional<std::string>("") : decode_base64(line);
  if (!decoded) return err("Invalid base64 in the SASL response");
  if (step == Sasl::plain) sasl_plain(*decoded);
  if (step == Sasl::login_user) {
    if (!valid_user_name(*decoded)) return err("[AUTH] Invalid user name");
    user_ = *decoded;
    sasl_ = Sasl::login_password;
    out_.write("+ UGFzc3dvcmQ6\r\n");  // "Password:"
  }
  if (step == Sasl::login_password) {
    mechanism_ = "sasl-login";
    login(user_, *decoded);
  }
  explicit_bzero(decoded->data(), decoded->size());
}

// RFC 4616: authzid NUL authcid NUL passwd.
void Engine::sasl_plain(std::string_view response) {
  auto first = response.find('\0');
  auto second = first == std::string_view::npos ? first : response.find('\0', first + 1);
  if (second == std::string_view::npos || response.find('\0', second + 1) != std::string_view::npos)
    return err("Malformed PLAIN response");
  std::string_view authzid = response.substr(0, first);
  std::string_view authcid = response.substr(first + 1, second - first - 1);
  std::string_view password = response.substr(second + 1);
  if (!valid_user_name(authcid)) return err("[AUTH] Invalid user name");
  if (!authzid.empty() && authzid != authcid)
    return login_failed("[AUTH] Authorization identity must be empty or the user's own");
  mechanism_ = "sasl-plain";
  login(std::string(authcid), password);
}

SessionStats Engine::stats() const {
  SessionStats stats = stats_;
  if (maildrop_ || handed_off_) stats.auth = mechanism_;
  // After a commit the maildrop no longer has the deleted messages; quit()
  // counted what stays before it.
  for (std::size_t i = 0; maildrop_ && !committed_ && i < deleted_.size(); ++i) {
    ++stats.kept_messages;
    stats.kept_bytes += maildrop_->size(i);
  }
  stats.too_many_failures = failures_ >= params::max_login_failures;
  return stats;
}

void Engine::login_failed(std::string_view text) {
  if (++failures_ < params::max_login_failures) return err(text);
  err(std::string(text) + "; too many failures, closing connection");
  state_ = State::closed;
}

void Engine::login(const std::string& user, std::string_view password) {
  user_ = user;
  apply_login(authenticator_.login(user_, password));
}

void Engine::apply_login(const Login& login) {
  using O = Login::Outcome;
  switch (login.outcome) {
    case O::accepted:
      maildrop_ = login.maildrop;
      deleted_.assign(maildrop_->count(), false);
      state_ = State::transaction;
      rset();  // "+OK maildrop has N messages (M octets)"
      return;
    case O::rejected: return login_failed("[AUTH] Authentication failed");
    case O::forbidden: err("[SYS/PERM] " + login.text); break;
    case O::in_use: err("[IN-USE] " + login.text); break;
    case O::too_soon: err("[LOGIN-DELAY] " + login.text); break;
    case O::temporary:
      if (login.counts_as_failure()) return login_failed("[SYS/TEMP] " + login.text);
      err("[SYS/TEMP] " + login.text);
      break;
    case O::handed_off:
      handed_off_ = true;
      state_ = State::closed;
      return;
  }
  if (login.close) state_ = State::closed;
}

void Engine::quit() {
  if (state_ != State::transaction) {
    ok("popd signing off");
    state_ = State::closed;
    return;
  }
  std::string error;
  std::size_t before = maildrop_->count();
  if (!maildrop_->commit(deleted_, error)) {
    err("[SYS/TEMP] Deletions not committed: " + error);
    stats_.commit_failed = true;
  } else {
    // What is left, as the maildrop numbers it now: the client's deletions
    // and any the maildrop adds (--expire's) are counted alike.
    committed_ = true;
    for (std::size_t i = 0; i < maildrop_->count(); ++i) ++stats_.kept_messages, stats_.kept_bytes += maildrop_->size(i);
    stats_.deleted_messages = before - maildrop_->count();
    ok("popd signing off (" + std::to_string(stats_.deleted_messages) + " messages deleted)");
  }
  state_ = State::closed;
}

void Engine::transaction(std::string_view verb, std::string_view args) {
  if (verb == "STAT") return args.empty() ? stat() : err("Syntax: STAT");
  if (verb == "LIST") return list(args);
  if (verb == "UIDL") return uidl(args);
  if (verb == "RETR") return retr(args);
  if (verb == "TOP") return top(args);
  if (verb == "DELE") return dele(args);
  if (verb == "NOOP") return args.empty() ? ok("") : err("Syntax: NOOP");
  if (verb == "RSET") return args.empty() ? rset() : err("Syntax: RSET");
  if (verb == "USER" || verb == "PASS" || verb == "AUTH") return err("Already logged in");
  if (verb == "STLS") return err("STLS is only allowed before login");
  err("Unknown command");
}

bool Engine::message_number(std::string_view arg, std::size_t& index) {
  std::uint64_t number = 0;
  if (!parse_number(arg, number)) {
    // Echoed only as printable ASCII: no control bytes back to the client
    // or into a trace, where the line that carried them is hidden.
    bool printable = std::all_of(arg.begin(), arg.end(), [](char c) { return c >= ' ' && c < 127; });
    err(printable ? "Invalid message number: " + std::string(arg.substr(0, 20)) : std::string("Invalid message number"));
    return false;
  }
  if (number == 0 || number > deleted_.size()) {
    err("No such message: " + std::to_string(number) + " (maildrop has " +
        std::to_string(deleted_.size()) + " messages)");
    return false;
  }
  index = number - 1;
  if (deleted_[index]) {
    err("Message " + std::to_string(number) + " already deleted");
    return false;
  }
  return true;
}

void Engine::stat() {
  std::uint64_t count = 0, octets = 0;
  for (std::size_t i = 0; i < deleted_.size(); ++i)
    if (!deleted_[i]) ++count, octets += maildrop_->size(i);
  ok(std::to_string(count) + " " + std::to_string(octets));
}

void Engine::rset() {
  std::fill(deleted_.begin(), deleted_.end(), false);
  std::uint64_t octets = 0;
  for (std::size_t i = 0; i < deleted_.size(); ++i) octets += maildrop_->size(i);
  ok("maildrop has " + std::to_string(deleted_.size()) + " messages (" +
     std::to_string(octets) + " octets)");
}

void Engine::list(std::string_view args) {
  std::string_view arg = next_word(args);
  if (!args.empty()) return err("Syntax: LIST [message]");
  std::size_t index = 0;
  if (!arg.empty()) {
    if (message_number(arg, index))
      ok(std::to_string(index + 1) + " " + std::to_string(maildrop_->size(index)));
    return;
  }
  ok("scan listing follows");
  write_listing(out_, deleted_, [&](std::size_t i, std::string& line) { append_number(line, maildrop_->size(i)); });
}

void Engine::uidl(std::string_view args) {
  std::string_view arg = next_word(args);
  if (!args.empty()) return err("Syntax: UIDL [message]");
  std::size_t index = 0;
  if (!arg.empty()) {
    if (message_number(arg, index)) ok(std::to_string(index + 1) + " " + maildrop_->uid(index));
    return;
  }
  ok("unique-id listing follows");
  write_listing(out_, deleted_, [&](std::size_t i, std::string& line) { maildrop_->append_uid(i, line); });
}

void Engine::retr(std::string_view args) {
  std::string_view arg = next_word(args);
  if (arg.empty() || !args.empty()) return err("Syntax: RETR message");
  std::size_t index = 0;
  if (!message_number(arg, index)) return;
  if (!maildrop_->verify(index)) return abort("[SYS/TEMP] Mailbox changed since it was indexed, try again");
  std::uint64_t size = maildrop_->size(index);
  ok(std::to_string(size) + " octets");
  send_message(index, std::nullopt);
  if (closed()) return;
  ++stats_.retrieved_messages;
  stats_.retrieved_bytes += size;
}

void Engine::top(std::string_view args) {
  std::string_view arg = next_word(args);
  std::string_view lines_arg = next_word(args);
  if (arg.empty() || lines_arg.empty() || !args.empty()) return err("Syntax: TOP message lines");
  std::uint64_t lines = 0;
  if (!parse_number(lines_arg, lines)) return err("Invalid number of lines");
  std::size_t index = 0;
  if (!message_number(arg, index)) return;
  if (!maildrop_->verify(index)) return abort("[SYS/TEMP] Mailbox changed since it was indexed, try again");
  ok("top of message follows");
  send_message(index, lines);
  if (!closed()) ++stats_.top_messages;
}

void Engine::send_message(std::size_t index, std::optional<std::uint64_t> body_lines) {
  StuffingSink stuffing(out_, converted_);
  WorkaroundSink workarounds(stuffing, features_.outlook_no_nuls, features_.oe_ns_eoh, workaround_scratch_);
  bool any = features_.outlook_no_nuls || features_.oe_ns_eoh;
  if (!maildrop_->send(index, body_lines, any ? static_cast<MessageSink&>(workarounds) : stuffing)) {
    // The multi-line reply cannot be completed truthfully: end the session
    // without committing, so the client sees a broken reply, not a short one.
    state_ = State::closed;
    return;
  }
  if (any) workarounds.finish();
  out_.write(".\r\n");
}

void Engine::dele(std::string_view args) {
  std::string_view arg = next_word(args);
  if (arg.empty() || !args.empty()) return err("Syntax: DELE message");
  std::size_t index = 0;
  if (!message_number(arg, index)) return;
  deleted_[index] = true;
  ok("message " + std::to_string(index + 1) + " deleted");
}

}  // namespace popd::protocol
