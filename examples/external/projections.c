/* Per-frame projections and centroid of a camera's frames, as an external shmcam pipeline in C.
 *
 * Reads frames (uint8 or uint16) from SHMCAM_INPUT_RING and writes, for each, a record to
 * SHMCAM_OUTPUT_RING: x_profile, y_profile (sums over columns and rows of the pixels above
 * the config's "threshold", the threshold subtracted), intensity, x_centroid, y_centroid (in
 * pixels; NaN for an empty image) and the threshold used. The config is read again whenever
 * SHMCAM_CONFIG is replaced; SHMCAM_STATS gets frames, errors, torn frames and processing
 * times. SIGTERM ends it. The same program as projections.py (see docs/external.md).
 *
 *     gcc -O3 -I include examples/external/projections.c -o projections   (-O3 vectorizes)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmcam/records.h"
#include "shmcam/ring.h"
#include "shmcam/stats.h"

static volatile sig_atomic_t stopping;

static void stop(int sig) {
    (void)sig;
    stopping = 1;
}

/* The config's "threshold" (0 if absent). A minimal reader of one number: a real program
 * would use a JSON library. Re-read only when the file was replaced (new inode or mtime). */
static double threshold(const char *path) {
    static struct stat seen;
    static double value;
    struct stat st;
    if (!path || stat(path, &st) != 0 ||
        (st.st_ino == seen.st_ino && st.st_mtim.tv_sec == seen.st_mtim.tv_sec &&
         st.st_mtim.tv_nsec == seen.st_mtim.tv_nsec && st.st_size == seen.st_size))
        return value;
    seen = st;
    char text[65536] = {0};
    FILE *f = fopen(path, "r");
    if (!f) return value;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    const char *key = strstr(text, "\"threshold\"");
    value = 0;
    if (key && (key = strchr(key, ':')) != NULL) value = strtod(key + 1, NULL);
    return value;
}

/* The projections of the frame's pixels of one type, summed straight into the record. A
 * whole-number threshold (the usual case: counts) is applied in integers, which the compiler
 * vectorizes (several times faster at 2560x2160); a fractional one in doubles. Both give the
 * float64 sums numpy gives (integer sums are exact in a double). */
#define PROJECT(type)                                                                        \
    for (uint32_t y = 0; y < height; y++) {                                                  \
        const type *row = (const type *)f->data + (size_t)y * width;                         \
        if (whole) {                                                                         \
            uint32_t sum = 0, cut = (uint32_t)t;                                             \
            for (uint32_t x = 0; x < width; x++) {                                           \
                uint32_t w = row[x] > cut ? row[x] - cut : 0;                                \
                columns[x] += w;                                                             \
                sum += w;                                                                    \
            }                                                                                \
            yp[y] = sum;                                                                     \
        } else {                                                                             \
            for (uint32_t x = 0; x < width; x++) {                                           \
                double w = row[x] > t ? row[x] - t : 0.0;                                    \
                xp[x] += w;                                                                  \
                yp[y] += w;                                                                  \
            }                                                                                \
        }                                                                                    \
    }

