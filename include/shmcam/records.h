/* shmcam record ring, binary layout version 1 (see docs/ring.md, "Record rings"; common.h for
 * what all rings share, including the memory ordering).
 *
 * A record is a pulse id, a timestamp and named channels: scalars, strings, null, and arrays of
 * 1 to 3 dimensions of the bsread types. Each slot holds one record: a 64-byte slot header,
 * the payloads (64-byte aligned) and a channel table (an entry per channel, then the names),
 * at the offsets the slot header and the entries give, counted from the slot's start.
 *
 * Reading:
 *     shmcam_reader r;  shmcam_record rec;  shmcam_channel c;
 *     shmcam_records_open(&r, getenv("SHMCAM_INPUT_RING"), 0);
 *     int64_t n = shmcam_reader_next(&r, 1000);
 *     if (n >= 0 && shmcam_record_read(&r, n, &rec) &&
 *         shmcam_record_find(&rec, "x_profile", &c) == 0 && c.type == SHMCAM_FLOAT64) {
 *         ... use (const double *)c.data, c.shape[0] ...
 *         if (!shmcam_record_intact(&r, &rec)) ... drop what was computed: torn ...
 *     }
 * Channel lookups are bounds-checked against the slot, so even a record torn under the reader
 * never sends it outside the mapping. A channel's index is the same in every record of the
 * same `format`: cache it per format instead of finding by name every time.
 *
 * Writing:
 *     static shmcam_records_writer w;
 *     shmcam_records_create(&w, getenv("SHMCAM_OUTPUT_RING"), 0, 0);
 *     shmcam_record_begin(&w, pulse_id, sec, ns);
 *     shmcam_record_add(&w, "x_profile", SHMCAM_FLOAT64, 1, (uint32_t[]){width}, profile);
 *     double *sum = shmcam_record_add(&w, "sum", SHMCAM_FLOAT64, 0, NULL, NULL);  // in place
 *     *sum = 42.0;  // before the next add, or through shmcam_record_payload(&w, 1) after it
 *     shmcam_record_add_string(&w, "status", "ok");
 *     shmcam_record_commit(&w);
 *     ...
 *     shmcam_records_close(&w, 0);
 * A record larger than the slots opens a new generation with larger slots (readers follow).
 * Add strings last: then a channel set that repeats keeps its format (readers parse its table
 * once), as the Python writer does by itself.
 */
#ifndef SHMCAM_RECORDS_H
#define SHMCAM_RECORDS_H

#include <stdlib.h>

#include "common.h"

#define SHMCAM_RECORDS_MAGIC "SHMCAMRC"
#define SHMCAM_RECORDS_VERSION 1u
#define SHMCAM_RECORD_SLOT_HEADER_SIZE 64u
#define SHMCAM_RECORDS_DEFAULT_SLOTS 8u
#define SHMCAM_RECORDS_DEFAULT_CAPACITY (256u << 10)

/* Channel types: bsread's, plus null (a channel without a value). Values are little-endian. */
enum shmcam_type {
    SHMCAM_NULL = 0,
    SHMCAM_BOOL = 1, /* one byte, 0 or 1 */
    SHMCAM_INT8 = 2,
    SHMCAM_UINT8 = 3,
    SHMCAM_INT16 = 4,
    SHMCAM_UINT16 = 5,
    SHMCAM_INT32 = 6,
    SHMCAM_UINT32 = 7,
    SHMCAM_INT64 = 8,
    SHMCAM_UINT64 = 9,
    SHMCAM_FLOAT32 = 10,
    SHMCAM_FLOAT64 = 11,
    SHMCAM_STRING = 12, /* UTF-8, ndim 0, nbytes without the NUL that follows it */
    SHMCAM_TYPE_COUNT = 13
};

static const uint8_t shmcam_type_size[SHMCAM_TYPE_COUNT] = {0, 1, 1, 1, 2, 2, 4, 4, 8, 8, 4, 8, 1};
static const char *const shmcam_type_name[SHMCAM_TYPE_COUNT] = {
    "null",   "bool",   "int8",  "uint8",   "int16",   "uint16", "int32",
    "uint32", "int64", "uint64", "float32", "float64", "string"};

