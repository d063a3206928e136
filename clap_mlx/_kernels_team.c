/* The helper team of _kernels_team.h.
 *
 * A job is published by filling its fields and then bumping `generation`. A helper joins it
 * by raising `active` and only then checking that the generation is still the one it saw
 * and the job is not `done`; the caller, once every unit is taken, sets `done` and waits for
 * `active` to fall to zero before it returns (its job context lives on its stack) or
 * publishes another. Both sides use sequentially consistent atomics, so either the caller
 * sees the helper in `active` and waits for it, or the helper sees `done` and leaves.
 */
#include "_kernels_team.h"

#include <stdatomic.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

#ifdef _WIN32 /* no helpers: every job runs on its caller */

int team_run(team_work work, void *ctx, ptrdiff_t start, ptrdiff_t stop, ptrdiff_t unit) {
    (void)unit;
    return start >= stop || work(ctx, start, stop);
}

int team_set_helpers(int count) {
    (void)count;
    return 0;
}

void team_set_spin_us(long us) { (void)us; }

#else

#include <pthread.h>
#include <sched.h>

#define MAX_HELPERS 64
#define DEFAULT_SPIN_US 2000 /* a forward's jobs follow each other well within this */

static struct {
    pthread_mutex_t lock; /* with `wake`: sleeping helpers */
    pthread_cond_t wake;
    pthread_mutex_t job_lock; /* one job at a time */
    int started;              /* helper threads made (under job_lock) */
    atomic_int in_use;        /* helpers [0, in_use) take part in jobs */
    atomic_long spin_ns;
    atomic_uint generation;
    atomic_int active; /* helpers inside the current job */
    atomic_int done;   /* the current job's units are all taken */
    /* the current job */
    team_work work;
    void *ctx;
    ptrdiff_t start, stop, unit, units;
    atomic_long next; /* the next unit to take */
    atomic_int failed;
} team = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .job_lock = PTHREAD_MUTEX_INITIALIZER,
    .spin_ns = DEFAULT_SPIN_US * 1000L,
};

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Takes units until none is left. */
static void drain(void) {
    long k;
    while ((k = atomic_fetch_add(&team.next, 1)) < team.units) {
        const ptrdiff_t a = team.start + (ptrdiff_t)k * team.unit;
        const ptrdiff_t b = a + team.unit < team.stop ? a + team.unit : team.stop;
        if (!team.work(team.ctx, a, b)) atomic_store(&team.failed, 1);
    }
}

/* The generation after `seen`: spins for spin_ns, then sleeps until it comes. */
static unsigned next_generation(unsigned seen, int index) {
    unsigned g;
    if (index < atomic_load(&team.in_use)) {
        const long long until = now_ns() + atomic_load(&team.spin_ns);
        for (int spins = 0;; spins++) {
            if ((g = atomic_load(&team.generation)) != seen) return g;
            if ((spins & 63) == 63 && (now_ns() >= until || index >= atomic_load(&team.in_use))) break;
            sched_yield(); /* the core goes to any other runnable thread (BLAS's, another pool's) */
        }
    }
    pthread_mutex_lock(&team.lock);
    while ((g = atomic_load(&team.generation)) == seen || index >= atomic_load(&team.in_use))
        pthread_cond_wait(&team.wake, &team.lock);
    pthread_mutex_unlock(&team.lock);
    return g;
}

static void *helper(void *arg) {
    const int index = (int)(ptrdiff_t)arg;
    unsigned seen = atomic_load(&team.generation);
    for (;;) {
        seen = next_generation(seen, index);
        atomic_fetch_add(&team.active, 1);
        /* in use checked again: team_set_helpers() may have dropped this helper before the job came */
        if (atomic_load(&team.generation) == seen && !atomic_load(&team.done) && index < atomic_load(&team.in_use))
            drain();
        atomic_fetch_sub(&team.active, 1);
    }
    return NULL;
}

/* A forked child has none of the helper threads (and maybe a lock a helper held): its jobs run
 * on the caller until team_set_helpers() makes new ones. */
static void forked_child(void) {
    pthread_mutex_init(&team.lock, NULL);
    pthread_cond_init(&team.wake, NULL);
    pthread_mutex_init(&team.job_lock, NULL);
    team.started = 0;
    atomic_store(&team.in_use, 0);
    atomic_store(&team.active, 0);
}

static void register_fork_handler(void) { pthread_atfork(NULL, NULL, forked_child); }

int team_set_helpers(int count) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_fork_handler);
    if (count < 0) count = 0;
    if (count > MAX_HELPERS) count = MAX_HELPERS;
    pthread_mutex_lock(&team.job_lock);
    while (team.started < count) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, helper, (void *)(ptrdiff_t)team.started) != 0) break;
        pthread_detach(thread);
        team.started++;
    }
    const int in_use = count < team.started ? count : team.started;
    pthread_mutex_lock(&team.lock); /* helpers sleeping while out of use wait on `wake` */
    atomic_store(&team.in_use, in_use);
    pthread_cond_broadcast(&team.wake);
    pthread_mutex_unlock(&team.lock);
    pthread_mutex_unlock(&team.job_lock);
    return in_use;
}

void team_set_spin_us(long us) { atomic_store(&team.spin_ns, us > 0 ? us * 1000L : 0); }

int team_run(team_work work, void *ctx, ptrdiff_t start, ptrdiff_t stop, ptrdiff_t unit) {
    if (start >= stop) return 1;
    if (unit <= 0 || unit >= stop - start || atomic_load(&team.in_use) == 0 ||
        pthread_mutex_trylock(&team.job_lock) != 0)
        return work(ctx, start, stop);
    team.work = work;
    team.ctx = ctx;
    team.start = start;
    team.stop = stop;
    team.unit = unit;
    team.units = (stop - start + unit - 1) / unit;
    atomic_store(&team.next, 0);
    atomic_store(&team.failed, 0);
    atomic_store(&team.done, 0);
    atomic_fetch_add(&team.generation, 1); /* publishes the fields above */
    pthread_mutex_lock(&team.lock);        /* helpers past their spin sleep on `wake` */
    pthread_cond_broadcast(&team.wake);
    pthread_mutex_unlock(&team.lock);
    drain();
    atomic_store(&team.done, 1);
    while (atomic_load(&team.active) != 0) CPU_RELAX();
    const int ok = !atomic_load(&team.failed);
    pthread_mutex_unlock(&team.job_lock);
    return ok;
}

#endif
