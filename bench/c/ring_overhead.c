/* The C API's own cost per item, for bench/records.py. Times are thread CPU time, in ns.
 *
 *     ring_overhead frames BASE COUNT QUEUED
 *                                        read COUNT frames of the frame ring BASE; per frame:
 *                                        the reader's wait + read + intact check, without the
 *                                        work between (a sum over the middle row). QUEUED 0:
 *                                        wait for each frame (sleeping on the futex); 1: sleep
 *                                        60 ms whenever no frame is queued, so that every frame
 *                                        read was there already
 *     ring_overhead records BASE COUNT HEIGHT WIDTH IMAGE
 *                                        write COUNT records to the record ring BASE: two
 *                                        profiles, 6 scalars, a string and, with IMAGE 1, a
 *                                        uint16 HEIGHT x WIDTH image; per record: the whole
 *                                        write; the same calls copying nothing (the API's own
 *                                        cost); a plain memcpy of the payload (the baseline)
 *
 * Prints "median_ns p99_ns" per measured quantity, one per line.
 */
#include <stdio.h>
#include <stdlib.h>

#include "shmcam/records.h"
#include "shmcam/ring.h"

static int compare(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void report(uint64_t *ns, long count) {
    qsort(ns, (size_t)count, sizeof *ns, compare);
    printf("%llu %llu\n", (unsigned long long)ns[count / 2],
           (unsigned long long)ns[count * 99 / 100]);
}

static uint64_t cpu(void) { return shmcam_now_ns(CLOCK_THREAD_CPUTIME_ID); }

static int frames(const char *base, long count, int queued) {
    shmcam_reader r;
    if (shmcam_frames_open(&r, base, 0) != 0) return 1;
    printf("ready\n");
    fflush(stdout);
    uint64_t *cost = calloc((size_t)count, sizeof *cost);
    volatile uint64_t sink = 0;
    for (long done = 0; done < count;) {
        uint64_t t0 = cpu();
        int64_t n = shmcam_reader_next(&r, 5000);
        shmcam_frame f;
        if (n < 0) return 3;
        if (!shmcam_frame_read(&r, n, &f)) continue;
        uint64_t t1 = cpu();
        const uint16_t *row = (const uint16_t *)f.data + (size_t)f.shape[0] / 2 * f.shape[1];
        uint64_t sum = 0;
        for (uint32_t x = 0; x < f.shape[1]; x++) sum += row[x];
        sink += sum;
        uint64_t t2 = cpu();
        int intact = shmcam_frame_intact(&r, &f);
        cost[done++] = (t1 - t0) + (cpu() - t2);
        if (!intact) return 4;
        if (queued && shmcam_write_seq(r.header) <= r.next) {
            struct timespec pause = {0, 60000000};
            nanosleep(&pause, NULL);
        }
    }
    report(cost, count);
    shmcam_reader_close(&r);
    return 0;
}

/* One record: two profiles, 6 scalars, maybe the image, a string; data NULL: nothing copied. */
static void write_record(shmcam_records_writer *w, long i, uint32_t height, uint32_t width,
                         int image, const double *xp, const double *yp, const uint16_t *frame) {
    static const char *names[6] = {"x_center", "y_center", "x_rms", "y_rms", "intensity", "max"};
    shmcam_record_begin(w, i, i, 0);
    shmcam_record_add(w, "x_profile", SHMCAM_FLOAT64, 1, &width, xp);
    shmcam_record_add(w, "y_profile", SHMCAM_FLOAT64, 1, &height, yp);
    for (int k = 0; k < 6; k++) {
        double v = (double)(i + k);
        shmcam_record_add(w, names[k], SHMCAM_FLOAT64, 0, NULL, &v);
    }
    if (image) shmcam_record_add(w, "image", SHMCAM_UINT16, 2, (uint32_t[]){height, width}, frame);
    shmcam_record_add_string(w, "processing_parameters", "{\"threshold\": 100}");
    shmcam_record_commit(w);
}

static int records(const char *base, long count, uint32_t height, uint32_t width, int image) {
    static shmcam_records_writer w;
    enum { SLOTS = 8 };
    size_t pixels = (size_t)height * width;
    size_t payload = (image ? pixels * 2 : 0) + (width + height) * sizeof(double);
    uint16_t *frame = malloc(pixels * 2);
    double *xp = malloc(width * sizeof *xp), *yp = malloc(height * sizeof *yp);
    char *scratch[SLOTS]; /* the baseline copies into as much memory as the ring's slots */
    uint64_t *full = calloc((size_t)count, sizeof *full);
    uint64_t *api = calloc((size_t)count, sizeof *api);
    uint64_t *copy = calloc((size_t)count, sizeof *copy);
    memset(frame, 1, pixels * 2);
    memset(xp, 2, width * sizeof *xp);
    memset(yp, 3, height * sizeof *yp);
    for (int k = 0; k < SLOTS; k++) memset(scratch[k] = malloc(payload), 0, payload);
    if (shmcam_records_create(&w, base, SLOTS, payload + 4096) != 0) return 1;
    for (long i = 0; i < count; i++) {
        uint64_t t0 = cpu();
        write_record(&w, i, height, width, image, xp, yp, frame);
        uint64_t t1 = cpu();
        write_record(&w, i, height, width, image, NULL, NULL, NULL);
        uint64_t t2 = cpu();
        char *to = scratch[i % SLOTS];
        memcpy(to, xp, width * sizeof *xp);
        memcpy(to + width * sizeof *xp, yp, height * sizeof *yp);
        if (image) memcpy(to + (width + height) * sizeof(double), frame, pixels * 2);
        full[i] = t1 - t0;
        api[i] = t2 - t1;
        copy[i] = cpu() - t2;
    }
    report(full, count);
    report(api, count);
    report(copy, count);
    shmcam_records_close(&w, 1);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "frames") == 0)
        return frames(argv[2], atol(argv[3]), atoi(argv[4]));
    if (argc == 7 && strcmp(argv[1], "records") == 0)
        return records(argv[2], atol(argv[3]), (uint32_t)atol(argv[4]), (uint32_t)atol(argv[5]),
                       atoi(argv[6]));
    fprintf(stderr, "usage: see the comment at the top of %s\n", __FILE__);
    return 2;
}
