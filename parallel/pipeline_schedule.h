#pragma once
// Pipeline parallelism as data: which layers each stage holds, and per pipeline rank the list of actions a
// training step runs (forward/backward of micro-batch m on model chunk c, send/recv of activations or
// gradients), generated ahead of time for GPipe, 1F1B and interleaved 1F1B (Megatron's warm-up counts), and a
// checker that runs all ranks' lists together before a step and rejects a list that could deadlock or match a
// send with the wrong receive. Torch-free: the runtime (parallel/nn/pipeline_runtime) executes these lists.
//
// Vocabulary. p = pipeline ranks, v = model chunks per rank ("virtual" stages; v > 1 only for interleaved and
// looped GPipe), m = micro-batches. Virtual stage s = c*p + r is chunk c of rank r (Megatron's layout): the
// model runs stage 0, 1, ..., p*v-1, so activations go r -> r+1 within a chunk and rank p-1 chunk c -> rank 0
// chunk c+1; gradients go the other way.
//
// P2P semantics the checker assumes (what parallel/nn/pipeline_runtime does; docs/PARALLEL.md):
//  - A run of consecutive send/recv actions in one rank's list is ONE paired operation: the runtime posts
//    them together and waits for its receives.
//  - A send never waits for its receiver: it is posted and completes in the background (the runtime keeps its
//    buffer until then). So a rank blocks only on a receive whose send has not been posted yet, and each
//    receive is placed right before the compute that consumes it.
//  - Messages are matched in issue order per (source, destination, kind), where kind (activation or
//    gradient) is the message tag. A matched pair must carry the same (micro-batch, chunk).
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace nibble::parallel {

// ---- layer assignment ---------------------------------------------------------------------------------------

struct LayerAssignmentOptions {
  int num_layers = 0;      // transformer layers
  int stages = 1;          // p
  int virtual_chunks = 1;  // v
  // Explicit transformer-layer counts per virtual stage (size p*v, in model order s = c*p + r; sum =
  // num_layers). Empty = even split.
  std::vector<int> layer_counts = {};
  // For the even split, count the embedding (first stage) and the LM head + loss (last stage) as one layer
  // each, as Megatron's account_for_embedding/loss_in_pipeline_split: those stages then get one transformer
  // layer fewer. (num_layers + the counted ones) must divide by p*v.
  bool embedding_counts_as_layer = false;
  bool lm_head_counts_as_layer = false;
};

struct StageLayers {
  int stage = 0;  // virtual stage s = chunk*p + rank
  int rank = 0;
  int chunk = 0;
  int first_layer = 0;  // transformer layers [first_layer, first_layer + num_layers)
  int num_layers = 0;
  bool embedding = false;  // stage 0 holds the embedding
  bool lm_head = false;    // the last stage holds final norm, LM head and loss
};

// One entry per virtual stage, in model order. Throws InvalidArgument (what failed, the values, what would
// be valid) for p, v < 1, an even split that does not divide, or explicit counts of the wrong size/sum, with a
// negative entry, or leaving a stage with no layer and neither embedding nor head.
std::vector<StageLayers> assign_layers(const LayerAssignmentOptions& options);

// ---- schedules ----------------------------------------------------------------------------------------------

enum class ScheduleKind : uint8_t {
  kGPipe,        // all forwards, then all backwards (v > 1: looped, chunk by chunk)
  k1F1B,         // PipeDream-Flush / Megatron non-interleaved; v must be 1
  kInterleaved,  // Megatron interleaved 1F1B with v chunks per rank (v = 1 is plain 1F1B)
};
const char* schedule_name(ScheduleKind kind);  // "gpipe", "1f1b", "interleaved"
ScheduleKind parse_schedule(const std::string& name);

struct ScheduleOptions {
  ScheduleKind kind = ScheduleKind::k1F1B;
  int stages = 1;          // p
  int microbatches = 1;    // m
  int virtual_chunks = 1;  // v
  // Interleaved only: micro-batches per group that each chunk runs before the next chunk (Megatron's
  // microbatch_group_size_per_vp_stage; p <= g <= m, and m % g must be 0 or >= p). 0 = the smallest valid g
  // from p up (p when p divides m).
  int microbatch_group = 0;
};

enum class ActionType : uint8_t { kForward, kBackward, kSendActivation, kRecvActivation, kSendGrad, kRecvGrad };
const char* action_name(ActionType type);  // "forward", "backward", "send activation", ...

struct Action {
  ActionType type = ActionType::kForward;
  int microbatch = 0;
  int chunk = 0;  // this rank's chunk the data belongs to (for a send: the chunk that produced it)
  int peer = -1;  // pipeline rank of the other side (send/recv only)
  bool is_p2p() const { return type != ActionType::kForward && type != ActionType::kBackward; }
  friend bool operator==(const Action&, const Action&) = default;
};
std::string to_string(const Action& action);  // "send activation of micro-batch 3 chunk 1 to rank 0"

struct PipelineSchedule {
  ScheduleOptions options;                 // with microbatch_group resolved
  std::vector<std::vector<Action>> ranks;  // ranks[r] = the action list of pipeline rank r
};

// Throws InvalidArgument for p, m, v < 1, 1F1B with v > 1, interleaved with m < p or an invalid group size.
PipelineSchedule make_schedule(const ScheduleOptions& options);

// Where the activation of (rank, chunk) goes next and where its gradient comes from; -1 at the ends.
int next_rank(int rank, int chunk, int stages, int virtual_chunks);
int prev_rank(int rank, int chunk, int stages, int virtual_chunks);

// ---- checker and bubble -------------------------------------------------------------------------------------

struct CostModel {
  double forward = 1.0;   // time of one chunk's forward of one micro-batch
  double backward = 2.0;  // ... and of its backward
};

struct ScheduleReport {
  double makespan = 0;         // simulated time of the step under the cost model (p2p free)
  double ideal = 0;            // one rank's compute time, m*v*(forward+backward)
  double bubble_fraction = 0;  // (makespan - ideal) / ideal, Narayanan et al.'s definition
  int max_in_flight = 0;       // most micro-batches any rank holds activations for (memory)
  std::vector<int> in_flight;  // per rank
};

// Simulates all ranks' lists together under the p2p semantics above. Throws nibble::Error naming the ranks
// and actions when the lists could deadlock, a send would be matched with a receive for other data, a compute
// runs before its input arrived, a message is left unreceived, or a (micro-batch, chunk) is not run exactly
// once forward and once backward on the rank that owns it.
ScheduleReport check_schedule(const PipelineSchedule& schedule, const CostModel& cost = {});

// (p-1)/(v*m) (Narayanan et al. SC'21 §2.2; (p-1)/m for v = 1). The simulation reaches it exactly for v = 1
// and for interleaved with p dividing m; interleaved's remainder group and looped GPipe cost a little more,
// still below (p-1)/m.
double theoretical_bubble_fraction(const ScheduleOptions& options);

// ---- measured timing ----------------------------------------------------------------------------------------

// How one measured step's time divides, from each pp rank's compute time and its wall time counted from a
// common start (PipelineRuntime::step aligns the ranks' starts). T = the slowest rank's wall time, C_max the
// busiest rank's compute. Splitting the loss in two tells a user what to change: the bubble shrinks with more
// micro-batches or virtual stages, the imbalance with a different layer split (parallel.pp_layers).
struct PipelineTiming {
  // (T - C_max) / C_max: the busiest rank's idle over its compute -- the pipeline's fill and drain. The
  // checker's bubble_fraction by the same definition; (p-1)/(v*m) when stages are balanced.
  double bubble = 0;
  double imbalance = 0;  // C_max / mean(C) - 1: how much more the busiest rank computes than the average
  double idle = 0;       // T / mean(C) - 1: all ranks' idle over their compute = (1+bubble)(1+imbalance) - 1
  int busiest_rank = 0;  // the pp rank computing C_max (the first such)
};
// Throws InvalidArgument for empty or unequal spans, a compute time <= 0, or a wall time below its compute.
PipelineTiming pipeline_timing(std::span<const double> compute_seconds, std::span<const double> step_seconds);

}  // namespace nibble::parallel
