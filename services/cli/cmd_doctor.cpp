// `ipcbus doctor`: inspects a domain and the host limits the bus depends on,
// and says, one line per finding, what is wrong, why it matters and how to fix it.
//
// Findings are `ok`, `warning` (works, but a limit or a neighbour may bite) or
// `problem` (something is broken or left behind). What dead participants left
// (registry entries, shared memory, FIFOs, message queues) is found with the
// same code as `ipcbus gc`, and `--fix` reclaims it the same way; the other
// problems (permissions, limits) need a decision of the operator, so doctor only
// says what to run. Exit status: 0 when no problem remains, 1 otherwise.
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <set>

#include "commands.hpp"
#include "ipcbus/access.hpp"
#include "ipcbus/registry.hpp"
#include "json_text.hpp"
#include "reclaim.hpp"
#ifdef IPCBUS_HAVE_MQUEUE
#include "ipcbus/transports/mqueue.hpp"
#endif

namespace ipcbus::cli {
namespace {

namespace fs = std::filesystem;

struct doctor_options {
  bool fix = false;
  bool json = false;
};

enum class severity { ok, fixed, warning, problem };

std::string_view name_of(severity s) {
  switch (s) {
    case severity::ok: return "ok";
    case severity::fixed: return "fixed";
    case severity::warning: return "warning";
    case severity::problem: return "problem";
  }
  return "?";
}

struct finding {
  severity level;
  std::string check;    // a stable keyword: runtime_dir, stale_participant, shm_segment, ...
  std::string subject;  // what it is about: a path, a name, a limit
  std::string explanation;
  std::string fix;      // empty when there is nothing to do
};

using findings = std::vector<finding>;

constexpr std::uint64_t mib = 1ull << 20;
constexpr std::uint64_t shm_free_wanted = 64 * mib;  // the default max_message
constexpr rlim_t nofile_wanted = 1024;
constexpr long mq_queues_wanted = 16;

std::string octal_mode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// The runtime directory and the domain directory: ours (or, in a domain shared
// with a group, that group's), no access for others, usable.
void check_directory(const fs::path& dir, const std::string& what, const security_settings& security,
                     findings& out) {
  const mode_t want = directory_mode(security);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    out.push_back({severity::ok, what, dir.string(),
                   "does not exist yet; the first Bus creates it with mode " + octal_mode(want), ""});
    return;
  }
  if (!S_ISDIR(st.st_mode)) {
    out.push_back({severity::problem, what, dir.string(), "is not a directory, so no Bus can start here",
                   "remove it, or set runtime_dir / IPCBUS_RUNTIME_DIR to another place"});
    return;
  }
  const bool ours = st.st_uid == ::geteuid();
  const bool group_shared = security.group_gid && st.st_gid == *security.group_gid;
  if (!ours && !group_shared) {
    out.push_back({severity::problem, what, dir.string(),
                   "is owned by uid " + std::to_string(st.st_uid) + ", not by this user (uid " +
                       std::to_string(::geteuid()) + "): another user controls this bus's files",
                   "chown " + std::to_string(::geteuid()) + " " + dir.string() + ", or use a runtime dir of your own"});
  }
  // Private: nobody else; shared with a group: the group, but nobody outside it.
  const mode_t foreign = security.group_gid ? 007 : 077;
  if ((st.st_mode & foreign) != 0) {
    out.push_back({severity::problem, what, dir.string(),
                   "has mode " + octal_mode(st.st_mode) + ": other users can look into or change the bus's files",
                   "chmod " + octal_mode(want) + " " + dir.string()});
  } else if (security.group_gid && ours && !group_shared) {
    out.push_back({severity::problem, what, dir.string(),
                   "does not belong to group '" + security.group + "' (security.group): its members cannot use it",
                   "chgrp " + security.group + " " + dir.string() + " && chmod " + octal_mode(want) + " " +
                       dir.string()});
  } else if ((ours || group_shared) && ::access(dir.c_str(), W_OK | X_OK) != 0) {
    out.push_back({severity::problem, what, dir.string(), "is not writable: no participant can register",
                   (ours ? "chmod u+rwx " : "chmod g+rwx ") + dir.string()});
  } else if (ours || group_shared) {
    out.push_back({severity::ok, what, dir.string(),
                   std::string(ours ? "is this user's" : "belongs to group '" + security.group + "'") + ", mode " +
                       octal_mode(st.st_mode),
                   ""});
  }
}

// Entries list_participants could not read: neither a live nor a stale participant.
void check_unreadable_entries(const fs::path& dir, findings& out) {
  std::set<fs::path> known;
  for (const auto& r : list_participants(dir, /*include_stale=*/true)) known.insert(r.entry_path);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!is_entry_name(name) || known.count(e.path()) || !fs::exists(e.path(), ec)) continue;
    const bool stale = entry_is_stale(e.path());
    out.push_back({stale ? severity::problem : severity::warning, "unreadable_entry", e.path().string(),
                   "is not a valid registry entry; tools and subscribers skip it",
                   stale ? "ipcbus doctor --fix (nobody holds it: it is reclaimed)"
                         : "its owner holds it: restart the process that owns it"});
  }
}

