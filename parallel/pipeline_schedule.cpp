#include "parallel/pipeline_schedule.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include "precision/error.h"

namespace nibble::parallel {
namespace {

std::string join(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

void require_positive(int value, const char* what, const char* who) {
  if (value < 1)
    throw InvalidArgument(std::string(who) + ": " + what + " = " + std::to_string(value) + "; must be >= 1");
}

// A compute action is a (forward|backward, micro-batch, chunk); the runtime-visible order of one rank.
struct Compute {
  bool forward;
  int microbatch;
  int chunk;
};

// Megatron's schedule table (get_schedule_table): micro-batches in groups of g, each group run through every
// chunk before the next group; the last group takes whatever remains.
std::vector<std::pair<int, int>> schedule_table(int m, int v, int g) {
  std::vector<std::pair<int, int>> table;
  for (int first = 0; first < m; first += g) {
    const int last = (first + g >= m) ? m : first + g;
    for (int c = 0; c < v; ++c)
      for (int mb = first; mb < last; ++mb) table.emplace_back(mb, c);
    if (last == m) break;
  }
  return table;
}

std::vector<Compute> compute_order(const ScheduleOptions& o, int rank) {
  const int p = o.stages, m = o.microbatches, v = o.virtual_chunks;
  std::vector<Compute> order;
  if (o.kind == ScheduleKind::kGPipe) {
    // Looped GPipe: every micro-batch through chunk 0, then chunk 1, ...; backwards in the mirrored order.
    for (int c = 0; c < v; ++c)
      for (int mb = 0; mb < m; ++mb) order.push_back({true, mb, c});
    for (int c = v - 1; c >= 0; --c)
      for (int mb = 0; mb < m; ++mb) order.push_back({false, mb, c});
    return order;
  }
  // 1F1B and interleaved: warm-up forwards, steady one-forward-one-backward, cool-down backwards.
  const auto table = schedule_table(m, v, v == 1 ? m : o.microbatch_group);
  const int total = m * v;
  const int warmup = v == 1 ? std::min(p - rank - 1, m)  // Megatron: num_warmup = min(p - r - 1, m)
                            : std::min((p - rank - 1) * 2 + (v - 1) * o.microbatch_group, total);
  auto fwd = [&](int k) { return Compute{true, table[k].first, table[k].second}; };
  auto bwd = [&](int k) { return Compute{false, table[k].first, v - 1 - table[k].second}; };
  for (int k = 0; k < warmup; ++k) order.push_back(fwd(k));
  for (int i = 0; i < total - warmup; ++i) {
    order.push_back(fwd(warmup + i));
    order.push_back(bwd(i));
  }
  for (int k = total - warmup; k < total; ++k) order.push_back(bwd(k));
  return order;
}

// Where each send/recv goes. Sends never wait for their receiver (the runtime posts them and lets them complete
// in the background; parallel/nn/pipeline_runtime.h), so a rank only ever waits for data it needs: each
// receive sits right before the compute that consumes it, each send right after the compute that produced it.
// A rank then idles exactly when its next input is not there yet, and the schedule runs at its compute order's
// own bubble ((p-1)/(v*m) for Megatron's interleaved order). check_schedule simulates these semantics.
std::vector<std::vector<Action>> place_p2p(const ScheduleOptions& o, const std::vector<std::vector<Compute>>& orders) {
  const int p = o.stages, v = o.virtual_chunks;
  std::vector<std::vector<Action>> lists(p);
  for (int r = 0; r < p; ++r) {
    for (const Compute& c : orders[r]) {
      // The input: an activation from the previous stage, or a gradient from the next one.
      const int from = c.forward ? prev_rank(r, c.chunk, p, v) : next_rank(r, c.chunk, p, v);
      if (from >= 0)
        lists[r].push_back({c.forward ? ActionType::kRecvActivation : ActionType::kRecvGrad, c.microbatch, c.chunk, from});
      lists[r].push_back({c.forward ? ActionType::kForward : ActionType::kBackward, c.microbatch, c.chunk, -1});
      // The output: this stage's activation to the next stage, or its input gradient to the previous one.
      const int to = c.forward ? next_rank(r, c.chunk, p, v) : prev_rank(r, c.chunk, p, v);
      if (to >= 0)
        lists[r].push_back({c.forward ? ActionType::kSendActivation : ActionType::kSendGrad, c.microbatch, c.chunk, to});
    }
  }
  return lists;
}

int resolve_group(const ScheduleOptions& o) {
  const int p = o.stages, m = o.microbatches;
  auto valid = [&](int g) { return g >= p && g <= m && (m % g == 0 || m % g >= p); };
  if (o.microbatch_group != 0) {
    if (!valid(o.microbatch_group))
      throw InvalidArgument("make_schedule (interleaved): microbatch_group = " + std::to_string(o.microbatch_group) +
                            " with p = " + std::to_string(p) + ", m = " + std::to_string(m) +
                            "; needs p <= g <= m and m % g either 0 or >= p (0 picks one)");
    return o.microbatch_group;
  }
  for (int g = p; g <= m; ++g)
    if (valid(g)) return g;
  return m;  // unreachable for m >= p: g = m always satisfies the rule
}

}  // namespace

// ---- layers -------------------------------------------------------------------------------------------------

std::vector<StageLayers> assign_layers(const LayerAssignmentOptions& o) {
  const char* who = "assign_layers";
  require_positive(o.stages, "stages (pp)", who);
  require_positive(o.virtual_chunks, "virtual_chunks", who);
  if (o.num_layers < 0) throw InvalidArgument("assign_layers: num_layers = " + std::to_string(o.num_layers) + " < 0");
  const int n = o.stages * o.virtual_chunks;
  std::vector<int> counts = o.layer_counts;
  if (counts.empty()) {
    const int extra = int{o.embedding_counts_as_layer} + int{o.lm_head_counts_as_layer};
    const int units = o.num_layers + extra;
    if (units % n != 0) {
      throw InvalidArgument("assign_layers: " + std::to_string(o.num_layers) + " layers" +
                            (extra ? " + " + std::to_string(extra) + " (embedding/LM head counted as layers)" : "") +
                            " = " + std::to_string(units) + " do not split evenly over pp*v = " + std::to_string(n) +
                            " stages; use a multiple of " + std::to_string(n) + " or give explicit layer_counts");
    }
    counts.assign(n, units / n);
    if (o.embedding_counts_as_layer) counts.front() -= 1;
    if (o.lm_head_counts_as_layer) counts.back() -= 1;
    if (n == 1 && extra > 0 && counts[0] < 0) counts[0] = 0;
  } else {
    if (static_cast<int>(counts.size()) != n)
      throw InvalidArgument("assign_layers: layer_counts has " + std::to_string(counts.size()) +
                            " entries; needs pp*v = " + std::to_string(n) + " (one per virtual stage)");
    const int sum = std::accumulate(counts.begin(), counts.end(), 0);
    if (sum != o.num_layers)
      throw InvalidArgument("assign_layers: layer_counts " + join(counts) + " sum to " + std::to_string(sum) +
                            "; must sum to num_layers = " + std::to_string(o.num_layers));
  }
  std::vector<StageLayers> out(n);
  int first = 0;
  for (int s = 0; s < n; ++s) {
    StageLayers& st = out[s];
    st.stage = s;
    st.rank = s % o.stages;
    st.chunk = s / o.stages;
    st.first_layer = first;
    st.num_layers = counts[s];
    st.embedding = s == 0;
    st.lm_head = s == n - 1;
    if (counts[s] < 0)
      throw InvalidArgument("assign_layers: virtual stage " + std::to_string(s) + " gets " + std::to_string(counts[s]) +
                            " layers (layer_counts " + join(counts) + "); must be >= 0");
    if (counts[s] == 0 && !st.embedding && !st.lm_head)
      throw InvalidArgument("assign_layers: virtual stage " + std::to_string(s) + " (rank " + std::to_string(st.rank) +
                            ", chunk " + std::to_string(st.chunk) + ") gets no layer and neither embedding nor LM " +
                            "head (layer_counts " + join(counts) + "); every stage needs work");
    first += counts[s];
  }
  return out;
}

// ---- names --------------------------------------------------------------------------------------------------

const char* schedule_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kGPipe:
      return "gpipe";
    case ScheduleKind::k1F1B:
      return "1f1b";
    case ScheduleKind::kInterleaved:
      return "interleaved";
  }
  return "?";
}

