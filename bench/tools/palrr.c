// SPDX-License-Identifier: Apache-2.0
/* palrr: the datapath benchmark's TCP load generator (request/response, connection rate, policy probe).
 *
 *   palrr server --echo PORT [--echo PORT...] [--oneshot LO-HI...]
 *       echo ports: every byte read is written back (long-lived request/response connections);
 *       oneshot ports: accept, read one request, write it back, close (one connection per transaction).
 *       Prints "ready" once every socket listens. Single thread, epoll.
 *   palrr rr HOST PORT SECONDS [SIZE]
 *       one connection, sequential SIZE-byte request / SIZE-byte response; JSON on stdout.
 *   palrr crr HOST LO-HI SECONDS [START]
 *       connect / send 1 byte / receive 1 byte / close, sequentially; destination port rotating over LO..HI and
 *       source port (bound explicitly) stepping through 10000-65535 from tuple number START (pass the previous
 *       run's next_tuple), so no 4-tuple repeats within the datapath's conntrack lifetimes, across runs; counts
 *       tuples that did repeat within 12 s in this run (each of those could have been a conntrack hit instead
 *       of a policy decision). The server closes first (its TIME_WAIT).
 *   palrr probe HOST PORT WANT SECONDS [TIMEOUT_MS [INTERVAL_MS]]
 *       WANT open|closed: new connection attempts (each one a new flow: a new source port), at most one every
 *       INTERVAL_MS (default 1), each waiting TIMEOUT_MS (default 2) for the handshake, until an attempt has the
 *       wanted outcome; prints "ready <ns>" first, then JSON with CLOCK_MONOTONIC times in ns.
 *
 * Every result is one JSON object on stdout; errors go to stderr with exit code 1 (2 for usage). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTEN 1024
#define REUSE_WINDOW_MS 12000u
#define SPORT_LO 10000
#define SPORT_HI 65535

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "palrr: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: palrr server --echo PORT [--oneshot LO-HI] | rr HOST PORT SECONDS [SIZE] |"
			" crr HOST LO-HI SECONDS [START] | probe HOST PORT open|closed SECONDS [TIMEOUT_MS]\n");
	exit(2);
}

static long parse_num(const char *s, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v < lo || v > hi) {
		fprintf(stderr, "palrr: %s: not a number in [%ld, %ld]\n", s, lo, hi);
		exit(2);
	}
	return v;
}

static void parse_range(const char *s, int *lo, int *hi)
{
	char buf[64];
	snprintf(buf, sizeof(buf), "%s", s);
	char *dash = strchr(buf, '-');
	if (!dash) {
		*lo = *hi = (int)parse_num(buf, 1, 65535);
		return;
	}
	*dash = 0;
	*lo = (int)parse_num(buf, 1, 65535);
	*hi = (int)parse_num(dash + 1, *lo, 65535);
}

static struct sockaddr_in addr_of(const char *host, int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
		fprintf(stderr, "palrr: %s: not an IPv4 address\n", host);
		exit(2);
	}
	return a;
}

static void nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int read_full(int fd, char *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const char *buf, size_t n)
{
	size_t put = 0;
	while (put < n) {
		ssize_t w = write(fd, buf + put, n - put);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		put += (size_t)w;
	}
	return 0;
}

/* ---- server ---------------------------------------------------------------------------------------- */

enum { KIND_ECHO_LISTEN = 1, KIND_ONESHOT_LISTEN = 2, KIND_ECHO_CONN = 3 };

static int listen_on(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("bind");
	if (listen(fd, 4096) < 0)
		die("listen");
	return fd;
}

static void ep_add(int ep, int fd, int kind)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ((uint64_t)(uint32_t)kind << 32) | (uint32_t)fd};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl");
}

static void oneshot(int lfd)
{
	char buf[256];
	for (;;) {
		int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			return; /* EAGAIN: drained */
		struct timeval tv = {.tv_sec = 2};
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		nodelay(c);
		ssize_t r = read(c, buf, sizeof(buf));
		if (r > 0)
			(void)write_full(c, buf, (size_t)r);
		close(c);
	}
}

