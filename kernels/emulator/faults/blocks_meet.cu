// Emulator only, like faults.cu: shows whether a launch's blocks run at the same time
// (tests/kernels/emulator_faults.rs). Two blocks of one thread each raise their flag, then poll
// for the other's at most 2^28 times. Blocks that run at once (block_threads > 1) both see the
// other's flag: met = {1, 1}. Blocks run one after another cannot: the first to run gives up.
#include "realm.cuh"

REALM_KERNEL(blocks_meet, 32, (gptr<int> flags, gptr<unsigned> met)) {
  const unsigned me = blockIdx.x, other = 1 - blockIdx.x;
  atomic_add(flags + me, 1);
  for (unsigned polls = 0; load_cg(flags + other) == 0 && polls < (1u << 28); ++polls) {
  }
  met[me] = load_cg(flags + other) != 0 ? 1u : 0u;
}