ScheduleKind parse_schedule(const std::string& name) {
  for (auto k : {ScheduleKind::kGPipe, ScheduleKind::k1F1B, ScheduleKind::kInterleaved})
    if (name == schedule_name(k)) return k;
  throw InvalidArgument("pipeline schedule '" + name + "' is unknown; valid: gpipe, 1f1b, interleaved");
}

const char* action_name(ActionType type) {
  switch (type) {
    case ActionType::kForward:
      return "forward";
    case ActionType::kBackward:
      return "backward";
    case ActionType::kSendActivation:
      return "send activation";
    case ActionType::kRecvActivation:
      return "recv activation";
    case ActionType::kSendGrad:
      return "send gradient";
    case ActionType::kRecvGrad:
      return "recv gradient";
  }
  return "?";
}

std::string to_string(const Action& a) {
  std::string s = std::string(action_name(a.type)) + " of micro-batch " + std::to_string(a.microbatch) + " chunk " +
                  std::to_string(a.chunk);
  if (a.type == ActionType::kSendActivation || a.type == ActionType::kSendGrad)
    s += " to rank " + std::to_string(a.peer);
  if (a.type == ActionType::kRecvActivation || a.type == ActionType::kRecvGrad)
    s += " from rank " + std::to_string(a.peer);
  return s;
}

