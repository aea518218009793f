#include "mailbox/mbox.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <thread>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <xxhash.h>

#include "mailbox/digest.h"
#include "params.h"

namespace popd::mailbox {

std::size_t StringSource::read_at(std::uint64_t offset, char* buffer, std::size_t size) {
  if (offset >= data_.size()) return 0;
  std::size_t n = std::min<std::uint64_t>(size, data_.size() - offset);
  std::memcpy(buffer, data_.data() + offset, n);
  return n;
}

namespace {

constexpr std::string_view from_ = "From ";

// Reads [offset, offset + size) as far as the source reaches; anything
// shorter means the file shrank since its size was taken.
std::size_t read_fully(ByteSource& source, std::uint64_t offset, char* buffer, std::size_t size) {
  std::size_t expected = offset >= source.size() ? 0 : std::min<std::uint64_t>(size, source.size() - offset);
  std::size_t got = source.read_at(offset, buffer, size);
  if (got < expected) throw SpoolChanged();
  return got;
}

// Yields the lines of [begin, end) of a source as pieces: a line longer than
// the buffer comes in several pieces, and a piece never ends between the CR
// and LF of a CRLF.
class LineScanner {
 public:
  struct Piece {
    std::uint64_t offset = 0;
    std::string_view data;
    bool starts_line = false;
    bool ends_line = false;
  };

  // The buffer is no larger than the range: a small message costs little.
  // It has `padding` zero bytes beyond its end for vector loads.
  LineScanner(ByteSource& source, std::uint64_t begin, std::uint64_t end, std::size_t block = params::read_block)
      : source_(&source),
        size_(buffer_size(begin, end, block)),
        owned_(new char[size_ + padding]),  // not zeroed: only read bytes are looked at
        buffer_(owned_.get()),
        data_(buffer_),
        buffer_offset_(begin),
        end_(end) {}

  // Reads into `kept` (params::read_block bytes, made on first use).
  LineScanner(ByteSource& source, std::uint64_t begin, std::uint64_t end, std::size_t block, ReadBuffer& kept)
      : source_(&source),
        size_(buffer_size(begin, end, std::min(block, params::read_block))),
        buffer_((kept ? kept : kept = ReadBuffer(new char[params::read_block + padding])).get()),
        data_(buffer_),
        buffer_offset_(begin),
        end_(end) {}

  // Over bytes already in memory, the whole range from `begin`: nothing is
  // read or copied. Not for skip_body(), which needs the padding.
  LineScanner(std::string_view range, std::uint64_t begin)
      : size_(range.size()), data_(range.data()), buffer_offset_(begin), end_(begin + range.size()),
        fill_(range.size()) {}

  bool next(Piece& piece) {
    for (;;) {
      const char* start = data_ + pos_;
      if (const void* nl = std::memchr(start, '\n', fill_ - pos_)) {
        std::size_t length = static_cast<const char*>(nl) - start + 1;
        return emit(piece, length, true);
      }
      if (more_data() && (pos_ > 0 || fill_ < size_)) {
        refill();
        continue;
      }
      std::size_t length = fill_ - pos_;
      if (length == 0) return false;
      if (more_data()) {  // the buffer is full of one line
        if (data_[fill_ - 1] == '\r' && length > 1) --length;
        return emit(piece, length, false);
      }
      return emit(piece, length, true);  // a last line without a newline
    }
  }

  // Continue at `offset`, which starts a line.
  void seek(std::uint64_t offset) {
    if (offset >= buffer_offset_ && offset <= buffer_offset_ + fill_) {
      pos_ = offset - buffer_offset_;  // already here: no read
    } else {
      buffer_offset_ = offset;
      pos_ = fill_ = 0;
    }
    at_line_start_ = true;
  }

  // The complete lines from here that the buffer holds, refilled once if
  // it holds none; empty when no complete line is left, or when a line is
  // longer than the buffer: next() gives those in pieces.
  std::string_view whole_lines() {
    if (!at_line_start_) return {};
    for (bool refilled = false;; refilled = true) {
      const char* start = data_ + pos_;
      if (const void* last = ::memrchr(start, '\n', fill_ - pos_)) {
        std::size_t length = static_cast<const char*>(last) - start + 1;
        pos_ += length;
        return {start, length};
      }
      if (refilled || !more_data()) return {};
      refill();
    }
  }

