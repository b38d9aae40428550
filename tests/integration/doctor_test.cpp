// `ipcbus doctor` against what SIGKILLed publishers leave on every transport
// that keeps something outside the process (shm://, pipe://, mq://), and
// against a runtime directory other users could enter.
#define BOOST_TEST_MODULE doctor
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <map>

#include "ipcbus/registry.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using ipcbus::test::built_program;
using ipcbus::test::child_process;
using ipcbus::test::eventually;
using ipcbus::test::scratch_domain;
namespace fs = std::filesystem;

struct cli_result {
  int exit_code = -1;
  std::string output;
};

// `ipcbus ARGS...` with stdout and stderr.
cli_result run_cli(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"-c", "exec \"$0\" \"$@\" 2>&1", built_program("ipcbus")};
  argv.insert(argv.end(), args.begin(), args.end());
  child_process p("/bin/sh", argv);
  const int status = p.wait(30s);
  return {status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1, p.output()};
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The line of `text` that contains `part`, or "".
std::string line_with(const std::string& text, const std::string& part) {
  const auto at = text.find(part);
  if (at == std::string::npos) return {};
  const auto begin = text.rfind('\n', at);
  const auto end = text.find('\n', at);
  return text.substr(begin == std::string::npos ? 0 : begin + 1, end == std::string::npos ? std::string::npos : end - begin - 1);
}

}  // namespace

BOOST_AUTO_TEST_CASE(doctor_reports_what_sigkilled_publishers_left_and_fix_reclaims_it) {
  scratch_domain d;
  const auto cfg = d.write_config(
      "topics:\n"
      "  - { match: \"doc/shm\", transport: shm }\n"
      "  - { match: \"doc/pipe\", transport: pipe }\n"
      "  - { match: \"doc/mq\", transport: mq }\n").string();
  std::map<std::string, std::unique_ptr<child_process>> peers;
  for (const std::string t : {"shm", "pipe", "mq"})
    peers[t] = std::make_unique<child_process>(built_program("ipcbus_test_peer"),
                                               std::vector<std::string>{"serve", cfg, "doc/" + t});
  std::map<std::string, ipcbus::Participant> entries;  // by transport
  BOOST_REQUIRE(eventually([&] {
    entries.clear();
    for (const auto& r : ipcbus::list_participants(d.domain_dir()))
      if (!r.info.endpoint().empty()) entries[r.info.transport()] = r.info;
    return entries.size() == 3;
  }));
  const std::string ring = entries["shm"].endpoint().substr(6);                                       // "/ipcbus-..."
  const std::string queue = "/" + fs::path(entries["mq"].endpoint().substr(5)).filename().string();  // its marker's name
  for (auto& [t, p] : peers) {
    p->signal(SIGKILL);
    p->wait(10s);
  }
  BOOST_REQUIRE(fs::exists("/dev/shm" + ring));

  const auto report = run_cli({"--config", cfg, "doctor"});
  BOOST_TEST(report.exit_code == 1, report.output);
  for (const auto& [t, e] : entries) {
    const auto line = line_with(report.output, ipcbus::id_to_hex(e.id()));
    BOOST_TEST(line.starts_with("problem: publisher "), report.output);
    BOOST_TEST(contains(line, "its process is gone"), line);
    BOOST_TEST(contains(line, "Fix: ipcbus doctor --fix"), line);
  }
  BOOST_TEST(line_with(report.output, ring).starts_with("problem: " + ring + ": shared memory of a dead shm:// publisher"),
             report.output);
  BOOST_TEST(line_with(report.output, queue + ":").starts_with("problem: " + queue + ": an mq:// message queue"),
             report.output);
  BOOST_TEST(contains(report.output, "problem(s)"), report.output);
  // Reporting removes nothing.
  BOOST_TEST(fs::exists("/dev/shm" + ring));
  BOOST_TEST(fs::exists(d.domain_dir() / (ipcbus::id_to_hex(entries["pipe"].id()) + ".pub")));

  const auto json = run_cli({"--config", cfg, "doctor", "--json"});
  BOOST_TEST(json.exit_code == 1);
  const auto ring_json = line_with(json.output, ring);
  BOOST_TEST(ring_json.starts_with("{\"severity\":\"problem\",\"check\":\"shm_segment\""), json.output);
  BOOST_TEST(contains(ring_json, "\"fix\":\"ipcbus doctor --fix"), ring_json);

  const auto fixed = run_cli({"--config", cfg, "doctor", "--fix"});
  BOOST_TEST(fixed.exit_code == 0, fixed.output);
  BOOST_TEST(line_with(fixed.output, ring).starts_with("fixed: " + ring), fixed.output);
  BOOST_TEST(line_with(fixed.output, queue + ":").starts_with("fixed: " + queue), fixed.output);
  BOOST_TEST(!fs::exists("/dev/shm" + ring));
  for (const auto& [t, e] : entries)
    for (const auto& f : fs::recursive_directory_iterator(d.domain_dir()))
      BOOST_TEST(!f.path().filename().string().starts_with(ipcbus::id_to_hex(e.id())), f.path() << " survived --fix");
  BOOST_TEST(!fs::exists(d.domain_dir() / "mq" / queue.substr(1)));

  const auto again = run_cli({"--config", cfg, "doctor"});
  BOOST_TEST(again.exit_code == 0, again.output);
  BOOST_TEST(contains(again.output, "ok: registry, /dev/shm, FIFOs, message queues: nothing left behind"), again.output);
}

