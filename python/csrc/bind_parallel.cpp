// nibble.parallel's C++ half: the rank bootstrap, the Mesh, and the Communicator collectives on torch CPU
// tensors. Tensors reach the torch-free parallel/ library as typed views of their own storage (zero copy);
// python/nibble/parallel.py shapes the outputs and makes non-contiguous tensors contiguous. The GIL is released
// while a call waits, so other Python threads run (and a rank waiting on a late peer does not freeze them).
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/mesh.h"
#include "parallel/nn/host_staging.h"
#include "parallel/runtime.h"
#include "precision/error.h"
#include "python/csrc/bindings.h"

namespace nibble::python {
namespace {

namespace py = pybind11;
namespace par = nibble::parallel;

par::DType element_type(const torch::Tensor& t, const std::string& op, const char* what) {
  switch (t.scalar_type()) {
    case torch::kFloat32:
      return par::DType::kFloat32;
    case torch::kFloat64:
      return par::DType::kFloat64;
    case torch::kInt32:
      return par::DType::kInt32;
    case torch::kInt64:
      return par::DType::kInt64;
    case torch::kUInt8:
      return par::DType::kUInt8;
    case torch::kBFloat16:
      return par::DType::kBFloat16;
    default:
      break;
  }
  throw py::type_error("nibble.parallel." + op + ": " + what + " has dtype " +
                       std::string(c10::toString(t.scalar_type())) +
                       "; supported: torch.float32, torch.float64, torch.int32, torch.int64, torch.uint8, "
                       "torch.bfloat16");
}

void check_tensor(const torch::Tensor& t, const std::string& op, const char* what) {
  // (Device tensors arrive here as their host-staged copies: par::nn::HostStaged.)
  if (!t.device().is_cpu())
    throw InvalidArgument("nibble.parallel." + op + ": " + what + " is on " + t.device().str() +
                          "; expected a host-staged CPU tensor");
  if (!t.is_contiguous()) throw InvalidArgument("nibble.parallel." + op + ": " + what + " is not contiguous");
}

par::View view_of(torch::Tensor& t, const std::string& op, const char* what) {
  check_tensor(t, op, what);
  return par::View{t.data_ptr(), static_cast<size_t>(t.numel()), element_type(t, op, what)};
}
par::ConstView const_view_of(const torch::Tensor& t, const std::string& op, const char* what) {
  check_tensor(t, op, what);
  return par::ConstView{t.data_ptr(), static_cast<size_t>(t.numel()), element_type(t, op, what)};
}

// A group from Python must not outlive the runtime: after shutdown() MPI is finalised.
void check_live(const std::string& op) {
  if (!par::is_initialized())
    throw Error("nibble.parallel." + op +
                ": the runtime is not initialised (call nibble.parallel.init(), and do "
                "not use groups after shutdown())");
}

std::vector<size_t> counts_of(const std::optional<std::vector<int64_t>>& counts, const std::string& op,
                              const char* what) {
  std::vector<size_t> c;
  if (!counts) return c;
  for (int64_t x : *counts) {
    if (x < 0)
      throw InvalidArgument("nibble.parallel." + op + ": " + what + " has a negative entry " + std::to_string(x));
    c.push_back(static_cast<size_t>(x));
  }
  return c;
}

par::ModelShape model_of(const py::dict& d) {
  par::ModelShape m;
  for (const auto& [key, value] : d) {
    const std::string k = py::str(key);
    if (k == "sequence_parallel") {
      m.sequence_parallel = value.cast<bool>();
      continue;
    }
    int64_t* field = k == "num_heads"      ? &m.num_heads
                     : k == "num_kv_heads" ? &m.num_kv_heads
                     : k == "hidden"       ? &m.hidden
                     : k == "ffn_hidden"   ? &m.ffn_hidden
                     : k == "vocab"        ? &m.vocab
                     : k == "num_layers"   ? &m.num_layers
                     : k == "seq_len"      ? &m.seq_len
                                           : nullptr;
    if (field == nullptr)
      throw InvalidArgument("nibble.parallel: unknown model key '" + k +
                            "'; valid: num_heads, num_kv_heads, hidden, ffn_hidden, vocab, num_layers, seq_len, "
                            "sequence_parallel");
    *field = value.cast<int64_t>();
  }
  return m;
}

std::chrono::milliseconds to_ms(double seconds, const std::string& what) {
  if (!(seconds > 0))
    throw InvalidArgument("nibble.parallel: " + what + " must be a positive number of seconds, got " +
                          std::to_string(seconds));
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0 + 0.5));
}

