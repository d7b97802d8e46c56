/* shmcam shared memory: what frame rings (ring.h) and record rings (records.h) share.
 * The layouts are described field by field in docs/ring.md; shmcam/shm/layout.py is the same
 * contract in Python. Header-only; Linux; C11 with GCC/Clang __atomic builtins (gcc's default
 * -std=gnu17 is fine).
 *
 * A ring is a POSIX shared-memory object /dev/shm/<base>.g<N> (generation N): a 128-byte header
 * whose first 88 bytes are shmcam_header, then slot_count slots of slot_stride bytes. Item n
 * (a frame, a record) lives in slot n % slot_count; the slot's first 8 bytes are its sequence
 * word: 0 never written, 2n+1 while item n is written, 2n+2 once item n is complete. One
 * writer; any number of readers, which never write.
 *
 * Memory ordering (any CPU): the writer stores seq = 2n+1, then a release fence, then the item,
 * then seq = 2n+2 with release; it publishes write_seq = n+1 with release. A reader loads seq
 * with acquire (must be 2n+2), reads, then an acquire fence, then loads seq again: unchanged
 * means what it read is item n, whole. shmcam_slot_begin_read / _end_read and
 * shmcam_slot_begin_write / _end_write do exactly this; metadata and channel tables are copied
 * with relaxed atomic loads and stores (shmcam_load_words / _store_words), so a reader racing
 * a writer that laps it reads garbage it then discards, never undefined behaviour. Payloads
 * are read in place: what a reader computed from a payload counts only if the slot is still
 * intact afterwards (..._intact functions). The Python side runs on x86-64 only (its stores
 * and loads are ordered by the CPU there); these functions are correct on any architecture.
 */
#ifndef SHMCAM_COMMON_H
#define SHMCAM_COMMON_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SHMCAM_SHM_DIR "/dev/shm"
#define SHMCAM_SPACE_MARGIN (64u << 20) /* /dev/shm bytes a new segment leaves free */
#define SHMCAM_NAME_MAX 240 /* segment names: shmcam.<node>.<instance>[.<role>].g<N> */
#define SHMCAM_HEADER_SIZE 128u
#define SHMCAM_ALIGN 64u
#define SHMCAM_LIVE 0u
#define SHMCAM_SUPERSEDED 1u /* a newer generation <base>.g<N+1>... exists: move to it */
#define SHMCAM_CLOSED 2u     /* the writer stopped */

/* The first 88 bytes of every ring header. */
typedef struct {
    char magic[8];             /*  0 "SHMCAMRG" frames, "SHMCAMRC" records */
    uint32_t version;          /*  8 1 */
    uint32_t header_size;      /* 12 offset of slot 0 (128) */
    int64_t owner_pid;         /* 16 the process that created this generation (its writer) */
    uint64_t created_ns;       /* 24 CLOCK_REALTIME */
    uint32_t slot_count;       /* 32 */
    uint32_t slot_header_size; /* 36 frames 128, records 64 */
    uint64_t slot_stride;      /* 40 bytes from one slot to the next, multiple of 64 */
    uint64_t payload_capacity; /* 48 slot_stride - slot_header_size */
    uint64_t generation;       /* 56 N of the segment name <base>.g<N> */
    int64_t write_seq;         /* 64 items published over the ring's life; newest = write_seq-1 */
    int64_t first_seq;         /* 72 write_seq when this generation was created */
    uint32_t state;            /* 80 SHMCAM_LIVE / _SUPERSEDED / _CLOSED */
    uint32_t futex;            /* 84 incremented after every publication and state change */
} shmcam_header;

_Static_assert(sizeof(shmcam_header) == 88, "common header is 88 bytes");
_Static_assert(offsetof(shmcam_header, write_seq) == 64, "write_seq at 64");
_Static_assert(offsetof(shmcam_header, futex) == 84, "futex at 84");