// ---- generation ---------------------------------------------------------------------------------------------

int next_rank(int rank, int chunk, int stages, int virtual_chunks) {
  if (rank < stages - 1) return rank + 1;
  return chunk < virtual_chunks - 1 ? 0 : -1;
}
int prev_rank(int rank, int chunk, int stages, int /*virtual_chunks*/) {
  if (rank > 0) return rank - 1;
  return chunk > 0 ? stages - 1 : -1;
}

PipelineSchedule make_schedule(const ScheduleOptions& options) {
  const char* who = "make_schedule";
  require_positive(options.stages, "stages (pp)", who);
  require_positive(options.microbatches, "microbatches", who);
  require_positive(options.virtual_chunks, "virtual_chunks", who);
  ScheduleOptions o = options;
  const int p = o.stages, v = o.virtual_chunks;
  if (o.kind == ScheduleKind::k1F1B && v != 1)
    throw InvalidArgument("make_schedule: 1f1b with virtual_chunks = " + std::to_string(v) +
                          "; 1f1b has one chunk per rank (use 'interleaved' for v > 1)");
  if (o.kind == ScheduleKind::kInterleaved && v > 1) {
    if (o.microbatches < p)
      throw InvalidArgument("make_schedule: interleaved with microbatches = " + std::to_string(o.microbatches) +
                            " < pp = " + std::to_string(p) + "; needs at least pp micro-batches");
    o.microbatch_group = resolve_group(o);
  } else {
    o.microbatch_group = 0;
  }
  std::vector<std::vector<Compute>> orders(p);
  for (int r = 0; r < p; ++r) orders[r] = compute_order(o, r);
  return PipelineSchedule{o, place_p2p(o, orders)};
}

double theoretical_bubble_fraction(const ScheduleOptions& o) {
  const double p = o.stages, m = o.microbatches, v = o.virtual_chunks;
  return (p - 1) / (v * m);
}

