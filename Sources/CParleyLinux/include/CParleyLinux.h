// Linux system calls that Glibc's Swift module leaves out: epoll, eventfd, the batched
// datagram calls and accept4. recvmmsg, sendmmsg and accept4 need _GNU_SOURCE, which must not leak into a header
// Swift shares with Glibc, so they are wrapped in shim.c. Also the one compiler builtin Swift
// has no spelling for: cache prefetch.
#pragma once
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

struct parley_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};

int parley_recvmmsg(int fd, struct parley_mmsghdr *messages, unsigned int count, int flags);
int parley_sendmmsg(int fd, struct parley_mmsghdr *messages, unsigned int count, int flags);
// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC: the new socket is ready for an epoll loop.
int parley_accept_nonblocking(int fd, struct sockaddr *address, socklen_t *length);

// The epoll_event's fd, without going through its union from Swift.
static inline int parley_epoll_event_fd(const struct epoll_event *event) { return event->data.fd; }
static inline void parley_epoll_event_set_fd(struct epoll_event *event, int fd) { event->data.fd = fd; }

// Asks the cache for the `lines` 64-byte lines from `address`, for writing: the forwarding loop
// fetches every subscriber's cold state before it touches any of it, so the misses overlap.
static inline void parley_prefetch(const void *address, int lines) {
    for (int line = 0; line < lines; line++) __builtin_prefetch((const char *)address + 64 * line, 1, 3);
}
