// The CPU backend's same-host fast path: point to point over shared-memory rings, Gloo for the
// rest. Private to collectives/ (the factory is the only user); see docs/fastpath.md.
//
// CreateCpuCommunicator connects Gloo as before, then every rank publishes in the group's store
// whether the fast path is on (CommOptions::shm, else ARCHI_SHM, else the built-in default), its
// host identity (kernel boot id + pid and mount namespaces) and its pid. A pair of ranks uses the
// fast path iff both have it on and the identities match; both ends reach the same verdict. When no
// pair of this rank qualifies, the plain GlooCommunicator is returned (nothing changes).
//
// Otherwise the result is a ShmP2pCommunicator:
//   - per same-host peer, one segment (shm_open, unlinked as soon as the peer has mapped it, so a
//     crash leaves no name behind; segments of dead creators are removed at start-up) holding two
//     single-producer single-consumer rings (one per direction) and the futex words of each side;
//   - per such peer one progress thread (adaptive spinning, then a futex sleep); a Work::Wait also
//     drives progress while it spins, so a waiting rank needs no thread hand-off;
//   - small messages (<= 64 KiB) travel inline in the ring; larger ones announce themselves and
//     the receiver copies the payload straight from the sender's tensor (process_vm_readv, one
//     copy) or, where the kernel refuses that, asks for it to be streamed through the ring in
//     256 KiB chunks (two copies, pipelined);
//   - one watchdog thread: op deadlines and the peers' pidfds (a dead peer breaks the communicator
//     at once, with a message naming its rank and pid).
// Header semantics are those of the Gloo path: the receiver checks dtype and byte size, a mismatch
// fails both sides with kInvalidArgument (the payload is not moved) and the communicator stays
// healthy; receives are matched per (peer, tag) in issue order; a send completes once the receiver
// has the payload. Breaking (peer death, op deadline, Abort, a Gloo failure) breaks both the fast
// path and the Gloo communicator, runs CommOptions::on_broken once, and completes every pending op
// with kAborted (kDeadlineExceeded for the op that timed out).
// Thread safety: as Communicator. Abort() waits at most for one in-flight copy of this process
// (bounded by the message size), never for the peer.
#pragma once

#include <memory>

#include "collectives/communicator.h"

namespace archi {

// The CPU backend (what CreateCommunicator(kGloo, ...) returns).
Result<std::unique_ptr<Communicator>> CreateCpuCommunicator(int rank, int size,
                                                            std::shared_ptr<Store> store,
                                                            CommOptions options);

// Whether this rank offers the fast path under `options` (CommOptions::shm, else ARCHI_SHM, else
// the built-in default).
bool ShmFastPathEnabled(const CommOptions& options);

// True when `comm` sends to and receives from `peer` over shared memory.
bool UsesShmFastPath(const Communicator& comm, int peer);

// Removes the segments (/dev/shm/archi-shm-<pid>-*) whose creating process no longer exists;
// returns how many. Runs once per process before the first fast-path connection.
int RemoveStaleShmSegments();

// Prefix of the fast path's segment names under /dev/shm ("archi-shm-"), for tests and tools.
inline constexpr const char* kShmSegmentPrefix = "archi-shm-";

}  // namespace archi