BOOST_AUTO_TEST_CASE(doctor_reports_a_runtime_dir_other_users_can_enter_and_says_how_to_fix_it) {
  scratch_domain d;
  const auto cfg = d.write_config().string();
  BOOST_TEST(run_cli({"--config", cfg, "doctor"}).exit_code == 0);
  BOOST_REQUIRE(::chmod(d.runtime_dir().c_str(), 0755) == 0);
  const auto report = run_cli({"--config", cfg, "doctor", "--fix"});  // --fix leaves permissions to the operator
  ::chmod(d.runtime_dir().c_str(), 0700);
  BOOST_TEST(report.exit_code == 1, report.output);
  const auto line = line_with(report.output, d.runtime_dir().string() + ": has mode");
  BOOST_TEST(line == "problem: " + d.runtime_dir().string() +
                         ": has mode 0755: other users can look into or change the bus's files. Fix: chmod 0700 " +
                         d.runtime_dir().string(),
             report.output);
}

// Entries that are not valid registry records, of every role (a bridge's too):
// reported with their path, and reclaimed by --fix since nobody holds them.
BOOST_AUTO_TEST_CASE(doctor_reports_unreadable_entries_of_every_role_and_fix_reclaims_them) {
  scratch_domain d;
  const auto cfg = d.write_config().string();
  fs::create_directories(d.domain_dir());
  fs::permissions(d.domain_dir(), fs::perms::owner_all, fs::perm_options::replace);
  std::vector<fs::path> garbage;
  for (const std::string suffix : {".pub", ".sub", ".bridge"}) {
    garbage.push_back(d.domain_dir() / ("00000000deadbeef" + suffix));
    std::ofstream(garbage.back()) << "not a registry record";
  }
  const auto report = run_cli({"--config", cfg, "doctor"});
  BOOST_TEST(report.exit_code == 1, report.output);
  for (const auto& g : garbage)
    BOOST_TEST(contains(line_with(report.output, g.string() + ": is not a valid registry entry"), "problem: "),
               g << " in:\n" << report.output);
  const auto fixed = run_cli({"--config", cfg, "doctor", "--fix"});
  for (const auto& g : garbage) BOOST_TEST(!fs::exists(g), g << " after --fix:\n" << fixed.output);
  BOOST_TEST(run_cli({"--config", cfg, "doctor"}).exit_code == 0);
}