PipelineTiming pipeline_timing(std::span<const double> compute, std::span<const double> step) {
  if (compute.empty() || compute.size() != step.size())
    throw InvalidArgument("pipeline_timing: " + std::to_string(compute.size()) + " compute times and " +
                          std::to_string(step.size()) + " step times; needs one of each per pp rank (>= 1)");
  double c_max = 0, c_sum = 0, t = 0;
  int busiest = 0;
  for (size_t r = 0; r < compute.size(); ++r) {
    if (!(compute[r] > 0) || !(step[r] >= compute[r]))
      throw InvalidArgument("pipeline_timing: pp rank " + std::to_string(r) + " computed " +
                            std::to_string(compute[r]) + " s in a step of " + std::to_string(step[r]) +
                            " s; needs 0 < compute <= step");
    if (compute[r] > c_max) busiest = static_cast<int>(r);
    c_max = std::max(c_max, compute[r]);
    c_sum += compute[r];
    t = std::max(t, step[r]);
  }
  const double c_mean = c_sum / static_cast<double>(compute.size());
  return {.bubble = (t - c_max) / c_max,
          .imbalance = c_max / c_mean - 1,
          .idle = t / c_mean - 1,
          .busiest_rank = busiest};
}

// ---- checker ------------------------------------------------------------------------------------------------

namespace {

// The chunk a message lands in on the receiving rank: activations of rank p-1 chunk c enter rank 0 chunk
// c+1; gradients of rank 0 chunk c enter rank p-1 chunk c-1.
int receiving_chunk(const Action& send, int sender, int p) {
  if (send.type == ActionType::kSendActivation) return sender == p - 1 ? send.chunk + 1 : send.chunk;
  return sender == 0 ? send.chunk - 1 : send.chunk;
}

bool is_send(ActionType t) {
  return t == ActionType::kSendActivation || t == ActionType::kSendGrad;
}
bool is_activation(ActionType t) {
  return t == ActionType::kSendActivation || t == ActionType::kRecvActivation;
}

struct Simulator {
  const PipelineSchedule& s;
  CostModel cost;
  int p;
  // Per rank: position, the extent [begin, end) of the paired operation it is blocked in, which of its ops
  // are done, when it got there, and its clock.
  std::vector<size_t> pc;
  std::vector<size_t> group_end;
  std::vector<std::vector<char>> done;
  std::vector<double> clock, group_done_at;
  // Issue counters per (src, dst, activation?) for sends and receives: the k-th send matches the k-th recv.
  std::map<std::tuple<int, int, bool>, int> sends_issued, recvs_issued;
  std::vector<std::map<size_t, int>> seq;  // rank -> action index -> its sequence number on its channel
  // Per rank: data present (received or produced) and computes run.
  std::vector<std::set<std::tuple<int, int, int>>> have;  // (kind 0 act-in,1 grad-in,2 fwd done,3 bwd done), m, c
  // Messages sent and not yet received, by (src, dst, activation?, sequence number on that channel).
  struct Message {
    int microbatch, chunk;  // as they land on the receiver
    size_t send_index;
    double sent_at;
  };
  std::map<std::tuple<int, int, bool, int>, Message> in_flight_msgs;
  std::vector<int> live, peak;

  explicit Simulator(const PipelineSchedule& sched, const CostModel& c)
      : s(sched),
        cost(c),
        p(sched.options.stages),
        pc(p, 0),
        group_end(p, 0),
        done(p),
        clock(p, 0.0),
        group_done_at(p, 0.0),
        seq(p),
        have(p),
        live(p, 0),
        peak(p, 0) {}

  std::string where(int r, size_t i) const {
    return "rank " + std::to_string(r) + " action " + std::to_string(i) + " (" + to_string(s.ranks[r][i]) + ")";
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error("pipeline schedule " + std::string(schedule_name(s.options.kind)) + " p=" + std::to_string(p) +
                " m=" + std::to_string(s.options.microbatches) + " v=" + std::to_string(s.options.virtual_chunks) +
                " is invalid: " + what);
  }

