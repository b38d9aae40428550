// The demo (`./run demo`) and the README example, run as a user would run them.
//
// ipcbus-demo starts the logger, filter and three sensors as processes over shared
// memory, unix and tcp sockets, named pipes and POSIX message queues
// (services/examples/demo.yaml), stops them in order
// and prints a per-topic table; these tests check its verdict and the table it printed.
#define BOOST_TEST_MODULE demo
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>

#include <map>
#include <sstream>
#include <string>

#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;

struct table_row {
  std::string transport;
  unsigned long long delivered = 0;
};

// Rows of the demo's table: "  <topic> <transport> <qos> <delivered> <lost> <p50> <p99>".
std::map<std::string, table_row> parse_table(const std::string& output) {
  std::map<std::string, table_row> rows;
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string topic, transport, qos;
    table_row row;
    if (fields >> topic >> transport >> qos >> row.delivered && topic.find('/') != std::string::npos) {
      row.transport = transport;
      rows[topic] = row;
    }
  }
  return rows;
}

}  // namespace

BOOST_AUTO_TEST_CASE(demo_runs_every_service_and_delivers_on_every_topic) {
  ipcbus::test::child_process demo(ipcbus::test::built_program("ipcbus-demo"),
                                   {"--config", IPCBUS_SOURCE_DIR "/services/examples/demo.yaml", "--seconds", "3"});
  const int status = demo.wait(90s);
  const std::string output = demo.output();
  BOOST_TEST_MESSAGE("ipcbus-demo output:\n" << output);
  BOOST_REQUIRE_MESSAGE(status != -1, "ipcbus-demo still running after 90 s");
  BOOST_TEST(WIFEXITED(status));
  BOOST_TEST(WEXITSTATUS(status) == 0);
  BOOST_TEST(output.find("OK: ") != std::string::npos);

  // Every topic family, over the transport demo.yaml gives it.
  const std::map<std::string, std::string> expected = {{"sensors/imu/reading", "shm"},
                                                       {"sensors/gps/reading", "tcp"},
                                                       {"sensors/baro/reading", "pipe"},
                                                       {"alerts/high", "unix"},
                                                       {"metrics/filtered", "mq"}};
  const auto rows = parse_table(output);
  for (const auto& [topic, transport] : expected) {
    BOOST_TEST_CONTEXT("topic " << topic) {
      const auto it = rows.find(topic);
      BOOST_REQUIRE(it != rows.end());
      BOOST_TEST(it->second.delivered > 0u);
      BOOST_TEST(it->second.transport == transport);
    }
  }
}

BOOST_AUTO_TEST_CASE(hello_example_receives_its_three_messages_without_a_config) {
  ipcbus::test::scratch_domain scratch("hello");
  ipcbus::test::child_process hello(ipcbus::test::built_program("ipcbus-example-hello"), {},
                                    {"IPCBUS_RUNTIME_DIR=" + scratch.runtime_dir().string()});
  const int status = hello.wait(30s);
  const std::string output = hello.output();
  BOOST_TEST_MESSAGE("ipcbus-example-hello output:\n" << output);
  BOOST_REQUIRE(status != -1);
  BOOST_TEST(WIFEXITED(status));
  BOOST_TEST(WEXITSTATUS(status) == 0);
  BOOST_TEST(output == "hello/world #1: 0.5\nhello/world #2: 1\nhello/world #3: 1.5\n");
}
