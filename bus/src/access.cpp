#include "ipcbus/access.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace ipcbus {

namespace {

std::error_code last_error() { return {errno, std::system_category()}; }

// Whether user `uid` belongs to group `gid`, as primary or supplementary group.
bool user_in_group(uid_t uid, gid_t gid) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || !found) return false;
  if (pw.pw_gid == gid) return true;
  int n = 64;
  std::vector<gid_t> groups(static_cast<std::size_t>(n));
  if (::getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n) < 0) {
    groups.resize(static_cast<std::size_t>(n));  // n now says how many there are
    if (::getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &n) < 0) return false;
  }
  groups.resize(static_cast<std::size_t>(n));
  return std::find(groups.begin(), groups.end(), gid) != groups.end();
}

}  // namespace

mode_t object_mode(const security_settings& security) { return security.group_gid ? 0660 : 0600; }

mode_t directory_mode(const security_settings& security) { return security.group_gid ? 02770 : 0700; }

mode_t read_only_mode_in(const std::filesystem::path& dir) {
  struct stat st {};
  return ::stat(dir.c_str(), &st) == 0 && (st.st_mode & S_ISGID) && (st.st_mode & S_IXGRP) ? 0640 : 0600;
}

std::error_code share_object(int fd, const security_settings& security) {
  if (security.group_gid && ::fchown(fd, static_cast<uid_t>(-1), *security.group_gid) != 0) return last_error();
  if (::fchmod(fd, object_mode(security)) != 0) return last_error();
  return {};
}

std::error_code share_path(const std::filesystem::path& path, const security_settings& security, bool directory) {
  if (security.group_gid && ::chown(path.c_str(), static_cast<uid_t>(-1), *security.group_gid) != 0)
    return last_error();
  if (::chmod(path.c_str(), directory ? directory_mode(security) : object_mode(security)) != 0) return last_error();
  return {};
}

bool make_directory(const std::filesystem::path& dir, const security_settings& security) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return true;
    errno = ENOTDIR;
    return false;
  }
  const std::filesystem::path tmp =
      dir.parent_path() / ("." + dir.filename().string() + "." + std::to_string(::getpid()) + ".tmp");
  ::rmdir(tmp.c_str());  // left by an earlier process of this pid, if any
  if (::mkdir(tmp.c_str(), 0700) != 0) return false;
  if (auto ec = share_path(tmp, security, true)) {
    ::rmdir(tmp.c_str());
    errno = ec.value();
    return false;
  }
  // Onto an existing empty directory this replaces it with an equal one; onto
  // one in use it fails with ENOTEMPTY, and that one stays.
  if (::rename(tmp.c_str(), dir.c_str()) != 0) {
    const int err = errno;
    ::rmdir(tmp.c_str());
    errno = err;
    return err == EEXIST || err == ENOTEMPTY;
  }
  return true;
}

bool ids_allowed(uid_t uid, gid_t gid, const security_settings& security) {
  if (uid == ::geteuid() || uid == 0) return true;
  if (security.group_gid && gid == *security.group_gid) return true;
  const auto& uids = security.allow_uids;
  const auto& gids = security.allow_gids;
  return std::find(uids.begin(), uids.end(), uid) != uids.end() ||
         std::find(gids.begin(), gids.end(), gid) != gids.end();
}

bool owner_allowed(const struct stat& st, const security_settings& security) {
  return ids_allowed(st.st_uid, st.st_gid, security);
}

bool peer_allowed(int socket_fd, const security_settings& security, std::string& who) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(socket_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) {
    who = "unknown peer";
    return false;
  }
  who = "uid " + std::to_string(cred.uid) + " gid " + std::to_string(cred.gid) + " pid " + std::to_string(cred.pid);
  if (ids_allowed(cred.uid, cred.gid, security)) return true;
  return security.group_gid && user_in_group(cred.uid, *security.group_gid);
}

}  // namespace ipcbus
