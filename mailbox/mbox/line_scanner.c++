#include "mailbox/mbox/line_scanner.h"

namespace popd::mailbox {

std::size_t read_fully(ByteSource& source, std::uint64_t offset, char* buffer, std::size_t size) {
  std::size_t expected = offset >= source.size() ? 0 : std::min<std::uint64_t>(size, source.size() - offset);
  std::size_t got = source.read_at(offset, buffer, size);
  if (got < expected) throw SpoolChanged();
  return got;
}

LineScanner::BodyEnd LineScanner::skip_body(std::uint64_t blank_line) {
  at_line_start_ = true;
  const std::uint64_t start = buffer_offset_ + pos_;
  if (pos_ < 2 || (fill_ - pos_ < from_.size() + 1 && more_data())) {
    // Two bytes before the body are needed (the empty-line test), and
    // enough after it for "From ".
    buffer_offset_ = start - 2;
    pos_ = fill_ = 0;
    refill();
    pos_ = 2;
  }
  if (from_line_at(pos_)) return {blank_line, 0};  // "From " right after the header
  LineEndCounter counter;
  auto count = [&](std::size_t from, std::size_t to, int sign) {
    for (std::size_t i = from; i < to; ++i) counter.add(data_[i], data_[i + 1], sign);
  };
  // The body ends at an empty line whose line feed at k is followed by
  // "From "; the counter covers the buffer up to i.
  auto ends_at = [&](std::size_t k, std::size_t i) -> std::optional<BodyEnd> {
    auto empty = empty_line_ending_at(k);
    if (!empty || !from_line_at(k + 1)) return std::nullopt;
    if (*empty < i) count(*empty, i, -1);
    else count(i, *empty, 1);
    std::uint64_t content_end = buffer_offset_ + *empty;
    pos_ = k + 1;  // the next record's "From " line
    return BodyEnd{content_end, 2 + (content_end - start) + counter.lf() - counter.crlf()};
  };
  for (;;) {
    bool last = !more_data();
    std::size_t limit = last ? fill_ : std::max(pos_, fill_ - std::min(fill_, from_.size()));
    std::size_t i = pos_;
    std::uint64_t candidates;
    while ((i = counter.blocks(data_, i, limit, candidates)) + LineEndCounter::block <= limit) {
      for (; candidates; candidates &= candidates - 1) {
        std::size_t k = i + __builtin_ctzll(candidates);
        // The whole block is counted already: take back what follows k.
        if (empty_line_ending_at(k) && from_line_at(k + 1)) {
          count(k, i + LineEndCounter::block, -1);
          if (auto end = ends_at(k, k)) return *end;
        }
      }
      i += LineEndCounter::block;
    }
    for (; i < limit; ++i) {
      if (data_[i] == '\n' && data_[i + 1] == 'F')
        if (auto end = ends_at(i, i)) return *end;
      count(i, i + 1, 1);
    }
    pos_ = i;
    if (last) break;
    refill(2);
  }
  // No next record: the body runs to the end of the data, less a last empty
  // line (the separator before mail still to come), plus a line end for a
  // last line without one.
  std::uint64_t end = buffer_offset_ + fill_;
  if (end == start) return {blank_line, 0};
  std::uint64_t size = 2 + (end - start) + counter.lf() - counter.crlf();
  if (data_[fill_ - 1] != '\n') return {end, size + 2};
  if (auto empty = empty_line_ending_at(fill_ - 1); empty && buffer_offset_ + *empty >= start)
    return {buffer_offset_ + *empty, size - 2};
  return {end, size};
}

}  // namespace popd::mailbox