__attribute__((noreturn)) static int cmd_server(int argc, char **argv)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int n = 0;
	if (ep < 0)
		die("epoll_create1");
	for (int i = 0; i < argc; i++) {
		if (i + 1 >= argc)
			usage();
		int lo, hi;
		parse_range(argv[i + 1], &lo, &hi);
		int kind;
		if (!strcmp(argv[i], "--echo"))
			kind = KIND_ECHO_LISTEN;
		else if (!strcmp(argv[i], "--oneshot"))
			kind = KIND_ONESHOT_LISTEN;
		else
			usage();
		for (int p = lo; p <= hi; p++) {
			if (++n > MAX_LISTEN)
				usage();
			ep_add(ep, listen_on(p), kind);
		}
		i++;
	}
	if (!n)
		usage();
	printf("ready\n");
	fflush(stdout);
	char buf[65536];
	struct epoll_event evs[64];
	for (;;) {
		int k = epoll_wait(ep, evs, 64, -1);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < k; i++) {
			int fd = (int)(uint32_t)evs[i].data.u64;
			int kind = (int)(evs[i].data.u64 >> 32);
			if (kind == KIND_ONESHOT_LISTEN) {
				oneshot(fd);
			} else if (kind == KIND_ECHO_LISTEN) {
				int c;
				while ((c = accept4(fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
					nodelay(c);
					ep_add(ep, c, KIND_ECHO_CONN);
				}
			} else {
				ssize_t r = read(fd, buf, sizeof(buf));
				if (r <= 0 || write_full(fd, buf, (size_t)r) < 0)
					close(fd); /* also leaves the epoll set */
			}
		}
	}
}

/* ---- request/response on one connection ------------------------------------------------------------ */

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

static int cmd_rr(int argc, char **argv)
{
	if (argc < 3)
		usage();
	struct sockaddr_in a = addr_of(argv[0], (int)parse_num(argv[1], 1, 65535));
	double secs = (double)parse_num(argv[2], 1, 3600);
	size_t size = argc > 3 ? (size_t)parse_num(argv[3], 1, 65536) : 1;
	char *buf = calloc(1, size);
	size_t cap = 1 << 20, n = 0;
	uint32_t *lat = malloc(cap * sizeof(*lat));
	if (!buf || !lat)
		die("malloc");
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	nodelay(fd);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	uint64_t start = now_ns(), end = start + (uint64_t)(secs * 1e9), t = start;
	while (t < end) {
		uint64_t t0 = t;
		if (write_full(fd, buf, size) < 0 || read_full(fd, buf, size) < 0)
			die("request/response");
		t = now_ns();
		if (n == cap) {
			cap *= 2;
			lat = realloc(lat, cap * sizeof(*lat));
			if (!lat)
				die("realloc");
		}
		uint64_t d = t - t0;
		lat[n++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
	}
	close(fd);
	double el = (double)(t - start) / 1e9;
	qsort(lat, n, sizeof(*lat), cmp_u32);
	printf("{\"mode\": \"rr\", \"transactions\": %zu, \"seconds\": %.6f, \"rate\": %.1f, \"size\": %zu, "
	       "\"p50_us\": %.2f, \"p99_us\": %.2f, \"max_us\": %.2f}\n",
	       n, el, (double)n / el, size, n ? lat[n / 2] / 1e3 : 0.0, n ? lat[(size_t)(n * 0.99)] / 1e3 : 0.0,
	       n ? lat[n - 1] / 1e3 : 0.0);
	return 0;
}

/* ---- connection rate ------------------------------------------------------------------------------- */

static int cmd_crr(int argc, char **argv)
{
	if (argc < 3)
		usage();
	int lo, hi;
	parse_range(argv[1], &lo, &hi);
	int nports = hi - lo + 1;
	struct sockaddr_in a = addr_of(argv[0], lo);
	double secs = (double)parse_num(argv[2], 1, 3600);
	/* The k-th connection of a run that starts at tuple START uses destination port lo + k % nports and source
	 * port SPORT_LO + (k / nports) % 55536 (bound explicitly: the kernel's choice is randomized and may repeat
	 * a tuple within seconds). Successive runs pass the previous run's next_tuple: a 4-tuple comes back only
	 * after nports x 55536 connections over all runs. */
	uint64_t k = argc > 3 ? (uint64_t)parse_num(argv[3], 0, 1L << 40) : 0, first = k;
	/* last use (ms since start, +1 so 0 = never) of every (destination port, source port) in this run */
	uint32_t *seen = calloc((size_t)nports * 65536u, sizeof(uint32_t));
	if (!seen)
		die("calloc");
	uint64_t start = now_ns(), end = start + (uint64_t)(secs * 1e9), t = start;
	uint64_t n = 0, errors = 0, reused = 0, busy = 0;
	char b = 'x';
	while (t < end) {
		int idx = (int)(k % (uint64_t)nports);
		int sport = SPORT_LO + (int)((k / (uint64_t)nports) % (SPORT_HI - SPORT_LO + 1));
		k++;
		a.sin_port = htons((uint16_t)(lo + idx));
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			die("socket");
		nodelay(fd);
		struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons((uint16_t)sport)};
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&me, sizeof(me)) < 0) {
			if (errno != EADDRINUSE)
				die("bind");
			busy++;
			close(fd);
			continue;
		}
		struct timeval tv = {.tv_sec = 2};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		/* request, response, then the server's FIN: the server closes first (TIME_WAIT stays there) */
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || write_full(fd, &b, 1) < 0 ||
		    read_full(fd, &b, 1) < 0 || read(fd, &b, 1) != 0) {
			errors++;
			close(fd);
			t = now_ns();
			if (errors > 100 && errors * 10 > n)
				die("too many failed connections");
			continue;
		}
		socklen_t ml = sizeof(me);
		if (getsockname(fd, (struct sockaddr *)&me, &ml) == 0) {
			uint32_t ms = (uint32_t)((now_ns() - start) / 1000000u) + 1;
			uint32_t *slot = &seen[(size_t)idx * 65536u + ntohs(me.sin_port)];
			if (*slot && ms - *slot < REUSE_WINDOW_MS)
				reused++;
			*slot = ms;
		}
		close(fd);
		n++;
		t = now_ns();
	}
	double el = (double)(t - start) / 1e9;
	printf("{\"mode\": \"crr\", \"connections\": %llu, \"seconds\": %.6f, \"rate\": %.1f, \"errors\": %llu, "
	       "\"ports\": %d, \"tuples_reused_within_12s\": %llu, \"source_ports_busy\": %llu, "
	       "\"first_tuple\": %llu, \"next_tuple\": %llu}\n",
	       (unsigned long long)n, el, (double)n / el, (unsigned long long)errors, nports,
	       (unsigned long long)reused, (unsigned long long)busy, (unsigned long long)first,
	       (unsigned long long)k);
	return 0;
}

