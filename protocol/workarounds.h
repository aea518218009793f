// --workaround: a message as legacy clients need it, between the maildrop
// and the byte-stuffing.
#pragma once

#include <string>
#include <string_view>

#include "protocol/maildrop.h"

namespace popd::protocol {

// Passes a message on to `next`: with `no_nuls` (outlook-no-nuls) each NUL
// as 0x80, with `end_of_header` (oe-ns-eoh) an empty line after a header
// that has none. finish() after the message's last line.
class WorkaroundSink final : public MessageSink {
 public:
  // `scratch` is kept by the engine across messages.
  WorkaroundSink(MessageSink& next, bool no_nuls, bool end_of_header, std::string& scratch)
      : next_(next), no_nuls_(no_nuls), end_of_header_(end_of_header), scratch_(scratch) {}
  void text(std::string_view part) override;
  void end_line() override;
  void lines(std::string_view block) override;
  void finish();

 private:
  std::string_view without_nuls(std::string_view bytes);

  MessageSink& next_;
  bool no_nuls_, end_of_header_;
  std::string& scratch_;
  bool in_header_ = true, line_has_text_ = false;
};

}  // namespace popd::protocol