static inline uint64_t shmcam_align(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

static inline uint64_t shmcam_now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- Atomics: the only way the header's live fields and slot sequence words are touched. */

static inline int64_t shmcam_write_seq(const shmcam_header *h) {
    return __atomic_load_n(&h->write_seq, __ATOMIC_ACQUIRE);
}

static inline uint32_t shmcam_state(const shmcam_header *h) {
    return __atomic_load_n(&h->state, __ATOMIC_ACQUIRE);
}

static inline uint32_t shmcam_futex_word(const shmcam_header *h) {
    return __atomic_load_n(&h->futex, __ATOMIC_ACQUIRE);
}

/* Sleep until the futex word differs from `seen` (a publication) or timeout_ms passes. */
static inline void shmcam_futex_wait(const shmcam_header *h, uint32_t seen, long timeout_ms) {
    struct timespec ts = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
    syscall(SYS_futex, &h->futex, FUTEX_WAIT, seen, &ts, NULL, 0);
}

/* Bump the futex word and wake every waiter (shared futex: the waiters are other processes). */
static inline void shmcam_futex_wake(shmcam_header *h) {
    __atomic_fetch_add(&h->futex, 1u, __ATOMIC_RELEASE);
    syscall(SYS_futex, &h->futex, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static inline void shmcam_set_state(shmcam_header *h, uint32_t state) {
    __atomic_store_n(&h->state, state, __ATOMIC_RELEASE);
    shmcam_futex_wake(h);
}

/* The slot of item n. */
static inline const char *shmcam_slot(const shmcam_header *h, int64_t n) {
    return (const char *)h + h->header_size + (uint64_t)n % h->slot_count * h->slot_stride;
}

/* Reader: 1 if the slot holds item n complete; then read, then call shmcam_slot_end_read. */
static inline int shmcam_slot_begin_read(const char *slot, int64_t n) {
    return __atomic_load_n((const uint64_t *)slot, __ATOMIC_ACQUIRE) == (uint64_t)(2 * n + 2);
}

/* Reader: 1 if everything read since shmcam_slot_begin_read was item n, untouched. */
static inline int shmcam_slot_end_read(const char *slot, int64_t n) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE); /* the reads above happen before the load below */
    return __atomic_load_n((const uint64_t *)slot, __ATOMIC_RELAXED) == (uint64_t)(2 * n + 2);
}

/* Writer: mark the slot as being rewritten for item n, before touching anything in it. */
static inline void shmcam_slot_begin_write(char *slot, int64_t n) {
    __atomic_store_n((uint64_t *)slot, (uint64_t)(2 * n + 1), __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE); /* ...so no store below is seen before it */
}

/* Writer: item n is complete; then shmcam_publish. */
static inline void shmcam_slot_end_write(char *slot, int64_t n) {
    __atomic_store_n((uint64_t *)slot, (uint64_t)(2 * n + 2), __ATOMIC_RELEASE);
}

static inline void shmcam_publish(shmcam_header *h, int64_t n) {
    __atomic_store_n(&h->write_seq, n + 1, __ATOMIC_RELEASE);
    shmcam_futex_wake(h);
}

/* Copy nbytes (a multiple of 8, 8-aligned) with relaxed atomic word loads / stores. */
static inline void shmcam_load_words(void *dst, const void *src, size_t nbytes) {
    uint64_t *d = (uint64_t *)dst;
    const uint64_t *s = (const uint64_t *)src;
    for (size_t i = 0; i < nbytes / 8; i++) d[i] = __atomic_load_n(&s[i], __ATOMIC_RELAXED);
}

static inline void shmcam_store_words(void *dst, const void *src, size_t nbytes) {
    uint64_t *d = (uint64_t *)dst;
    const uint64_t *s = (const uint64_t *)src;
    for (size_t i = 0; i < nbytes / 8; i++) __atomic_store_n(&d[i], s[i], __ATOMIC_RELAXED);
}

/* ---- Segments and generations */

typedef struct {
    char *base; /* the mapping */
    size_t size;
    uint64_t inode; /* tells a re-created segment of the same name from this one */
    char name[SHMCAM_NAME_MAX];
} shmcam_segment;

/* Map /dev/shm/<name>. Returns 0, or -1 with errno set. */
static inline int shmcam_segment_map(shmcam_segment *s, const char *name, int writable) {
    char path[SHMCAM_NAME_MAX + sizeof SHMCAM_SHM_DIR + 1];
    if (strlen(name) >= SHMCAM_NAME_MAX || strchr(name, '/') || name[0] == '.') {
        errno = EINVAL;
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s", SHMCAM_SHM_DIR, name);
    int fd = open(path, writable ? O_RDWR : O_RDONLY);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < SHMCAM_HEADER_SIZE) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ | (writable ? PROT_WRITE : 0),
                      MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) return -1;
    s->base = (char *)base;
    s->size = (size_t)st.st_size;
    s->inode = (uint64_t)st.st_ino;
    strcpy(s->name, name);
    return 0;
}

