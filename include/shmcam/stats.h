/* shmcam statistics block, layout version 2 (see docs/ring.md, "Statistics blocks").
 *
 * /dev/shm/shmcam.<node>.<instance>.stats: a 64-byte header, int64 counters in the order of
 * enum shmcam_stat, then SHMCAM_STATS_BUCKETS int64 buckets of processing time. Each counter
 * has one writer; monitors read them whenever they like, without locks. An external program
 * updates the block the supervisor gives it (SHMCAM_STATS; docs/external.md says which
 * counters are the program's).
 *
 *     shmcam_stats s;
 *     if (shmcam_stats_attach(&s, getenv("SHMCAM_STATS")) == 0) {
 *         shmcam_stats_add(&s, SHMCAM_STAT_FRAMES_IN, 1);
 *         shmcam_stats_record_time(&s, elapsed_ns);
 *     }
 */
#ifndef SHMCAM_STATS_H
#define SHMCAM_STATS_H

#include "common.h"

#define SHMCAM_STATS_MAGIC "SHMCAMST"
#define SHMCAM_STATS_VERSION 3u
#define SHMCAM_STATS_HEADER_SIZE 64u
#define SHMCAM_STATS_BUCKETS 96u

/* The counters, in layout order (shmcam/shm/layout.py STATS_FIELDS). */
enum shmcam_stat {
    SHMCAM_STAT_FRAMES_IN,      /* frames taken from the input (ring or stream) */
    SHMCAM_STAT_FRAMES_OUT,     /* messages/frames emitted */
    SHMCAM_STAT_DROPPED,        /* input frames missed (reader lapped, queue full) */
    SHMCAM_STAT_TORN,           /* frames overwritten while being processed, result dropped */
    SHMCAM_STAT_ERRORS,         /* processing errors */
    SHMCAM_STAT_BYTES_OUT,      /* payload bytes emitted */
    SHMCAM_STAT_CLIENTS,        /* connected stream clients (gauge) */
    SHMCAM_STAT_PROC_NS_TOTAL,  /* sum of processing times */
    SHMCAM_STAT_PROC_NS_LAST,   /* last processing time */
    SHMCAM_STAT_LAG,            /* frames between the newest and the one processed (gauge) */
    SHMCAM_STAT_UPDATED_NS,     /* CLOCK_REALTIME of the last update */
    SHMCAM_STAT_HEADER_CHANGES, /* data headers built for the output stream */
    SHMCAM_STAT_FRAME_HEIGHT,   /* shape of the last frame taken from the input (gauges) */
    SHMCAM_STAT_FRAME_WIDTH,
    SHMCAM_STAT_FORWARDER_CLIENTS, /* a camera's DataBuffer feed clients (gauge) */
    SHMCAM_STAT_BYTES_IN,       /* bytes of the frames taken from the input */
    SHMCAM_STAT_FRAME_ITEMSIZE, /* bytes per pixel of the last frame (gauge) */
    SHMCAM_STAT_COUNT
};

typedef struct {
    char magic[8];         /*  0 "SHMCAMST" */
    uint32_t version;      /*  8 2 */
    uint32_t header_size;  /* 12 64 */
    int64_t owner_pid;     /* 16 */
    uint64_t created_ns;   /* 24 */
    uint32_t field_count;  /* 32 counters */
    uint32_t hist_buckets; /* 36 */
    uint8_t reserved[24];  /* 40 */
} shmcam_stats_header;

_Static_assert(sizeof(shmcam_stats_header) == SHMCAM_STATS_HEADER_SIZE, "stats header is 64 B");

typedef struct {
    shmcam_segment segment;
    int64_t *counters;  /* SHMCAM_STAT_COUNT of them */
    int64_t *histogram; /* SHMCAM_STATS_BUCKETS of them */
} shmcam_stats;

/* Map a statistics block for updating. Returns 0, or -1 with errno (EINVAL: not a block of
 * this layout). */
static inline int shmcam_stats_attach(shmcam_stats *s, const char *name) {
    if (shmcam_segment_map(&s->segment, name, 1) != 0) return -1;
    const shmcam_stats_header *h = (const shmcam_stats_header *)s->segment.base;
    if (memcmp(h->magic, SHMCAM_STATS_MAGIC, 8) != 0 || h->version != SHMCAM_STATS_VERSION ||
        h->header_size != SHMCAM_STATS_HEADER_SIZE || h->field_count != SHMCAM_STAT_COUNT ||
        h->hist_buckets != SHMCAM_STATS_BUCKETS ||
        s->segment.size < SHMCAM_STATS_HEADER_SIZE + 8 * (SHMCAM_STAT_COUNT + SHMCAM_STATS_BUCKETS)) {
        shmcam_segment_unmap(&s->segment);
        errno = EINVAL;
        return -1;
    }
    s->counters = (int64_t *)(s->segment.base + SHMCAM_STATS_HEADER_SIZE);
    s->histogram = s->counters + SHMCAM_STAT_COUNT;
    return 0;
}

static inline void shmcam_stats_detach(shmcam_stats *s) { shmcam_segment_unmap(&s->segment); }

/* Counters have one writer: a relaxed load and store suffice (monitors read them atomically). */
static inline void shmcam_stats_add(shmcam_stats *s, enum shmcam_stat field, int64_t n) {
    int64_t *c = &s->counters[field];
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline void shmcam_stats_set(shmcam_stats *s, enum shmcam_stat field, int64_t value) {
    __atomic_store_n(&s->counters[field], value, __ATOMIC_RELAXED);
}

/* The histogram bucket of a time: floor(4 * log2(ns / 1000)), clamped to [0, buckets),
 * computed without libm (quarter octaves: thresholds 2^(1/4), 2^(1/2), 2^(3/4)). */
static inline uint32_t shmcam_stats_bucket(int64_t ns) {
    if (ns < 2000) return 0;
    double us = (double)ns / 1000.0;
    uint32_t octave = 63u - (uint32_t)__builtin_clzll((unsigned long long)us);
    double mantissa = us / (double)(1ull << octave); /* in [1, 2) */
    uint32_t bucket = 4 * octave + (mantissa >= 1.1892071150027210) +
                      (mantissa >= 1.4142135623730951) + (mantissa >= 1.6817928305074290);
    return bucket < SHMCAM_STATS_BUCKETS ? bucket : SHMCAM_STATS_BUCKETS - 1;
}

/* Account one processing time: total, last, the histogram, and the update time. */
static inline void shmcam_stats_record_time(shmcam_stats *s, int64_t ns) {
    shmcam_stats_add(s, SHMCAM_STAT_PROC_NS_TOTAL, ns);
    shmcam_stats_set(s, SHMCAM_STAT_PROC_NS_LAST, ns);
    int64_t *b = &s->histogram[shmcam_stats_bucket(ns)];
    __atomic_store_n(b, __atomic_load_n(b, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    shmcam_stats_set(s, SHMCAM_STAT_UPDATED_NS, (int64_t)shmcam_now_ns(CLOCK_REALTIME));
}

#endif /* SHMCAM_STATS_H */
