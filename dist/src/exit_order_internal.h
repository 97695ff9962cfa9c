// The Runtime's side of worldExitOrder(): it opens the world's exit order once MPI is up
// (COLLECTIVE: duplicates MPI_COMM_WORLD) and closes it before MPI_Finalize.
#pragma once

namespace cohort::dist::detail {

void openWorldExitOrder();
// freeComm = false when the job is broken (MPI_Comm_free could wait on gone peers).
void closeWorldExitOrder(bool freeComm);

}  // namespace cohort::dist::detail