  struct BodyEnd {
    std::uint64_t content_end;  // the empty line before the next "From ", or the end
    std::uint64_t size;         // octets the body sends, the empty line after the header included
  };
  // Call right after the empty line that ends a header, at `blank_line`.
  // Finds the end of the body in large blocks, counting line ends with
  // vector instructions instead of looking at each line, and stops at the
  // next "From " line (the separator rule: it follows an empty line).
  BodyEnd skip_body(std::uint64_t blank_line);

 private:
  static std::size_t buffer_size(std::uint64_t begin, std::uint64_t end, std::size_t block) {
    return std::max<std::uint64_t>(64, std::min<std::uint64_t>(block, end - begin));
  }

  bool more_data() const { return buffer_offset_ + fill_ < end_; }

  // Keeps the bytes from pos_ (and `behind` bytes before it), reads more.
  void refill(std::size_t behind = 0) {
    std::size_t keep = std::min(pos_, behind);
    std::memmove(buffer_, data_ + pos_ - keep, fill_ - pos_ + keep);
    buffer_offset_ += pos_ - keep;
    fill_ -= pos_ - keep;
    pos_ = keep;
    std::uint64_t want = std::min<std::uint64_t>(size_ - fill_, end_ - (buffer_offset_ + fill_));
    std::size_t got = source_->read_at(buffer_offset_ + fill_, buffer_ + fill_, want);
    if (got < want) throw SpoolChanged();
    fill_ += got;
    std::memset(buffer_ + fill_, 0, padding);
  }

  // Where the "\n" at k (followed by "From ") ends an empty line, that
  // line's start; else nullopt. Needs the two bytes before k.
  std::optional<std::size_t> empty_line_ending_at(std::size_t k) const {
    if (data_[k - 1] == '\n') return k;
    if (data_[k - 1] == '\r' && data_[k - 2] == '\n') return k - 1;
    return std::nullopt;
  }
  bool from_line_at(std::size_t i) const {
    return fill_ - i >= from_.size() && std::memcmp(data_ + i, from_.data(), from_.size()) == 0;
  }

  static constexpr std::size_t padding = 32;

  bool emit(Piece& piece, std::size_t length, bool ends_line) {
    piece.offset = buffer_offset_ + pos_;
    piece.data = std::string_view(data_ + pos_, length);
    piece.starts_line = at_line_start_;
    piece.ends_line = ends_line;
    at_line_start_ = ends_line;
    pos_ += length;
    return true;
  }

  ByteSource* source_ = nullptr;  // none over memory
  std::size_t size_;
  std::unique_ptr<char[]> owned_;  // the buffer, unless the caller keeps it
  char* buffer_ = nullptr;         // what data_ points to, unless over memory
  const char* data_;
  std::uint64_t buffer_offset_;
  std::uint64_t end_;
  std::size_t pos_ = 0, fill_ = 0;
  bool at_line_start_ = true;
};

// Counts line feeds and CR LF pairs over blocks of 64 bytes, and finds
// where a line feed is followed by 'F' (a line that may start "From ").
// The counts stay in per-byte vector counters, summed every 63 blocks.
class LineEndCounter {
 public:
  static constexpr std::size_t block = 64;

  // Counts the blocks of data[i, limit) up to the first block with a
  // candidate, whose bits (bit j: data[i+j] data[i+j+1] is LF 'F') land in
  // `candidates`; returns that block's index (counted), or where the
  // blocks end. Reads one byte past each block.
  std::size_t blocks(const char* data, std::size_t i, std::size_t limit, std::uint64_t& candidates) {
    candidates = 0;
#if defined(__SSE2__)
    // Per-byte counters (a match is -1, subtracted; four a block at most),
    // summed before they can overflow.
    __m128i lf_bytes = _mm_setzero_si128(), crlf_bytes = _mm_setzero_si128();
    const __m128i lf_char = _mm_set1_epi8('\n'), cr_char = _mm_set1_epi8('\r'), f_char = _mm_set1_epi8('F');
    unsigned pending = 0;
    for (; i + block <= limit; i += block) {
      std::uint64_t found = 0;
      for (unsigned j = 0; j < block; j += 16) {
        __m128i here = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + i + j));
        __m128i next = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + i + j + 1));
        __m128i lf = _mm_cmpeq_epi8(here, lf_char);
        lf_bytes = _mm_sub_epi8(lf_bytes, lf);
        crlf_bytes =
            _mm_sub_epi8(crlf_bytes, _mm_and_si128(_mm_cmpeq_epi8(here, cr_char), _mm_cmpeq_epi8(next, lf_char)));
        found |= std::uint64_t{static_cast<std::uint16_t>(
                     _mm_movemask_epi8(_mm_and_si128(lf, _mm_cmpeq_epi8(next, f_char))))}
                 << j;
      }
      if (found || ++pending == 63) {
        lf_ += sum(lf_bytes), crlf_ += sum(crlf_bytes);
        lf_bytes = crlf_bytes = _mm_setzero_si128();
        pending = 0;
        if (found) {
          candidates = found;
          return i;
        }
      }
    }
    lf_ += sum(lf_bytes), crlf_ += sum(crlf_bytes);
