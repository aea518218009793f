// How names from outside appear in log lines.
#include <doctest/doctest.h>

#include "server/log.h"

using popd::server::escaped;
using popd::server::printable;

TEST_CASE("escaped: a name is one word of printable ASCII") {
  CHECK(escaped("alice") == "alice");
  CHECK(escaped("al\xc2\xa0ice") == "al\\xc2\\xa0ice");          // U+00A0, which \S does not match
  CHECK(escaped("a b\tc\nd") == "a\\x20b\\x09c\\x0ad");           // no space, no forged line
  CHECK(escaped("back\\slash") == "back\\x5cslash");              // an escape cannot be forged
  CHECK(escaped(std::string("nul\0x", 5)) == "nul\\x00x");
  CHECK(escaped("\x7f\xff") == "\\x7f\\xff");
}

TEST_CASE("printable: free text keeps its spaces") {
  CHECK(printable("journal /home/a b/x is damaged") == "journal /home/a b/x is damaged");
  CHECK(printable("line\nbreak") == "line\\x0abreak");
}