/* The slot header (64 bytes at the slot's start). */
typedef struct {
    uint64_t seq;          /*  0 seqlock: 2n+1 while record n is written, 2n+2 once complete */
    int64_t pulse_id;      /*  8 */
    int64_t ts_sec;        /* 16 global timestamp */
    int64_t ts_ns;         /* 24 */
    uint64_t publish_ns;   /* 32 CLOCK_MONOTONIC when the writer completed the record */
    uint64_t format;       /* 40 changes whenever the table changes beyond strings' spans */
    uint64_t table_offset; /* 48 from the slot's start, multiple of 8 */
    uint32_t channel_count;/* 56 */
    uint32_t table_nbytes; /* 60 entries and names */
} shmcam_record_header;

/* A channel table entry (40 bytes; channel_count of them at table_offset, names after). */
typedef struct {
    uint64_t offset;       /*  0 payload, from the slot's start, multiple of 64 (null: 0) */
    uint64_t nbytes;       /*  8 payload bytes (strings: without the NUL) */
    uint32_t shape[3];     /* 16 numpy order (slowest axis first), 0 beyond ndim */
    uint16_t type;         /* 28 enum shmcam_type */
    uint16_t ndim;         /* 30 0 for scalars, strings and null; 1..3 for arrays */
    uint32_t name_offset;  /* 32 from the slot's start, inside the table; UTF-8, NUL follows */
    uint32_t name_nbytes;  /* 36 without the NUL */
} shmcam_record_entry;

_Static_assert(sizeof(shmcam_record_header) == 64, "record slot header is 64 bytes");
_Static_assert(offsetof(shmcam_record_header, format) == 40, "format at 40");
_Static_assert(offsetof(shmcam_record_header, channel_count) == 56, "channel_count at 56");
_Static_assert(sizeof(shmcam_record_entry) == 40, "a table entry is 40 bytes");
_Static_assert(offsetof(shmcam_record_entry, type) == 28, "type at 28");
_Static_assert(offsetof(shmcam_record_entry, name_offset) == 32, "name_offset at 32");

/* ---- Reading */

typedef struct {
    int64_t index; /* record number over the ring's life */
    int64_t pulse_id, ts_sec, ts_ns;
    uint64_t publish_ns;
    uint64_t format;
    uint32_t channel_count;
    uint32_t table_nbytes;
    uint64_t table_offset;
    uint64_t slot_size;
    const char *slot;
} shmcam_record;

typedef struct {
    const char *name; /* in the slot: name_nbytes bytes (compare with them, not strcmp) */
    uint32_t name_nbytes;
    uint16_t type;
    uint16_t ndim;
    uint32_t shape[3];
    uint64_t nbytes;
    const void *data; /* in the slot (NULL for null): valid until the next shmcam_reader_next */
} shmcam_channel;

static inline int shmcam_records_open(shmcam_reader *r, const char *base, int latest) {
    return shmcam_reader_open(r, base, SHMCAM_RECORDS_MAGIC, SHMCAM_RECORD_SLOT_HEADER_SIZE,
                              latest);
}

/* 1 and the record's header if the slot holds record n complete with a table inside the slot;
 * 0 (counted missed) if not. */
static inline int shmcam_record_read(shmcam_reader *r, int64_t n, shmcam_record *rec) {
    const char *slot = shmcam_slot(r->header, n);
    shmcam_record_header h = {0};
    uint64_t stride = r->header->slot_stride;
    if (!shmcam_slot_begin_read(slot, n)) goto gone;
    shmcam_load_words((char *)&h + 8, slot + 8, sizeof h - 8);
    if (!shmcam_slot_end_read(slot, n)) goto gone;
    if (h.table_offset % 8 || h.table_offset < SHMCAM_RECORD_SLOT_HEADER_SIZE ||
        h.table_offset > stride || h.table_nbytes > stride - h.table_offset ||
        (uint64_t)h.channel_count * sizeof(shmcam_record_entry) > h.table_nbytes)
        goto gone; /* a broken writer */
    rec->index = n;
    rec->pulse_id = h.pulse_id;
    rec->ts_sec = h.ts_sec;
    rec->ts_ns = h.ts_ns;
    rec->publish_ns = h.publish_ns;
    rec->format = h.format;
    rec->channel_count = h.channel_count;
    rec->table_nbytes = h.table_nbytes;
    rec->table_offset = h.table_offset;
    rec->slot_size = stride;
    rec->slot = slot;
    r->received++;
    return 1;
gone:
    r->missed++;
    return 0;
}

