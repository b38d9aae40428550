// SO_PEERCRED checks for Unix-domain sockets.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "ipcbus/config.hpp"

namespace ipcbus::transport::socket {

// True when the peer on `fd` may talk to us: same uid, root, or listed in
// `security`. Fills `who` with "uid U gid G pid P" for messages.
inline bool peer_allowed(int fd, const security_settings& security, std::string& who) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    who = "unknown peer";
    return false;
  }
  who = "uid " + std::to_string(cred.uid) + " gid " + std::to_string(cred.gid) + " pid " +
        std::to_string(cred.pid);
  if (cred.uid == ::geteuid() || cred.uid == 0) return true;
  const auto& uids = security.allow_uids;
  const auto& gids = security.allow_gids;
  return std::find(uids.begin(), uids.end(), cred.uid) != uids.end() ||
         std::find(gids.begin(), gids.end(), cred.gid) != gids.end();
}

}  // namespace ipcbus::transport::socket
