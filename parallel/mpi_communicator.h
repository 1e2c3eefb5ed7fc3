#pragma once
// The MPI backend: CPU buffers, every call issued as the nonblocking MPI operation (MPI_Iallreduce, MPI_Isend,
// ...) and completed by polling MPI_Test against the deadline. The group's errors come back as return codes
// (MPI_ERRORS_RETURN), never as an MPI abort.
#include <mpi.h>

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace nibble::parallel {

class MpiCommunicator final : public Communicator {
 public:
  // Adopts `comm` (freed by the destructor).
  MpiCommunicator(MPI_Comm comm, std::string name, const CommOptions& options = {});
  ~MpiCommunicator() override;

  // A communicator over the same ranks as `parent` (MPI_Comm_idup, so it too honours the deadline).
  static std::unique_ptr<MpiCommunicator> duplicate(MPI_Comm parent, std::string name, const CommOptions& options = {});
  // MPI_Comm_split of `parent`: collective over `parent`; ranks with equal colour form a group, ordered by key.
  // MPI_Comm_split has no nonblocking form: call it only after a deadline-bound collective has shown that
  // every rank of `parent` is present (Mesh does).
  static std::unique_ptr<MpiCommunicator> split(MPI_Comm parent, int color, int key, std::string name,
                                                const CommOptions& options = {});

  MPI_Comm handle() const { return comm_; }
  // How many MpiCommunicators this process has created (the tests use it to show that validation fails
  // before any group is allocated).
  static int64_t instances_created();

 protected:
  std::unique_ptr<detail::PendingOp> do_all_reduce(ConstView in, View out, ReduceOp op) override;
  std::unique_ptr<detail::PendingOp> do_reduce_scatter(ConstView in, View out, ReduceOp op,
                                                       std::span<const size_t> counts) override;
  std::unique_ptr<detail::PendingOp> do_all_gather(ConstView in, View out, std::span<const size_t> counts) override;
  std::unique_ptr<detail::PendingOp> do_all_to_all(ConstView in, View out, std::span<const size_t> send_counts,
                                                   std::span<const size_t> recv_counts) override;
  std::unique_ptr<detail::PendingOp> do_broadcast(View buf, int root) override;
  std::unique_ptr<detail::PendingOp> do_send(ConstView buf, int peer, int tag) override;
  std::unique_ptr<detail::PendingOp> do_recv(View buf, int peer, int tag) override;
  std::unique_ptr<detail::PendingOp> do_send_recv(ConstView send, int dst, View recv, int src, int tag) override;
  std::unique_ptr<detail::PendingOp> do_barrier() override;

 private:
  struct Members;
  MpiCommunicator(MPI_Comm comm, std::string name, const CommOptions& options, Members members);
  static Members describe_comm(MPI_Comm comm);

  MPI_Comm comm_ = MPI_COMM_NULL;
  // Tag of the paired exchanges two-rank groups use for all_gather / reduce_scatter (above every user tag, so
  // they never match a user's send/recv); -1 when MPI_TAG_UB leaves no room (then libnbc is used).
  int exchange_tag_ = -1;
};

// Throws nibble::Error naming `call` and MPI's description of `rc` unless rc == MPI_SUCCESS.
void check_mpi(int rc, const char* call);

}  // namespace nibble::parallel