/* Channel i of a record: 0, or -1 if its entry does not describe a channel inside the slot
 * (the record was torn meanwhile, or its writer is broken). */
static inline int shmcam_record_channel(const shmcam_record *rec, uint32_t i, shmcam_channel *c) {
    shmcam_record_entry e = {0};
    if (i >= rec->channel_count) return -1;
    shmcam_load_words(&e, rec->slot + rec->table_offset + (uint64_t)i * sizeof e, sizeof e);
    uint64_t table_end = rec->table_offset + rec->table_nbytes;
    if (e.type >= SHMCAM_TYPE_COUNT || e.ndim > 3 || e.name_offset < rec->table_offset ||
        (uint64_t)e.name_offset + e.name_nbytes >= table_end)
        return -1;
    if (e.type == SHMCAM_NULL || e.type == SHMCAM_STRING) {
        if (e.ndim || (e.type == SHMCAM_NULL && e.nbytes) || e.offset >= rec->slot_size ||
            e.nbytes >= rec->slot_size - e.offset)
            return -1;
    } else {
        uint64_t nbytes = shmcam_type_size[e.type];
        for (uint32_t d = 0; d < e.ndim; d++)
            if (__builtin_mul_overflow(nbytes, (uint64_t)e.shape[d], &nbytes)) return -1;
        if (nbytes != e.nbytes || e.offset % SHMCAM_ALIGN || e.offset > rec->slot_size ||
            e.nbytes > rec->slot_size - e.offset)
            return -1;
    }
    c->name = rec->slot + e.name_offset;
    c->name_nbytes = e.name_nbytes;
    c->type = e.type;
    c->ndim = e.ndim;
    memcpy(c->shape, e.shape, sizeof c->shape);
    c->nbytes = e.nbytes;
    c->data = e.type == SHMCAM_NULL ? NULL : rec->slot + e.offset;
    return 0;
}

/* 1 if a channel's name (in the slot) is `name`, read with atomic loads. */
static inline int shmcam_channel_named(const shmcam_channel *c, const char *name, size_t len) {
    if (c->name_nbytes != len) return 0;
    for (size_t k = 0; k < len; k++)
        if (__atomic_load_n((const uint8_t *)c->name + k, __ATOMIC_RELAXED) != (uint8_t)name[k])
            return 0;
    return 1;
}

/* The channel called `name`: its index (>= 0, fill c), or -1 if the record has none. */
static inline int shmcam_record_find(const shmcam_record *rec, const char *name,
                                     shmcam_channel *c) {
    size_t len = strlen(name);
    for (uint32_t i = 0; i < rec->channel_count; i++)
        if (shmcam_record_channel(rec, i, c) == 0 && shmcam_channel_named(c, name, len))
            return (int)i;
    return -1;
}

/* After using a record's channels: 1 if it stayed intact; 0 (counted torn): drop the result. */
static inline int shmcam_record_intact(shmcam_reader *r, const shmcam_record *rec) {
    return shmcam_reader_intact(r, rec->slot, rec->index);
}

/* ---- Writing (one writer per ring) */