py::dict info_dict(const par::RuntimeInfo& i) {
  py::dict env;
  env["launcher"] = i.env.launcher;
  env["rank"] = i.env.rank;
  env["size"] = i.env.size;
  env["local_rank"] = i.env.local_rank;
  env["OMPI_COMM_WORLD_RANK"] = i.env.ompi_rank;
  env["OMPI_COMM_WORLD_SIZE"] = i.env.ompi_size;
  env["OMPI_COMM_WORLD_LOCAL_RANK"] = i.env.ompi_local_rank;
  env["PMI_RANK"] = i.env.pmi_rank;
  env["PMI_SIZE"] = i.env.pmi_size;
  env["SLURM_PROCID"] = i.env.slurm_procid;
  env["SLURM_NTASKS"] = i.env.slurm_ntasks;
  env["SLURM_LOCALID"] = i.env.slurm_localid;
  py::dict d;
  d["rank"] = i.rank;
  d["world_size"] = i.world_size;
  d["local_rank"] = i.local_rank;
  d["local_size"] = i.local_size;
  d["device"] = i.device;
  d["device_count"] = i.device_count;
  d["thread_level"] = i.thread_level;
  d["owns_mpi"] = i.owns_mpi;
  d["hostname"] = i.hostname;
  d["deadline"] = std::chrono::duration<double>(i.deadline).count();
  d["env"] = env;
  return d;
}

}  // namespace

