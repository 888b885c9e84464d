// tests/unit/test_evaluators.cpp — the retrieval ranks behind [eval] retrieval, against a plain
// loop over every candidate.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "tessera/core/evaluators.hpp"

TEST(Retrieval, PartnerRanksCountTheCandidatesThatScoreHigher) {
  at::manual_seed(3);
  for (int64_t n : {1, 2, 7, 40}) {
    // Rounded scores, so ties happen: a tie with the partner does not push it down.
    const at::Tensor sim = at::round(at::randn({n, n}, at::kDouble) * 2) / 2;
    const at::Tensor rank = tessera::partner_ranks(sim);
    ASSERT_EQ(rank.sizes(), (at::IntArrayRef{n}));
    ASSERT_EQ(rank.scalar_type(), at::kLong);
    for (int64_t i = 0; i < n; ++i) {
      int64_t higher = 0;
      for (int64_t j = 0; j < n; ++j) higher += sim[i][j].item<double>() > sim[i][i].item<double>();
      EXPECT_EQ(rank[i].item<int64_t>(), higher) << "n " << n << " row " << i;
    }
  }
  // Identical embeddings retrieve their partner first; a shifted pairing never does.
  const at::Tensor e = at::randn({10, 4});
  const at::Tensor unit = e / e.norm(2, {1}, true);
  EXPECT_EQ(tessera::partner_ranks(at::matmul(unit, unit.t())).max().item<int64_t>(), 0);
  const at::Tensor shifted = at::roll(unit, 1, 0);
  EXPECT_GT(tessera::partner_ranks(at::matmul(unit, shifted.t())).min().item<int64_t>(), 0);
  EXPECT_THROW(tessera::partner_ranks(at::zeros({2, 3})), c10::Error);
}