static inline void shmcam_segment_unmap(shmcam_segment *s) {
    if (s->base) munmap(s->base, s->size);
    s->base = NULL;
}

/* 1 if a mapped segment is a ring of this magic and version with a consistent geometry. */
static inline int shmcam_header_valid(const shmcam_segment *s, const char magic[8],
                                      uint32_t slot_header_size) {
    const shmcam_header *h = (const shmcam_header *)s->base;
    return memcmp(h->magic, magic, 8) == 0 && h->version == 1 &&
           h->header_size == SHMCAM_HEADER_SIZE && h->slot_header_size == slot_header_size &&
           h->slot_count >= 1 && h->slot_stride % SHMCAM_ALIGN == 0 &&
           h->slot_stride == h->payload_capacity + slot_header_size &&
           h->slot_stride <= (s->size - SHMCAM_HEADER_SIZE) / h->slot_count;
}

/* The N of the newest generation <base>.g<N> in /dev/shm, or -1 if there is none. With
 * `below` >= 0, the newest one older than `below` instead (to retire them one by one). */
static inline int64_t shmcam_newest_generation(const char *base, int64_t below) {
    DIR *dir = opendir(SHMCAM_SHM_DIR);
    if (!dir) return -1;
    size_t len = strlen(base);
    int64_t newest = -1;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        const char *p = e->d_name + len + 2;
        if (strncmp(e->d_name, base, len) != 0 || strncmp(e->d_name + len, ".g", 2) != 0 || !*p)
            continue;
        int64_t n = 0;
        int digits = 0;
        for (; *p >= '0' && *p <= '9' && digits < 18; p++, digits++) n = n * 10 + (*p - '0');
        if (*p == '\0' && n > newest && (below < 0 || n < below)) newest = n;
    }
    closedir(dir);
    return newest;
}

/* Copy a ring's base name, with room left for ".g<N>" and a draft suffix. */
static inline int shmcam_copy_base(char to[SHMCAM_NAME_MAX], const char *base) {
    if (strlen(base) >= SHMCAM_NAME_MAX - 24) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(to, base);
    return 0;
}