#else
    for (; i + block <= limit; i += block) {
      for (unsigned j = 0; j < block; ++j) {
        add(data[i + j], data[i + j + 1], 1);
        candidates |= std::uint64_t{data[i + j] == '\n' && data[i + j + 1] == 'F'} << j;
      }
      if (candidates) return i;
    }
#endif
    return i;
  }
  // One byte and the one after it; sign -1 takes it back.
  void add(char c, char next, int sign) {
    lf_ += sign * (c == '\n');
    crlf_ += sign * (c == '\r' && next == '\n');
  }
  std::uint64_t lf() const { return lf_; }
  std::uint64_t crlf() const { return crlf_; }

 private:
#if defined(__SSE2__)
  static std::uint64_t sum(__m128i bytes) {
    __m128i sums = _mm_sad_epu8(bytes, _mm_setzero_si128());
    return static_cast<std::uint64_t>(_mm_cvtsi128_si64(sums)) +
           static_cast<std::uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(sums, sums)));
  }
#endif
  std::uint64_t lf_ = 0, crlf_ = 0;
};

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

using Piece = LineScanner::Piece;

// The part of a piece the client sees: without LF or CRLF at the line's end.
std::string_view content(const Piece& piece) {
  std::string_view text = piece.data;
  if (piece.ends_line && !text.empty() && text.back() == '\n') {
    text.remove_suffix(1);
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  }
  return text;
}

bool is_empty_line(const Piece& piece) {
  return piece.starts_line && piece.ends_line && content(piece).empty();
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x | 0x20) == (y | 0x20);
         });
}

std::string_view header_name(std::string_view line) {
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return {};
  std::string_view name = line.substr(0, colon);
  while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
  return name;
}

std::string_view header_value(std::string_view line) {
  auto colon = line.find(':');
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  return value;
}

// Headers that IMAP servers and MUAs write into spools for their own
// bookkeeping; Dovecot and UW ipop3d hide them from POP3 clients too.
bool is_metadata_header(std::string_view name) {
  static constexpr std::string_view hidden[] = {"Status", "X-Status", "X-Keywords",
                                                "X-UID",  "X-IMAP",   "X-IMAPbase"};
  return std::any_of(std::begin(hidden), std::end(hidden),
                     [&](std::string_view h) { return iequals(h, name); });
}

// Follows the header section line by line: which lines are hidden (metadata
// headers and their continuation lines).
class HeaderFilter {
 public:
  // Call for every piece of the header section.
  bool hidden(const Piece& piece) {
    if (piece.starts_line) {
      char first = piece.data.empty() ? '\0' : piece.data.front();
      if (first != ' ' && first != '\t') hidden_ = is_metadata_header(header_name(content(piece)));
    }
    return hidden_;
  }

 private:
  bool hidden_ = false;
};

// Where a Content-Length header leads: the end of this message's content and
// the start of the next record, if a "From " line or the end of the file is
// there (mboxcl2); nothing if the header cannot be trusted.
struct ContentEnd {
  std::uint64_t content_end;
  std::uint64_t next_record;
};

