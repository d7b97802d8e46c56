/* shmcam frame ring, binary layout version 1 (see docs/ring.md; common.h for what all rings
 * share, including the memory ordering, which is correct on any CPU).
 *
 * One POSIX shared-memory object (/dev/shm/<base>.g<N>) per ring generation: a 128-byte header
 * followed by slot_count slots of slot_stride bytes, each a 128-byte slot header and the
 * payload (64-byte aligned). Little-endian, naturally aligned. One writer; any number of
 * readers, which never write.
 *
 * Following a camera's frames across generations (a restarted camera, a new geometry):
 *     shmcam_reader r;  shmcam_frame f;
 *     shmcam_frames_open(&r, "shmcam.node1.cam1", 0);
 *     for (;;) {
 *         int64_t n = shmcam_reader_next(&r, 1000);        // sleeps on the futex
 *         if (n < 0 || !shmcam_frame_read(&r, n, &f)) continue;
 *         ... use f.data (f.shape, f.dtype) ...
 *         if (!shmcam_frame_intact(&r, &f)) ... drop what was computed: torn ...
 *     }
 * Reading one generation by its segment name: shmcam_ring_attach and the functions after it.
 */
#ifndef SHMCAM_RING_H
#define SHMCAM_RING_H

#include <stdlib.h>

#include "common.h"

#define SHMCAM_RING_MAGIC "SHMCAMRG"
#define SHMCAM_RING_VERSION 1u
#define SHMCAM_RING_SLOT_HEADER_SIZE 128u
#define SHMCAM_RING_LIVE SHMCAM_LIVE
#define SHMCAM_RING_SUPERSEDED SHMCAM_SUPERSEDED
#define SHMCAM_RING_CLOSED SHMCAM_CLOSED

/* The first 88 bytes are shmcam_header's; the frame geometry follows. */
typedef struct {
    char magic[8];              /*   0 "SHMCAMRG" */
    uint32_t version;           /*   8 1 */
    uint32_t header_size;       /*  12 offset of slot 0 (128) */
    int64_t owner_pid;          /*  16 writer process */
    uint64_t created_ns;        /*  24 CLOCK_REALTIME */
    uint32_t slot_count;        /*  32 */
    uint32_t slot_header_size;  /*  36 128 */
    uint64_t slot_stride;       /*  40 bytes from one slot to the next, multiple of 64 */
    uint64_t payload_capacity;  /*  48 slot_stride - slot_header_size */
    uint64_t generation;        /*  56 N of the segment name <base>.g<N> */
    volatile int64_t write_seq; /*  64 frames published over the ring's life; newest = write_seq-1 */
    int64_t first_seq;          /*  72 write_seq when this generation was created */
    volatile uint32_t state;    /*  80 SHMCAM_RING_LIVE / _SUPERSEDED / _CLOSED */
    volatile uint32_t futex;    /*  84 incremented after every publication and state change */
    char dtype[8];              /*  88 numpy typestr, NUL padded: "<u2", "|u1", "<f4" ... */
    uint32_t ndim;              /*  96 1..3 */
    uint32_t shape[3];          /* 100 numpy order, slowest axis first: {height, width} */
    uint64_t frame_nbytes;      /* 112 */
    uint64_t reserved;          /* 120 */
} shmcam_ring_header;

typedef struct {
    volatile uint64_t seq;      /*   0 0 never written; 2n+1 writing frame n; 2n+2 frame n complete */
    int64_t pulse_id;           /*   8 */
    int64_t ts_sec;             /*  16 global timestamp of the frame */
    int64_t ts_ns;              /*  24 */
    uint64_t publish_ns;        /*  32 CLOCK_MONOTONIC when the writer completed the frame */
    uint64_t nbytes;            /*  40 payload bytes */
    char dtype[8];              /*  48 as in the header */
    uint32_t ndim;              /*  56 */
    uint32_t shape[3];          /*  60 */
    double axis_x0, axis_dx;    /*  72 x_axis[i] = axis_x0 + i * axis_dx (calibrated axes) */
    double axis_y0, axis_dy;    /*  88 dx = dy = 0: no axes given, use pixel numbers */
    uint8_t reserved[24];       /* 104 */
} shmcam_slot_header;

_Static_assert(sizeof(shmcam_ring_header) == 128, "ring header is 128 bytes");
_Static_assert(offsetof(shmcam_ring_header, write_seq) == offsetof(shmcam_header, write_seq),
               "the frame header starts with the common one");
_Static_assert(offsetof(shmcam_ring_header, futex) == offsetof(shmcam_header, futex),
               "the frame header starts with the common one");
_Static_assert(offsetof(shmcam_ring_header, dtype) == sizeof(shmcam_header), "dtype at 88");
_Static_assert(offsetof(shmcam_ring_header, shape) == 100, "shape at 100");
_Static_assert(sizeof(shmcam_slot_header) == 128, "slot header is 128 bytes");
_Static_assert(offsetof(shmcam_slot_header, shape) == 60, "slot shape at 60");
_Static_assert(offsetof(shmcam_slot_header, axis_x0) == 72, "slot axes at 72");

/* ---- Frames through a reader that follows the ring's generations (common.h) */

