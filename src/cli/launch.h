// `vgen launch -n N [--master-addr A] [--master-port P] -- COMMAND ...`: runs N copies of vgen
// (one per GPU) with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK = rank, MASTER_ADDR,
// MASTER_PORT), e.g. `vgen launch -n 4 -- generate --ulysses-size 4 ...`. It waits for all of
// them; when one fails (an exit status other than 0, or a signal) it says which and how, stops
// the others (SIGTERM, then SIGKILL after 10 s) and exits with 1.
#pragma once

namespace vgen::cli {

// args: what follows `launch` on the command line. Returns the exit status.
int run_launch(int argc, char** argv);

}  // namespace vgen::cli
