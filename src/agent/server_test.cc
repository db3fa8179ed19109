// Tests of AgentServer's life cycle that the end-to-end tests reach only by chance of timing.
#include "agent/server.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <string>

#include "agent/store.h"
#include "common/test_util.h"
#include "common/util.h"

namespace fanout::agent {
namespace {

// A SIGTERM just after the start reached Shutdown before the listener ran; httplib's stop()
// then did nothing and the agent served on for ever (an e2e test saw it under load).
TEST(AgentServerTest, AShutdownBeforeServingEndsServe) {
  testing::TempDir dir;
  AgentConfig config;
  config.port = 0;
  config.data_dir = dir.path();
  config.slots = 1;
  AgentServer server(config, "/bin/false");
  ASSERT_TRUE(server.Start().ok());
  server.Shutdown();
  auto served = std::async(std::launch::async, [&] { return server.Serve(); });
  if (served.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    // Returning would wait for the listening thread (the future's destructor) for ever.
    std::fprintf(stderr, "FAILED: Serve() still listening 10 s after Shutdown()\n");
    std::_Exit(1);
  }
  EXPECT_TRUE(served.get().ok());
}

AgentConfig ConfigIn(const std::string& data_dir) {
  AgentConfig config;
  config.port = 0;
  config.data_dir = data_dir;
  config.slots = 1;
  return config;
}

// What Start says for a data_dir `prepare` has made; "" when it starts.
std::string StartError(const std::string& data_dir) {
  AgentServer server(ConfigIn(data_dir), "/bin/false");
  Status started = server.Start();
  if (started.ok()) server.Shutdown();
  return started.ok() ? "" : started.message();
}

// Whoever may write where the agent's packages are chooses what it runs (QA: a package swapped
// into a 0777 data_dir ran as root).
TEST(AgentServerTest, ADataDirOthersMayWriteInIsRefused) {
  testing::TempDir dir;
  namespace fs = std::filesystem;
  const std::string data = dir.path() + "/data";
  EXPECT_EQ(StartError(data), "");
  EXPECT_EQ(fs::status(data + "/packages").permissions() & fs::perms::others_write,
            fs::perms::none);
  fs::permissions(data, fs::perms::all);
  EXPECT_TRUE(StartError(data).starts_with("data_dir " + data + " is unsafe: " + data +
                                           " is writable by every user (mode 0777), who could "
                                           "replace the packages this agent runs: chmod go-w"))
      << StartError(data);
  fs::permissions(data, fs::perms::group_write | fs::perms::others_write, fs::perm_options::remove);
  fs::permissions(data + "/packages", fs::perms::group_write, fs::perm_options::add);
  EXPECT_TRUE(StartError(data).find(data + "/packages is writable by its group") !=
              std::string::npos)
      << StartError(data);
  fs::permissions(data + "/packages", fs::perms::group_write, fs::perm_options::remove);
  // A folder above: only a sticky one (/tmp) may be writable by others.
  fs::permissions(dir.path(), fs::perms::all);
  EXPECT_TRUE(StartError(data).find(dir.path() + " is writable by every user") !=
              std::string::npos)
      << StartError(data);
  fs::permissions(dir.path(), fs::perms::all | fs::perms::sticky_bit);
  EXPECT_EQ(StartError(data), "");
  // Folders it makes have their modes whatever the umask, those above the data_dir too (review:
  // it refused the 0775 folders it had made itself under a umask of 002).
  const mode_t umask_before = umask(002);
  const std::string deep = dir.path() + "/a/b/data";
  EXPECT_EQ(StartError(deep), "");
  umask(umask_before);
  EXPECT_EQ(fs::status(dir.path() + "/a/b").permissions(), fs::perms(0755));
  EXPECT_EQ(fs::status(deep).permissions(), fs::perms(0711));
  EXPECT_EQ(fs::status(deep + "/packages").permissions(), fs::perms(0755));
  // Through a symbolic link: the folder it leads to, once and for all (review: a link in a
  // folder others may write in, swapped while the agent ran, moved where packages went).
  fs::create_directory_symlink(deep, dir.path() + "/link");
  {
    AgentServer server(ConfigIn(dir.path() + "/link"), "/bin/false");
    ASSERT_TRUE(server.Start().ok());
    EXPECT_EQ(server.config().data_dir, fs::canonical(deep).string());
    server.Shutdown();
  }
  if (geteuid() == 0) {  // only root can give a folder away
    ASSERT_EQ(chown(data.c_str(), 65534, 65534), 0);
    EXPECT_TRUE(StartError(data).find(" belongs to uid 65534") != std::string::npos)
        << StartError(data);
  }
}

// Whoever may write the token file sets a token of their own and runs jobs as the agent's user
// (QA: nobody ran `id` as root through a 0666 token file); so may whoever may write its folder.
TEST(AgentServerTest, ATokenFileOthersMayWriteIsRefused) {
  testing::TempDir dir;
  namespace fs = std::filesystem;
  const std::string folder = dir.path() + "/secrets", token = folder + "/token";
  fs::create_directory(folder);
  fs::permissions(folder, fs::perms(0700));
  ASSERT_TRUE(WriteFileAtomically(token, std::string(32, 'a') + "\n", 0600).ok());
  auto start_error = [&](const std::string& token_file = "") {
    AgentConfig config = ConfigIn(dir.path() + "/data");
    config.token_file = token_file.empty() ? token : token_file;
    config.token = std::string(32, 'a');
    AgentServer server(config, "/bin/false");
    Status started = server.Start();
    if (started.ok()) server.Shutdown();
    return started.ok() ? "" : started.message();
  };
  EXPECT_EQ(start_error(), "");
  fs::permissions(token, fs::perms(0666));
  EXPECT_EQ(start_error(), "token_file " + token + " is unsafe: " + token +
                               " is writable by every user (mode 0666), who could write a token "
                               "of their own and run jobs here: chmod go-w " + token);
  fs::permissions(token, fs::perms(0600));
  fs::permissions(folder, fs::perms(0770));
  EXPECT_TRUE(start_error().find(folder + " is writable by its group (mode 0770)") !=
              std::string::npos)
      << start_error();
  fs::permissions(folder, fs::perms(0700));
  // Through a link in a folder others may write: they could point it at a file they can read.
  const std::string open_folder = dir.path() + "/open", link = open_folder + "/token";
  fs::create_directory(open_folder);
  fs::permissions(open_folder, fs::perms(0777));
  fs::create_symlink(token, link);
  EXPECT_EQ(start_error(link), "token_file " + link + " is unsafe: " + open_folder +
                                   " is writable by every user (mode 0777), who could write a "
                                   "token of their own and run jobs here: chmod go-w " +
                                   open_folder);
  // Two links deep, and through a folder link: every link on the way counts (QA).
  fs::create_symlink(link, folder + "/again");
  EXPECT_TRUE(start_error(folder + "/again").find(open_folder + " is writable by every user") !=
              std::string::npos)
      << start_error(folder + "/again");
  fs::create_directory_symlink(folder, open_folder + "/secrets");
  EXPECT_TRUE(start_error(open_folder + "/secrets/token").find(open_folder + " is writable") !=
              std::string::npos);
  // A sticky folder (as /tmp) may hold a link of the agent's own user.
  fs::permissions(open_folder, fs::perms(01777));
  EXPECT_EQ(start_error(link), "");
}

// A package file edited by hand while the agent was stopped is written back as deployed, so
// that what runs is what GET /v1/packages/NAME shows.
TEST(AgentServerTest, APackageFileThatIsNotAsDeployedIsWrittenBack) {
  testing::TempDir dir;
  const std::string deployed = "package: p\ntasks:\n  a: {type: process, run: [/bin/true]}\n";
  {
    AgentServer server(ConfigIn(dir.path()), "/bin/false");
    ASSERT_TRUE(server.Start().ok());
    server.Shutdown();
  }
  {
    auto store = AgentStore::Open(StorePath(dir.path()));
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_TRUE((*store)->PutPackage("p", Sha256Hex(deployed), deployed).ok());
  }
  ASSERT_TRUE(WriteFileAtomically(PackagePath(dir.path(), "p"), "package: p\nevil: 1\n").ok());
  const mode_t umask_before = umask(0);  // its files are 0644 whatever the umask (review)
  AgentServer server(ConfigIn(dir.path()), "/bin/false");
  const Status started = server.Start();
  umask(umask_before);
  ASSERT_TRUE(started.ok()) << started.ToString();
  server.Shutdown();
  auto on_disk = ReadFile(PackagePath(dir.path(), "p"));
  ASSERT_TRUE(on_disk.ok());
  EXPECT_EQ(*on_disk, deployed);
  EXPECT_EQ(std::filesystem::status(PackagePath(dir.path(), "p")).permissions(),
            std::filesystem::perms(0644));
}

}  // namespace
}  // namespace fanout::agent