  // Enter the paired operation starting at pc[r]: number its p2p ops on their channels and post its sends
  // (a send completes without waiting for its receiver: the message is in flight from now on).
  void enter_group(int r) {
    const auto& list = s.ranks[r];
    size_t e = pc[r];
    while (e < list.size() && list[e].is_p2p()) ++e;
    group_end[r] = e;
    done[r].assign(e - pc[r], 0);
    group_done_at[r] = clock[r];
    for (size_t i = pc[r]; i < e; ++i) {
      const Action& a = list[i];
      if (a.peer < 0 || a.peer >= p || a.peer == r) fail(where(r, i) + " has peer " + std::to_string(a.peer));
      const bool act = is_activation(a.type);
      if (is_send(a.type)) {
        if (act ? !have[r].count({2, a.microbatch, a.chunk}) : !have[r].count({3, a.microbatch, a.chunk}))
          fail(where(r, i) + " sends data its rank has not computed yet");
        seq[r][i] = sends_issued[{r, a.peer, act}]++;
        in_flight_msgs[{r, a.peer, act, seq[r][i]}] = {a.microbatch, receiving_chunk(a, r, p), i, clock[r]};
        done[r][i - pc[r]] = 1;
      } else {
        seq[r][i] = recvs_issued[{a.peer, r, act}]++;
      }
    }
  }

  void run_compute(int r) {
    const Action& a = s.ranks[r][pc[r]];
    const int first_stage = 0, last_stage = p * s.options.virtual_chunks - 1;
    const int stage = a.chunk * p + r;
    if (a.chunk < 0 || a.chunk >= s.options.virtual_chunks || a.microbatch < 0 ||
        a.microbatch >= s.options.microbatches)
      fail(where(r, pc[r]) + " is outside the schedule's micro-batches/chunks");
    auto& h = have[r];
    if (a.type == ActionType::kForward) {
      if (stage != first_stage && !h.count({0, a.microbatch, a.chunk}))
        fail(where(r, pc[r]) + " runs before its input activation was received");
      if (!h.insert({2, a.microbatch, a.chunk}).second) fail(where(r, pc[r]) + " runs a second time");
      clock[r] += cost.forward;
      peak[r] = std::max(peak[r], ++live[r]);
    } else {
      if (!h.count({2, a.microbatch, a.chunk})) fail(where(r, pc[r]) + " runs before its forward");
      if (stage != last_stage && !h.count({1, a.microbatch, a.chunk}))
        fail(where(r, pc[r]) + " runs before its output gradient was received");
      if (!h.insert({3, a.microbatch, a.chunk}).second) fail(where(r, pc[r]) + " runs a second time");
      clock[r] += cost.backward;
      --live[r];
    }
    ++pc[r];
  }

  // Try to complete the receives of r's current group from the messages in flight. True on progress.
  bool try_match(int r) {
    bool progress = false;
    const auto& list = s.ranks[r];
    for (size_t j = pc[r]; j < group_end[r]; ++j) {
      if (done[r][j - pc[r]]) continue;
      const Action& rcv = list[j];
      const bool act = is_activation(rcv.type);
      const auto it = in_flight_msgs.find({rcv.peer, r, act, seq[r].at(j)});
      if (it == in_flight_msgs.end()) continue;  // not sent yet
      const Message& msg = it->second;
      if (rcv.microbatch != msg.microbatch || rcv.chunk != msg.chunk)
        fail(where(rcv.peer, msg.send_index) + " would be received by " + where(r, j) +
             ": the data differ (micro-batch " + std::to_string(msg.microbatch) + " chunk " +
             std::to_string(msg.chunk) + " on arrival)");
      done[r][j - pc[r]] = 1;
      group_done_at[r] = std::max(group_done_at[r], std::max(clock[r], msg.sent_at));
      have[r].insert({act ? 0 : 1, rcv.microbatch, rcv.chunk});
      in_flight_msgs.erase(it);
      progress = true;
    }
    return progress;
  }

