/* Test reader: prints every frame of a ring from its first, waiting for new ones with the
 * futex, until `count` frames were read: "index pulse_id sec ns dtype height width sum x0 dx". */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "shmcam/ring.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SEGMENT COUNT\n", argv[0]);
        return 2;
    }
    shmcam_ring ring;
    if (shmcam_ring_attach(&ring, argv[1]) != 0) {
        perror("attach");
        return 1;
    }
    const shmcam_ring_header *h = ring.header;
    int64_t count = atoll(argv[2]);
    int64_t n = h->first_seq;
    while (n < count) {
        uint32_t seen = h->futex;
        if (h->write_seq <= n) {
            printf("waiting\n");
            fflush(stdout);
            shmcam_ring_wait(&ring, seen, 5000);
            if (h->write_seq <= n) return 3;
            continue;
        }
        if (!shmcam_ring_intact(&ring, n)) return 4;
        const shmcam_slot_header *s = shmcam_ring_slot(&ring, n);
        const uint16_t *pixels = shmcam_ring_payload(&ring, n);
        uint64_t sum = 0;
        for (uint64_t i = 0; i < s->nbytes / 2; i++) sum += pixels[i];
        int64_t pulse = s->pulse_id, sec = s->ts_sec, ns = s->ts_ns;
        uint32_t height = s->shape[0], width = s->shape[1];
        double x0 = s->axis_x0, dx = s->axis_dx;
        if (!shmcam_ring_intact(&ring, n)) return 4;
        printf("%" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %.8s %u %u %" PRIu64 " %g %g\n",
               n, pulse, sec, ns, s->dtype, height, width, sum, x0, dx);
        fflush(stdout);
        n++;
    }
    shmcam_ring_detach(&ring);
    return 0;
}
