// Who may use a domain's objects, and the modes they are created with.
//
// By default a domain is private to its user: directories 0700, objects 0600,
// and a peer is accepted only with our uid or root's. `security.group` shares
// the domain with the members of one group: directories 02770 and objects 0660,
// owned by that group, and members are accepted as peers. `allow_uids` and
// `allow_gids` accept further peers (unix-socket credentials, owners of FIFOs,
// queues and segments) without changing any mode.
//
// Thread-safety: plain functions; safe from any thread.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <filesystem>
#include <string>
#include <system_error>

#include "ipcbus/config.hpp"

namespace ipcbus {

// 0660 with a sharing group, else 0600.
mode_t object_mode(const security_settings& security);
// 02770 with a sharing group (new files inherit the group), else 0700.
mode_t directory_mode(const security_settings& security);

// Mode for a file other participants only read (registry entries, stats
// blocks) created in `dir`: 0640 when the directory is shared with its group
// (the file inherits that group), else 0600.
mode_t read_only_mode_in(const std::filesystem::path& dir);

// Gives an object we just created (a shm segment, a queue, a file) the
// domain's mode and, when shared, its group. The umask does not apply.
std::error_code share_object(int fd, const security_settings& security);
// The same for an object we can only name (a FIFO, a socket file, a directory).
std::error_code share_path(const std::filesystem::path& path, const security_settings& security,
                           bool directory = false);

// Creates `dir` (its parent must exist) with exactly directory_mode() and, when
// shared, the group, or leaves an existing one alone. The directory appears
// under its name only once it has both: it is made under a temporary name and
// renamed, so another member never finds it with the umask's mode. Returns
// true if it exists afterwards; errno tells why not.
bool make_directory(const std::filesystem::path& dir, const security_settings& security);

// Whether a process or object with these ids is one we talk to: our own
// uid, root, the allowed uids and gids, and the sharing group.
bool ids_allowed(uid_t uid, gid_t gid, const security_settings& security);
// For objects another process created (FIFO, queue, segment): their owner.
bool owner_allowed(const struct stat& st, const security_settings& security);
// For a connected unix socket: SO_PEERCRED, with the peer's supplementary
// groups checked against the sharing group. Fills `who` ("uid U gid G pid P").
bool peer_allowed(int socket_fd, const security_settings& security, std::string& who);

}  // namespace ipcbus