void bind_parallel(py::module_& m) {
  m.def(
      "parallel_init",
      [](double deadline, bool select_device) {
        par::InitOptions o;
        o.deadline = to_ms(deadline, "deadline");
        o.select_device = select_device;
        return info_dict(par::init(o));
      },
      py::arg("deadline"), py::arg("select_device"));
  m.def("parallel_is_initialized", &par::is_initialized);
  m.def("parallel_shutdown", &par::shutdown);
  m.def("parallel_set_step", &par::set_step, py::arg("step"));
  m.def("parallel_current_step", &par::current_step);
  m.def(
      "parallel_world", [] { return &par::world(); }, py::return_value_policy::reference);
  m.def(
      "parallel_validate_mesh",
      [](int tp, int cp, int dp, int pp, int64_t world_size, const py::dict& model) {
        par::validate_mesh({tp, cp, dp, pp}, world_size, model_of(model));
      },
      py::arg("tp"), py::arg("cp"), py::arg("dp"), py::arg("pp"), py::arg("world_size"), py::arg("model"));
  m.def(
      "parallel_group_members",
      [](int tp, int cp, int dp, int pp, const std::string& kind, int rank) {
        return par::group_members({tp, cp, dp, pp}, par::parse_group_kind(kind), rank);
      },
      py::arg("tp"), py::arg("cp"), py::arg("dp"), py::arg("pp"), py::arg("kind"), py::arg("rank"));

  py::class_<par::Communicator, std::unique_ptr<par::Communicator, py::nodelete>>(m, "Communicator")
      .def_property_readonly("name", &par::Communicator::name)
      .def_property_readonly("backend", &par::Communicator::backend)
      .def_property_readonly("rank", &par::Communicator::rank)
      .def_property_readonly("size", &par::Communicator::size)
      .def_property_readonly("world_rank", &par::Communicator::world_rank)
      .def_property_readonly("members", &par::Communicator::members)
      .def_property_readonly("failed", &par::Communicator::failed)
      .def_property(
          "deadline", [](const par::Communicator& c) { return std::chrono::duration<double>(c.deadline()).count(); },
          [](par::Communicator& c, double s) { c.set_deadline(to_ms(s, "deadline")); })
      .def(
          "all_reduce",
          [](par::Communicator& c, torch::Tensor t, const std::string& op) {
            check_live("all_reduce");
            par::nn::HostStaged st(t, true, c);
            const par::View v = view_of(st.host(), "all_reduce", "tensor");
            const par::ReduceOp r = par::parse_reduce_op(op);
            py::gil_scoped_release release;
            c.all_reduce(v, v, r);
            st.copy_out();
          },
          py::arg("tensor"), py::arg("op"))
      .def(
          "all_gather",
          [](par::Communicator& c, torch::Tensor out, const torch::Tensor& in,
             const std::optional<std::vector<int64_t>>& counts) {
            check_live("all_gather");
            par::nn::HostStaged si(in, true, c), so(out, false, c);
            const par::ConstView i = const_view_of(si.host(), "all_gather", "input");
            const par::View o = view_of(so.host(), "all_gather", "output");
            const std::vector<size_t> n = counts_of(counts, "all_gather", "counts");
            py::gil_scoped_release release;
            c.all_gather(i, o, n);
            so.copy_out();
          },
          py::arg("out"), py::arg("input"), py::arg("counts"))
      .def(
          "reduce_scatter",
          [](par::Communicator& c, torch::Tensor out, const torch::Tensor& in, const std::string& op,
             const std::optional<std::vector<int64_t>>& counts) {
            check_live("reduce_scatter");
            par::nn::HostStaged si(in, true, c), so(out, false, c);
            const par::ConstView i = const_view_of(si.host(), "reduce_scatter", "input");
            const par::View o = view_of(so.host(), "reduce_scatter", "output");
            const par::ReduceOp r = par::parse_reduce_op(op);
            const std::vector<size_t> n = counts_of(counts, "reduce_scatter", "counts");
            py::gil_scoped_release release;
            c.reduce_scatter(i, o, r, n);
            so.copy_out();
          },
          py::arg("out"), py::arg("input"), py::arg("op"), py::arg("counts"))
      .def(
          "all_to_all",
          [](par::Communicator& c, torch::Tensor out, const torch::Tensor& in,
             const std::optional<std::vector<int64_t>>& send_counts,
             const std::optional<std::vector<int64_t>>& recv_counts) {
            check_live("all_to_all");
            par::nn::HostStaged si(in, true, c), so(out, false, c);
            const par::ConstView i = const_view_of(si.host(), "all_to_all", "input");
            const par::View o = view_of(so.host(), "all_to_all", "output");
            const std::vector<size_t> s = counts_of(send_counts, "all_to_all", "send_counts");
            const std::vector<size_t> r = counts_of(recv_counts, "all_to_all", "recv_counts");
            py::gil_scoped_release release;
            c.all_to_all(i, o, s, r);
            so.copy_out();
          },
          py::arg("out"), py::arg("input"), py::arg("send_counts"), py::arg("recv_counts"))
      .def(
          "broadcast",
          [](par::Communicator& c, torch::Tensor t, int root) {
            check_live("broadcast");
            par::nn::HostStaged st(t, true, c);
            const par::View v = view_of(st.host(), "broadcast", "tensor");
            py::gil_scoped_release release;
            c.broadcast(v, root);
            st.copy_out();
          },
          py::arg("tensor"), py::arg("root"))
      .def(
          "send",
          [](par::Communicator& c, const torch::Tensor& t, int peer, int tag) {
            check_live("send");
            par::nn::HostStaged st(t, true, c);
            const par::ConstView v = const_view_of(st.host(), "send", "tensor");
            py::gil_scoped_release release;
            c.send(v, peer, tag);
          },
          py::arg("tensor"), py::arg("peer"), py::arg("tag"))
      .def(
          "recv",
          [](par::Communicator& c, torch::Tensor t, int peer, int tag) {
            check_live("recv");
            par::nn::HostStaged st(t, false, c);
            const par::View v = view_of(st.host(), "recv", "tensor");
            py::gil_scoped_release release;
            c.recv(v, peer, tag);
            st.copy_out();
          },
          py::arg("tensor"), py::arg("peer"), py::arg("tag"))
      .def(
          "send_recv",
          [](par::Communicator& c, const torch::Tensor& send, int dst, torch::Tensor recv, int src, int tag) {
            check_live("send_recv");
            par::nn::HostStaged ss(send, true, c), sr(recv, false, c);
            const par::ConstView s = const_view_of(ss.host(), "send_recv", "send tensor");
            const par::View r = view_of(sr.host(), "send_recv", "receive tensor");
            py::gil_scoped_release release;
            c.send_recv(s, dst, r, src, tag);
            sr.copy_out();
          },
          py::arg("send"), py::arg("dst"), py::arg("recv"), py::arg("src"), py::arg("tag"))
      .def("barrier", [](par::Communicator& c) {
        check_live("barrier");
        py::gil_scoped_release release;
        c.barrier();
      });

  py::class_<par::Mesh>(m, "ParallelMesh")
      .def(py::init([](int tp, int cp, int dp, int pp, const py::dict& model, std::optional<double> deadline) {
             check_live("Mesh");
             const par::ModelShape shape = model_of(model);
             const par::CommOptions options{deadline ? to_ms(*deadline, "deadline") : par::info().deadline};
             py::gil_scoped_release release;
             return std::make_unique<par::Mesh>(par::MeshShape{tp, cp, dp, pp}, shape, options);
           }),
           py::arg("tp"), py::arg("cp"), py::arg("dp"), py::arg("pp"), py::arg("model"), py::arg("deadline"))
      .def_property_readonly("shape",
                             [](const par::Mesh& mesh) {
                               const par::MeshShape& s = mesh.shape();
                               return py::make_tuple(s.tp, s.cp, s.dp, s.pp);
                             })
      .def_property_readonly("coord",
                             [](const par::Mesh& mesh) {
                               const par::MeshCoord& c = mesh.coord();
                               return py::make_tuple(c.tp, c.cp, c.dp, c.pp);
                             })
      .def(
          "group",
          [](const par::Mesh& mesh, const std::string& name) { return &mesh.group(par::parse_group_kind(name)); },
          py::arg("name"), py::return_value_policy::reference_internal);
}

}  // namespace nibble::python
