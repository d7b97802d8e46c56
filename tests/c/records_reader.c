/* Test reader: prints `count` records of the record ring BASE from its next one on, waiting
 * with the futex: "record index pulse_id sec ns format channels" then per channel
 * "name type ndim d0 d1 d2 value", value being "-" for null, the text for strings, the value of
 * scalars and the sum of the elements of arrays (integers exact, floats %.17g). Prints "ready"
 * once attached, "intact" or "torn" after each record. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "shmcam/records.h"

static void print_value(const shmcam_channel *c) {
    uint64_t count = c->type == SHMCAM_NULL || c->type == SHMCAM_STRING
                         ? 0
                         : c->nbytes / shmcam_type_size[c->type];
    int64_t isum = 0;
    uint64_t usum = 0;
    double fsum = 0;
    for (uint64_t i = 0; i < count; i++) switch (c->type) {
        case SHMCAM_BOOL: isum += ((const uint8_t *)c->data)[i]; break;
        case SHMCAM_INT8: isum += ((const int8_t *)c->data)[i]; break;
        case SHMCAM_UINT8: usum += ((const uint8_t *)c->data)[i]; break;
        case SHMCAM_INT16: isum += ((const int16_t *)c->data)[i]; break;
        case SHMCAM_UINT16: usum += ((const uint16_t *)c->data)[i]; break;
        case SHMCAM_INT32: isum += ((const int32_t *)c->data)[i]; break;
        case SHMCAM_UINT32: usum += ((const uint32_t *)c->data)[i]; break;
        case SHMCAM_INT64: isum += ((const int64_t *)c->data)[i]; break;
        case SHMCAM_UINT64: usum += ((const uint64_t *)c->data)[i]; break;
        case SHMCAM_FLOAT32: fsum += ((const float *)c->data)[i]; break;
        case SHMCAM_FLOAT64: fsum += ((const double *)c->data)[i]; break;
    }
    switch (c->type) {
    case SHMCAM_NULL: printf("-"); break;
    case SHMCAM_STRING: printf("%.*s", (int)c->nbytes, (const char *)c->data); break;
    case SHMCAM_UINT8: case SHMCAM_UINT16: case SHMCAM_UINT32: case SHMCAM_UINT64:
        printf("%" PRIu64, usum); break;
    case SHMCAM_FLOAT32: case SHMCAM_FLOAT64: printf("%.17g", fsum); break;
    default: printf("%" PRId64, isum);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s BASE COUNT\n", argv[0]);
        return 2;
    }
    shmcam_reader r;
    if (shmcam_records_open(&r, argv[1], 0) != 0) {
        perror("open");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (long done = 0; done < atol(argv[2]);) {
        int64_t n = shmcam_reader_next(&r, 5000);
        if (n < 0) return 3;
        shmcam_record rec;
        if (!shmcam_record_read(&r, n, &rec)) continue;
        printf("record %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRIu64 " %u\n",
               rec.index, rec.pulse_id, rec.ts_sec, rec.ts_ns, rec.format, rec.channel_count);
        for (uint32_t i = 0; i < rec.channel_count; i++) {
            shmcam_channel c;
            if (shmcam_record_channel(&rec, i, &c) != 0) return 4;
            printf("%.*s %s %u %u %u %u ", (int)c.name_nbytes, c.name, shmcam_type_name[c.type],
                   c.ndim, c.shape[0], c.shape[1], c.shape[2]);
            print_value(&c);
            printf("\n");
        }
        shmcam_channel found;
        int at = shmcam_record_find(&rec, "profile", &found);
        printf("find profile %d\n", at);
        printf("%s\n", shmcam_record_intact(&r, &rec) ? "intact" : "torn");
        fflush(stdout);
        done++;
    }
    shmcam_reader_close(&r);
    return 0;
}
