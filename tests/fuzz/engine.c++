// libFuzzer target: the protocol engine on arbitrary client bytes, before
// and after login, with STLS, SASL and the workarounds reachable, and
// traced as --trace-dir does: every reply byte passes through the trace.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "protocol/engine.h"

using namespace popd::protocol;

namespace {

// Lends room as the TLS ring does, so that RETR writes in place too.
struct NullOutput final : Output {
  std::size_t bytes = 0;
  std::string lent;
  void write(std::string_view data) override { bytes += data.size(); }
  std::span<char> room(std::size_t at_least) override {
    lent.assign(std::max<std::size_t>(at_least, 512), '#');
    return lent;
  }
  void commit(std::size_t size) override { bytes += size; }
};

// Counts what a trace is shown; the client's lines must be whole lines.
struct CountingTrace final : Trace {
  std::size_t server_bytes = 0;
  void client(std::string_view line) override {
    if (!line.ends_with('\n')) __builtin_trap();
  }
  void server(std::string_view bytes) override { server_bytes += bytes.size(); }
};

struct SmallMaildrop final : Maildrop {
  // The last is all header, with a NUL: what the workarounds change.
  std::vector<std::string> messages{"Subject: a\n\nbody\n.\n", "Subject: b\n\n..x\n\n\n",
                                    std::string("Subject: c\0\nX: y\n", 17)};
  std::size_t count() const override { return messages.size(); }
  std::uint64_t size(std::size_t i) const override { return messages[i].size(); }
  std::string uid(std::size_t i) const override { return "u" + std::to_string(i); }
  bool send(std::size_t i, std::optional<std::uint64_t> body_lines, MessageSink& sink) override {
    std::string_view rest = messages[i];
    std::uint64_t lines = 0;
    while (!rest.empty()) {
      auto nl = rest.find('\n');
      if (body_lines && lines++ > *body_lines + 1) break;
      sink.text(rest.substr(0, nl));
      sink.end_line();
      rest.remove_prefix(nl + 1);
    }
    return true;
  }
  bool commit(const std::vector<bool>&, std::string&) override { return true; }
};

struct Accepting final : Authenticator {
  SmallMaildrop drop;
  Login login(std::string_view user, std::string_view password) override {
    Login result;
    if (user == "alice" && password == "secret") {
      result.outcome = Login::Outcome::accepted;
      result.maildrop = &drop;
    }
    return result;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  Accepting auth;
  NullOutput out;
  Features features{.stls = (data[0] & 1) != 0,
                    .require_tls = (data[0] & 2) != 0,
                    .outlook_no_nuls = (data[0] & 4) != 0,
                    .oe_ns_eoh = (data[0] & 8) != 0};
  CountingTrace trace;
  Engine engine(auth, out, features, &trace);
  engine.greet();
  // The rest arrives in pieces whose sizes the first byte varies.
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::size_t piece = 1 + (data[0] >> 4);
  while (!input.empty() && !engine.closed()) {
    engine.receive(input.substr(0, piece));
    input.remove_prefix(std::min(piece, input.size()));
    while (engine.command_waiting()) engine.step();
    if (engine.take_tls_request()) {
      engine.discard_pending_input();
      engine.tls_started();
    }
  }
  if (trace.server_bytes != out.bytes) __builtin_trap();
  return 0;
}
