#define _GNU_SOURCE
#include <stddef.h>
#include <sys/socket.h>
#include "CParleyLinux.h"

// struct parley_mmsghdr has the layout of struct mmsghdr.
_Static_assert(sizeof(struct parley_mmsghdr) == sizeof(struct mmsghdr), "mmsghdr layout");
_Static_assert(offsetof(struct parley_mmsghdr, msg_len) == offsetof(struct mmsghdr, msg_len), "mmsghdr layout");

int parley_recvmmsg(int fd, struct parley_mmsghdr *messages, unsigned int count, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)messages, count, flags, NULL);
}

int parley_sendmmsg(int fd, struct parley_mmsghdr *messages, unsigned int count, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)messages, count, flags);
}

int parley_accept_nonblocking(int fd, struct sockaddr *address, socklen_t *length) {
    return accept4(fd, address, length, SOCK_NONBLOCK | SOCK_CLOEXEC);
}
