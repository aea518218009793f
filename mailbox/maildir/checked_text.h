// The text files popd writes whole for a Maildir (the journal of QUIT's
// deletions, the sizes file): a first line that names the kind, the body,
// and a last line "end HEX" with an XXH3-64 of all before it, so that a
// torn or stale write is found.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace popd::mailbox::maildir {

// `magic` (a line), then `body`, then the end line.
std::string checked_text(std::string_view magic, std::string_view body);
// Appends the end line to `text`, which starts with the magic line.
void seal(std::string& text);

// The body of a text checked_text() made with `magic`; nullopt if it is
// another kind, or damaged.
std::optional<std::string_view> checked_body(std::string_view text, std::string_view magic);

}  // namespace popd::mailbox::maildir
