// --workaround: a message as legacy clients need it (Features says
// which), between the maildrop and the byte-stuffing.
#pragma once

#include <string>
#include <string_view>

#include "protocol/engine.h"
#include "protocol/maildrop.h"

namespace popd::protocol {

// Passes a message on to `next`, changed as the features ask; finish()
// after the message's last line.
class WorkaroundSink final : public MessageSink {
 public:
  // `scratch` is kept by the engine across messages.
  WorkaroundSink(MessageSink& next, const Features& features, std::string& scratch)
      : next_(next), no_nuls_(features.outlook_no_nuls), end_of_header_(features.oe_ns_eoh), scratch_(scratch) {}
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
