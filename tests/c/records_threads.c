/* A writer thread and reader threads on one record ring, through include/shmcam's functions,
 * for ThreadSanitizer (tests/test_c_api.py).
 *
 *     records_threads MODE BASE RECORDS READERS
 *
 * MODE "paced": the writer never laps a reader (it waits until every reader is less than a
 * ring behind), so nothing in the test races by design: every race TSan reports is a missing
 * happens-before between the writer's publication and the readers, i.e. an ordering bug in
 * the header. MODE "lapping": the writer runs flat out over 2 slots; readers check each
 * record's content, and for every other record wait half-way until the writer has written
 * over it: they must detect every torn record (the functional check of the seqlock; its
 * payload reads race by design). Built with -DSHMCAM_TEST_RELAXED, the header's acquire and
 * release become relaxed, as the first ring.h's volatile accesses were: TSan must then report
 * the race in "paced" mode (the test's control).
 *
 * The readers use the writer's mapping of the ring: TSan tracks virtual addresses, so a second
 * mapping of the same segment would hide every race from it.
 * Prints per reader "received R torn T caught C bad B missed M" (caught: wrong content the
 * intact check refused; bad: wrong content it let through). Exit 0, or 1 on bad use.
 */
#ifdef SHMCAM_TEST_RELAXED
#undef __ATOMIC_ACQUIRE
#undef __ATOMIC_RELEASE
#define __ATOMIC_ACQUIRE __ATOMIC_RELAXED
#define __ATOMIC_RELEASE __ATOMIC_RELAXED
#endif

#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#include "shmcam/records.h"

#define VALUES 512
#define MAX_READERS 8

static shmcam_records_writer writer;
static int paced;
static long records;
static int readers;
static int64_t done[MAX_READERS]; /* records each reader has finished with (release) */
static int writer_done;

typedef struct {
    int id;
    shmcam_reader reader;
    uint64_t bad;    /* records with wrong content that passed the intact check: must be 0 */
    uint64_t caught; /* records with wrong content the intact check caught */
} reader_state;

static void *write_records(void *arg) {
    (void)arg;
    for (long i = 0; i < records; i++) {
        if (paced) /* every reader less than a ring behind: never lapped, never skipping */
            for (int k = 0; k < readers; k++)
                while (__atomic_load_n(&done[k], __ATOMIC_ACQUIRE) < i - (long)writer.slots + 2)
                    sched_yield();
        shmcam_record_begin(&writer, 1000 + i, i, 0);
        int64_t index = i;
        shmcam_record_add(&writer, "index", SHMCAM_INT64, 0, NULL, &index);
        double *values = shmcam_record_add(&writer, "values", SHMCAM_FLOAT64, 1,
                                           (uint32_t[]){VALUES}, NULL);
        for (int k = 0; k < VALUES; k++) values[k] = (double)(i + k); /* in place */
        char text[32];
        snprintf(text, sizeof text, "record %ld", i);
        shmcam_record_add_string(&writer, "text", text);
        shmcam_record_commit(&writer);
    }
    __atomic_store_n(&writer_done, 1, __ATOMIC_RELAXED);
    return NULL;
}

/* 1 if a record holds what the writer wrote for its pulse id (read in place: races with a
 * writer that laps the reader, which the intact check afterwards tells). */
static int content_ok(const shmcam_record *rec) {
    shmcam_channel index, values, text;
    long i = (long)(rec->pulse_id - 1000);
    if (shmcam_record_channel(rec, 0, &index) != 0 || shmcam_record_find(rec, "values", &values) != 1 ||
        shmcam_record_find(rec, "text", &text) != 2 || values.shape[0] != VALUES)
        return 0;
    int ok = *(const int64_t *)index.data == i;
    for (int k = 0; k < VALUES; k++) {
        if (!paced && rec->index % 2 == 0 && k == VALUES / 2) /* tear every other record */
            while (__atomic_load_n((const uint64_t *)rec->slot, __ATOMIC_RELAXED) <
                       (uint64_t)(2 * rec->index + 6) && /* record index + 2 written over it */
                   !__atomic_load_n(&writer_done, __ATOMIC_RELAXED))
                sched_yield();
        ok &= ((const double *)values.data)[k] == (double)(i + k);
    }
    char expected[32];
    snprintf(expected, sizeof expected, "record %ld", i);
    return ok && text.nbytes == strlen(expected) && memcmp(text.data, expected, text.nbytes) == 0;
}

static void *read_records(void *arg) {
    reader_state *s = arg;
    int64_t n;
    while ((n = shmcam_reader_next(&s->reader, 2000)) >= 0) {
        shmcam_record rec;
        if (shmcam_record_read(&s->reader, n, &rec)) {
            int ok = content_ok(&rec);
            if (shmcam_record_intact(&s->reader, &rec))
                s->bad += !ok;
            else
                s->caught += !ok;
        }
        __atomic_store_n(&done[s->id], n + 1, __ATOMIC_RELEASE);
        if (n == records - 1) break;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s paced|lapping BASE RECORDS READERS\n", argv[0]);
        return 1;
    }
    paced = strcmp(argv[1], "paced") == 0;
    records = atol(argv[3]);
    readers = atoi(argv[4]);
    if (readers < 1 || readers > MAX_READERS ||
        shmcam_records_create(&writer, argv[2], paced ? 4 : 2, 16384) != 0) {
        perror("create");
        return 1;
    }
    reader_state state[MAX_READERS];
    pthread_t threads[MAX_READERS + 1];
    for (int k = 0; k < readers; k++) {
        reader_state *s = &state[k];
        memset(s, 0, sizeof *s);
        s->id = k;
        /* attached as shmcam_reader_open would, but to the writer's own mapping */
        strcpy(s->reader.base, argv[2]);
        memcpy(s->reader.magic, SHMCAM_RECORDS_MAGIC, 8);
        s->reader.slot_header_size = SHMCAM_RECORD_SLOT_HEADER_SIZE;
        s->reader.segment.inode = writer.segment.inode;
        s->reader.header = writer.header;
        pthread_create(&threads[k], NULL, read_records, s);
    }
    pthread_create(&threads[readers], NULL, write_records, NULL);
    for (int k = 0; k <= readers; k++) pthread_join(threads[k], NULL);
    for (int k = 0; k < readers; k++)
        printf("received %" PRIu64 " torn %" PRIu64 " caught %" PRIu64 " bad %" PRIu64
               " missed %" PRIu64 "\n",
               state[k].reader.received, state[k].reader.torn, state[k].caught, state[k].bad,
               state[k].reader.missed);
    shmcam_records_close(&writer, 1);
    return 0;
}