std::optional<ContentEnd> check_content_length(ByteSource& source, std::uint64_t body_start,
                                               std::uint64_t length, std::uint64_t end) {
  if (length > end - body_start) return std::nullopt;
  std::uint64_t at = body_start + length;
  if (at == end) return ContentEnd{at, end};
  char buffer[8] = {};
  std::size_t got = read_fully(source, at - 1, buffer, sizeof buffer);
  std::string_view before_and_after(buffer, got);
  std::string_view after = before_and_after.substr(1);
  if (before_and_after.front() == '\n' && after.starts_with(from_)) return ContentEnd{at, at};
  for (std::string_view newline : {std::string_view("\n"), std::string_view("\r\n")}) {
    if (!after.starts_with(newline)) continue;
    std::string_view rest = after.substr(newline.size());
    if (rest.starts_with(from_)) return ContentEnd{at, at + newline.size()};
    if (at + newline.size() == end) return ContentEnd{at, end};
  }
  return std::nullopt;
}

// Octets the client receives for [begin, end): each line with CRLF.
std::uint64_t sent_size(ByteSource& source, std::uint64_t begin, std::uint64_t end) {
  LineScanner scanner(source, begin, end);
  Piece piece;
  std::uint64_t size = 0;
  while (scanner.next(piece)) size += content(piece).size() + (piece.ends_line ? 2 : 0);
  return size;
}

// Parses the records from `begin`: the start of the data, or a "From "
// line that starts a record.
class Parser {
 public:
  Parser(ByteSource& source, UidScheme scheme, std::uint64_t begin = 0)
      : source_(source), scanner_(source, begin, source.size()), at_start_of_data_(begin == 0), old_(scheme) {
    box_.end = source.size();
    box_.scheme = scheme;
  }

  // Runs to the end of the data, or until a record starts at or after
  // `stop_at`; returns where it stopped: that record, or the end.
  std::uint64_t run(std::uint64_t stop_at = std::numeric_limits<std::uint64_t>::max()) {
    Piece piece;
    while (scanner_.next(piece)) {
      if (piece.starts_line && after_empty_line_ && piece.data.starts_with(from_)) {
        finish(piece.offset);
        if (piece.offset >= stop_at) return piece.offset;
        start(piece);
      } else if (!open_) {
        if (!is_empty_line(piece)) throw NotMbox("the mailbox does not start with a \"From \" line");
      } else {
        header_piece(piece);  // the body is skipped from the header's end
      }
      // After a skip the piece's bytes may have moved in the buffer.
      if (piece.ends_line) after_empty_line_ = skipped_to_record_ || is_empty_line(piece);
      skipped_to_record_ = false;
    }
    finish(box_.end);  // a header without an empty line runs to the end
    return box_.end;
  }

  Mbox& box() { return box_; }
  // The UIDVALIDITY in the header of the first record this parser read.
  std::optional<std::uint32_t> first_validity() const { return first_validity_; }

 private:
  void start(Piece& piece) {
    current_ = Message{};
    current_.record_offset = piece.offset;
    // The first piece holds the whole line or a full buffer (read_block,
    // or all that is left if less).
    current_.from_hash = from_line_hash(piece.data);
    digest_.update(content(piece));
    while (!piece.ends_line && scanner_.next(piece)) digest_.update(content(piece));
    digest_.update("\n");
    current_.content_offset = piece.offset + piece.data.size();
    open_ = true;
    filter_ = HeaderFilter{};
    internal_marker_ = false;
    content_length_.reset();
    uncounted_size_ = 0;
    old_.start();
  }

  void finish(std::uint64_t content_end) {
    if (!open_) return;
    open_ = false;
    current_.content_length = content_end - current_.content_offset;
    digest_.update("\n" + std::to_string(current_.size - uncounted_size_));
    auto value = digest_.finish();
    std::copy_n(value.begin(), current_.digest.size(), current_.digest.begin());
    keep_old_id();
    if (at_start_of_data_ && box_.messages.empty() && !box_.internal && internal_marker_)
      box_.internal = current_;
    else
      box_.messages.push_back(current_);
  }

  // What the scheme found in the header; the UIDVALIDITY only from the
  // first record of the file (UW IMAP's pseudo-message, or the first
  // message, where Dovecot and UW keep X-IMAPbase).
  void keep_old_id() {
    old_.finish();
    if (box_.messages.empty() && !box_.internal) first_validity_ = old_.validity();
    if (at_start_of_data_ && box_.messages.empty() && !box_.validity) box_.validity = old_.validity();
    if (!old_.found()) return;
    current_.old_found = true;
    current_.old_key = old_.key();
    if (box_.scheme == UidScheme::x_uidl) {
      current_.old_key = box_.x_uidls.size() << 8 | old_.text().size();
      box_.x_uidls += old_.text();
    }
  }