std::string finding_subject(const Participant& p) {
  return role_name(p.role()) + " " + id_to_hex(p.id()) + " on '" + p.topic() + "' (pid " + std::to_string(p.pid()) + ")";
}

// What dead processes left, as gc would find it.
void check_leftovers(const leftovers& found, findings& out) {
  const std::string fix = "ipcbus doctor --fix (or ipcbus gc)";
  for (const auto& p : found.stale)
    out.push_back({severity::problem, "stale_participant", finding_subject(p),
                   "its process is gone but its registry entry and files are still there", fix});
  for (const auto& name : found.segments)
    out.push_back({severity::problem, "shm_segment", name, "shared memory of a dead shm:// publisher of this domain", fix});
  for (const auto& name : found.other_segments)
    out.push_back({severity::warning, "shm_segment_elsewhere", name,
                   "shared memory of a dead shm:// publisher of another domain (or a deleted one)", fix});
  for (const auto& name : found.fifos)
    out.push_back({severity::problem, "fifo", name, "a pipe:// FIFO nobody reads any more", fix});
  for (const auto& name : found.queues)
    out.push_back({severity::problem, "mq_queue", name, "an mq:// message queue of a dead process of this domain", fix});
  for (const auto& name : found.other_queues)
    out.push_back({severity::warning, "mq_queue_elsewhere", name,
                   "an mq:// message queue of a dead process of another domain", fix});
  if (found.empty())
    out.push_back({severity::ok, "leftovers", "registry, /dev/shm, FIFOs, message queues",
                   "nothing left behind by dead processes", ""});
}

// --fix: reclaims as gc does, one `fixed` line per thing removed.
void fix_leftovers(const fs::path& dir, findings& out) {
  const auto stale = stale_participants(dir);
  const reclaimed done = reclaim_leftovers(dir);
  for (const auto& p : stale)
    out.push_back({severity::fixed, "stale_participant", finding_subject(p), "reclaimed its entry and files", ""});
  for (const auto& name : done.segments)
    out.push_back({severity::fixed, "shm_segment", name, "unlinked the shared memory of a dead publisher", ""});
  for (const auto& name : done.fifos) out.push_back({severity::fixed, "fifo", name, "removed a FIFO nobody read", ""});
  for (const auto& name : done.queues)
    out.push_back({severity::fixed, "mq_queue", name, "unlinked the message queue of a dead process", ""});
}

void check_dev_shm(findings& out) {
  struct statvfs vfs {};
  if (::statvfs("/dev/shm", &vfs) != 0 || ::access("/dev/shm", W_OK | X_OK) != 0) {
    out.push_back({severity::problem, "dev_shm", "/dev/shm", "is missing or not writable: shm:// publishers cannot start",
                   "mount a tmpfs on /dev/shm (mode 1777), or use other transports"});
    return;
  }
  const std::uint64_t available = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  const std::string amount = std::to_string(available / mib) + " MiB free of " +
                             std::to_string(static_cast<std::uint64_t>(vfs.f_blocks) * vfs.f_frsize / mib) + " MiB";
  if (available < shm_free_wanted)
    out.push_back({severity::warning, "dev_shm", "/dev/shm",
                   amount + ": new shm:// rings and large messages may fail with no space left",
                   "free space (ipcbus doctor --fix removes dead publishers' segments) or enlarge it: "
                   "mount -o remount,size=1G /dev/shm"});
  else
    out.push_back({severity::ok, "dev_shm", "/dev/shm", amount, ""});
}

void check_nofile(findings& out) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  const auto text = [](rlim_t v) { return v == RLIM_INFINITY ? std::string("unlimited") : std::to_string(v); };
  const std::string subject = "RLIMIT_NOFILE " + text(rl.rlim_cur) + " (hard " + text(rl.rlim_max) + ")";
  if (rl.rlim_cur < nofile_wanted)
    out.push_back({severity::warning, "nofile", subject,
                   "every link and endpoint costs descriptors: busy processes started from this shell may run out",
                   "ulimit -n " + text(rl.rlim_max) + " (or LimitNOFILE= in the service's unit)"});
  else
    out.push_back({severity::ok, "nofile", subject, "for processes started from this shell", ""});
}

