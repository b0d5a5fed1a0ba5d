#define _GNU_SOURCE
#include "CKDCTShims.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <pthread.h>
#include <linux/fs.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

off_t kdct_seek_data(int fd, off_t offset) { return lseek(fd, offset, SEEK_DATA); }
off_t kdct_seek_hole(int fd, off_t offset) { return lseek(fd, offset, SEEK_HOLE); }

int kdct_fallocate(int fd, off_t offset, off_t length) { return fallocate(fd, 0, offset, length); }
int kdct_punch_hole(int fd, off_t offset, off_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

int kdct_block_device_size(int fd, uint64_t *size) { return ioctl(fd, BLKGETSIZE64, size); }
int kdct_block_sector_size(int fd, int *size) { return ioctl(fd, BLKSSZGET, size); }

int kdct_block_zero_out(int fd, uint64_t offset, uint64_t length) {
    uint64_t range[2] = { offset, length };
    return ioctl(fd, BLKZEROOUT, range);
}

int kdct_open_unnamed(const char *directory, int mode) {
    return open(directory, O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
}

int kdct_link_unnamed(int fd, const char *path) {
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0) return 0;
    if (errno == EEXIST) return -1;
    return linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH);
}

ssize_t kdct_copy_file_range(int in, off_t in_offset, int out, off_t out_offset, size_t length) {
    return copy_file_range(in, &in_offset, out, &out_offset, length, 0);
}

int kdct_start_writeback(int fd, off_t offset, off_t length) {
    return sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE);
}

int kdct_rename_noreplace(const char *from, const char *to) {
    return renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);
}

int kdct_rename_exchange(const char *a, const char *b) {
    return renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE);
}

int kdct_advise_sequential(int fd) { return posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL); }

int kdct_advise_willneed(int fd, off_t offset, off_t length) {
    return posix_fadvise(fd, offset, length, POSIX_FADV_WILLNEED);
}

int kdct_terminal_columns(int fd) {
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) != 0) return 0;
    return ws.ws_col;
}

int kdct_is_zero(const void *buffer, size_t length) {
    const unsigned char *p = buffer;
    /* Check the first 16 bytes directly, then compare the buffer with itself shifted by
       16: equal only if every byte equals the byte 16 before it, i.e. all zero. memcmp is
       vectorised by glibc, so this runs at memory bandwidth. */
    if (length <= 16) {
        for (size_t i = 0; i < length; i++) if (p[i]) return 0;
        return 1;
    }
    static const unsigned char zero16[16];
    if (memcmp(p, zero16, 16) != 0) return 0;
    return memcmp(p, p + 16, length - 16) == 0;
}

/* Slicing-by-8 CRC-32C, reflected polynomial 0x82F63B78. */
static uint32_t crc32c_table[8][256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = crc32c_table[0][n];
        for (int k = 1; k < 8; k++) {
            c = crc32c_table[0][c & 0xff] ^ (c >> 8);
            crc32c_table[k][n] = c;
        }
    }
}

uint32_t kdct_crc32c(uint32_t crc, const void *buffer, size_t length) {
    pthread_once(&crc32c_once, crc32c_init);
    const unsigned char *p = buffer;
    crc = ~crc;
    while (length >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = crc32c_table[7][w & 0xff] ^ crc32c_table[6][(w >> 8) & 0xff] ^
              crc32c_table[5][(w >> 16) & 0xff] ^ crc32c_table[4][(w >> 24) & 0xff] ^
              crc32c_table[3][(w >> 32) & 0xff] ^ crc32c_table[2][(w >> 40) & 0xff] ^
              crc32c_table[1][(w >> 48) & 0xff] ^ crc32c_table[0][w >> 56];
        p += 8;
        length -= 8;
    }
    while (length--) crc = crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

int kdct_claim_image(int fd) {
    struct flock probe;
    memset(&probe, 0, sizeof(probe));
    probe.l_type = F_WRLCK;
    probe.l_whence = SEEK_SET;
    if (fcntl(fd, F_OFD_GETLK, &probe) != 0) return -1;
    if (probe.l_type != F_UNLCK) return 1;
    struct flock claim;
    memset(&claim, 0, sizeof(claim));
    claim.l_type = F_RDLCK;
    claim.l_whence = SEEK_SET;
    claim.l_start = 100;
    claim.l_len = 200;
    if (fcntl(fd, F_OFD_SETLK, &claim) != 0) return (errno == EAGAIN || errno == EACCES) ? 1 : -1;
    return 0;
}

unsigned int kdct_device_major(dev_t device) { return major(device); }

unsigned int kdct_device_minor(dev_t device) { return minor(device); }

uint64_t kdct_file_system_type(int fd) {
    struct statfs fs;
    return fstatfs(fd, &fs) == 0 ? (uint64_t)fs.f_type : 0;
}

uint64_t kdct_file_system_type_at(const char *path) {
    struct statfs fs;
    return statfs(path, &fs) == 0 ? (uint64_t)fs.f_type : 0;
}
