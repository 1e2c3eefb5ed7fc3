#include "parallel/nn/pipeline_runtime.h"

#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <span>
#include <string>
#include <thread>
#include <utility>

#include "parallel/nn/torch_collectives.h"
#include "parallel/runtime.h"
#include "precision/error.h"

namespace nibble::parallel::nn {
namespace {

// Message tags: one per kind, so activations and gradients between the same two ranks match in issue order
// per kind (check_schedule's matching rule) even when a paired operation holds both.
constexpr int kActivationTag = 1;
constexpr int kGradTag = 2;
constexpr size_t kMaxDims = 8;

using Seconds = std::chrono::duration<double>;
using Key = std::pair<int, int>;  // (micro-batch, chunk)

std::string shape_str(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// "float32" etc. (the Communicator's names) for the dtypes that can travel; torch's name otherwise.
std::string dtype_str(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32:
      return dtype_name(DType::kFloat32);
    case torch::kFloat64:
      return dtype_name(DType::kFloat64);
    case torch::kBFloat16:
      return dtype_name(DType::kBFloat16);
    case torch::kInt32:
      return dtype_name(DType::kInt32);
    case torch::kInt64:
      return dtype_name(DType::kInt64);
    case torch::kUInt8:
      return dtype_name(DType::kUInt8);
    default:
      return c10::toString(dtype);
  }
}

std::string message_str(std::span<const int64_t> shape, torch::ScalarType dtype) {
  return shape_str(shape) + " " + dtype_str(dtype);
}

// What every pp rank must agree on, as fixed-size integers for one all_gather.
struct Agreement {
  enum Field : size_t {
    kKind,
    kStages,
    kMicrobatches,
    kChunks,
    kGroup,
    kDtype,
    kDims,
    kShape,
    kSize = kShape + kMaxDims
  };
  static std::vector<int64_t> of(const ScheduleOptions& s, const PipelineRuntimeOptions& o) {
    std::vector<int64_t> d(kSize, 0);
    d[kKind] = static_cast<int64_t>(s.kind);
    d[kStages] = s.stages;
    d[kMicrobatches] = s.microbatches;
    d[kChunks] = s.virtual_chunks;
    d[kGroup] = s.microbatch_group;
    d[kDtype] = static_cast<int64_t>(o.activation_dtype);
    d[kDims] = static_cast<int64_t>(o.activation_shape.size());
    for (size_t i = 0; i < std::min(o.activation_shape.size(), kMaxDims); ++i) d[kShape + i] = o.activation_shape[i];
    return d;
  }
  static std::string describe(std::span<const int64_t> d) {
    return std::string("schedule ") + schedule_name(static_cast<ScheduleKind>(d[kKind])) +
           " p=" + std::to_string(d[kStages]) + " m=" + std::to_string(d[kMicrobatches]) +
           " v=" + std::to_string(d[kChunks]) + " group=" + std::to_string(d[kGroup]) + ", messages " +
           message_str(d.subspan(kShape, std::min(static_cast<size_t>(d[kDims]), kMaxDims)),
                       static_cast<torch::ScalarType>(d[kDtype]));
  }
};

void validate_options(const Communicator& pp, const PipelineRuntimeOptions& o) {
  if (o.schedule.stages != pp.size())
    throw InvalidArgument("PipelineRuntime: schedule.stages = " + std::to_string(o.schedule.stages) +
                          " but the pp group " + pp.describe() + " has " + std::to_string(pp.size()) +
                          " ranks; they must be equal");
  if (o.activation_shape.empty() || o.activation_shape.size() > kMaxDims)
    throw InvalidArgument("PipelineRuntime: activation_shape " + shape_str(o.activation_shape) + " has " +
                          std::to_string(o.activation_shape.size()) + " dimensions; valid: 1 to " +
                          std::to_string(kMaxDims) + " (normally [micro_batch, seq, hidden])");
  for (int64_t n : o.activation_shape)
    if (n < 1)
      throw InvalidArgument("PipelineRuntime: activation_shape " + shape_str(o.activation_shape) +
                            " has an entry < 1; every dimension must be >= 1");
  dtype_of_tensor(torch::empty({0}, torch::TensorOptions().dtype(o.activation_dtype)),
                  "PipelineRuntime activation_dtype");
  if (o.loss_scale < 0)
    throw InvalidArgument("PipelineRuntime: loss_scale = " + std::to_string(o.loss_scale) +
                          "; must be > 0, or 0 for 1/microbatches");
}

// Proves before anything else is sent that all pp ranks run the same schedule with the same messages: a
// mismatch would otherwise surface as a truncated receive or a hang mid-step.
void agree(Communicator& pp, const PipelineRuntimeOptions& o) {
  const std::vector<int64_t> mine = Agreement::of(o.schedule, o);
  std::vector<int64_t> all(mine.size() * static_cast<size_t>(pp.size()));
  pp.all_gather(std::span<const int64_t>(mine), std::span<int64_t>(all));
  const std::span<const int64_t> first(all.data(), mine.size());
  for (int r = 1; r < pp.size(); ++r) {
    const std::span<const int64_t> theirs(all.data() + r * mine.size(), mine.size());
    if (!std::equal(first.begin(), first.end(), theirs.begin()))
      throw InvalidArgument("PipelineRuntime: pp rank " + std::to_string(r) + " asks for " +
                            Agreement::describe(theirs) + " but pp rank 0 asks for " + Agreement::describe(first) +
                            " (group " + pp.describe() + "); every pipeline rank must agree on both");
  }
}

// Whether a waiting rank may spin: only when every rank on this node, with all its compute threads, has a
// core of its own. Otherwise (oversubscribed CI, CPU ranks sharing cores) a rank idle in its bubble must leave
// the core to the rank it waits for, or the bubble it measures is its own spinning.
bool ranks_have_own_cores() {
  return at::get_num_threads() <= cores_per_rank();
}

// Waits for a paired operation. With cores to spare it polls back to back for up to 1 ms: a short wait is on
// the pipeline's critical path (1F1B crosses ranks twice per micro-batch), so every microsecond counts. Past
// that (a long fill or drain wait), and from the start when ranks share cores, it polls briefly and then sleeps
// between polls, doubling up to 100 us -- latency small next to a stage's compute, and the core left free.
void wait_all(std::vector<Work>& works, bool spin) {
  const auto start = std::chrono::steady_clock::now();
  auto pause = std::chrono::microseconds(0);
  for (int polls = 0;; ++polls) {
    bool done = true;
    for (Work& w : works) done = w.test() && done;
    if (done) return;
    if (polls < 64 || (spin && std::chrono::steady_clock::now() - start < std::chrono::milliseconds(1))) continue;
    pause = std::min(std::chrono::microseconds(100), std::max(std::chrono::microseconds(5), pause * 2));
    std::this_thread::sleep_for(pause);
  }
}

// One step's state on this rank.
class StepRunner {
 public:
  StepRunner(Communicator& pp, const PipelineRuntimeOptions& o, const StageForward& forward,
             const PipelineSchedule& schedule)
      : pp_(pp),
        o_(o),
        forward_(forward),
        spin_(ranks_have_own_cores()),
        rank_(pp.rank()),
        p_(schedule.options.stages),
        v_(schedule.options.virtual_chunks),
        actions_(schedule.ranks[static_cast<size_t>(pp.rank())]),
        loss_scale_(o.loss_scale > 0 ? o.loss_scale : 1.0 / schedule.options.microbatches) {
    for (size_t i = 0; i < actions_.size(); ++i)
      if (actions_[i].type == ActionType::kBackward) last_backward_ = i;
    if (rank_ == p_ - 1)  // holds the last virtual stage (chunk v-1 of rank p-1)
      stats_.losses.assign(static_cast<size_t>(schedule.options.microbatches), std::nan(""));
  }