/* ---- policy probe ---------------------------------------------------------------------------------- */

/* 1 = connected and answered, 0 = no answer within timeout_ms (dropped SYN), -1 = refused/reset. */
static int attempt(const struct sockaddr_in *a, int timeout_ms)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int rc = 0;
	if (fd < 0)
		die("socket");
	if (connect(fd, (const struct sockaddr *)a, sizeof(*a)) < 0 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	if (poll(&p, 1, timeout_ms) == 1) {
		int err = 0;
		socklen_t l = sizeof(err);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
		rc = err ? -1 : 1;
	}
	close(fd);
	return rc;
}

static int cmd_probe(int argc, char **argv)
{
	if (argc < 4)
		usage();
	struct sockaddr_in a = addr_of(argv[0], (int)parse_num(argv[1], 1, 65535));
	int want_open;
	if (!strcmp(argv[2], "open"))
		want_open = 1;
	else if (!strcmp(argv[2], "closed"))
		want_open = 0;
	else
		usage();
	double secs = (double)parse_num(argv[3], 1, 3600);
	int timeout_ms = argc > 4 ? (int)parse_num(argv[4], 1, 10000) : 2;
	int interval_ms = argc > 5 ? (int)parse_num(argv[5], 1, 10000) : 1;
	uint64_t start = now_ns(), end = start + (uint64_t)(secs * 1e9);
	uint64_t attempts = 0, last_other = 0, first = 0, first_start = 0;
	printf("ready %llu\n", (unsigned long long)start);
	fflush(stdout);
	while (now_ns() < end) {
		uint64_t t0 = now_ns();
		int r = attempt(&a, timeout_ms);
		uint64_t t1 = now_ns();
		attempts++;
		if (r == -1) { /* refused or reset: the server is not there; neither open nor policy-closed */
			fprintf(stderr, "palrr: probe: connection refused\n");
			return 1;
		}
		if ((r == 1) == want_open) {
			first = t1;
			first_start = t0;
			break;
		}
		last_other = t0;
		if (t1 - t0 < (uint64_t)interval_ms * 1000000u) {
			uint64_t rest = (uint64_t)interval_ms * 1000000u - (t1 - t0);
			struct timespec pause = {(time_t)(rest / 1000000000u), (long)(rest % 1000000000u)};
			nanosleep(&pause, NULL);
		}
	}
	printf("{\"mode\": \"probe\", \"want\": \"%s\", \"attempts\": %llu, \"start_ns\": %llu, "
	       "\"first_ns\": %llu, \"first_attempt_start_ns\": %llu, \"last_other_ns\": %llu}\n",
	       want_open ? "open" : "closed", (unsigned long long)attempts, (unsigned long long)start,
	       (unsigned long long)first, (unsigned long long)first_start, (unsigned long long)last_other);
	return first ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(argv[1], "server"))
		return cmd_server(argc - 2, argv + 2);
	if (!strcmp(argv[1], "rr"))
		return cmd_rr(argc - 2, argv + 2);
	if (!strcmp(argv[1], "crr"))
		return cmd_crr(argc - 2, argv + 2);
	if (!strcmp(argv[1], "probe"))
		return cmd_probe(argc - 2, argv + 2);
	usage();
	return 2;
}
