// popd --hash-password [--scheme S]: a password from the terminal (asked
// twice, not echoed) or from standard input (one line), printed as the
// password field of a passwd-file entry, as Dovecot's doveadm pw does.
#pragma once

#include <string>

namespace popd::server {

int hash_password_command(const std::string& scheme);

}  // namespace popd::server
