// The communicators: every collective of the threads communicator on 1 to 4 ranks, against
// values computed here from the rank numbers; splits; a failing rank; ParallelLayout's groups.
#include <gtest/gtest.h>

#include <atomic>

#include "core/communicator.h"
#include "core/error.h"

namespace vgen {
namespace {

// A [2, 3] tensor whose values name the rank and a tag: 100 * rank + 10 * tag + index.
Tensor tagged(int rank, int tag) {
  std::vector<float> v(6);
  for (int i = 0; i < 6; ++i) v[i] = 100.0f * rank + 10.0f * tag + i;
  return Tensor::from_vector(v, {2, 3});
}

class ThreadsTest : public ::testing::TestWithParam<int> {};

TEST_P(ThreadsTest, Collectives) {
  const int n = GetParam();
  ThreadGroup::run(n, [&](int rank, const std::shared_ptr<Communicator>& comm) {
    EXPECT_EQ(comm->rank(), rank);
    EXPECT_EQ(comm->size(), n);
    // all_gather: [n, 2, 3], rank r's tensor at r (a strided input is fine).
    const Tensor g = comm->all_gather(tagged(rank, 0).transpose(0, 1));
    ASSERT_EQ(g.shape(), (Shape{n, 3, 2}));
    const std::vector<float> gv = g.to_vector();
    for (int r = 0; r < n; ++r)
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 2; ++j) EXPECT_EQ(gv[(r * 3 + i) * 2 + j], 100.0f * r + j * 3 + i);
    // all_to_all: chunk j of rank r is tagged(r, j); rank r receives tagged(j, r) at j.
    std::vector<float> send;
    for (int j = 0; j < n; ++j) {
      const std::vector<float> t = tagged(rank, j).to_vector();
      send.insert(send.end(), t.begin(), t.end());
    }
    const Tensor a = comm->all_to_all(Tensor::from_vector(send, {n, 2, 3}));
    const std::vector<float> av = a.to_vector();
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < 6; ++i) EXPECT_EQ(av[j * 6 + i], 100.0f * j + 10.0f * rank + i);
    // A ring step: send to the next rank, receive from the previous.
    const Tensor s = comm->send_recv(tagged(rank, 1), (rank + 1) % n, (rank + n - 1) % n);
    EXPECT_EQ(s.to_vector(), tagged((rank + n - 1) % n, 1).to_vector());
    // broadcast from the last rank.
    Tensor b = tagged(rank, 2);
    comm->broadcast(b, n - 1);
    EXPECT_EQ(b.to_vector(), tagged(n - 1, 2).to_vector());
    comm->barrier();
    // split into even and odd ranks, ranked by descending rank.
    const std::shared_ptr<Communicator> sub = comm->split(rank % 2, -rank);
    const int members = (n - rank % 2 + 1) / 2;
    EXPECT_EQ(sub->size(), members);
    const Tensor sg = sub->all_gather(tagged(rank, 3));
    const std::vector<float> sv = sg.to_vector();
    for (int k = 0; k < members; ++k) {
      const int r = (members - 1 - k) * 2 + rank % 2;  // descending
      EXPECT_EQ(sv[k * 6], 100.0f * r + 30.0f);
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, ThreadsTest, ::testing::Values(1, 2, 3, 4));

TEST(ThreadsCommunicator, MismatchedShapesNameTheRanks) {
  try {
    ThreadGroup::run(2, [](int rank, const std::shared_ptr<Communicator>& comm) {
      comm->all_gather(Tensor::zeros({rank + 1}));
    });
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_gather: rank"), std::string::npos) << e.what();
  }
}

TEST(ThreadsCommunicator, AFailingRankFailsTheOthersInsteadOfHanging) {
  std::atomic<int> failed_waiting{0};
  try {
    ThreadGroup::run(3, [&](int rank, const std::shared_ptr<Communicator>& comm) {
      if (rank == 1) throw Error("rank one broke");
      try {
        comm->barrier();
      } catch (const Error&) {
        ++failed_waiting;
        throw;
      }
    });
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "rank one broke");
  }
  EXPECT_EQ(failed_waiting.load(), 2);
}

TEST(ThreadsCommunicator, AFailureReachesRanksWaitingInASplitGroup) {
  try {
    ThreadGroup::run(4, [&](int rank, const std::shared_ptr<Communicator>& comm) {
      const std::shared_ptr<Communicator> pair = comm->split(rank / 2, rank);
      if (rank == 0) throw Error("rank zero broke");
      pair->barrier();  // rank 1 waits for rank 0 here; ranks 2 and 3 pass
      comm->barrier();
    });
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "rank zero broke");
  }
}

TEST(SingleCommunicator, CopiesAndRefusesOtherRanks) {
  const std::shared_ptr<Communicator> c = make_single_communicator();
  const Tensor x = tagged(0, 0);
  EXPECT_EQ(c->all_gather(x).shape(), (Shape{1, 2, 3}));
  EXPECT_EQ(c->all_to_all(x.unsqueeze(0)).to_vector(), x.to_vector());
  EXPECT_EQ(c->send_recv(x, 0, 0).to_vector(), x.to_vector());
  EXPECT_THROW(c->send_recv(x, 1, 0), Error);
  EXPECT_THROW(c->broadcast(x, 1), Error);
}

TEST(ParallelLayout, GroupsOfEveryCombination) {
  for (int cfg = 1; cfg <= 2; ++cfg)
    for (int u = 1; u <= 3; ++u)
      for (int ring = 1; ring <= 2; ++ring) {
        const ParallelSizes sizes{cfg, u, ring};
        ThreadGroup::run(sizes.world_size(), [&](int rank, const std::shared_ptr<Communicator>& comm) {
          const ParallelLayout layout(comm, sizes);
          EXPECT_EQ(layout.ulysses_rank(), rank % u);
          EXPECT_EQ(layout.ring_rank(), (rank / u) % ring);
          EXPECT_EQ(layout.cfg_rank(), rank / (u * ring));
          EXPECT_EQ(layout.sequence_rank(), layout.ring_rank() * u + layout.ulysses_rank());
          EXPECT_EQ(layout.sequence().size(), u * ring);
          EXPECT_EQ(layout.cfg().size(), cfg);
          // The members of each group are the ranks the formula says: gather world ranks.
          const std::vector<float> peers =
              layout.ulysses().all_gather(Tensor::full({1}, static_cast<float>(rank))).to_vector();
          for (int k = 0; k < u; ++k) EXPECT_EQ(peers[k], rank - rank % u + k);
        });
      }
}

TEST(ParallelLayout, RefusesSizesThatDoNotMultiplyToTheWorld) {
  try {
    ParallelLayout(make_single_communicator(), ParallelSizes{2, 1, 1});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cfg_size 2 x ulysses_size 1 x ring_size 1 = 2 ranks, but the world has 1"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(ParallelLayout(make_single_communicator(), ParallelSizes{1, 0, 1}), Error);
  EXPECT_THROW(ParallelLayout(make_single_communicator(), ParallelSizes{3, 1, 1}), Error);
}

}  // namespace
}  // namespace vgen