typedef struct {
    int64_t index; /* frame number over the ring's life */
    int64_t pulse_id, ts_sec, ts_ns;
    uint64_t publish_ns;
    uint64_t nbytes;
    char dtype[9]; /* numpy typestr, NUL-terminated */
    uint32_t ndim;
    uint32_t shape[3];
    double axis_x0, axis_dx, axis_y0, axis_dy;
    const void *data; /* the payload, in the slot: valid until the next shmcam_reader_next */
    const char *slot;
} shmcam_frame;

/* 1 if a slot's shape, dtype and nbytes agree and fit the slot: what a reader relies on. */
static inline int shmcam_frame_geometry_valid(const shmcam_slot_header *m, uint64_t capacity) {
    char dtype[9];
    memcpy(dtype, m->dtype, 8);
    dtype[8] = '\0';
    uint64_t count = (uint64_t)atoi(dtype + 2); /* "<u2": itemsize 2 */
    if (m->ndim < 1 || m->ndim > 3 || m->nbytes > capacity || count == 0) return 0;
    for (uint32_t i = 0; i < m->ndim; i++)
        if (__builtin_mul_overflow(count, (uint64_t)m->shape[i], &count)) return 0;
    return count == m->nbytes;
}

static inline int shmcam_frames_open(shmcam_reader *r, const char *base, int latest) {
    return shmcam_reader_open(r, base, SHMCAM_RING_MAGIC, SHMCAM_RING_SLOT_HEADER_SIZE, latest);
}

/* 1 and the frame's metadata if the slot holds frame n complete; 0 (counted missed) if not. */
static inline int shmcam_frame_read(shmcam_reader *r, int64_t n, shmcam_frame *f) {
    const char *slot = shmcam_slot(r->header, n);
    shmcam_slot_header meta = {0};
    if (!shmcam_slot_begin_read(slot, n)) goto gone;
    shmcam_load_words((char *)&meta + 8, slot + 8, 96);
    if (!shmcam_slot_end_read(slot, n)) goto gone;
    if (!shmcam_frame_geometry_valid(&meta, r->header->payload_capacity)) goto gone;
    f->index = n;
    f->pulse_id = meta.pulse_id;
    f->ts_sec = meta.ts_sec;
    f->ts_ns = meta.ts_ns;
    f->publish_ns = meta.publish_ns;
    f->nbytes = meta.nbytes;
    memcpy(f->dtype, meta.dtype, 8);
    f->dtype[8] = '\0';
    f->ndim = meta.ndim;
    memcpy(f->shape, meta.shape, sizeof f->shape);
    f->axis_x0 = meta.axis_x0;
    f->axis_dx = meta.axis_dx;
    f->axis_y0 = meta.axis_y0;
    f->axis_dy = meta.axis_dy;
    f->data = slot + SHMCAM_RING_SLOT_HEADER_SIZE;
    f->slot = slot;
    r->received++;
    return 1;
gone:
    r->missed++;
    return 0;
}

/* After using f->data: 1 if the frame stayed intact; 0 (counted torn): drop the result. */
static inline int shmcam_frame_intact(shmcam_reader *r, const shmcam_frame *f) {
    return shmcam_reader_intact(r, f->slot, f->index);
}

/* ---- One generation by its segment name (the first API; kept for existing readers) */

typedef struct {
    const shmcam_ring_header *header;
    size_t size;
} shmcam_ring;

/* Map the segment /dev/shm/<name> read-only. Returns 0, or -1 with errno set. */
static inline int shmcam_ring_attach(shmcam_ring *ring, const char *name) {
    shmcam_segment s;
    if (shmcam_segment_map(&s, name, 0) != 0) return -1;
    if (!shmcam_header_valid(&s, SHMCAM_RING_MAGIC, SHMCAM_RING_SLOT_HEADER_SIZE)) {
        shmcam_segment_unmap(&s);
        errno = EINVAL;
        return -1;
    }
    ring->header = (const shmcam_ring_header *)s.base;
    ring->size = s.size;
    return 0;
}

static inline void shmcam_ring_detach(shmcam_ring *ring) {
    munmap((void *)ring->header, ring->size);
}

static inline const shmcam_slot_header *shmcam_ring_slot(const shmcam_ring *ring, int64_t n) {
    return (const shmcam_slot_header *)shmcam_slot((const shmcam_header *)ring->header, n);
}

static inline const void *shmcam_ring_payload(const shmcam_ring *ring, int64_t n) {
    return (const char *)shmcam_ring_slot(ring, n) + ring->header->slot_header_size;
}

/* 1 if the slot of frame n holds frame n complete right now. Call it before reading the
 * frame (its acquire load orders the reads after it) and after (its fence orders the reads
 * before it): twice 1 means what was read between the calls is frame n, whole. */
static inline int shmcam_ring_intact(const shmcam_ring *ring, int64_t n) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return shmcam_slot_begin_read((const char *)shmcam_ring_slot(ring, n), n);
}

/* Sleep until the writer publishes (futex word changes from `seen`) or timeout_ms passes. */
static inline void shmcam_ring_wait(const shmcam_ring *ring, uint32_t seen, long timeout_ms) {
    shmcam_futex_wait((const shmcam_header *)ring->header, seen, timeout_ms);
}

#endif /* SHMCAM_RING_H */
