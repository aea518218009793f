// Scanning an mbox's bytes: lines as pieces, the end of a body, and line
// ends counted with SIMD. The parser (mbox.c++) and the sending of a
// message use these; nothing else should need them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "mailbox/mbox/source.h"
#include "params.h"

namespace popd::mailbox {

inline constexpr std::string_view from_ = "From ";

// Reads [offset, offset + size) as far as the source reaches; anything
// shorter means the file shrank since its size was taken.
std::size_t read_fully(ByteSource& source, std::uint64_t offset, char* buffer, std::size_t size);

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

}  // namespace popd::mailbox
