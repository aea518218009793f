// Strict base64 (RFC 4648) decoding for SASL responses.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace popd::protocol {

// nullopt for anything that is not canonical base64: wrong length, foreign
// characters, misplaced padding or non-zero pad bits.
std::optional<std::string> decode_base64(std::string_view text);

}  // namespace popd::protocol
