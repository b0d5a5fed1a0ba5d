#ifndef KDCT_SHIMS_H
#define KDCT_SHIMS_H
/* What Glibc does not expose to Swift: _GNU_SOURCE constants and calls, variadic ioctl,
   and two hot loops (zero detection, CRC-32C) that must run word-wise. */
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* lseek(fd, offset, SEEK_DATA / SEEK_HOLE); -1 with errno on failure (ENXIO past the last data). */
off_t kdct_seek_data(int fd, off_t offset);
off_t kdct_seek_hole(int fd, off_t offset);

/* fallocate(2) with mode 0 (allocate) or FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE. */
int kdct_fallocate(int fd, off_t offset, off_t length);
int kdct_punch_hole(int fd, off_t offset, off_t length);

/* sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE): start writeback early. */
int kdct_start_writeback(int fd, off_t offset, off_t length);

/* renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE): atomic rename that fails with EEXIST
   instead of replacing; EINVAL/ENOSYS where the filesystem or kernel lacks it. */
int kdct_rename_noreplace(const char *from, const char *to);

/* renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE): swaps two existing names atomically; EINVAL/ENOSYS where
   the filesystem or kernel lacks it, ENOENT when either is missing. */
int kdct_rename_exchange(const char *a, const char *b);

/* Block devices (ioctl): BLKGETSIZE64 (size in bytes), BLKSSZGET (logical sector size), BLKZEROOUT over
   [offset, offset+length) (aligned to the logical sector size). 0, or -1 with errno. A discard that guarantees
   zeros is fallocate(PUNCH_HOLE) on the device (kdct_punch_hole). */
int kdct_block_device_size(int fd, uint64_t *size);
int kdct_block_sector_size(int fd, int *size);
int kdct_block_zero_out(int fd, uint64_t offset, uint64_t length);

/* open(directory, O_TMPFILE|O_RDWR|O_CLOEXEC, mode): an unnamed file in `directory`; -1 with errno
   (EOPNOTSUPP/EISDIR/EINVAL where the file system or kernel lacks O_TMPFILE). */
int kdct_open_unnamed(const char *directory, int mode);

/* Gives the unnamed file `fd` the name `path` (linkat through /proc/self/fd, then AT_EMPTY_PATH);
   -1 with errno (EEXIST when the name is taken). */
int kdct_link_unnamed(int fd, const char *path);

/* copy_file_range(2) from `in` at `in_offset` to `out` at `out_offset`: bytes copied, 0 at the end of `in`,
   -1 with errno (EXDEV, EINVAL, EOPNOTSUPP, ENOSYS where the kernel cannot offload). */
ssize_t kdct_copy_file_range(int in, off_t in_offset, int out, off_t out_offset, size_t length);

/* Claims the image open on `fd` before it is changed (resize, leak repair): 1 when another open file holds a POSIX
   or OFD lock on any byte of it (F_OFD_GETLK for a whole-file write lock; qemu locks the images a running VM
   uses), else takes shared OFD locks on bytes 100-299, the bytes qemu's own lock protocol checks, so a qemu that
   starts meanwhile refuses the image, and returns 0; -1 with errno on failure. The locks end when the file is
   closed. */
int kdct_claim_image(int fd);

/* posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL). */
int kdct_advise_sequential(int fd);

/* posix_fadvise(fd, offset, length, POSIX_FADV_WILLNEED): starts reading the range into the page cache without
   waiting for it (a hint; 0 or an error number, never errno). */
int kdct_advise_willneed(int fd, off_t offset, off_t length);

/* major(device) and minor(device) of a device number (macros in C). */
unsigned int kdct_device_major(dev_t device);
unsigned int kdct_device_minor(dev_t device);

/* The file system type (statfs(2) f_type magic) of the open file fd, or of the file at path; 0 on failure. */
uint64_t kdct_file_system_type(int fd);
uint64_t kdct_file_system_type_at(const char *path);

/* Terminal width of fd via TIOCGWINSZ, or 0 when it is not a terminal. */
int kdct_terminal_columns(int fd);

/* 1 when the buffer holds only zero bytes; word-wise, the tail handled bytewise. */
int kdct_is_zero(const void *buffer, size_t length);

/* CRC-32C (Castagnoli), as used by VHDX; `crc` is the running value (start with 0). */
uint32_t kdct_crc32c(uint32_t crc, const void *buffer, size_t length);

#endif
