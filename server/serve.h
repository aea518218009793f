// What popd does once its options are read: list unique-ids or explain a
// login (server/explain.h), hash a password, or serve the
// connection on standard input and output in one of two process layouts
// (DESIGN): started as root, privilege separation (server/monitor.h);
// started as a user, one process that serves that user alone.
#pragma once

#include "options.h"

namespace popd::server {

int serve(const Options& options);

}  // namespace popd::server