#ifdef IPCBUS_HAVE_MQUEUE
void check_mq_limits(findings& out) {
  const auto limits = transport::mqueue::read_mq_limits();
  std::error_code ec;
  if (!fs::exists("/proc/sys/fs/mqueue/msg_max", ec)) {
    out.push_back({severity::warning, "mq_limits", "/proc/sys/fs/mqueue",
                   "is missing: this kernel may lack POSIX message queues, so mq:// cannot work", "use other transports"});
    return;
  }
  const std::string subject = "msg_max " + std::to_string(limits.msg_max) + ", msgsize_max " +
                              std::to_string(limits.msgsize_max) + ", RLIMIT_MSGQUEUE " + std::to_string(limits.rlimit);
  // A full queue costs about msg_max * msgsize_max bytes of the per-user budget.
  const long per_queue = std::max(1L, limits.msg_max * limits.msgsize_max);
  const long fit = static_cast<long>(limits.rlimit / static_cast<std::uint64_t>(per_queue));
  if (fit < mq_queues_wanted)
    out.push_back({severity::warning, "mq_limits", subject,
                   "only " + std::to_string(fit) +
                       " full-size queues fit in this user's budget (one per mq:// publisher and one per link)",
                   "ulimit -q " + std::to_string(limits.rlimit * 8) + " (or LimitMSGQUEUE= in the service's unit)"});
  else
    out.push_back({severity::ok, "mq_limits", subject,
                   std::to_string(fit) + " full-size queues fit in this user's budget" +
                       (limits.mounted ? "" : "; /dev/mqueue is not mounted, so gc finds queues by their markers only"),
                   ""});
}
#endif

void print(const findings& all, bool json) {
  for (const auto& f : all) {
    if (json) {
      json_object o;
      o.add("severity", name_of(f.level)).add("check", f.check).add("subject", f.subject);
      o.add("explanation", f.explanation).add("fix", f.fix);
      std::cout << o.str() << '\n';
    } else {
      std::string line = std::string(name_of(f.level)) + ": " + f.subject + ": " + f.explanation;
      if (!f.fix.empty()) line += ". Fix: " + f.fix;
      std::cout << line << '\n';
    }
  }
}

int run_doctor(const global_options& g, const doctor_options& o) {
  const config cfg = resolve_config(g);
  const fs::path runtime = cfg.resolved_runtime_dir();
  const fs::path dir = domain_dir_of(cfg);
  findings all;
  check_directory(runtime, "runtime_dir", cfg.security, all);
  check_directory(dir, "domain_dir", cfg.security, all);
  // Also without a domain directory: other domains' leftovers in /dev/shm and /dev/mqueue.
  if (o.fix) fix_leftovers(dir, all);
  std::error_code ec;
  if (fs::is_directory(dir, ec)) check_unreadable_entries(dir, all);
  check_leftovers(find_leftovers(dir), all);
  check_dev_shm(all);
#ifdef IPCBUS_HAVE_MQUEUE
  check_mq_limits(all);
#endif
  check_nofile(all);
  print(all, o.json);
  const auto count = [&](severity s) {
    return std::count_if(all.begin(), all.end(), [s](const finding& f) { return f.level == s; });
  };
  const auto problems = count(severity::problem);
  if (!o.json)
    std::cout << "domain '" << cfg.domain << "' in " << runtime.string() << ": " << problems << " problem(s), "
              << count(severity::warning) << " warning(s)" << (o.fix ? ", " + std::to_string(count(severity::fixed)) + " fixed" : "")
              << (problems > 0 && !o.fix ? "; 'ipcbus doctor --fix' reclaims what dead processes left" : "") << '\n';
  return problems > 0 ? exit_runtime : exit_ok;
}

}  // namespace

command add_doctor_command(CLI::App& root, const global_options& g) {
  auto opts = std::make_shared<doctor_options>();
  CLI::App* app = root.add_subcommand("doctor", "Check the domain and the host limits; report what is wrong and how to fix it");
  app->add_flag("--fix", opts->fix, "Reclaim what dead processes left (as 'ipcbus gc' does), then check again");
  app->add_flag("--json", opts->json, "Print one JSON object per finding and line");
  app->footer("Checks the runtime and domain directories (owner, mode 0700; with security.group 02770 and\n"
              "that group), registry entries of dead processes (unlocked flock) and unreadable ones,\n"
              "shared memory of dead shm:// publishers, pipe:// FIFOs nobody reads, mq:// queues of dead processes, /dev/shm free space, the\n"
              "POSIX message queue limits and RLIMIT_NOFILE. Each finding is one line: ok, fixed,\n"
              "warning or problem, what it is about, why it matters and the fix. shm:// wake-up\n"
              "sockets are abstract: the kernel removes them with their process, so none can be left.\n"
              "Exit status: 0 when no problem remains (warnings allowed), 1 otherwise.");
  return {app, [&g, opts] { return run_doctor(g, *opts); }};
}

}  // namespace ipcbus::cli