  bool finish_group(int r) {
    if (std::find(done[r].begin(), done[r].end(), 0) != done[r].end()) return false;
    clock[r] = group_done_at[r];
    pc[r] = group_end[r];
    return true;
  }

  std::string blocked_report() const {
    std::string msg;
    for (int r = 0; r < p; ++r) {
      if (pc[r] >= s.ranks[r].size()) continue;
      msg += "\n  rank " + std::to_string(r) + " waits in its paired operation:";
      for (size_t i = pc[r]; i < group_end[r]; ++i)
        if (!done[r][i - pc[r]]) msg += "\n    action " + std::to_string(i) + ": " + to_string(s.ranks[r][i]);
    }
    return msg;
  }

  ScheduleReport run() {
    std::vector<char> in_group(p, 0);
    for (;;) {
      bool progress = false, all_done = true;
      for (int r = 0; r < p; ++r) {
        const auto& list = s.ranks[r];
        while (pc[r] < list.size() && !list[pc[r]].is_p2p() && !in_group[r]) {
          run_compute(r);
          progress = true;
        }
        if (pc[r] < list.size() && !in_group[r]) {
          enter_group(r);
          in_group[r] = 1;
          progress = true;
        }
        if (pc[r] < list.size()) all_done = false;
      }
      for (int r = 0; r < p; ++r)
        if (in_group[r] && try_match(r)) progress = true;
      for (int r = 0; r < p; ++r)
        if (in_group[r] && finish_group(r)) {
          in_group[r] = 0;
          progress = true;
        }
      if (all_done) break;
      if (!progress) fail("it deadlocks (every blocked rank waits for a receive whose send never comes):" + blocked_report());
    }
    // Every (micro-batch, chunk) ran forward and backward on every rank; nothing received was left unused.
    for (int r = 0; r < p; ++r) {
      for (int c = 0; c < s.options.virtual_chunks; ++c)
        for (int mb = 0; mb < s.options.microbatches; ++mb) {
          if (!have[r].count({2, mb, c}) || !have[r].count({3, mb, c}))
            fail("rank " + std::to_string(r) + " never runs the " +
                 (have[r].count({2, mb, c}) ? "backward" : "forward") + " of micro-batch " + std::to_string(mb) +
                 " chunk " + std::to_string(c));
        }
    }
    for (const auto& [key, n] : sends_issued) {
      const auto it = recvs_issued.find(key);
      if (it == recvs_issued.end() || it->second != n)
        fail("rank " + std::to_string(std::get<0>(key)) + " sends " + std::to_string(n) + " " +
             (std::get<2>(key) ? "activations" : "gradients") + " to rank " + std::to_string(std::get<1>(key)) +
             " which receives " + std::to_string(it == recvs_issued.end() ? 0 : it->second));
    }
    ScheduleReport report;
    report.makespan = *std::max_element(clock.begin(), clock.end());
    report.ideal = double(s.options.microbatches) * s.options.virtual_chunks * (cost.forward + cost.backward);
    report.bubble_fraction = (report.makespan - report.ideal) / report.ideal;
    report.in_flight = peak;
    report.max_in_flight = *std::max_element(peak.begin(), peak.end());
    return report;
  }
};

}  // namespace

ScheduleReport check_schedule(const PipelineSchedule& schedule, const CostModel& cost) {
  const int p = schedule.options.stages;
  if (p < 1 || static_cast<int>(schedule.ranks.size()) != p)
    throw InvalidArgument("check_schedule: " + std::to_string(schedule.ranks.size()) +
                          " action lists for pp = " + std::to_string(p) + "; needs one per pipeline rank");
  if (!(cost.forward > 0) || !(cost.backward > 0))
    throw InvalidArgument("check_schedule: cost model forward = " + std::to_string(cost.forward) +
                          ", backward = " + std::to_string(cost.backward) + "; both must be > 0");
  return Simulator(schedule, cost).run();
}

}  // namespace nibble::parallel
