#pragma once
// Data-parallel gradient buckets: every parameter's gradient gets a fixed place in one contiguous FP32 buffer,
// grouped into buckets of about `bucket_mb`; a bucket's reduction over the data-parallel group starts (async)
// as soon as backward has produced all its gradients, so communication overlaps the rest of backward, and
// finish() waits for all of them before the optimizer step (PyTorch DDP / Megatron's grad buffer).
//
// Layout (shared with the ZeRO-1 optimizer, parallel/nn/zero_optimizer.h): parameters in reverse order of
// registration (= order of use in forward, so the last layers' gradients, produced first, fill the first
// bucket), each starting at a multiple of kFlatAlign elements; the total is padded to kFlatAlign * group
// size. Rank r of the group owns elements [r * total / size, (r+1) * total / size): a contiguous shard whose
// boundaries, and every parameter's start, sit on 256-element boundaries, so a shard's piece of a tensor
// has the same fp8 (128) and int8 (256) groups as the whole tensor.
//
// Two modes: kAllReduce (plain DP: every rank ends with the averaged full gradient, copied back into each
// parameter's .grad) and kReduceScatter (ZeRO-1: each bucket is reduce-scattered with uneven counts, the
// overlap of the bucket with each rank's shard, so rank r ends with the averaged gradient of its shard only).
// Every rank must register the same parameters and call mark_ready in an order that completes buckets in the
// same order -- buckets are launched strictly in index order regardless, so a differing ready order only
// delays, never mismatches, the collectives.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "parallel/communicator.h"

namespace nibble::parallel::nn {

inline constexpr int64_t kFlatAlign = 256;  // lcm of the state codecs' group sizes (fp8 128, int8 256)

// Where each parameter lives in the flat buffer and which part each rank owns.
struct FlatLayout {
  std::vector<int64_t> offset;  // per parameter (registration index), in elements
  std::vector<int64_t> numel;
  std::vector<size_t> order;    // registration indices in buffer order (reverse of registration)
  int64_t total = 0;            // padded: a multiple of kFlatAlign * ranks
  int ranks = 1;
  int64_t shard_size() const { return total / ranks; }
  int64_t shard_begin(int r) const { return shard_size() * r; }
  // The part of parameter i inside rank r's shard, as [begin, end) offsets into the parameter (empty: begin == end).
  std::pair<int64_t, int64_t> piece(size_t i, int r) const;
};
FlatLayout make_flat_layout(const std::vector<int64_t>& numels, int ranks);

enum class BucketMode : uint8_t { kAllReduce, kReduceScatter };

struct GradBucketOptions {
  double bucket_mb = 25.0;  // bucket size in MB of FP32 gradient (at least one parameter per bucket)
  BucketMode mode = BucketMode::kAllReduce;
};

class GradBuckets {
 public:
  // `params`: the model's parameters in order of registration. `comm` (the dp or dp_cp group) must outlive
  // this object.
  GradBuckets(std::vector<std::pair<std::string, torch::Tensor>> params, Communicator& comm,
              GradBucketOptions options = {});
  ~GradBuckets();
  GradBuckets(const GradBuckets&) = delete;
  GradBuckets& operator=(const GradBuckets&) = delete;

  // Parameter i's gradient is final for this step (the post-accumulate-grad hook): copied into the buffer
  // (an undefined gradient counts as zeros); a completed bucket starts its reduction. Marking a parameter
  // twice in one step is an InvalidArgument (a hook that fired for two backward passes without no_sync).
  void mark_ready(size_t i);
  // Marks every parameter not yet marked, in buffer order, then waits for every bucket's reduction. In
  // kAllReduce mode the averaged gradients are then copied into each parameter's .grad (created if
  // undefined). Resets for the next step.
  void finish();
  // Forgets this step's marks and pending state without communicating (only valid before any bucket launched,
  // e.g. after a skipped step); throws if a reduction is in flight.
  void reset();
  // A skipped step whose buckets may already be in flight (launched from backward's hooks): waits for the launched
  // reductions -- every rank of the group launched the same ones, so they must complete everywhere -- then reset().
  // The parameters' .grad are left as they were (nothing is copied back).
  void discard();
  // Polls the launched reductions once without blocking. MPI moves a nonblocking collective only while some MPI
  // call runs on this process (no progress thread), so a caller that wants the reduction to advance during
  // backward calls this between pieces of work (e.g. from each post-accumulate-grad hook).
  void progress();
  // Buckets whose reduction has been launched this step (launches go in bucket order: buckets 0 .. launched()-1).
  size_t launched() const { return next_launch_; }

  const FlatLayout& layout() const { return layout_; }
  size_t num_buckets() const { return bucket_begin_.size(); }
  // The bucket of parameter i (buckets hold consecutive parameters in buffer order).
  size_t bucket_of(size_t i) const { return bucket_of_[i]; }
  // The full FP32 gradient buffer (kAllReduce: reduced after finish(); kReduceScatter: this step's local grads).
  const torch::Tensor& flat_grad() const { return flat_grad_; }
  // kReduceScatter: this rank's averaged shard after finish() (shard_size elements).
  const torch::Tensor& shard_grad() const { return shard_grad_; }
  const std::vector<std::pair<std::string, torch::Tensor>>& params() const { return params_; }
  Communicator& comm() const { return comm_; }

 private:
  void launch_ready_buckets();

  std::vector<std::pair<std::string, torch::Tensor>> params_;
  Communicator& comm_;
  GradBucketOptions options_;
  FlatLayout layout_;
  torch::Tensor flat_grad_, shard_grad_;
  std::vector<int64_t> bucket_begin_, bucket_end_;  // element ranges of the buffer
  std::vector<size_t> bucket_of_;
  std::vector<int> remaining_;  // per bucket: parameters not yet marked this step
  std::vector<bool> marked_;
  std::vector<Work> work_;
  std::vector<std::vector<size_t>> counts_;  // kReduceScatter: per bucket, elements each rank receives
  size_t next_launch_ = 0;
};

}  // namespace nibble::parallel::nn
