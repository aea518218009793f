// libFuzzer target: the mbox parser and message presentation. Besides
// crashes, it checks the promise STAT and LIST rely on: every message's
// size is exactly what RETR sends, and TOP never sends more; that a parse
// by two threads finds what one pass finds; and that each --uidl-scheme
// (the input's length picks one) gives valid, distinct ids; and that a
// file cut short while it is parsed (at a point the first byte picks) is
// refused as SpoolChanged, not half-read or a crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <set>
#include <string>

#include "mailbox/mbox/mbox.h"

using namespace popd::mailbox;

namespace {
struct Counter final : popd::protocol::MessageSink {
  std::uint64_t bytes = 0;
  void text(std::string_view part) override { bytes += part.size(); }
  void end_line() override { bytes += 2; }
};

// The input, cut short at `cut` after its size was taken.
class CutSource final : public ByteSource {
 public:
  CutSource(std::string_view data, std::size_t cut) : data_(data), cut_(cut) {}
  std::size_t read_at(std::uint64_t offset, char* buffer, std::size_t size) override {
    return StringSource(data_.substr(0, cut_)).read_at(offset, buffer, size);
  }
  std::uint64_t size() const override { return data_.size(); }

 private:
  std::string_view data_;
  std::size_t cut_;
};

void parse_cut_short(std::string_view data, UidScheme scheme) {
  if (data.empty()) return;
  CutSource cut(data, data.size() * static_cast<std::uint8_t>(data[0]) / 256);
  try {
    parse(cut, scheme, data.size() % 2 ? 0 : std::numeric_limits<std::uint64_t>::max());
  } catch (const SpoolChanged&) {
    return;
  } catch (const NotMbox&) {
    return;
  }
  std::abort();  // every byte is read: a parse that ends must have seen the cut
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  StringSource source(std::string_view(reinterpret_cast<const char*>(data), size));
  constexpr UidScheme schemes[] = {UidScheme::popd, UidScheme::popa3d, UidScheme::dovecot, UidScheme::uw_imap,
                                   UidScheme::x_uidl};
  UidScheme scheme = schemes[size % 5];
  parse_cut_short(std::string_view(reinterpret_cast<const char*>(data), size), scheme);
  Mbox box;
  try {
    box = parse(source, scheme, std::numeric_limits<std::uint64_t>::max());
  } catch (const NotMbox&) {
    return 0;
  }
  // Two threads, one from a record near the middle, find the same.
  Mbox parallel = parse(source, scheme, 0);
  if (parallel.messages.size() != box.messages.size() || parallel.internal.has_value() != box.internal.has_value())
    std::abort();
  for (std::size_t i = 0; i < box.messages.size(); ++i) {
    const Message &a = box.messages[i], &b = parallel.messages[i];
    if (a.record_offset != b.record_offset || a.content_length != b.content_length || a.size != b.size ||
        box.uid(i) != parallel.uid(i))
      std::abort();
  }
  std::set<std::string> ids;
  for (std::size_t i = 0; i < box.messages.size(); ++i)
    if (!valid_uid(box.uid(i)) || !ids.insert(box.uid(i)).second) std::abort();
  std::uint64_t previous_end = 0;
  ReadBuffer buffer;  // one for all messages, as a session has
  for (std::size_t i = 0; i < box.messages.size(); ++i) {
    const Message& m = box.messages[i];
    if (m.record_offset < previous_end || m.content_offset + m.content_length > box.record_end(i)) std::abort();
    previous_end = box.record_end(i);
    Counter all, top;
    send(source, m, std::nullopt, all, buffer);
    send(source, m, 1, top, buffer);
    if (all.bytes != m.size || top.bytes > all.bytes) std::abort();
  }
  return 0;
}