static inline int shmcam_generation_name(char *out, const char *base, int64_t generation) {
    int len = snprintf(out, SHMCAM_NAME_MAX, "%s.g%lld", base, (long long)generation);
    if (len < 0 || len >= SHMCAM_NAME_MAX) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* ---- A reader that follows a ring across generations */

typedef struct {
    char base[SHMCAM_NAME_MAX];
    char magic[8];
    uint32_t slot_header_size;
    int latest;                /* policy: 0 every item in order, 1 always the newest */
    shmcam_segment segment;    /* the generation being read */
    const shmcam_header *header;
    int64_t next;              /* the next item to hand out */
    uint64_t received, missed; /* items handed out; items skipped (lapped, or broken) */
    uint64_t torn;             /* items overwritten while used (..._intact said no) */
} shmcam_reader;

/* Map the newest generation if it is another segment than ours; 1 if switched. A closed one
 * counts: what its writer published before it stopped is still there to read. */
static inline int shmcam_reader_attach_newest(shmcam_reader *r, int start_at_newest) {
    char name[SHMCAM_NAME_MAX];
    int64_t generation = shmcam_newest_generation(r->base, -1);
    if (generation < 0 || shmcam_generation_name(name, r->base, generation) != 0) return 0;
    struct stat st;
    char path[SHMCAM_NAME_MAX + sizeof SHMCAM_SHM_DIR + 1];
    snprintf(path, sizeof path, "%s/%s", SHMCAM_SHM_DIR, name);
    if (r->header && stat(path, &st) == 0 && (uint64_t)st.st_ino == r->segment.inode) return 0;
    shmcam_segment s;
    if (shmcam_segment_map(&s, name, 0) != 0) return 0;
    const shmcam_header *h = (const shmcam_header *)s.base;
    if (!shmcam_header_valid(&s, r->magic, r->slot_header_size) ||
        shmcam_state(h) == SHMCAM_SUPERSEDED) { /* being replaced: its successor comes next */
        shmcam_segment_unmap(&s);
        return 0;
    }
    if (start_at_newest) {
        r->next = shmcam_write_seq(h);
    } else { /* a successor: numbering goes on, or starts again after a writer restart */
        int64_t first = h->first_seq;
        if (first > r->next) r->missed += (uint64_t)(first - r->next);
        r->next = first;
    }
    shmcam_segment_unmap(&r->segment);
    r->segment = s;
    r->header = h;
    return 1;
}

/* Attach to the ring <base> (its newest generation), from its newest item on.
 * Returns 0, or -1 with errno ENOENT if there is no such ring. */
static inline int shmcam_reader_open(shmcam_reader *r, const char *base, const char magic[8],
                                     uint32_t slot_header_size, int latest) {
    memset(r, 0, sizeof *r);
    if (shmcam_copy_base(r->base, base) != 0) return -1;
    memcpy(r->magic, magic, 8);
    r->slot_header_size = slot_header_size;
    r->latest = latest;
    if (!shmcam_reader_attach_newest(r, 1)) {
        errno = ENOENT;
        return -1;
    }
    return 0;
}

static inline void shmcam_reader_close(shmcam_reader *r) {
    shmcam_segment_unmap(&r->segment);
    r->header = NULL;
}

/* 1 while the ring's writer runs (the process that created its current generation). */
static inline int shmcam_reader_writer_alive(const shmcam_reader *r) {
    return shmcam_state(r->header) == SHMCAM_LIVE &&
           (kill((pid_t)r->header->owner_pid, 0) == 0 || errno == EPERM);
}

/* Wait up to timeout_ms (< 0: for ever) for the next item (per policy) and return its number;
 * -1 if none came.
 * Follows the writer to new generations (a superseded one is read to its end first). Then
 * read the item with the kind's read function. Pointers into earlier items are invalid after
 * this call (it may unmap their generation): check them with ..._intact before calling it. */
static inline int64_t shmcam_reader_next(shmcam_reader *r, long timeout_ms) {
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX
                                       : shmcam_now_ns(CLOCK_MONOTONIC) +
                                             (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        const shmcam_header *h = r->header;
        uint32_t seen = shmcam_futex_word(h);
        int64_t written = shmcam_write_seq(h);
        if (written > r->next) {
            if (r->latest || written - r->next >= (int64_t)h->slot_count) {
                r->missed += (uint64_t)(written - 1 - r->next);
                r->next = written - 1;
            }
            return r->next++;
        }
        uint32_t state = shmcam_state(h);
        if (state != SHMCAM_LIVE && shmcam_reader_attach_newest(r, 0)) continue;
        uint64_t now = shmcam_now_ns(CLOCK_MONOTONIC);
        if (now >= deadline) return -1;
        uint64_t left_ms = (deadline - now) / 1000000u + 1;
        long pause = left_ms < 250 ? (long)left_ms : 250;
        if (state == SHMCAM_LIVE) {
            shmcam_futex_wait(h, seen, pause);
            if (shmcam_futex_word(h) == seen) shmcam_reader_attach_newest(r, 0); /* silent */
        } else { /* writer gone: look for its successor now and then */
            struct timespec ts = {0, (pause < 10 ? pause : 10) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
}

/* After using item n read from `slot`: 1 if it was intact throughout; 0 (counted torn) if the
 * writer started overwriting it meanwhile, in which case what was computed must be dropped. */
static inline int shmcam_reader_intact(shmcam_reader *r, const char *slot, int64_t n) {
    if (shmcam_slot_end_read(slot, n)) return 1;
    r->torn++;
    return 0;
}

/* ---- Writing: segments appear under their name only once initialised */

/* Create /dev/shm/<name> of `size` bytes, zero-filled and pre-faulted, its header written by
 * `init`, built under a draft name and then linked (fails with EEXIST if the name exists).
 * Returns 0 and maps it into `s`, or -1 with errno set. */
static inline int shmcam_segment_create(shmcam_segment *s, const char *name, size_t size,
                                        void (*init)(char *base, void *arg), void *arg) {
    char final_path[SHMCAM_NAME_MAX + sizeof SHMCAM_SHM_DIR + 1];
    char draft[SHMCAM_NAME_MAX + sizeof SHMCAM_SHM_DIR + 32];
    if (strlen(name) >= SHMCAM_NAME_MAX || strchr(name, '/')) {
        errno = EINVAL;
        return -1;
    }
    struct statvfs fs;
    if (statvfs(SHMCAM_SHM_DIR, &fs) == 0 &&
        size + SHMCAM_SPACE_MARGIN > (uint64_t)fs.f_bavail * fs.f_frsize) {
        errno = ENOSPC;
        return -1;
    }
    snprintf(final_path, sizeof final_path, "%s/%s", SHMCAM_SHM_DIR, name);
    snprintf(draft, sizeof draft, "%s.draft%ld", final_path, (long)getpid());
    int fd = open(draft, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) return -1;
    int err = 0;
    void *base = MAP_FAILED;
    /* posix_fallocate reserves the pages now: a full tmpfs is an error here, not a SIGBUS on
     * some later write. */
    if ((err = posix_fallocate(fd, 0, (off_t)size)) != 0) goto fail;
    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        err = errno;
        goto fail;
    }
    memset(base, 0, size); /* first writes into fresh tmpfs pages are slow: not per item */
    init((char *)base, arg);
    if (link(draft, final_path) != 0) {
        err = errno;
        goto fail;
    }
    unlink(draft);
    close(fd);
    s->base = (char *)base;
    s->size = size;
    struct stat st;
    s->inode = stat(final_path, &st) == 0 ? (uint64_t)st.st_ino : 0;
    strcpy(s->name, name);
    return 0;
fail:
    if (base != MAP_FAILED) munmap(base, size);
    unlink(draft);
    close(fd);
    errno = err;
    return -1;
}

/* Mark a generation superseded (its readers move on) or closed, and remove its name. */
static inline void shmcam_retire(const char *name, const char magic[8], uint32_t state) {
    shmcam_segment s = {0};
    if (shmcam_segment_map(&s, name, 1) != 0) return;
    if (memcmp(s.base, magic, 8) == 0) shmcam_set_state((shmcam_header *)s.base, state);
    char path[SHMCAM_NAME_MAX + sizeof SHMCAM_SHM_DIR + 1];
    snprintf(path, sizeof path, "%s/%s", SHMCAM_SHM_DIR, name);
    unlink(path);
    shmcam_segment_unmap(&s);
}

/* Retire every generation of <base> older than `generation`. */
static inline void shmcam_retire_older(const char *base, int64_t generation, const char magic[8]) {
    char name[SHMCAM_NAME_MAX];
    int64_t old;
    while ((old = shmcam_newest_generation(base, generation)) >= 0) {
        if (shmcam_generation_name(name, base, old) != 0) return;
        shmcam_retire(name, magic, SHMCAM_SUPERSEDED);
        generation = old;
    }
}

#endif /* SHMCAM_COMMON_H */
