/* Test writer: writes COUNT records to the record ring BASE (taking its slots and capacity),
 * record i with every channel type (values derived from i; see tests/test_records_c.py), then
 * bumps the statistics block STATS, then closes the ring without removing it. */
#include <stdio.h>
#include <stdlib.h>

#include "shmcam/records.h"
#include "shmcam/stats.h"

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s BASE COUNT PROFILE_LENGTH STATS\n", argv[0]);
        return 2;
    }
    static shmcam_records_writer w;
    if (shmcam_records_create(&w, argv[1], 0, 0) != 0) {
        perror("create");
        return 1;
    }
    long count = atol(argv[2]);
    uint32_t length = (uint32_t)atol(argv[3]);
    double *profile = malloc(length * sizeof *profile);
    for (long i = 0; i < count; i++) {
        int64_t pulse = 5000 + i;
        shmcam_record_begin(&w, pulse, 1700000000 + i, 250 * i);
        int64_t index = i;
        uint8_t flag = i % 2;
        float ratio = 0.5f * (float)i;
        uint64_t big = UINT64_MAX - (uint64_t)i;
        int16_t grid[2][3] = {{1, 2, 3}, {4, 5, (int16_t)-i}};
        for (uint32_t k = 0; k < length; k++) profile[k] = k * 0.25 + (double)i;
        if (!shmcam_record_add(&w, "index", SHMCAM_INT64, 0, NULL, &index) ||
            !shmcam_record_add(&w, "flag", SHMCAM_BOOL, 0, NULL, &flag) ||
            !shmcam_record_add(&w, "ratio", SHMCAM_FLOAT32, 0, NULL, &ratio) ||
            !shmcam_record_add(&w, "big", SHMCAM_UINT64, 0, NULL, &big) ||
            !shmcam_record_add(&w, "profile", SHMCAM_FLOAT64, 1, &length, profile) ||
            !shmcam_record_add(&w, "grid", SHMCAM_INT16, 2, (uint32_t[]){2, 3}, grid) ||
            !shmcam_record_add(&w, "missing", SHMCAM_NULL, 0, NULL, NULL)) {
            perror("add");
            return 3;
        }
        uint8_t *bytes = shmcam_record_add(&w, "bytes", SHMCAM_UINT8, 1, (uint32_t[]){4}, NULL);
        for (int k = 0; k < 4; k++) bytes[k] = (uint8_t)(i + k); /* filled in place */
        char text[64];
        snprintf(text, sizeof text, "record %ld of %ld", i, count);
        if (shmcam_record_add_string(&w, "text", text) != 0 ||
            shmcam_record_add(&w, "index", SHMCAM_INT64, 0, NULL, &index) != NULL) {
            fprintf(stderr, "a second channel 'index' was accepted\n");
            return 4;
        }
        if (shmcam_record_commit(&w) != i) return 5;
    }
    shmcam_stats stats;
    if (shmcam_stats_attach(&stats, argv[4]) != 0) {
        perror("stats");
        return 6;
    }
    shmcam_stats_add(&stats, SHMCAM_STAT_FRAMES_IN, count);
    shmcam_stats_add(&stats, SHMCAM_STAT_ERRORS, 2);
    for (long ms = 1; ms <= 100; ms++) shmcam_stats_record_time(&stats, ms * 1000000);
    shmcam_stats_detach(&stats);
    printf("%u %llu %llu\n", w.slots, (unsigned long long)w.header->payload_capacity,
           (unsigned long long)w.header->generation);
    shmcam_records_close(&w, 0);
    free(profile);
    return 0;
}