typedef struct {
    char base[SHMCAM_NAME_MAX];
    shmcam_segment segment;
    shmcam_header *header;
    uint32_t slots;
    /* the record being written */
    int in_record;
    int64_t n;
    char *slot;
    uint64_t used; /* bytes of the slot the header and payloads take so far */
    shmcam_record_header meta;
    shmcam_record_entry *entries;
    char *names;
    uint32_t count, entries_capacity;
    uint64_t names_nbytes, names_capacity;
    /* the previous record's table, to tell whether the format changed */
    shmcam_record_entry *last_entries;
    char *last_names;
    uint32_t last_count;
    uint64_t last_names_nbytes;
    uint64_t format;
} shmcam_records_writer;

typedef struct {
    uint32_t slots;
    uint64_t capacity;
    int64_t generation, first_seq;
} shmcam__records_geometry;

static inline void shmcam__records_init(char *base, void *arg) {
    const shmcam__records_geometry *g = (const shmcam__records_geometry *)arg;
    shmcam_header *h = (shmcam_header *)base;
    memcpy(h->magic, SHMCAM_RECORDS_MAGIC, 8);
    h->version = SHMCAM_RECORDS_VERSION;
    h->header_size = SHMCAM_HEADER_SIZE;
    h->owner_pid = getpid();
    h->created_ns = shmcam_now_ns(CLOCK_REALTIME);
    h->slot_count = g->slots;
    h->slot_header_size = SHMCAM_RECORD_SLOT_HEADER_SIZE;
    h->slot_stride = shmcam_align(SHMCAM_RECORD_SLOT_HEADER_SIZE + g->capacity, SHMCAM_ALIGN);
    h->payload_capacity = h->slot_stride - SHMCAM_RECORD_SLOT_HEADER_SIZE;
    h->generation = (uint64_t)g->generation;
    h->write_seq = g->first_seq;
    h->first_seq = g->first_seq;
    h->state = SHMCAM_LIVE;
}

/* Create generation `generation` of the writer's ring and map it. */
static inline int shmcam__records_generation(shmcam_records_writer *w, int64_t generation,
                                             uint64_t capacity, int64_t first_seq) {
    char name[SHMCAM_NAME_MAX];
    shmcam__records_geometry g = {w->slots, capacity, generation, first_seq};
    uint64_t stride = shmcam_align(SHMCAM_RECORD_SLOT_HEADER_SIZE + capacity, SHMCAM_ALIGN);
    if (shmcam_generation_name(name, w->base, generation) != 0) return -1;
    if (stride > (SIZE_MAX - SHMCAM_HEADER_SIZE) / w->slots) {
        errno = ENOMEM;
        return -1;
    }
    return shmcam_segment_create(&w->segment, name, SHMCAM_HEADER_SIZE + w->slots * stride,
                                 shmcam__records_init, &g);
}

/* Become the writer of the record ring <base>: create its next generation and retire the
 * older ones (a predecessor's, or the empty one the supervisor made). slots and capacity
 * (bytes of table and payloads per slot) 0: those of the ring already there, else defaults.
 * Returns 0, or -1 with errno set. */
static inline int shmcam_records_create(shmcam_records_writer *w, const char *base,
                                        uint32_t slots, uint64_t capacity) {
    memset(w, 0, sizeof *w);
    if (shmcam_copy_base(w->base, base) != 0) return -1;
    int64_t newest = shmcam_newest_generation(base, -1);
    if (newest >= 0) { /* take over slots and capacity */
        char name[SHMCAM_NAME_MAX];
        shmcam_segment s;
        if (shmcam_generation_name(name, base, newest) == 0 && shmcam_segment_map(&s, name, 0) == 0) {
            const shmcam_header *h = (const shmcam_header *)s.base;
            if (shmcam_header_valid(&s, SHMCAM_RECORDS_MAGIC, SHMCAM_RECORD_SLOT_HEADER_SIZE)) {
                if (!slots) slots = h->slot_count;
                if (capacity < h->payload_capacity) capacity = h->payload_capacity;
            }
            shmcam_segment_unmap(&s);
        }
    }
    w->slots = slots ? slots : SHMCAM_RECORDS_DEFAULT_SLOTS;
    if (w->slots < 2) {
        errno = EINVAL;
        return -1;
    }
    if (shmcam__records_generation(w, newest + 1, capacity ? capacity : SHMCAM_RECORDS_DEFAULT_CAPACITY, 0) != 0)
        return -1;
    w->header = (shmcam_header *)w->segment.base;
    shmcam_retire_older(base, newest + 1, SHMCAM_RECORDS_MAGIC);
    return 0;
}

