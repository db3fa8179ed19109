// libpq, loaded when first needed. Fanout is not linked against libpq: its dependencies (Kerberos,
// LDAP, GnuTLS, ...) cost every `fanout` process ~2.7 ms of dynamic loading at start, and an
// agent starts one `fanout run` per package step, nearly always with a SQLite catalog.
// libpq.cc defines the libpq functions Fanout calls, each forwarding to the real one in
// libpq.so.5, so callers include <libpq-fe.h> and call libpq as usual, after LoadLibpq().
#pragma once

#include "fanout/status.h"

namespace fanout::catalog {

// Loads libpq.so.5 once (thread-safe); later calls return the first result. Call it before the
// first libpq function: a connection's start. Fails, saying how to install it, when it is missing.
Status LoadLibpq();

}  // namespace fanout::catalog