  PipelineStepStats run() {
    const auto start = std::chrono::steady_clock::now();
    size_t i = 0;
    while (i < actions_.size()) {
      const Action& a = actions_[i];
      if (!a.is_p2p()) {
        const auto t0 = std::chrono::steady_clock::now();
        if (a.type == ActionType::kForward) {
          run_forward(a);
        } else {
          run_backward(a);
        }
        stats_.compute_seconds += Seconds(std::chrono::steady_clock::now() - t0).count();
        if (i == last_backward_ && o_.after_last_backward) o_.after_last_backward();
        ++i;
        continue;
      }
      size_t end = i;
      while (end < actions_.size() && actions_[end].is_p2p()) ++end;
      const auto t0 = std::chrono::steady_clock::now();
      run_paired(i, end);
      stats_.wait_seconds += Seconds(std::chrono::steady_clock::now() - t0).count();
      i = end;
    }
    {  // the step's last sends (waiting for them is idle time too)
      const auto t0 = std::chrono::steady_clock::now();
      reap_sends(/*wait=*/true);
      stats_.wait_seconds += Seconds(std::chrono::steady_clock::now() - t0).count();
    }
    if (!held_.empty() || !received_act_.empty() || !received_grad_.empty() || !to_send_grad_.empty())
      throw Error("PipelineRuntime: pp rank " + std::to_string(rank_) + " ended the step still holding " +
                  std::to_string(held_.size()) + " activations and " +
                  std::to_string(received_act_.size() + received_grad_.size() + to_send_grad_.size()) +
                  " messages; the action list is inconsistent (check_schedule should have rejected it)");
    stats_.step_seconds = Seconds(std::chrono::steady_clock::now() - start).count();
    stats_.bubble_fraction = stats_.step_seconds > 0 ? stats_.wait_seconds / stats_.step_seconds : 0.0;
    return std::move(stats_);
  }