/* Start record (the next number) with its pulse id and timestamp. Starting again before the
 * commit abandons the record begun. */
static inline int shmcam_record_begin(shmcam_records_writer *w, int64_t pulse_id, int64_t ts_sec,
                                      int64_t ts_ns) {
    w->n = __atomic_load_n(&w->header->write_seq, __ATOMIC_RELAXED);
    w->slot = (char *)shmcam_slot(w->header, w->n);
    shmcam_slot_begin_write(w->slot, w->n);
    w->in_record = 1;
    w->used = SHMCAM_RECORD_SLOT_HEADER_SIZE;
    w->count = 0;
    w->names_nbytes = 0;
    memset(&w->meta, 0, sizeof w->meta);
    w->meta.pulse_id = pulse_id;
    w->meta.ts_sec = ts_sec;
    w->meta.ts_ns = ts_ns;
    return 0;
}

/* Bytes the slot needs for the record so far, its table included. */
static inline uint64_t shmcam__record_size(uint64_t used,
                                           uint32_t count, uint64_t names_nbytes) {
    return shmcam_align(shmcam_align(used, 8) + (uint64_t)count * sizeof(shmcam_record_entry) +
                            names_nbytes, 8);
}

/* Move the record being written into a new generation with slots of at least `size` bytes. */
static inline int shmcam__records_grow(shmcam_records_writer *w, uint64_t size) {
    shmcam_segment old = w->segment;
    shmcam_header *old_header = w->header;
    uint64_t capacity = size - SHMCAM_RECORD_SLOT_HEADER_SIZE;
    capacity += capacity / 4;
    if (capacity < 2 * old_header->payload_capacity) capacity = 2 * old_header->payload_capacity;
    if (shmcam__records_generation(w, (int64_t)old_header->generation + 1, capacity, w->n) != 0) {
        w->segment = old;
        return -1;
    }
    w->header = (shmcam_header *)w->segment.base;
    char *slot = (char *)shmcam_slot(w->header, w->n);
    shmcam_slot_begin_write(slot, w->n);
    memcpy(slot + 8, w->slot + 8, w->used - 8);
    w->slot = slot;
    char path[SHMCAM_NAME_MAX + sizeof SHMCAM_SHM_DIR + 1];
    snprintf(path, sizeof path, "%s/%s", SHMCAM_SHM_DIR, old.name);
    shmcam_set_state(old_header, SHMCAM_SUPERSEDED);
    unlink(path);
    shmcam_segment_unmap(&old);
    return 0;
}

/* Grow a private buffer to hold `need` items of `size` bytes. */
static inline int shmcam__reserve(void **buffer, uint64_t *capacity, uint64_t need, size_t size) {
    if (need <= *capacity) return 0;
    uint64_t more = *capacity ? 2 * *capacity : 16;
    while (more < need) more *= 2;
    void *grown = realloc(*buffer, more * size);
    if (!grown) return -1;
    *buffer = grown;
    *capacity = more;
    return 0;
}

/* Reserve a channel's payload and table entry in the record begun (growing the slots if it
 * does not fit), copy its data, and return where its payload is. */