  void header_piece(const Piece& piece) {
    if (is_empty_line(piece)) {
      if (content_length_ && follow_content_length(piece.offset + piece.data.size())) return;
      auto body = scanner_.skip_body(piece.offset);
      current_.size += body.size;
      finish(body.content_end);
      skipped_to_record_ = true;  // the scanner is at the next "From " line, or the end
      return;
    }
    old_.header_piece(piece.data, piece.starts_line);
    if (piece.starts_line && piece.ends_line) old_.header_line(content(piece));
    if (filter_.hidden(piece)) {
      if (piece.starts_line && iequals(header_name(content(piece)), "X-IMAP")) internal_marker_ = true;
      return;
    }
    std::uint64_t bytes = content(piece).size() + (piece.ends_line ? 2 : 0);
    current_.size += bytes;
    if (piece.starts_line && piece.ends_line) inspect_header(content(piece), bytes);
    if (!counting_excluded_) {
      digest_.update(content(piece));
      if (piece.ends_line) digest_.update("\n");
    }
    if (piece.ends_line) counting_excluded_ = false;
  }

  // Looks at one whole header line for what the parser needs to know.
  void inspect_header(std::string_view line, std::uint64_t bytes) {
    std::string_view name = header_name(line);
    if (iequals(name, "Content-Length")) {
      // Some writers add or change it; keep it out of the unique-id.
      counting_excluded_ = true;
      uncounted_size_ += bytes;
      std::string_view value = header_value(line);
      std::uint64_t length = 0;
      auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), length);
      if (error == std::errc() && end == value.data() + value.size() && !value.empty())
        content_length_ = length;
    } else if (iequals(name, "Subject") &&
               header_value(line) == "DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA") {
      internal_marker_ = true;
    }
  }

  // mboxcl2: trust Content-Length when it leads to a "From " line or the end.
  bool follow_content_length(std::uint64_t body_start) {
    auto target = check_content_length(source_, body_start, *content_length_, box_.end);
    if (!target) return false;
    current_.size += 2 + sent_size(source_, body_start, target->content_end);
    finish(target->content_end);
    scanner_.seek(target->next_record);
    skipped_to_record_ = true;
    return true;
  }

  ByteSource& source_;
  LineScanner scanner_;
  bool at_start_of_data_;  // only the first message may be UW IMAP's pseudo-message
  Mbox box_;
  Message current_;
  Digest digest_;
  HeaderFilter filter_;
  bool open_ = false;
  bool after_empty_line_ = true;  // the start of the file counts as one
  bool skipped_to_record_ = false;
  bool internal_marker_ = false;
  bool counting_excluded_ = false;
  std::optional<std::uint64_t> content_length_;
  std::uint64_t uncounted_size_ = 0;
  OldId old_;
  std::optional<std::uint32_t> first_validity_;
};

// Moves the messages of `from` to the end of `to` block by block, never
// copying all at once, with the X-UIDL values they refer to.
void append(Mbox& from, Mbox& to) {
  std::uint64_t shift = to.x_uidls.size() << 8;
  to.x_uidls += from.x_uidls;
  while (!from.messages.empty()) {
    Message& message = to.messages.emplace_back(from.messages.front());
    if (message.old_found && to.scheme == UidScheme::x_uidl) message.old_key += shift;
    from.messages.pop_front();
  }
}

std::string_view x_uidl_of(const Mbox& box, const Message& message) {
  return std::string_view(box.x_uidls).substr(message.old_key >> 8, message.old_key & 0xff);
}

