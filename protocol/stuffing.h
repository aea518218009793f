// The wire form of message lines (RFC 1939, section 3): each line ends in
// CRLF, and a line that starts with "." gets one more in front.
#pragma once

#include <cstddef>
#include <string_view>

namespace popd::protocol {

// Room stuff_lines needs for `input` bytes: each line at most doubles
// ("\n" becomes "\r\n", ".\n" "..\r\n"), plus slack for vector stores.
constexpr std::size_t stuffed_capacity(std::size_t input) { return 2 * input + 16; }

// Converts whole lines (each ending in LF or CRLF, as `block` must) into
// `out`, which has stuffed_capacity(block.size()) bytes; returns how many
// it wrote.
std::size_t stuff_lines(std::string_view block, char* out);

// The two ways stuff_lines works, chosen once by what the processor has;
// here so that the tests run both.
namespace detail {
bool have_avx2();
std::size_t stuff_lines_sse2(std::string_view block, char* out);
std::size_t stuff_lines_avx2(std::string_view block, char* out);
}  // namespace detail

}  // namespace popd::protocol
