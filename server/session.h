// One POP3 session on standard input and output, from greeting to close.
#pragma once

#include "options.h"

namespace popd::server {

int serve(const Options& options);

}  // namespace popd::server