 private:
  struct Held {
    torch::Tensor input;    // the received activation (leaf requiring grad); undefined on stage 0
    torch::Tensor output;   // autograd root of backward (values released once sent)
    torch::Tensor payload;  // contiguous values of output to send; dropped once sent
  };

  bool first_stage(int chunk) const { return chunk * p_ + rank_ == 0; }
  bool last_stage(int chunk) const { return chunk * p_ + rank_ == p_ * v_ - 1; }
  std::string stage_name(const Action& a) const {
    return "pipeline stage " + std::to_string(a.chunk * p_ + rank_) + " (pp rank " + std::to_string(rank_) +
           ", chunk " + std::to_string(a.chunk) + "), micro-batch " + std::to_string(a.microbatch);
  }
  [[noreturn]] void missing(const Action& a, const char* what) const {
    throw Error("PipelineRuntime: " + to_string(a) + " on pp rank " + std::to_string(rank_) + ": " + what +
                "; the action list is inconsistent (check_schedule should have rejected it)");
  }
  torch::Tensor take(std::map<Key, torch::Tensor>& from, const Action& a, const char* what) {
    const auto it = from.find({a.microbatch, a.chunk});
    if (it == from.end()) missing(a, what);
    torch::Tensor t = std::move(it->second);
    from.erase(it);
    return t;
  }

  void check_message(const torch::Tensor& t, const Action& a, const char* what) const {
    if (t.sizes().vec() == o_.activation_shape && t.scalar_type() == o_.activation_dtype &&
        t.device() == o_.activation_device)
      return;
    throw InvalidArgument("PipelineRuntime: " + stage_name(a) + " " + what + " " +
                          message_str(t.sizes().vec(), t.scalar_type()) + " on " + t.device().str() +
                          "; the pipeline's p2p messages are " + message_str(o_.activation_shape, o_.activation_dtype) +
                          " on " + o_.activation_device.str() +
                          " (PipelineRuntimeOptions activation_shape/activation_dtype, agreed by all ranks, and "
                          "this rank's activation_device)");
  }

