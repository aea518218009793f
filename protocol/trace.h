// A session's transcript for --trace-dir (server/trace.h): what the engine
// read and wrote, with every password and SASL response replaced by ***.
// No system calls here: the engine reports, the server keeps.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "protocol/maildrop.h"

namespace popd::protocol {

class Trace {
 public:
  // A client line as it came (with its line end), already redacted.
  virtual void client(std::string_view line) = 0;
  // Reply bytes as they go out, in pieces of any size.
  virtual void server(std::string_view bytes) = 0;

 protected:
  ~Trace() = default;
};

// A client line as a transcript may show it. Only the commands popd
// answers are shown whole; PASS's argument, APOP's digest and AUTH's
// initial response become ***, and so does every other line (it may be a
// SASL response the client pipelined after an AUTH that failed), and all
// of a SASL response (a line after a "+ " challenge) but a cancellation
// ("*"). The line end is kept as it came.
std::string redacted(std::string_view line, bool sasl_response);

// Passes all output on, and shows it to a trace on its way.
class TracedOutput final : public Output {
 public:
  TracedOutput(Output& next, Trace& trace) : next_(next), trace_(trace) {}
  void write(std::string_view bytes) override;
  std::span<char> room(std::size_t at_least) override;
  void commit(std::size_t size) override;

 private:
  Output& next_;
  Trace& trace_;
  std::span<char> lent_;
};

}  // namespace popd::protocol