// Numbers, in file order, the messages `less` says have the same id. By
// sorting a 32-bit key of each id with its index (8 bytes a message, not
// a hash map's ten times that); a run of one key is sorted again by the
// whole id, since keys of different ids may be alike. Sorting the indices
// by whole ids took 35 ms for 100,000 messages: each comparison reached
// into two messages of the deque.
template <typename Key, typename Less>
void number_in_order(Messages& messages, std::vector<std::uint32_t> order, Key key, Less less) {
  struct Keyed {
    std::uint32_t key, index;
    bool operator<(const Keyed& other) const { return key != other.key ? key < other.key : index < other.index; }
  };
  std::vector<Keyed> keyed;
  keyed.reserve(order.size());
  for (std::uint32_t i : order) keyed.push_back({static_cast<std::uint32_t>(key(i)), i});
  order = {};
  std::sort(keyed.begin(), keyed.end());
  for (auto run = keyed.begin(); run != keyed.end();) {
    auto run_end = std::find_if(run, keyed.end(), [&](const Keyed& k) { return k.key != run->key; });
    // Alone with its key (nearly every message): its number is the 0 it has.
    if (run_end - run > 1) {
      std::stable_sort(run, run_end, [&](const Keyed& a, const Keyed& b) { return less(a.index, b.index); });
      for (auto i = run + 1; i != run_end; ++i)
        if (!less((i - 1)->index, i->index)) messages[i->index].duplicate = messages[(i - 1)->index].duplicate + 1;
    }
    run = run_end;
  }
}

// Identical messages get the same id: popd's own (the digest), or the one
// the scheme gives; each kind is numbered apart. A later copy's X-UIDL
// with its "-N" may be another message's X-UIDL (or too long): that copy
// gets popd's own id instead, so that all ids stay distinct.
void number_duplicates(Mbox& box) {
  auto& messages = box.messages;
  bool validity = box.validity || !needs_validity(box.scheme);
  std::vector<std::uint32_t> own, old;
  for (std::uint32_t i = 0; i < messages.size(); ++i) {
    messages[i].old_used = box.scheme != UidScheme::popd && messages[i].old_found && validity;
    messages[i].duplicate = 0;
    (messages[i].old_used ? old : own).push_back(i);
  }
  if (box.scheme == UidScheme::x_uidl) {
    auto value = [&](std::uint32_t i) { return x_uidl_of(box, messages[i]); };
    number_in_order(
        messages, old, [&](std::uint32_t i) { return XXH3_64bits(value(i).data(), value(i).size()); },
        [&](std::uint32_t a, std::uint32_t b) { return value(a) < value(b); });
    std::vector<std::string_view> values;
    for (std::uint32_t i : old) values.push_back(value(i));
    std::sort(values.begin(), values.end());
    for (std::uint32_t i : old) {
      if (messages[i].duplicate == 0) continue;
      std::string id = std::string(value(i)) + "-" + std::to_string(messages[i].duplicate + 1);
      if (id.size() > params::max_uid_length || std::binary_search(values.begin(), values.end(), id)) {
        messages[i].old_used = false;
        messages[i].duplicate = 0;  // numbered again with popd's own ids
        own.push_back(i);
      }
    }
    std::sort(own.begin(), own.end());
  } else {
    auto old_key = [&](std::uint32_t i) { return messages[i].old_key ^ messages[i].old_key >> 32; };
    number_in_order(messages, std::move(old), old_key,
                    [&](std::uint32_t a, std::uint32_t b) { return messages[a].old_key < messages[b].old_key; });
  }
  auto digest_key = [&](std::uint32_t i) {
    std::uint32_t key;
    std::memcpy(&key, messages[i].digest.data(), sizeof key);
    return key;
  };
  auto number_own = [&] {
    for (std::uint32_t i : own) messages[i].duplicate = 0;
    number_in_order(messages, own, digest_key,
                    [&](std::uint32_t a, std::uint32_t b) { return messages[a].digest < messages[b].digest; });
  };
  number_own();
  // An X-UIDL may also be what popd's own id of another message is (the
  // header is the sender's to write): that X-UIDL's message takes popd's
  // own id too, until no id is left twice. Each round moves one at least.
  while (box.scheme == UidScheme::x_uidl) {
    std::vector<std::pair<std::string, std::uint32_t>> x_uidl_ids;
    for (std::uint32_t i = 0; i < messages.size(); ++i)
      if (messages[i].old_used) x_uidl_ids.emplace_back(box.uid(i), i);
    if (x_uidl_ids.empty()) break;
    std::sort(x_uidl_ids.begin(), x_uidl_ids.end());
    bool moved = false;
    for (std::uint32_t i : std::vector<std::uint32_t>(own)) {
      auto found = std::lower_bound(x_uidl_ids.begin(), x_uidl_ids.end(), std::pair(messages[i].uid(), 0u));
      if (found == x_uidl_ids.end() || found->first != messages[i].uid()) continue;
      if (!messages[found->second].old_used) continue;
      messages[found->second].old_used = false;
      own.push_back(found->second);
      moved = true;
    }
    if (!moved) break;
    std::sort(own.begin(), own.end());
    number_own();
  }
}

