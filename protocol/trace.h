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

// A client line as a transcript may show it, its line end as it came:
// - a SASL response (a line after a "+ " challenge) is ***, but "*";
// - PASS shows its verb, APOP and AUTH one word more (the name, the
//   mechanism), USER its one name, popd's other commands all of it;
// - a command whose line holds a byte outside printable ASCII, is too
//   long for the engine, or has USER more than one word shows its verb;
// - any other line is *** (it may be a SASL response pipelined after an
//   AUTH that failed, or a password sent after a blank).
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
