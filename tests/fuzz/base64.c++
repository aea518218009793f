// libFuzzer target: the SASL base64 decoder. Whatever it accepts must be
// canonical: encoding the result again gives the input back.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "protocol/base64.h"

namespace {
std::string encode(std::string_view raw) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < raw.size(); i += 3) {
    std::uint32_t group = 0;
    std::size_t n = raw.size() - i < 3 ? raw.size() - i : 3;
    for (std::size_t j = 0; j < 3; ++j) group = group << 8 | (j < n ? static_cast<unsigned char>(raw[i + j]) : 0);
    for (std::size_t j = 0; j < 4; ++j) out += j <= n ? alphabet[group >> (18 - 6 * j) & 63] : '=';
  }
  return out;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto decoded = popd::protocol::decode_base64(input);
  if (decoded && encode(*decoded) != input) std::abort();
  return 0;
}
