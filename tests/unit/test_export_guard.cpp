// tests/unit/test_export_guard.cpp — `tessera export` refuses to write inside the checkpoint it
// reads (the file itself, a new file next to it, via a symlink or a hard link).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>

#include "support.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/output_guard.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;

TEST(ExportGuard, OutputInsideTheCheckpointIsRefusedAndTheCheckpointKept) {
  const fs::path dir = tessera::test::temp_dir("export_guard", "cli");
  const fs::path ckpt = dir / "step_4";
  fs::create_directories(ckpt);
  const std::string original = "not really a checkpoint, but it must survive";
  tessera::test::write_file(ckpt / "rank_0.safetensors", original);
  const std::string log = (dir / "log").string();
  const std::string cmd = TESSERA_CLI + " export " + ckpt.string() + " " + (ckpt / "rank_0.safetensors").string() +
                          " > " + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string text = tessera::test::read_file(log);
  EXPECT_NE(text.find("refusing to write " + (ckpt / "rank_0.safetensors").string() +
                      ": it would overwrite the checkpoint " + ckpt.string()),
            std::string::npos)
      << text;
  EXPECT_EQ(tessera::test::read_file(ckpt / "rank_0.safetensors"), original);
}

TEST(ExportGuard, EveryWayIntoTheDirectoryIsRefused) {
  const fs::path dir = tessera::test::temp_dir("export_guard", "paths");
  const fs::path ckpt = dir / "step_4";
  fs::create_directories(ckpt);
  tessera::test::write_file(ckpt / "rank_0.safetensors", "x");
  fs::create_directory_symlink(ckpt, dir / "latest");
  fs::create_hard_link(ckpt / "rank_0.safetensors", dir / "alias.safetensors");
  auto refused = [&](const std::string& in, const std::string& out) {
    try {
      tessera::refuse_output_inside(in, out, "the checkpoint");
      return false;
    } catch (const tessera::Error&) {
      return true;
    }
  };
  EXPECT_TRUE(refused(ckpt.string(), (ckpt / "rank_0.safetensors").string()));
  EXPECT_TRUE(refused(ckpt.string() + "/", (ckpt / "new/model.safetensors").string()));  // not yet existing
  EXPECT_TRUE(refused(ckpt.string(), ckpt.string()));
  EXPECT_TRUE(refused((dir / "latest").string(), (ckpt / "out.safetensors").string()));  // via a symlink
  EXPECT_TRUE(refused(ckpt.string(), (dir / "latest/out.safetensors").string()));
  EXPECT_TRUE(refused(ckpt.string(), (dir / "x/../step_4/out.safetensors").string()));
  EXPECT_TRUE(refused(ckpt.string(), (dir / "alias.safetensors").string()));  // a hard link to one of its files
  EXPECT_FALSE(refused(ckpt.string(), (dir / "exported.safetensors").string()));
  EXPECT_FALSE(refused(ckpt.string(), (dir / "step_40/out.safetensors").string()));  // a sibling with the same prefix
}