  void run_forward(const Action& a) {
    torch::Tensor input;
    if (!first_stage(a.chunk))
      input = take(received_act_, a, "its input activation was not received").requires_grad_(true);
    torch::Tensor out = forward_(a.chunk, a.microbatch, input);
    if (!out.defined()) throw InvalidArgument("PipelineRuntime: " + stage_name(a) + " forward returned no tensor");
    if (!out.requires_grad())
      throw InvalidArgument("PipelineRuntime: " + stage_name(a) + " forward returned a tensor that does not " +
                            "require grad; backward could not reach its parameters or its input");
    Held h{input, out, {}};
    if (last_stage(a.chunk)) {
      if (out.numel() != 1)
        throw InvalidArgument("PipelineRuntime: " + stage_name(a) + " is the last stage and returned " +
                              shape_str(out.sizes().vec()) + "; it must return the micro-batch's loss (one element)");
      stats_.losses.at(static_cast<size_t>(a.microbatch)) = out.detach().to(torch::kFloat64).item<double>();
    } else {
      check_message(out, a, "forward returned");
      h.payload = out.detach().contiguous();
    }
    held_.emplace(Key{a.microbatch, a.chunk}, std::move(h));
    stats_.peak_held = std::max(stats_.peak_held, static_cast<int>(held_.size()));
  }

  void run_backward(const Action& a) {
    const auto it = held_.find({a.microbatch, a.chunk});
    if (it == held_.end()) missing(a, "its forward did not run");
    Held h = std::move(it->second);
    held_.erase(it);
    torch::Tensor grad = last_stage(a.chunk) ? torch::full_like(h.output, loss_scale_, torch::MemoryFormat::Contiguous)
                                             : take(received_grad_, a, "its output gradient was not received");
    // The engine directly (as torch.autograd.backward minus its shape check against the tensor's current
    // values): the output's storage may have been released after it was sent; its node still knows the shape.
    torch::autograd::Engine::get_default_engine().execute({torch::autograd::impl::gradient_edge(h.output)}, {grad},
                                                          /*keep_graph=*/false, /*create_graph=*/false,
                                                          /*accumulate_grad=*/true, /*outputs=*/{});
    if (!first_stage(a.chunk)) {
      torch::Tensor g = h.input.grad();
      if (!g.defined())
        throw InvalidArgument("PipelineRuntime: " + stage_name(a) + ": the stage's output does not depend on its " +
                              "input, so no gradient can flow to the previous stage");
      to_send_grad_.emplace(Key{a.microbatch, a.chunk}, g.contiguous());
    }
  }

  // A paired operation posts its sends and receives and waits for the receives only. A send completes in the
  // background: its buffer is kept in sends_in_flight_ until it has (reaped here, and all waited for at the end
  // of the step), so a rank never waits for a peer to reach the matching receive -- the semantics
  // check_schedule proves the lists deadlock-free under, and what lets a schedule run at its own bubble.
  void run_paired(size_t begin, size_t end) {
    reap_sends(/*wait=*/false);
    std::vector<Work> works;
    std::vector<std::pair<const Action*, torch::Tensor>> posted;  // receive buffers
    works.reserve(end - begin);
    for (size_t i = begin; i < end; ++i) {
      const Action& a = actions_[i];
      const bool act = a.type == ActionType::kSendActivation || a.type == ActionType::kRecvActivation;
      const int tag = act ? kActivationTag : kGradTag;
      torch::Tensor buf;
      if (a.type == ActionType::kSendActivation) {
        const auto it = held_.find({a.microbatch, a.chunk});
        if (it == held_.end() || !it->second.payload.defined()) missing(a, "there is no activation to send");
        buf = on_host(std::move(it->second.payload));
        if (o_.free_sent_outputs && !it->second.output.is_view())
          it->second.output.set_data(torch::empty({0}, it->second.output.options()));
        Work w = pp_.send_async(
            ConstView{buf.data_ptr(), static_cast<size_t>(buf.numel()), dtype_of_tensor(buf, "pipeline activation")},
            a.peer, tag);
        sends_in_flight_.emplace_back(std::move(w), buf);
        continue;
      } else if (a.type == ActionType::kSendGrad) {
        buf = on_host(take(to_send_grad_, a, "there is no input gradient to send"));
        Work w = pp_.send_async(
            ConstView{buf.data_ptr(), static_cast<size_t>(buf.numel()), dtype_of_tensor(buf, "pipeline gradient")},
            a.peer, tag);
        sends_in_flight_.emplace_back(std::move(w), buf);
        continue;
      } else {
        buf = torch::empty(o_.activation_shape, torch::TensorOptions().dtype(o_.activation_dtype));
        works.push_back(pp_.recv_async(
            View{buf.data_ptr(), static_cast<size_t>(buf.numel()), dtype_of_tensor(buf, "pipeline message")}, a.peer,
            tag));
      }
      posted.emplace_back(&a, buf);
    }
    wait_all(works, spin_);
    for (auto& [a, buf] : posted) {
      torch::Tensor message = buf.to(o_.activation_device);  // (the same tensor on a CPU pipeline)
      if (a->type == ActionType::kRecvActivation) received_act_.emplace(Key{a->microbatch, a->chunk}, message);
      if (a->type == ActionType::kRecvGrad) received_grad_.emplace(Key{a->microbatch, a->chunk}, message);
    }
  }