// A record start near the middle of [begin, end of data), for a second
// thread to parse from: a "From " line after an empty line. 0 if there is
// none nearby.
std::uint64_t middle_record(ByteSource& source, std::uint64_t begin) {
  std::unique_ptr<char[]> window(new char[params::read_block]);  // not zeroed: only read bytes are looked at
  std::uint64_t at = begin + (source.size() - begin) / 2;
  for (int tries = 0; tries < 8 && at < source.size(); ++tries, at += params::read_block - 8) {
    std::size_t got = read_fully(source, at, window.get(), params::read_block);
    std::string_view data(window.get(), got);
    for (std::string_view separator : {std::string_view("\n\nFrom "), std::string_view("\n\r\nFrom ")})
      if (auto found = data.find(separator); found != std::string_view::npos)
        return at + found + separator.size() - from_.size();
  }
  return 0;
}

// The records from `begin` (the start of the data, or of a record) to the
// end, parsed by two threads from `parallel_from` bytes on; duplicates are
// not numbered yet.
Mbox parse_from(ByteSource& source, UidScheme scheme, std::uint64_t begin, std::uint64_t parallel_from) {
  Parser first(source, scheme, begin);
  std::uint64_t middle = source.size() - begin >= parallel_from ? middle_record(source, begin) : 0;
  if (middle <= begin) {
    first.run();
    return std::move(first.box());
  }
  // A second thread parses from a record start near the middle. Whether
  // that is really one (not, say, inside a body whose Content-Length is
  // trusted) only the first pass can tell: it stops at the first record
  // at or after the middle, and the two results are joined only if it is
  // exactly there. Otherwise the first pass goes on alone.
  Parser second(source, scheme, middle);
  std::exception_ptr failed;
  std::jthread helper([&] {
    try {
      second.run();
    } catch (...) {
      failed = std::current_exception();
    }
  });
  std::uint64_t met = first.run(middle);
  helper.join();
  Mbox& box = first.box();
  if (begin == 0 && !box.internal && box.messages.empty()) {
    // Only empty lines before the middle: its record is the file's first,
    // which may be UW IMAP's pseudo-message. Rare enough to parse again.
    Parser whole(source, scheme);
    whole.run();
    return std::move(whole.box());
  }
  std::optional<Parser> again;
  if (met != middle || failed) again.emplace(source, scheme, met), again->run();
  Parser& rest = again ? *again : second;
  // If the first pass read only UW IMAP's pseudo-message and it had no
  // X-IMAP, the UIDVALIDITY comes from the first message: the rest's first.
  if (begin == 0 && box.messages.empty() && !box.validity) box.validity = rest.first_validity();
  append(rest.box(), box);
  return std::move(box);
}

}  // namespace

std::uint64_t from_line_hash(std::string_view line) {
  return XXH3_64bits(line.data(), std::min(line.size(), params::index_from_bytes));
}

namespace {

void append_duplicate(std::uint32_t duplicate, std::string& out) {
  if (duplicate == 0) return;
  char number[16] = "-";
  out.append(number, std::to_chars(number + 1, std::end(number), duplicate + 1).ptr);
}

}  // namespace

void Message::append_uid(std::string& out) const {
  static constexpr char hex[] = "0123456789abcdef";
  char id[2 * sizeof digest];
  for (std::size_t i = 0; i < sizeof digest; ++i) {
    id[2 * i] = hex[digest[i] >> 4];
    id[2 * i + 1] = hex[digest[i] & 15];
  }
  out.append(id, sizeof id);
  append_duplicate(duplicate, out);
}

std::string Message::uid() const {
  std::string id;
  append_uid(id);
  return id;
}

std::uint64_t Mbox::record_end(std::size_t index) const {
  return index + 1 < messages.size() ? messages[index + 1].record_offset : end;
}

