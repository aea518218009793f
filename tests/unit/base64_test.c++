#include <doctest/doctest.h>

#include "protocol/base64.h"

using popd::protocol::decode_base64;

TEST_CASE("base64: canonical input decodes") {
  CHECK(decode_base64("") == std::string());
  CHECK(decode_base64("Zg==") == std::string("f"));
  CHECK(decode_base64("Zm8=") == std::string("fo"));
  CHECK(decode_base64("Zm9v") == std::string("foo"));
  CHECK(decode_base64("AGFsaWNlAHNlY3JldA==") == std::string("\0alice\0secret", 13));
}

TEST_CASE("base64: everything else is refused") {
  for (const char* bad : {"Z", "Zg", "Zg=", "Zg=a", "Z===", "====", "Zh==", "Zm9=", "Zm 9v", "Zm9v\n", "Zg==Zg==",
                          "=Zg=", "Zm-v", "Zm_v"})
    CHECK_MESSAGE(!decode_base64(bad), bad);
}