static inline void *shmcam__record_put(shmcam_records_writer *w, const char *name, size_t name_len,
                                       uint16_t type, uint32_t ndim, const uint32_t *shape,
                                       const void *data, uint64_t nbytes) {
    for (uint32_t i = 0; i < w->count; i++)
        if (w->entries[i].name_nbytes == name_len &&
            memcmp(w->names + w->entries[i].name_offset, name, name_len) == 0) {
            errno = EEXIST;
            return NULL;
        }
    uint64_t at = type == SHMCAM_NULL ? 0 : shmcam_align(w->used, SHMCAM_ALIGN);
    uint64_t end = type == SHMCAM_NULL ? w->used : at + nbytes + (type == SHMCAM_STRING);
    uint64_t names_nbytes = w->names_nbytes + name_len + 1;
    uint64_t size = shmcam__record_size(end, w->count + 1, names_nbytes);
    if (end < w->used || size < end || w->count + 1 > UINT32_MAX / sizeof(shmcam_record_entry) ||
        size - shmcam_align(end, 8) > UINT32_MAX) {
        errno = EINVAL; /* beyond what a slot can describe */
        return NULL;
    }
    uint64_t entries_capacity = w->entries_capacity;
    if (shmcam__reserve((void **)&w->entries, &entries_capacity, w->count + 1,
                        sizeof(shmcam_record_entry)) != 0 ||
        shmcam__reserve((void **)&w->names, &w->names_capacity, names_nbytes + 8, 1) != 0) {
        errno = ENOMEM;
        return NULL;
    }
    w->entries_capacity = (uint32_t)entries_capacity;
    if (size > w->header->slot_stride && shmcam__records_grow(w, size) != 0) return NULL;
    char *payload = w->slot + at;
    if (type == SHMCAM_NULL) {
        payload = w->slot;
    } else {
        if (data) memcpy(payload, data, nbytes);
        if (type == SHMCAM_STRING) payload[nbytes] = '\0';
        w->used = end;
    }
    shmcam_record_entry *e = &w->entries[w->count++];
    memset(e, 0, sizeof *e);
    e->offset = at;
    e->nbytes = nbytes;
    for (uint32_t d = 0; d < ndim; d++) e->shape[d] = shape[d];
    e->type = type;
    e->ndim = (uint16_t)ndim;
    e->name_offset = (uint32_t)w->names_nbytes; /* within the names; the slot's at the commit */
    e->name_nbytes = (uint32_t)name_len;
    memcpy(w->names + w->names_nbytes, name, name_len + 1);
    w->names_nbytes = names_nbytes;
    return payload;
}

/* Add a channel to the record begun: `type`, `ndim` 0..3 dimensions of `shape` (numpy order),
 * copied from `data` unless it is NULL. Returns the payload in the slot, to fill in place if
 * data was NULL (valid until the next add or the commit), or NULL with errno: EINVAL (no record
 * begun, bad type, shape or name; strings: shmcam_record_add_string), EEXIST (the record has
 * a channel of that name), ENOMEM/ENOSPC (no memory for a larger generation). A null channel
 * returns the slot (non-NULL) and has no payload. */
static inline void *shmcam_record_add(shmcam_records_writer *w, const char *name, int type,
                                      uint32_t ndim, const uint32_t *shape, const void *data) {
    size_t name_len = strlen(name);
    uint64_t nbytes = type > 0 && type < SHMCAM_TYPE_COUNT ? shmcam_type_size[type] : 0;
    if (!w->in_record || type < 0 || type >= SHMCAM_TYPE_COUNT || ndim > 3 || name_len == 0 ||
        name_len >= UINT32_MAX || (type == SHMCAM_NULL && ndim))
        goto invalid;
    for (uint32_t d = 0; d < ndim; d++)
        if (__builtin_mul_overflow(nbytes, (uint64_t)shape[d], &nbytes)) goto invalid;
    return shmcam__record_put(w, name, name_len, (uint16_t)type, ndim, shape, data, nbytes);
invalid:
    errno = EINVAL;
    return NULL;
}

/* The payload of channel i of the record begun (an add may have moved the record to larger
 * slots since it returned its pointer): NULL if there is no such channel. */
static inline void *shmcam_record_payload(shmcam_records_writer *w, uint32_t i) {
    if (!w->in_record || i >= w->count) return NULL;
    return w->slot + (w->entries[i].type == SHMCAM_NULL ? 0 : w->entries[i].offset);
}

/* Add a string channel (UTF-8, NUL-terminated). Returns 0, or -1 with errno as above. */
static inline int shmcam_record_add_string(shmcam_records_writer *w, const char *name,
                                           const char *text) {
    size_t name_len = strlen(name);
    if (!w->in_record || name_len == 0 || name_len >= UINT32_MAX) {
        errno = EINVAL;
        return -1;
    }
    char *at = (char *)shmcam__record_put(w, name, name_len, SHMCAM_STRING, 0, NULL, text,
                                          strlen(text));
    return at ? 0 : -1;
}