void Mbox::append_uid(std::size_t index, std::string& out) const {
  const Message& message = messages[index];
  if (!has_old_id(index)) return message.append_uid(out);
  if (scheme == UidScheme::x_uidl)
    out += x_uidl_of(*this, message);
  else
    out += format_old_id(scheme, message.old_key, validity.value_or(0));
  append_duplicate(message.duplicate, out);
}

std::string Mbox::uid(std::size_t index) const {
  std::string id;
  append_uid(index, id);
  return id;
}

bool Mbox::has_old_id(std::size_t index) const { return messages[index].old_used; }

void Mbox::renumber() { number_duplicates(*this); }

Mbox parse(ByteSource& source, UidScheme scheme, std::uint64_t parallel_from) {
  Mbox box = parse_from(source, scheme, 0, parallel_from);
  number_duplicates(box);
  return box;
}

Mbox parse_after(ByteSource& source, Mbox known, std::uint64_t parallel_from) {
  if (known.end == source.size()) return known;
  if (known.messages.empty()) return parse(source, known.scheme, parallel_from);
  // The last record may go on (a line without a newline, or no empty line
  // before what was appended): it is parsed again with what follows.
  std::uint64_t resume = known.messages.back().record_offset;
  known.messages.pop_back();
  Mbox tail = parse_from(source, known.scheme, resume, parallel_from);
  append(tail, known);
  known.end = tail.end;
  number_duplicates(known);
  return known;
}

void Mbox::remove(const std::vector<bool>& deleted) {
  // In place: a second copy of a large mailbox's messages would double
  // the session's memory at its end.
  std::uint64_t removed = 0;
  std::size_t kept = 0;
  bool only_the_last = true;  // every message removed comes after every one kept
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (i < deleted.size() && deleted[i]) {
      only_the_last = only_the_last && (i + 1 == messages.size() || (i + 1 < deleted.size() && deleted[i + 1]));
      removed += record_end(i) - messages[i].record_offset;  // reads messages[i + 1], not yet moved
      continue;
    }
    Message& message = messages[kept++] = messages[i];
    message.record_offset -= removed;
    message.content_offset -= removed;
  }
  messages.resize(kept);
  end -= removed;
  // A copy's number counts the copies before it, so taking messages off
  // the end changes none (100,000 messages: 20 ms saved on a DELE of the
  // last). Not for x-uidl: whether a copy's "<X-UIDL>-N" is free depends
  // on the X-UIDLs after it too.
  if (removed > 0 && (!only_the_last || scheme == UidScheme::x_uidl)) number_duplicates(*this);
}

namespace {

void send_lines(LineScanner& scanner, std::optional<std::uint64_t> body_lines, protocol::MessageSink& sink) {
  HeaderFilter filter;
  bool in_header = true;
  std::uint64_t lines_left = body_lines.value_or(0);
  Piece piece;
  for (;;) {
    // RETR's body goes in blocks of whole lines, not line by line.
    if (!in_header && !body_lines)
      for (std::string_view block; !(block = scanner.whole_lines()).empty();) sink.lines(block);
    if (!scanner.next(piece)) return;
    if (in_header) {
      if (is_empty_line(piece)) {
        in_header = false;
        sink.end_line();
        continue;
      }
      if (filter.hidden(piece)) continue;
    } else if (body_lines && lines_left == 0) {
      return;
    }
    sink.text(content(piece));
    if (piece.ends_line) {
      sink.end_line();
      if (!in_header) --lines_left;
    }
  }
}

}  // namespace

bool send(ByteSource& source, const Message& message, std::optional<std::uint64_t> body_lines,
          protocol::MessageSink& sink, ReadBuffer& buffer) {
  // TOP needs the header and a few lines: a small first read, not the
  // whole message.
  LineScanner scanner(source, message.content_offset, message.content_offset + message.content_length,
                      body_lines ? params::top_block : params::read_block, buffer);
  try {
    send_lines(scanner, body_lines, sink);
  } catch (const SpoolChanged&) {
    return false;
  }
  return true;
}

void send(std::string_view content, const Message& message, std::optional<std::uint64_t> body_lines,
          protocol::MessageSink& sink) {
  LineScanner scanner(content, message.content_offset);
  send_lines(scanner, body_lines, sink);
}

}  // namespace popd::mailbox
