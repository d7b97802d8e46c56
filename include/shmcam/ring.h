/* shmcam frame ring, binary layout version 1 (see docs/ring.md).
 *
 * One POSIX shared-memory object (/dev/shm/<name>) per ring generation: a 128-byte header
 * followed by slot_count slots of slot_stride bytes, each a 128-byte slot header and the
 * payload (64-byte aligned). Little-endian, naturally aligned. One writer; any number of
 * readers, which never write. Header-only; Linux (futex) and x86-64/aarch64.
 *
 * Reading frame n (seqlock): slot = n % slot_count; s = slot->seq; if s != 2n+2 the frame
 * is not (or no longer) there; read metadata and payload; then check slot->seq == 2n+2 again:
 * if not, the writer overwrote the slot meanwhile and what was read must be discarded.
 */
#ifndef SHMCAM_RING_H
#define SHMCAM_RING_H

#include <fcntl.h>
#include <linux/futex.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SHMCAM_RING_MAGIC "SHMCAMRG"
#define SHMCAM_RING_VERSION 1u
#define SHMCAM_RING_LIVE 0u
#define SHMCAM_RING_SUPERSEDED 1u /* a newer generation <base>.g<N+1>... exists: re-attach */
#define SHMCAM_RING_CLOSED 2u     /* the writer stopped */

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
_Static_assert(offsetof(shmcam_ring_header, write_seq) == 64, "write_seq at 64");
_Static_assert(offsetof(shmcam_ring_header, futex) == 84, "futex at 84");
_Static_assert(offsetof(shmcam_ring_header, shape) == 100, "shape at 100");
_Static_assert(sizeof(shmcam_slot_header) == 128, "slot header is 128 bytes");
_Static_assert(offsetof(shmcam_slot_header, shape) == 60, "slot shape at 60");
_Static_assert(offsetof(shmcam_slot_header, axis_x0) == 72, "slot axes at 72");

typedef struct {
    const shmcam_ring_header *header;
    size_t size;
} shmcam_ring;

/* Map the segment /dev/shm/<name> read-only. Returns 0, or -1 with errno set. */
static inline int shmcam_ring_attach(shmcam_ring *ring, const char *name) {
    char path[300] = "/dev/shm/";
    strncat(path, name, sizeof(path) - strlen(path) - 1);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(shmcam_ring_header)) {
        close(fd);
        return -1;
    }
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) return -1;
    ring->header = (const shmcam_ring_header *)base;
    ring->size = (size_t)st.st_size;
    if (memcmp(ring->header->magic, SHMCAM_RING_MAGIC, 8) != 0 ||
        ring->header->version != SHMCAM_RING_VERSION) {
        munmap(base, ring->size);
        return -1;
    }
    return 0;
}

static inline void shmcam_ring_detach(shmcam_ring *ring) {
    munmap((void *)ring->header, ring->size);
}

static inline const shmcam_slot_header *shmcam_ring_slot(const shmcam_ring *ring, int64_t n) {
    const char *base = (const char *)ring->header;
    return (const shmcam_slot_header *)(base + ring->header->header_size +
                                        (uint64_t)n % ring->header->slot_count *
                                            ring->header->slot_stride);
}

static inline const void *shmcam_ring_payload(const shmcam_ring *ring, int64_t n) {
    return (const char *)shmcam_ring_slot(ring, n) + ring->header->slot_header_size;
}

/* 1 if the slot of frame n holds frame n complete right now (call before and after use). */
static inline int shmcam_ring_intact(const shmcam_ring *ring, int64_t n) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return shmcam_ring_slot(ring, n)->seq == (uint64_t)(2 * n + 2);
}

/* Sleep until the writer publishes (futex word changes from `seen`) or timeout_ms passes. */
static inline void shmcam_ring_wait(const shmcam_ring *ring, uint32_t seen, long timeout_ms) {
    struct timespec ts = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
    syscall(SYS_futex, &ring->header->futex, FUTEX_WAIT, seen, &ts, NULL, 0);
}

#endif /* SHMCAM_RING_H */
