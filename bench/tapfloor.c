/* The physical floor of CreateTap: the kernel work fcnetd does for one TAP,
 * from C with nothing in between, timed per TAP.
 *
 *   TUNSETIFF (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR|IFF_TUN_EXCL), TUNSETOWNER,
 *   TUNSETGROUP (if a gid is given), TUNSETPERSIST, close; the index by
 *   if_nametoindex; one RTM_NEWLINK (IFLA_MASTER, IFLA_IFALIAS
 *   "fcnetd:VM:eth0", IFF_UP) on a raw rtnetlink socket, and its ACK read.
 *
 *   tapfloor N BRIDGE PREFIX START UID [GID]
 *     creates PREFIX%06d for START..START+N-1 on BRIDGE (which must exist);
 *     prints {"create": [seconds, ...]}
 *
 * Built by bench/floor.py with the system compiler.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h> /* before linux/if_tun.h, which would pull in the clashing linux/if.h */
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *name, int err) {
    fprintf(stderr, "tapfloor: %s %s: %s\n", what, name, strerror(err));
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void create_tap(const char *name, long uid, long gid) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        die("open", "/dev/net/tun", errno);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    if (strlen(name) >= IFNAMSIZ)
        die("name too long:", name, ENAMETOOLONG);
    memcpy(ifr.ifr_name, name, strlen(name));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0)
        die("TUNSETIFF", name, errno);
    if (ioctl(fd, TUNSETOWNER, uid) < 0)
        die("TUNSETOWNER", name, errno);
    if (gid >= 0 && ioctl(fd, TUNSETGROUP, gid) < 0)
        die("TUNSETGROUP", name, errno);
    if (ioctl(fd, TUNSETPERSIST, 1) < 0)
        die("TUNSETPERSIST", name, errno);
    close(fd);
}

struct request {
    struct nlmsghdr nh;
    struct ifinfomsg ifi;
    char attrs[256];
};

static void add_attr(struct request *req, unsigned short type, const void *data, size_t len) {
    struct rtattr *rta = (struct rtattr *)((char *)req + NLMSG_ALIGN(req->nh.nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = RTA_LENGTH(len);
    memcpy(RTA_DATA(rta), data, len);
    req->nh.nlmsg_len = NLMSG_ALIGN(req->nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

/* master, tag and up in one request; returns once the kernel acknowledged it */
static void set_link(int nl, unsigned seq, const char *name, unsigned master, const char *alias) {
    struct request req;
    memset(&req, 0, sizeof req);
    req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    req.nh.nlmsg_type = RTM_NEWLINK;
    req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    req.nh.nlmsg_seq = seq;
    req.ifi.ifi_family = AF_UNSPEC;
    req.ifi.ifi_index = if_nametoindex(name);
    if (!req.ifi.ifi_index)
        die("if_nametoindex", name, errno);
    req.ifi.ifi_flags = req.ifi.ifi_change = IFF_UP;
    add_attr(&req, IFLA_MASTER, &master, sizeof master);
    add_attr(&req, IFLA_IFALIAS, alias, strlen(alias) + 1);
    if (send(nl, &req, req.nh.nlmsg_len, 0) < 0)
        die("send RTM_NEWLINK", name, errno);
    char buf[4096];
    for (;;) {
        ssize_t n = recv(nl, buf, sizeof buf, 0);
        if (n < 0)
            die("recv ACK", name, errno);
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR)
                continue;
            int err = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
            if (err)
                die("RTM_NEWLINK", name, -err);
            return;
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 6 || argc > 7) {
        fprintf(stderr, "usage: tapfloor N BRIDGE PREFIX START UID [GID]\n");
        return 2;
    }
    long n = atol(argv[1]), start = atol(argv[4]), uid = atol(argv[5]);
    long gid = argc > 6 ? atol(argv[6]) : -1;
    const char *bridge = argv[2], *prefix = argv[3];
    unsigned master = if_nametoindex(bridge);
    if (!master)
        die("if_nametoindex", bridge, errno);
    int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (nl < 0)
        die("socket", "rtnetlink", errno);
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (bind(nl, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("bind", "rtnetlink", errno);
    double *took = calloc(n > 0 ? n : 1, sizeof *took);
    for (long i = 0; i < n; i++) {
        char name[IFNAMSIZ], alias[64];
        snprintf(name, sizeof name, "%s%06ld", prefix, start + i);
        snprintf(alias, sizeof alias, "fcnetd:bench-%s:eth0", name);
        double t = now();
        create_tap(name, uid, gid);
        set_link(nl, (unsigned)(i + 1), name, master, alias);
        took[i] = now() - t;
    }
    printf("{\"create\": [");
    for (long i = 0; i < n; i++)
        printf("%s%.9f", i ? ", " : "", took[i]);
    printf("]}\n");
    return 0;
}
