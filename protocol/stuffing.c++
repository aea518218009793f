#include "protocol/stuffing.h"

#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define POPD_STUFFING_AVX2 1
#endif

namespace popd::protocol {
namespace {

// The end of the line [line, newline) on the wire: CRLF, whether the spool
// held LF or CRLF (a CR before the LF is already copied then: only the LF
// is added).
inline char* end_line(const char* line, const char* newline, char* o) {
  if (newline == line || newline[-1] != '\r') *o++ = '\r';
  *o++ = '\n';
  return o;
}

}  // namespace

namespace detail {

std::size_t stuff_lines_sse2(std::string_view block, char* out) {
  const char* p = block.data();
  const char* const end = p + block.size();
  char* o = out;
  while (p < end) {
    const char* line = p;
    if (*p == '.') *o++ = '.';
    // Copy up to the line feed, 32 bytes at a time where there are 32
    // (two 16-byte vectors: most lines are longer than 16 bytes, so one
    // test per 32 bytes beats one per 16 on mail): each block is
    // stored whole (the slack allows it), and the output moves on only by
    // what precedes the line feed.
#if defined(__SSE2__)
    const __m128i lf = _mm_set1_epi8('\n');
    for (; end - p >= 32; p += 32, o += 32) {
      __m128i low = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      __m128i high = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o), low);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 16), high);
      unsigned found = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(low, lf))) |
                       static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(high, lf))) << 16;
      if (found) {
        unsigned before = static_cast<unsigned>(__builtin_ctz(found));
        p += before, o += before;
        break;
      }
    }
#endif
    if (p < end && *p != '\n') {
      const void* newline = std::memchr(p, '\n', end - p);
      std::size_t before = newline ? static_cast<const char*>(newline) - p : end - p;
      std::memcpy(o, p, before);
      p += before, o += before;
    }
    o = end_line(line, p, o);
    if (p < end) ++p;  // else a last line without one (never from whole lines)
  }
  return o - out;
}

#if POPD_STUFFING_AVX2
// The line feeds of 64 bytes at a time, as a bit mask; each line found in
// it is copied with four unconditional 32-byte moves when it is no longer
// than 128 bytes (as almost every mail line is: RFC 5322 asks for 78), so
// that a line costs no search and no branch on its length. The loads stay
// inside the block: the vector loop ends 192 bytes before its end (64 of
// the mask and 128 of a copy), and the rest goes to the SSE2 version. The
// stores stay inside the output's room: the output is at most twice what
// was read, and at least 192 bytes are still to be read. Faster than the
// SSE2 version on real mail, whose lines are mostly longer than 32 bytes.
__attribute__((target("avx2"))) std::size_t stuff_lines_avx2(std::string_view block, char* out) {
  const char* const begin = block.data();
  const char* const end = begin + block.size();
  const __m256i lf = _mm256_set1_epi8('\n');
  const char* line = begin;
  char* o = out;
  for (const char* b = begin; end - b >= 192; b += 64) {
    __m256i low = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
    __m256i high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 32));
    std::uint64_t newlines =
        static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(low, lf))) |
        static_cast<std::uint64_t>(static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(high, lf))))
            << 32;
    for (; newlines != 0; newlines &= newlines - 1) {
      const char* newline = b + __builtin_ctzll(newlines);
      std::size_t length = newline - line;
      if (*line == '.') *o++ = '.';
      if (length <= 128) {
        for (int i = 0; i < 128; i += 32)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i),
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(line + i)));
      } else {
        std::memcpy(o, line, length);
      }
      o = end_line(line, newline, o + length);
      line = newline + 1;
    }
  }
  return (o - out) + stuff_lines_sse2({line, static_cast<std::size_t>(end - line)}, o);
}

bool have_avx2() {
  static const bool have = __builtin_cpu_supports("avx2");
  return have;
}
#else
bool have_avx2() { return false; }
std::size_t stuff_lines_avx2(std::string_view block, char* out) { return stuff_lines_sse2(block, out); }
#endif

}  // namespace detail

std::size_t stuff_lines(std::string_view block, char* out) {
  return detail::have_avx2() ? detail::stuff_lines_avx2(block, out) : detail::stuff_lines_sse2(block, out);
}

}  // namespace popd::protocol
