#include "parallel/nn/grad_buckets.h"

#include <algorithm>

#include "precision/error.h"

namespace nibble::parallel::nn {
namespace {

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

}  // namespace

std::pair<int64_t, int64_t> FlatLayout::piece(size_t i, int r) const {
  const int64_t lo = std::max(offset[i], shard_begin(r));
  const int64_t hi = std::min(offset[i] + numel[i], shard_begin(r) + shard_size());
  if (hi <= lo) return {0, 0};
  return {lo - offset[i], hi - offset[i]};
}

FlatLayout make_flat_layout(const std::vector<int64_t>& numels, int ranks) {
  if (ranks < 1) throw InvalidArgument("make_flat_layout: ranks must be >= 1, got " + std::to_string(ranks));
  FlatLayout L;
  L.ranks = ranks;
  L.numel = numels;
  L.offset.assign(numels.size(), 0);
  int64_t at = 0;
  for (size_t k = numels.size(); k-- > 0;) {
    if (numels[k] < 0) throw InvalidArgument("make_flat_layout: parameter " + std::to_string(k) + " has negative numel");
    L.order.push_back(k);
    L.offset[k] = at;
    at += round_up(numels[k], kFlatAlign);
  }
  L.total = round_up(std::max<int64_t>(at, 1), kFlatAlign * ranks);
  return L;
}

GradBuckets::GradBuckets(std::vector<std::pair<std::string, torch::Tensor>> params, Communicator& comm,
                         GradBucketOptions options)
    : params_(std::move(params)), comm_(comm), options_(options) {
  if (!(options_.bucket_mb > 0.0))
    throw InvalidArgument("GradBuckets: bucket_mb must be > 0, got " + std::to_string(options_.bucket_mb));
  std::vector<int64_t> numels;
  for (const auto& [name, p] : params_) {
    // A CUDA parameter works too: its gradient is copied into the host buffer, reduced over MPI, and (all-reduce
    // mode) copied back -- host-staged, compiled only until a GPU run proves it (host_staging.h).
    if (!p.defined())
      throw InvalidArgument("GradBuckets: parameter '" + name + "' is not a defined tensor");
    numels.push_back(p.numel());
  }
  layout_ = make_flat_layout(numels, comm_.size());
  flat_grad_ = torch::zeros({layout_.total}, torch::kFloat32);
  shard_grad_ = torch::zeros({options_.mode == BucketMode::kReduceScatter ? layout_.shard_size() : 0}, torch::kFloat32);

  // Buckets: consecutive parameters in buffer order until the bucket holds at least bucket_mb; the last bucket
  // runs to the end of the padded buffer.
  const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>(options_.bucket_mb * 1e6 / 4.0));
  bucket_of_.assign(params_.size(), 0);
  int64_t begin = 0;
  for (size_t k = 0; k < layout_.order.size(); ++k) {
    const size_t i = layout_.order[k];
    bucket_of_[i] = bucket_begin_.size();
    const int64_t end = layout_.offset[i] + round_up(layout_.numel[i], kFlatAlign);
    if (end - begin >= cap || k + 1 == layout_.order.size()) {
      bucket_begin_.push_back(begin);
      bucket_end_.push_back(k + 1 == layout_.order.size() ? layout_.total : end);
      begin = end;
    }
  }
  if (bucket_begin_.empty()) {  // no parameters: one bucket of padding keeps every rank's calls the same
    bucket_begin_.push_back(0);
    bucket_end_.push_back(layout_.total);
  }
  remaining_.assign(bucket_begin_.size(), 0);
  for (size_t i = 0; i < params_.size(); ++i) remaining_[bucket_of_[i]]++;
  marked_.assign(params_.size(), false);
  work_.resize(bucket_begin_.size());
  for (size_t b = 0; b < bucket_begin_.size(); ++b) {
    std::vector<size_t> counts(comm_.size());
    for (int r = 0; r < comm_.size(); ++r) {
      const int64_t lo = std::max(bucket_begin_[b], layout_.shard_begin(r));
      const int64_t hi = std::min(bucket_end_[b], layout_.shard_begin(r) + layout_.shard_size());
      counts[r] = static_cast<size_t>(std::max<int64_t>(0, hi - lo));
    }
    counts_.push_back(std::move(counts));
  }
}

