/* A team of helper threads that run one job's units together with the calling thread.
 *
 * Between jobs a helper spins for a while before it sleeps: a forward issues its jobs back
 * to back (~40 per audio forward, a few hundred microseconds each), and a helper that slept
 * between them would need a wake-up for each. On a VM that halts idle vCPUs (no halt
 * polling) such a wake-up takes from ~0.1 ms to well over a millisecond. OpenMP runtimes
 * (torch's) and OpenBLAS's threads spin the same way. Plain C, no SIMD: one compilation unit.
 */
#ifndef CLAP_KERNELS_TEAM_H
#define CLAP_KERNELS_TEAM_H

#include <stddef.h>

/* One unit of a job: items [start, stop). Returns 0 when it failed (out of memory). */
typedef int (*team_work)(void *ctx, ptrdiff_t start, ptrdiff_t stop);

/* Runs work over [start, stop) in units of `unit` items that the caller and the helpers take
 * from a shared counter (a late or slowed thread takes fewer). Returns 0 if a unit failed.
 * One job at a time: a second caller while one runs does its job alone. */
int team_run(team_work work, void *ctx, ptrdiff_t start, ptrdiff_t stop, ptrdiff_t unit);

/* Starts helpers up to `count` (helpers are never stopped; a smaller count idles the rest).
 * Returns the count now in use, which is lower when threads cannot be made. */
int team_set_helpers(int count);

/* How long an idle helper spins before it sleeps, in microseconds (0: sleeps at once). */
void team_set_spin_us(long us);

#endif
