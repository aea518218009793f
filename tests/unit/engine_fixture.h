// What the engine's tests run it with: an output that collects, a
// maildrop in memory, an authenticator that knows alice, and a fixture
// that logs in and talks.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/engine.h"

namespace popd::testing {

using namespace popd::protocol;

struct StringOutput final : Output {
  std::string text;
  void write(std::string_view bytes) override { text += bytes; }
};

// Messages are given as lines joined by "\n"; sent with CRLF.
struct MemoryMaildrop final : Maildrop {
  std::vector<std::string> messages;
  std::vector<bool> committed;
  bool fail_commit = false;
  bool fail_send = false;
  bool moved = false;  // verify() finds the messages elsewhere than indexed

  std::size_t count() const override { return messages.size(); }
  std::uint64_t size(std::size_t i) const override {
    std::uint64_t lines = 0;
    for (char c : messages[i]) lines += c == '\n';
    return messages[i].size() + lines;
  }
  std::string uid(std::size_t i) const override { return "uid" + std::to_string(i + 1); }
  bool send_blocks = false;  // RETR bodies through MessageSink::lines, as the spool sends them
  bool send_whole = false;   // RETR: the whole message in one MessageSink::lines

  bool verify(std::size_t) override { return !moved; }
  bool send(std::size_t i, std::optional<std::uint64_t> body_lines, MessageSink& sink) override {
    if (fail_send) return false;
    std::string_view rest = messages[i];
    if (send_whole && !body_lines) {
      sink.lines(rest);
      return true;
    }
    if (send_blocks && !body_lines) {
      auto body = rest.find("\n\n") + 2;
      MemoryMaildrop header;
      header.messages = {std::string(rest.substr(0, body))};
      header.send(0, std::nullopt, sink);
      sink.lines(rest.substr(body));
      return true;
    }
    bool in_body = false;
    std::uint64_t body = 0;
    while (!rest.empty()) {
      auto nl = rest.find('\n');
      std::string_view line = rest.substr(0, nl);
      rest.remove_prefix(nl + 1);
      if (line.ends_with('\r')) line.remove_suffix(1);  // as the mailboxes do
      if (in_body && body_lines && body++ >= *body_lines) break;
      if (line.empty()) in_body = true;
      sink.text(line);
      sink.end_line();
    }
    return true;
  }
  bool commit(const std::vector<bool>& deleted, std::string& error) override {
    if (fail_commit) {
      error = "disk full";
      return false;
    }
    committed = deleted;
    // As a spool does: only the others are left, numbered anew.
    std::vector<std::string> kept;
    for (std::size_t i = 0; i < messages.size(); ++i)
      if (!deleted[i]) kept.push_back(messages[i]);
    messages = kept;
    return true;
  }
};

struct FakeAuthenticator final : Authenticator {
  Maildrop* maildrop = nullptr;
  Login::Outcome outcome_for_good_password = Login::Outcome::accepted;
  bool refusal_closes = true;
  int calls = 0;
  std::string last_password;
  Login login(std::string_view user, std::string_view password) override {
    ++calls;
    last_password = password;
    Login result;
    if (user != "alice" || password != "secret") return result;  // rejected
    result.outcome = outcome_for_good_password;
    if (result.outcome != Login::Outcome::accepted) {
      result.text = "nope";
      result.close = refusal_closes;
      return result;
    }
    result.maildrop = maildrop;
    return result;
  }
};

struct Fixture {
  MemoryMaildrop drop;
  FakeAuthenticator auth;
  StringOutput out;
  Engine engine;

  explicit Fixture(Features features = {}, Trace* trace = nullptr) : engine(auth, out, features, trace) {
    drop.messages = {"Subject: one\n\nbody 1\n.dot line\n", "Subject: two\n\nline a\nline b\nline c\n"};
    auth.maildrop = &drop;
    engine.greet();
    out.text.clear();
  }
  // Sends the bytes and answers every complete command.
  std::string talk(std::string_view bytes) {
    out.text.clear();
    engine.receive(bytes);
    while (engine.command_waiting()) engine.step();
    return out.text;
  }
  void login() { REQUIRE(talk("USER alice\r\nPASS secret\r\n").find("+OK maildrop has ") != std::string::npos); }
};

// An output that lends room of a given size, as the TLS ring does.
struct LendingOutput final : Output {
  std::string text;
  std::string lent;
  std::size_t size;
  explicit LendingOutput(std::size_t room_size) : size(room_size) {}
  void write(std::string_view bytes) override { text += bytes; }
  std::span<char> room(std::size_t at_least) override {
    if (at_least > size) return {};
    lent.assign(size, '#');
    return lent;
  }
  void commit(std::size_t n) override {
    REQUIRE(n <= lent.size());
    text.append(lent, 0, n);
  }
};

// Base64 as clients send SASL responses (the engine only decodes).
inline std::string b64(std::string_view raw) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < raw.size(); i += 3) {
    std::uint32_t group = 0;
    std::size_t n = std::min<std::size_t>(3, raw.size() - i);
    for (std::size_t j = 0; j < 3; ++j)
      group = group << 8 | (j < n ? static_cast<unsigned char>(raw[i + j]) : 0);
    for (std::size_t j = 0; j < 4; ++j) out += j <= n ? alphabet[group >> (18 - 6 * j) & 63] : '=';
  }
  return out;
}

}  // namespace popd::testing