GradBuckets::~GradBuckets() = default;  // Work's destructor waits for reductions still in flight

void GradBuckets::mark_ready(size_t i) {
  if (i >= params_.size())
    throw InvalidArgument("GradBuckets::mark_ready: parameter index " + std::to_string(i) + " is out of range [0, " +
                          std::to_string(params_.size()) + ")");
  if (marked_[i])
    throw InvalidArgument("GradBuckets::mark_ready: the gradient of '" + params_[i].first +
                          "' was marked twice in one step (two backward passes without no_sync, or a parameter "
                          "used twice with a hook per use)");
  marked_[i] = true;
  torch::NoGradGuard no_grad;
  torch::Tensor dst = flat_grad_.narrow(0, layout_.offset[i], layout_.numel[i]);
  const torch::Tensor& g = params_[i].second.grad();
  if (g.defined()) {
    if (g.numel() != layout_.numel[i])
      throw InvalidArgument("GradBuckets: gradient of '" + params_[i].first + "' has " + std::to_string(g.numel()) +
                            " elements, the parameter " + std::to_string(layout_.numel[i]));
    dst.copy_(g.reshape({-1}));
  } else {
    dst.zero_();
  }
  if (--remaining_[bucket_of_[i]] == 0) launch_ready_buckets();
}

void GradBuckets::launch_ready_buckets() {
  // Strictly in bucket order: every rank issues the same collectives in the same order.
  while (next_launch_ < bucket_begin_.size() && remaining_[next_launch_] == 0) {
    const size_t b = next_launch_++;
    float* base = flat_grad_.data_ptr<float>();
    const size_t n = static_cast<size_t>(bucket_end_[b] - bucket_begin_[b]);
    std::span<float> bucket(base + bucket_begin_[b], n);
    if (options_.mode == BucketMode::kAllReduce) {
      work_[b] = comm_.all_reduce_async(bucket, ReduceOp::kAvg);
    } else {
      const int r = comm_.rank();
      const int64_t lo = std::max(bucket_begin_[b], layout_.shard_begin(r));
      const int64_t at = std::max<int64_t>(0, lo - layout_.shard_begin(r));
      std::span<float> out(shard_grad_.data_ptr<float>() + std::min<int64_t>(at, layout_.shard_size()), counts_[b][r]);
      work_[b] = comm_.reduce_scatter_async<float>(std::span<const float>(bucket), out, ReduceOp::kAvg, counts_[b]);
    }
  }
}

void GradBuckets::finish() {
  for (size_t i : layout_.order)
    if (!marked_[i]) mark_ready(i);
  launch_ready_buckets();  // a bucket with no parameters (an empty model) completes without any mark
  for (Work& w : work_)
    if (w.pending()) w.wait();
  if (options_.mode == BucketMode::kAllReduce) {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
      torch::Tensor& p = params_[i].second;
      torch::Tensor src = flat_grad_.narrow(0, layout_.offset[i], layout_.numel[i]).view(p.sizes());
      torch::Tensor& g = p.mutable_grad();
      if (g.defined()) {
        g.copy_(src);
      } else {
        g = src.to(p.device(), p.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
      }
    }
  }
  reset();
}

void GradBuckets::reset() {
  for (const Work& w : work_)
    if (w.pending())
      throw Error("GradBuckets::reset: a bucket's reduction is still in flight; call finish() instead");
  std::fill(marked_.begin(), marked_.end(), false);
  std::fill(remaining_.begin(), remaining_.end(), 0);
  for (size_t i = 0; i < params_.size(); ++i) remaining_[bucket_of_[i]]++;
  next_launch_ = 0;
}

void GradBuckets::discard() {
  for (Work& w : work_)
    if (w.pending()) w.wait();
  reset();
}

void GradBuckets::progress() {
  for (size_t b = 0; b < next_launch_; ++b)
    if (work_[b].pending()) work_[b].test();
}

}  // namespace nibble::parallel::nn