static int project(shmcam_records_writer *w, const shmcam_frame *f, double t) {
    static uint32_t columns[65536]; /* integer column sums: < 2^32 for 65536 rows of uint16 */
    uint32_t height = f->shape[0], width = f->shape[1];
    if (f->ndim != 2 || (strcmp(f->dtype, "<u2") != 0 && strcmp(f->dtype, "|u1") != 0) ||
        height > 65536 || width > 65536)
        return -1;
    int whole = t >= 0 && t <= 65535 && t == (double)(uint32_t)t;
    shmcam_record_begin(w, f->pulse_id, f->ts_sec, f->ts_ns);
    if (!shmcam_record_add(w, "x_profile", SHMCAM_FLOAT64, 1, &width, NULL) ||
        !shmcam_record_add(w, "y_profile", SHMCAM_FLOAT64, 1, &height, NULL))
        return -1;
    /* computed in place, in the slot; an add may move the record (larger slots): so after */
    double *xp = shmcam_record_payload(w, 0), *yp = shmcam_record_payload(w, 1);
    memset(xp, 0, width * sizeof *xp);
    memset(yp, 0, height * sizeof *yp);
    memset(columns, 0, width * sizeof *columns);
    if (strcmp(f->dtype, "<u2") == 0) {
        PROJECT(uint16_t)
    } else {
        PROJECT(uint8_t)
    }
    if (whole)
        for (uint32_t x = 0; x < width; x++) xp[x] = columns[x];
    double intensity = 0, xs = 0, ys = 0;
    for (uint32_t x = 0; x < width; x++) intensity += xp[x], xs += xp[x] * x;
    for (uint32_t y = 0; y < height; y++) ys += yp[y] * y;
    double scalars[4] = {intensity, xs / intensity, ys / intensity, t};
    const char *names[4] = {"intensity", "x_centroid", "y_centroid", "threshold"};
    for (int i = 0; i < 4; i++)
        if (!shmcam_record_add(w, names[i], SHMCAM_FLOAT64, 0, NULL, &scalars[i])) return -1;
    return 0;
}

int main(void) {
    const char *input = getenv("SHMCAM_INPUT_RING"), *output = getenv("SHMCAM_OUTPUT_RING");
    if (!input || !output) {
        fprintf(stderr, "SHMCAM_INPUT_RING and SHMCAM_OUTPUT_RING must be set (by shmcam)\n");
        return 2;
    }
    signal(SIGTERM, stop);
    shmcam_reader frames;
    static shmcam_records_writer out;
    shmcam_stats stats;
    int have_stats = getenv("SHMCAM_STATS") && shmcam_stats_attach(&stats, getenv("SHMCAM_STATS")) == 0;
    for (int tries = 0; shmcam_frames_open(&frames, input, 0) != 0; tries++) {
        if (tries == 100 || stopping) {
            fprintf(stderr, "no ring %s\n", input);
            return 1;
        }
        struct timespec pause = {0, 100000000};
        nanosleep(&pause, NULL);
    }
    if (shmcam_records_create(&out, output, 0, 0) != 0) { /* after the input: "attached" */
        perror(output);
        return 1;
    }
    while (!stopping) {
        int64_t n = shmcam_reader_next(&frames, 250);
        shmcam_frame f;
        if (n < 0 || !shmcam_frame_read(&frames, n, &f)) continue;
        uint64_t start = shmcam_now_ns(CLOCK_MONOTONIC);
        if (have_stats) { /* what came in, before what goes out */
            shmcam_stats_add(&stats, SHMCAM_STAT_FRAMES_IN, 1);
            shmcam_stats_set(&stats, SHMCAM_STAT_DROPPED, (int64_t)frames.missed);
            shmcam_stats_set(&stats, SHMCAM_STAT_FRAME_HEIGHT, f.shape[0]);
            shmcam_stats_set(&stats, SHMCAM_STAT_FRAME_WIDTH, f.ndim > 1 ? f.shape[1] : 0);
            shmcam_stats_set(&stats, SHMCAM_STAT_FRAME_ITEMSIZE, strtol(f.dtype + 2, NULL, 10));
            shmcam_stats_add(&stats, SHMCAM_STAT_BYTES_IN, (int64_t)f.nbytes);
        }
        double t = threshold(getenv("SHMCAM_CONFIG"));
        int failed = project(&out, &f, t);
        if (!failed && shmcam_frame_intact(&frames, &f)) shmcam_record_commit(&out);
        if (have_stats) {
            shmcam_stats_add(&stats, SHMCAM_STAT_ERRORS, failed ? 1 : 0);
            shmcam_stats_set(&stats, SHMCAM_STAT_TORN, (int64_t)frames.torn);
            shmcam_stats_record_time(&stats, (int64_t)(shmcam_now_ns(CLOCK_MONOTONIC) - start));
        }
    }
    shmcam_records_close(&out, 0); /* the supervisor removes the ring */
    shmcam_reader_close(&frames);
    if (have_stats) shmcam_stats_detach(&stats);
    return 0;
}