  // A message as it travels: in host memory (see PipelineRuntimeOptions::activation_device).
  static torch::Tensor on_host(torch::Tensor t) { return t.device().is_cpu() ? t : t.to(torch::kCPU); }

  // Releases the buffers of completed sends; wait = true blocks until every send has completed.
  void reap_sends(bool wait) {
    if (wait) {
      std::vector<Work> works;
      for (auto& [w, buf] : sends_in_flight_) works.push_back(std::move(w));
      wait_all(works, spin_);
      sends_in_flight_.clear();
      return;
    }
    std::erase_if(sends_in_flight_, [](std::pair<Work, torch::Tensor>& sent) { return sent.first.test(); });
  }

  Communicator& pp_;
  const PipelineRuntimeOptions& o_;
  const StageForward& forward_;
  const bool spin_;  // waits poll back to back for their first millisecond (ranks_have_own_cores)
  const int rank_, p_, v_;
  const std::vector<Action>& actions_;
  const double loss_scale_;
  size_t last_backward_ = 0;
  std::map<Key, Held> held_;
  std::map<Key, torch::Tensor> received_act_, received_grad_, to_send_grad_;
  std::vector<std::pair<Work, torch::Tensor>> sends_in_flight_;  // a send's Work and the buffer it reads
  PipelineStepStats stats_;
};

}  // namespace

PipelineRuntime::PipelineRuntime(Communicator& pp, PipelineRuntimeOptions options, StageForward forward)
    : pp_(pp), options_(std::move(options)), forward_(std::move(forward)) {
  // Agreement first: a rank with a locally invalid option then fails with the others instead of leaving them
  // waiting in the all_gather.
  agree(pp_, options_);
  validate_options(pp_, options_);
  if (!forward_) throw InvalidArgument("PipelineRuntime: no stage forward function given");
  schedule_ = make_schedule(options_.schedule);
  report_ = check_schedule(schedule_);  // throws, naming ranks and actions, before any step can hang
}

PipelineStepStats PipelineRuntime::step() {
  pp_.barrier();
  return StepRunner(pp_, options_, forward_, schedule_).run();
}

PipelineTiming gather_timing(Communicator& pp, const PipelineStepStats& stats) {
  const double mine[2] = {stats.compute_seconds, stats.step_seconds};
  std::vector<double> all(2 * static_cast<size_t>(pp.size()));
  pp.all_gather(std::span<const double>(mine), std::span<double>(all));
  std::vector<double> compute, step;
  for (size_t r = 0; r < static_cast<size_t>(pp.size()); ++r) {
    compute.push_back(all[2 * r]);
    step.push_back(all[2 * r + 1]);
  }
  return pipeline_timing(compute, step);
}

}  // namespace nibble::parallel::nn