/* 1 if the record's table is the previous record's, but for strings' offsets and sizes. */
static inline int shmcam__same_format(const shmcam_records_writer *w) {
    if (w->count != w->last_count || w->names_nbytes != w->last_names_nbytes ||
        memcmp(w->names, w->last_names, w->names_nbytes) != 0)
        return 0;
    for (uint32_t i = 0; i < w->count; i++) {
        shmcam_record_entry a = w->entries[i], b = w->last_entries[i];
        if (a.type == SHMCAM_STRING) a.offset = b.offset, a.nbytes = b.nbytes;
        if (memcmp(&a, &b, sizeof a) != 0) return 0;
    }
    return 1;
}

/* Write the table and publish the record begun. Returns its number, or -1 with errno. */
static inline int64_t shmcam_record_commit(shmcam_records_writer *w) {
    if (!w->in_record) {
        errno = EINVAL;
        return -1;
    }
    if (w->format == 0 || !shmcam__same_format(w)) {
        shmcam_record_entry *entries =
            (shmcam_record_entry *)realloc(w->last_entries, w->entries_capacity * sizeof *entries);
        char *names = (char *)realloc(w->last_names, w->names_capacity);
        if (entries) w->last_entries = entries;
        if (names) w->last_names = names;
        if (!entries || !names) {
            errno = ENOMEM;
            return -1;
        }
        memcpy(w->last_entries, w->entries, w->count * sizeof *entries);
        memcpy(w->last_names, w->names, w->names_nbytes);
        w->last_count = w->count;
        w->last_names_nbytes = w->names_nbytes;
        w->format++;
    }
    uint64_t table_offset = shmcam_align(w->used, 8);
    uint64_t names_at = table_offset + (uint64_t)w->count * sizeof(shmcam_record_entry);
    for (uint32_t i = 0; i < w->count; i++) {
        shmcam_record_entry e = w->entries[i];
        e.name_offset += (uint32_t)names_at;
        shmcam_store_words(w->slot + table_offset + i * sizeof e, &e, sizeof e);
    }
    memset(w->names + w->names_nbytes, 0, 8); /* the padding of the last word */
    shmcam_store_words(w->slot + names_at, w->names, shmcam_align(w->names_nbytes, 8));
    w->meta.format = w->format;
    w->meta.table_offset = table_offset;
    w->meta.channel_count = w->count;
    w->meta.table_nbytes = (uint32_t)(names_at - table_offset + w->names_nbytes);
    w->meta.publish_ns = shmcam_now_ns(CLOCK_MONOTONIC);
    shmcam_store_words(w->slot + 8, (const char *)&w->meta + 8, sizeof w->meta - 8);
    shmcam_slot_end_write(w->slot, w->n);
    shmcam_publish(w->header, w->n);
    w->in_record = 0;
    return w->n;
}

/* Stop writing: the ring is marked closed (its readers stop waiting) and, with unlink_ring,
 * removed. An external program leaves its output ring to the supervisor (unlink_ring 0). */
static inline void shmcam_records_close(shmcam_records_writer *w, int unlink_ring) {
    if (w->header) {
        shmcam_set_state(w->header, SHMCAM_CLOSED);
        if (unlink_ring) {
            char path[SHMCAM_NAME_MAX + sizeof SHMCAM_SHM_DIR + 1];
            snprintf(path, sizeof path, "%s/%s", SHMCAM_SHM_DIR, w->segment.name);
            unlink(path);
        }
        shmcam_segment_unmap(&w->segment);
        w->header = NULL;
    }
    free(w->entries);
    free(w->names);
    free(w->last_entries);
    free(w->last_names);
    w->entries = w->last_entries = NULL;
    w->names = w->last_names = NULL;
}

#endif /* SHMCAM_RECORDS_H */
