// unix:// and tcp:// transports: Asio stream sockets carrying length-delimited frames.
//
// unix://<path>  a listening Unix-domain socket in the domain directory; peers are
//                checked with SO_PEERCRED against our uid, root and the configured
//                security.allow_uids / allow_gids.
// tcp://<ip>:<port>  a loopback TCP listener with TCP_NODELAY (what the bridge speaks).
#pragma once

#include "ipcbus/transport.hpp"

namespace ipcbus::transport::socket {

void register_unix(transport_registry& registry);
void register_tcp(transport_registry& registry);

}  // namespace ipcbus::transport::socket
