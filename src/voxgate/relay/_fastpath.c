/* voxgate relay fast path: batched UDP forwarding with a flow table, in C.
 *
 * Why C: a Python loop pays ~1-2 us of interpreter time per packet, which is
 * most of a relay's budget. Here one call moves up to `batch` datagrams with
 * one recvmmsg and one sendmmsg, into buffers allocated once, with the flow
 * table in an open-addressing hash, and creates Python objects only for the
 * packets it hands back to the slow path (STUN, unknown clients, junk).
 * Semantics are those of voxgate.relay.forwarder.PyForwarder; the tests run both.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define HEADROOM 20 /* room to write the encapsulation header in front of a received packet */
#define MAGIC 0xF1
#define FLAG_IPV6 1
#define FLAG_VERIFIED 2
#define FLAG_TCP 4 /* relay -> transceiver only (the ICE-TCP front sets it); known here so both parsers agree */
#define FLAG_FORGET 8 /* transceiver -> relay only: drop this client's unverified flow; payload: a revoked ufrag */
/* before the transceiver marks a flow VERIFIED, a client may be sent at most this many times the bytes it
 * sent: a DTLS server flight (~1 KB) answers a ~250-byte ClientHello; QUIC uses the same bound (RFC 9000 s8) */
#define AMPLIFICATION 3
#define MAX_ROUNDS 8 /* batches per call at most, so timers and the other socket are not starved */

typedef union {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
} addr_u;

typedef struct {
    uint8_t k[18]; /* 16-byte IPv6 (IPv4-mapped for IPv4) + port, network order */
} key_t18;

enum { EMPTY = 0, USED = 1, TOMB = 2 };

typedef struct {
    key_t18 key, tkey;
    uint8_t state, verified, hdrlen, hdr[20];
    addr_u dest;   /* transceiver, in the internal socket's family */
    socklen_t destlen;
    addr_u client; /* client, in the public socket's family */
    socklen_t clientlen;
    int64_t credit;
    double last_seen;
} flow_t;

enum {
    C_CLIENT_PKTS, C_CLIENT_BYTES, C_TO_T_PKTS, C_TO_T_BYTES, C_T_PKTS, C_T_BYTES, C_TO_C_PKTS, C_TO_C_BYTES,
    C_SLOW, D_OVERSIZED, D_BAD_ENCAP, D_NO_FLOW, D_WRONG_T, D_AMPLIFICATION, D_SEND_ERROR, D_TABLE_FULL,
    C_FORGOTTEN, N_COUNTERS
};
static const char *counter_names[N_COUNTERS] = {
    "client_packets", "client_bytes", "to_transceiver_packets", "to_transceiver_bytes",
    "transceiver_packets", "transceiver_bytes", "to_client_packets", "to_client_bytes",
    "slow_path", "drop_oversized", "drop_bad_encap", "drop_no_flow", "drop_wrong_transceiver",
    "drop_amplification", "drop_send_error", "drop_table_full", "forgotten"};

typedef struct {
    PyObject_HEAD
    int pub_fd, int_fd, pub_family, int_family;
    int batch, bufsize;
    size_t size, mask, used, tombs, capacity;
    flow_t *table;
    uint8_t *bufs; /* batch * (HEADROOM + bufsize) */
    struct mmsghdr *in, *out;
    struct iovec *in_iov, *out_iov;
    addr_u *addrs;
    uint64_t c[N_COUNTERS];
    PyObject *revoked; /* [(ufrag bytes, transceiver (ip, port))] from FORGET messages, until take_revoked() */
} Forwarder;

/* ------------------------------------------------------------------ keys and addresses */

static int key_from_sockaddr(const addr_u *a, key_t18 *k) {
    if (a->sa.sa_family == AF_INET) {
        memset(k->k, 0, 10);
        k->k[10] = k->k[11] = 0xff;
        memcpy(k->k + 12, &a->v4.sin_addr, 4);
        memcpy(k->k + 16, &a->v4.sin_port, 2);
        return 0;
    }
    if (a->sa.sa_family == AF_INET6) {
        memcpy(k->k, &a->v6.sin6_addr, 16);
        memcpy(k->k + 16, &a->v6.sin6_port, 2);
        return 0;
    }
    return -1;
}

static int key_is_v4(const key_t18 *k) {
    static const uint8_t pfx[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(k->k, pfx, 12) == 0;
}

static int sockaddr_from_key(const key_t18 *k, int family, addr_u *a, socklen_t *len) {
    memset(a, 0, sizeof(*a));
    if (family == AF_INET) {
        if (!key_is_v4(k)) return -1;
        a->v4.sin_family = AF_INET;
        memcpy(&a->v4.sin_addr, k->k + 12, 4);
        memcpy(&a->v4.sin_port, k->k + 16, 2);
        *len = sizeof(a->v4);
    } else {
        a->v6.sin6_family = AF_INET6;
        memcpy(&a->v6.sin6_addr, k->k, 16);
        memcpy(&a->v6.sin6_port, k->k + 16, 2);
        *len = sizeof(a->v6);
    }
    return 0;
}

/* (ip, port[, ...]) -> key; sets a Python error on failure */
static int key_from_tuple(PyObject *t, key_t18 *k) {
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) < 2) {
        PyErr_SetString(PyExc_TypeError, "address must be a tuple (ip, port)");
        return -1;
    }
    const char *ip = PyUnicode_AsUTF8(PyTuple_GET_ITEM(t, 0));
    if (!ip) return -1;
    long port = PyLong_AsLong(PyTuple_GET_ITEM(t, 1));
    if (port == -1 && PyErr_Occurred()) return -1;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return -1;
    }
    uint16_t nport = htons((uint16_t)port);
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, ip, &a4) == 1) {
        memset(k->k, 0, 10);
        k->k[10] = k->k[11] = 0xff;
        memcpy(k->k + 12, &a4, 4);
    } else if (inet_pton(AF_INET6, ip, &a6) == 1) {
        memcpy(k->k, &a6, 16);
    } else {
        PyErr_Format(PyExc_ValueError, "not an IP address: %s", ip);
        return -1;
    }
    memcpy(k->k + 16, &nport, 2);
    return 0;
}

static PyObject *tuple_from_key(const key_t18 *k) {
    char text[INET6_ADDRSTRLEN];
    if (key_is_v4(k))
        inet_ntop(AF_INET, k->k + 12, text, sizeof(text));
    else
        inet_ntop(AF_INET6, k->k, text, sizeof(text));
    uint16_t port;
    memcpy(&port, k->k + 16, 2);
    return Py_BuildValue("(si)", text, (int)ntohs(port));
}

/* ------------------------------------------------------------------ the two wire formats (twins of voxgate.wire)
 * Each written once in C, as voxgate.wire.demux and voxgate.wire.encap are once in Python; the module's
 * packet_classes() and encap_header()/encap_parse() expose them so tests/test_wire_twins.py checks both agree. */

enum { PC_EMPTY = 0, PC_STUN = 1, PC_DTLS = 2, PC_RTP = 3, PC_ENCAP = 4, PC_OTHER = 5 }; /* = wire.demux.PacketClass */

/* RFC 7983 / RFC 9443, by first byte */
static inline int packet_class(uint8_t b) {
    if (b <= 3) return PC_STUN;
    if (b >= 20 && b <= 63) return PC_DTLS;
    if (b >= 128 && b <= 191) return PC_RTP;
    if (b == MAGIC) return PC_ENCAP;
    return PC_OTHER;
}

/* the relay's fast path: DTLS and SRTP/SRTCP of a known flow */
static inline int fast_class(uint8_t b) {
    int c = packet_class(b);
    return c == PC_DTLS || c == PC_RTP;
}

/* write the encapsulation header for client key k into hdr (room for 20 bytes); return its length */
static unsigned encap_write(const key_t18 *k, int verified, uint8_t *hdr) {
    unsigned hlen = key_is_v4(k) ? 8 : 20;
    hdr[0] = MAGIC;
    hdr[1] = (hlen == 20 ? FLAG_IPV6 : 0) | (verified ? FLAG_VERIFIED : 0);
    memcpy(hdr + 2, k->k + 16, 2);
    if (hlen == 8)
        memcpy(hdr + 4, k->k + 12, 4);
    else
        memcpy(hdr + 4, k->k, 16);
    return hlen;
}

/* read a header: the client key and flags; return the header length, or 0 if malformed */
static unsigned encap_read(const uint8_t *data, size_t len, key_t18 *k, uint8_t *flags) {
    if (len < 8 || data[0] != MAGIC || (data[1] & ~(FLAG_IPV6 | FLAG_VERIFIED | FLAG_TCP | FLAG_FORGET))) return 0;
    unsigned hlen = (data[1] & FLAG_IPV6) ? 20 : 8;
    if (len < hlen) return 0;
    if (hlen == 8) {
        memset(k->k, 0, 10);
        k->k[10] = k->k[11] = 0xff;
        memcpy(k->k + 12, data + 4, 4);
    } else {
        memcpy(k->k, data + 4, 16);
    }
    memcpy(k->k + 16, data + 2, 2);
    *flags = data[1];
    return hlen;
}

/* ------------------------------------------------------------------ hash table */

static inline uint64_t hash_key(const key_t18 *k) {
    uint64_t a, b;
    uint16_t c;
    memcpy(&a, k->k, 8);
    memcpy(&b, k->k + 8, 8);
    memcpy(&c, k->k + 16, 2);
    uint64_t h = (a * 0x9E3779B97F4A7C15ULL) ^ (b + 0xC2B2AE3D27D4EB4FULL + c);
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 32;
    return h;
}

static flow_t *lookup(Forwarder *f, const key_t18 *k) {
    size_t i = hash_key(k) & f->mask;
    for (size_t n = 0; n < f->size; n++, i = (i + 1) & f->mask) {
        flow_t *e = &f->table[i];
        if (e->state == EMPTY) return NULL;
        if (e->state == USED && memcmp(e->key.k, k->k, 18) == 0) return e;
    }
    return NULL;
}

static flow_t *slot_for_insert(Forwarder *f, const key_t18 *k) {
    flow_t *hit = lookup(f, k);
    if (hit) return hit;
    size_t i = hash_key(k) & f->mask;
    for (size_t n = 0; n < f->size; n++, i = (i + 1) & f->mask) {
        flow_t *e = &f->table[i];
        if (e->state != USED) return e;
    }
    return NULL;
}

static int rehash(Forwarder *f) {
    flow_t *old = f->table;
    flow_t *fresh = PyMem_Calloc(f->size, sizeof(flow_t));
    if (!fresh) return -1;
    f->table = fresh;
    f->tombs = 0;
    for (size_t i = 0; i < f->size; i++) {
        if (old[i].state != USED) continue;
        size_t j = hash_key(&old[i].key) & f->mask;
        while (fresh[j].state == USED) j = (j + 1) & f->mask;
        fresh[j] = old[i];
    }
    PyMem_Free(old);
    return 0;
}

/* ------------------------------------------------------------------ type */

static void remove_entry(Forwarder *f, flow_t *e);

static void Forwarder_dealloc(Forwarder *f) {
    Py_XDECREF(f->revoked);
    PyMem_Free(f->table);
    PyMem_Free(f->bufs);
    PyMem_Free(f->in);
    PyMem_Free(f->out);
    PyMem_Free(f->in_iov);
    PyMem_Free(f->out_iov);
    PyMem_Free(f->addrs);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

static int socket_family(int fd) {
    int family = 0;
    socklen_t len = sizeof(family);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) < 0) return -1;
    return family;
}

static int Forwarder_init(Forwarder *f, PyObject *args, PyObject *kw) {
    static char *names[] = {"pub_fd", "int_fd", "capacity", "batch", "bufsize", NULL};
    Py_ssize_t capacity = 65536;
    f->batch = 64;
    f->bufsize = 2048;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ii|nii", names, &f->pub_fd, &f->int_fd, &capacity, &f->batch,
                                     &f->bufsize))
        return -1;
    if (capacity < 1 || f->batch < 1 || f->batch > 1024 || f->bufsize < 64 || f->bufsize > 65536) {
        PyErr_SetString(PyExc_ValueError, "capacity, batch or bufsize out of range");
        return -1;
    }
    f->pub_family = socket_family(f->pub_fd);
    f->int_family = socket_family(f->int_fd);
    if (f->pub_family < 0 || f->int_family < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    f->revoked = PyList_New(0);
    if (!f->revoked) return -1;
    f->capacity = (size_t)capacity;
    f->size = 16;
    while (f->size < f->capacity * 2) f->size <<= 1; /* load factor <= 0.5 */
    f->mask = f->size - 1;
    f->table = PyMem_Calloc(f->size, sizeof(flow_t));
    size_t stride = HEADROOM + (size_t)f->bufsize;
    f->bufs = PyMem_Malloc(stride * f->batch);
    f->in = PyMem_Calloc(f->batch, sizeof(struct mmsghdr));
    f->out = PyMem_Calloc(f->batch, sizeof(struct mmsghdr));
    f->in_iov = PyMem_Calloc(f->batch, sizeof(struct iovec));
    f->out_iov = PyMem_Calloc(f->batch, sizeof(struct iovec));
    f->addrs = PyMem_Calloc(f->batch, sizeof(addr_u));
    if (!f->table || !f->bufs || !f->in || !f->out || !f->in_iov || !f->out_iov || !f->addrs) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < f->batch; i++) {
        f->in_iov[i].iov_base = f->bufs + stride * i + HEADROOM;
        f->in_iov[i].iov_len = f->bufsize;
        f->in[i].msg_hdr.msg_iov = &f->in_iov[i];
        f->in[i].msg_hdr.msg_iovlen = 1;
        f->out[i].msg_hdr.msg_iov = &f->out_iov[i];
        f->out[i].msg_hdr.msg_iovlen = 1;
    }
    return 0;
}

static void reset_in(Forwarder *f) {
    for (int i = 0; i < f->batch; i++) {
        f->in[i].msg_hdr.msg_name = &f->addrs[i];
        f->in[i].msg_hdr.msg_namelen = sizeof(addr_u);
        f->in[i].msg_hdr.msg_flags = 0;
    }
}

/* send f->out[0..n) on fd; a datagram the kernel refuses is counted and skipped */
static void flush(Forwarder *f, int fd, int n, int pkt_counter, int byte_counter) {
    int i = 0;
    while (i < n) {
        int r = sendmmsg(fd, f->out + i, n - i, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            f->c[D_SEND_ERROR]++;
            f->c[pkt_counter]--;
            f->c[byte_counter] -= f->out_iov[i].iov_len;
            i++;
            continue;
        }
        i += r;
    }
}

static int recv_batch(Forwarder *f, int fd) {
    reset_in(f);
    int n;
    do {
        n = recvmmsg(fd, f->in, f->batch, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        /* ICMP errors surface here (e.g. ECONNREFUSED): not fatal for a forwarder */
        if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH) return 0;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return n;
}

/* Count datagram i of a received batch on the given counters; 0 if the buffer cut it short (dropped as
 * oversized). Both directions start every datagram with this. */
static inline int counted_whole(Forwarder *f, int i, int pkts, int bytes) {
    unsigned len = f->in[i].msg_len;
    f->c[pkts]++;
    f->c[bytes] += len;
    if (f->in[i].msg_hdr.msg_flags & MSG_TRUNC || len >= (unsigned)f->bufsize) {
        f->c[D_OVERSIZED]++;
        return 0;
    }
    return 1;
}

static PyObject *Forwarder_pump_public(Forwarder *f, PyObject *arg) {
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred()) return NULL;
    PyObject *slow = PyList_New(0);
    if (!slow) return NULL;
    /* under load, keep draining (bounded) so one epoll wake-up moves several full batches */
    for (int round = 0; round < MAX_ROUNDS; round++) {
        int n = recv_batch(f, f->pub_fd);
        if (n < 0) {
            Py_DECREF(slow);
            return NULL;
        }
        int out = 0;
        for (int i = 0; i < n; i++) {
            if (!counted_whole(f, i, C_CLIENT_PKTS, C_CLIENT_BYTES)) continue;
            unsigned len = f->in[i].msg_len;
            uint8_t *data = f->in_iov[i].iov_base;
            key_t18 k;
            flow_t *flow = NULL;
            if (key_from_sockaddr(&f->addrs[i], &k) == 0) flow = lookup(f, &k);
            int fast = len && fast_class(data[0]);
            if (!flow || !fast) {
                f->c[C_SLOW]++;
                PyObject *item = Py_BuildValue("(y#N)", (const char *)data, (Py_ssize_t)len, tuple_from_key(&k));
                if (!item || PyList_Append(slow, item) < 0) {
                    Py_XDECREF(item);
                    Py_DECREF(slow);
                    return NULL;
                }
                Py_DECREF(item);
                continue;
            }
            flow->last_seen = now;
            flow->credit += (int64_t)len * AMPLIFICATION;
            uint8_t *start = data - flow->hdrlen;
            memcpy(start, flow->hdr, flow->hdrlen);
            f->out_iov[out].iov_base = start;
            f->out_iov[out].iov_len = len + flow->hdrlen;
            f->out[out].msg_hdr.msg_name = &flow->dest;
            f->out[out].msg_hdr.msg_namelen = flow->destlen;
            f->c[C_TO_T_PKTS]++;
            f->c[C_TO_T_BYTES] += len + flow->hdrlen;
            out++;
        }
        if (out) flush(f, f->int_fd, out, C_TO_T_PKTS, C_TO_T_BYTES);
        if (n < f->batch) break;
    }
    return slow;
}

static PyObject *Forwarder_pump_internal(Forwarder *f, PyObject *arg) {
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred()) return NULL;
    (void)now;
    long total = 0;
    for (int round = 0; round < MAX_ROUNDS; round++) {
        int n = recv_batch(f, f->int_fd);
        if (n < 0) return NULL;
        int out = 0;
        for (int i = 0; i < n; i++) {
            if (!counted_whole(f, i, C_T_PKTS, C_T_BYTES)) continue;
            unsigned len = f->in[i].msg_len;
            uint8_t *data = f->in_iov[i].iov_base;
            key_t18 k;
            uint8_t flags;
            unsigned hlen = encap_read(data, len, &k, &flags);
            if (!hlen) {
                f->c[D_BAD_ENCAP]++;
                continue;
            }
            if (flags & FLAG_FORGET) { /* a control message from a transceiver: never sent on */
                key_t18 src;
                if (key_from_sockaddr(&f->addrs[i], &src) < 0) continue;
                unsigned size = len - hlen;
                if (size > 0 && size <= 256) { /* a ufrag to revoke: the slow path checks it routes to the sender */
                    PyObject *item = Py_BuildValue("(y#N)", (const char *)data + hlen, (Py_ssize_t)size,
                                                   tuple_from_key(&src));
                    if (!item || PyList_Append(f->revoked, item) < 0) {
                        Py_XDECREF(item);
                        return NULL;
                    }
                    Py_DECREF(item);
                }
                flow_t *flow = lookup(f, &k);
                if (flow && !flow->verified && memcmp(src.k, flow->tkey.k, 18) == 0) {
                    remove_entry(f, flow);
                    f->c[C_FORGOTTEN]++;
                }
                continue;
            }
            flow_t *flow = lookup(f, &k);
            if (!flow) {
                f->c[D_NO_FLOW]++;
                continue;
            }
            key_t18 src;
            if (key_from_sockaddr(&f->addrs[i], &src) < 0 || memcmp(src.k, flow->tkey.k, 18) != 0) {
                f->c[D_WRONG_T]++;
                continue;
            }
            unsigned size = len - hlen;
            if (flags & FLAG_VERIFIED) flow->verified = 1;
            if (!flow->verified) {
                if ((int64_t)size > flow->credit) {
                    f->c[D_AMPLIFICATION]++;
                    continue;
                }
                flow->credit -= size;
            }
            f->out_iov[out].iov_base = data + hlen;
            f->out_iov[out].iov_len = size;
            f->out[out].msg_hdr.msg_name = &flow->client;
            f->out[out].msg_hdr.msg_namelen = flow->clientlen;
            f->c[C_TO_C_PKTS]++;
            f->c[C_TO_C_BYTES] += size;
            out++;
        }
        if (out) flush(f, f->pub_fd, out, C_TO_C_PKTS, C_TO_C_BYTES);
        total += out;
        if (n < f->batch) break;
    }
    return PyLong_FromLong(total);
}

static PyObject *Forwarder_add(Forwarder *f, PyObject *args, PyObject *kw) {
    static char *names[] = {"client", "transceiver", "verified", "now", NULL};
    PyObject *client, *trans;
    int verified = 0;
    double now = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|pd", names, &client, &trans, &verified, &now)) return NULL;
    key_t18 ck, tk;
    if (key_from_tuple(client, &ck) < 0 || key_from_tuple(trans, &tk) < 0) return NULL;
    flow_t tmp;
    memset(&tmp, 0, sizeof(tmp));
    if (sockaddr_from_key(&tk, f->int_family, &tmp.dest, &tmp.destlen) < 0 ||
        sockaddr_from_key(&ck, f->pub_family, &tmp.client, &tmp.clientlen) < 0) {
        PyErr_SetString(PyExc_ValueError, "IPv6 address on an IPv4 socket");
        return NULL;
    }
    flow_t *e = lookup(f, &ck);
    if (!e) {
        if (f->used >= f->capacity) {
            f->c[D_TABLE_FULL]++;
            Py_RETURN_FALSE;
        }
        e = slot_for_insert(f, &ck);
        if (!e) {
            f->c[D_TABLE_FULL]++;
            Py_RETURN_FALSE;
        }
        if (e->state == TOMB) f->tombs--;
        f->used++;
    }
    tmp.key = ck;
    tmp.tkey = tk;
    tmp.state = USED;
    tmp.verified = (uint8_t)verified;
    tmp.last_seen = now;
    tmp.hdrlen = (uint8_t)encap_write(&ck, 0, tmp.hdr);
    *e = tmp;
    Py_RETURN_TRUE;
}

static void remove_entry(Forwarder *f, flow_t *e) {
    e->state = TOMB;
    f->used--;
    f->tombs++;
}

static PyObject *Forwarder_remove(Forwarder *f, PyObject *client) {
    key_t18 k;
    if (key_from_tuple(client, &k) < 0) return NULL;
    flow_t *e = lookup(f, &k);
    if (!e) Py_RETURN_FALSE;
    remove_entry(f, e);
    Py_RETURN_TRUE;
}

static PyObject *Forwarder_get(Forwarder *f, PyObject *client) {
    key_t18 k;
    if (key_from_tuple(client, &k) < 0) return NULL;
    flow_t *e = lookup(f, &k);
    if (!e) Py_RETURN_NONE;
    return Py_BuildValue("(NOd)", tuple_from_key(&e->tkey), e->verified ? Py_True : Py_False, e->last_seen);
}

static PyObject *Forwarder_touch(Forwarder *f, PyObject *args) {
    PyObject *client;
    double now;
    if (!PyArg_ParseTuple(args, "Od", &client, &now)) return NULL;
    key_t18 k;
    if (key_from_tuple(client, &k) < 0) return NULL;
    flow_t *e = lookup(f, &k);
    if (e) e->last_seen = now;
    Py_RETURN_NONE;
}

static PyObject *Forwarder_expire(Forwarder *f, PyObject *args) {
    double now, idle;
    if (!PyArg_ParseTuple(args, "dd", &now, &idle)) return NULL;
    PyObject *dead = PyList_New(0);
    if (!dead) return NULL;
    for (size_t i = 0; i < f->size; i++) {
        flow_t *e = &f->table[i];
        if (e->state != USED || now - e->last_seen <= idle) continue;
        PyObject *t = tuple_from_key(&e->key);
        if (!t || PyList_Append(dead, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(dead);
            return NULL;
        }
        Py_DECREF(t);
        remove_entry(f, e);
    }
    if (f->tombs > f->size / 4 && rehash(f) < 0) {
        Py_DECREF(dead);
        return PyErr_NoMemory();
    }
    return dead;
}

static PyObject *Forwarder_active_since(Forwarder *f, PyObject *arg) {
    double t = PyFloat_AsDouble(arg);
    if (t == -1.0 && PyErr_Occurred()) return NULL;
    PyObject *res = PyList_New(0);
    if (!res) return NULL;
    for (size_t i = 0; i < f->size; i++) {
        flow_t *e = &f->table[i];
        if (e->state != USED || e->last_seen < t) continue;
        PyObject *item = Py_BuildValue("(NNO)", tuple_from_key(&e->key), tuple_from_key(&e->tkey),
                                       e->verified ? Py_True : Py_False);
        if (!item || PyList_Append(res, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(res);
            return NULL;
        }
        Py_DECREF(item);
    }
    return res;
}

static PyObject *Forwarder_send_to_transceiver(Forwarder *f, PyObject *args) {
    PyObject *client, *trans;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "OOy*", &client, &trans, &data)) return NULL;
    key_t18 ck, tk;
    addr_u dest;
    socklen_t destlen;
    if (key_from_tuple(client, &ck) < 0 || key_from_tuple(trans, &tk) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (sockaddr_from_key(&tk, f->int_family, &dest, &destlen) < 0) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "IPv6 transceiver on an IPv4 socket");
        return NULL;
    }
    uint8_t hdr[20];
    size_t hlen = encap_write(&ck, 0, hdr);
    flow_t *e = lookup(f, &ck);
    if (e) e->credit += (int64_t)data.len * AMPLIFICATION;
    struct iovec iov[2] = {{hdr, hlen}, {data.buf, (size_t)data.len}};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_name = &dest;
    msg.msg_namelen = destlen;
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    ssize_t r = sendmsg(f->int_fd, &msg, 0);
    size_t total = hlen + (size_t)data.len;
    PyBuffer_Release(&data);
    if (r < 0) {
        f->c[D_SEND_ERROR]++;
        Py_RETURN_FALSE;
    }
    f->c[C_TO_T_PKTS]++;
    f->c[C_TO_T_BYTES] += total;
    Py_RETURN_TRUE;
}

static PyObject *Forwarder_stats(Forwarder *f, PyObject *Py_UNUSED(ignored)) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (int i = 0; i < N_COUNTERS; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(f->c[i]);
        if (!v || PyDict_SetItemString(d, counter_names[i], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyObject *Forwarder_take_revoked(Forwarder *f, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = f->revoked, *fresh = PyList_New(0);
    if (!fresh) return NULL;
    f->revoked = fresh;
    return out;
}

static PyObject *Forwarder_close(Forwarder *f, PyObject *Py_UNUSED(ignored)) {
    Py_RETURN_NONE; /* the sockets belong to the caller */
}

static Py_ssize_t Forwarder_len(Forwarder *f) { return (Py_ssize_t)f->used; }

static PyMethodDef Forwarder_methods[] = {
    {"pump_public", (PyCFunction)Forwarder_pump_public, METH_O, "Forward a batch from clients; return slow-path packets."},
    {"pump_internal", (PyCFunction)Forwarder_pump_internal, METH_O, "Forward a batch from transceivers."},
    {"add", (PyCFunction)(void (*)(void))Forwarder_add, METH_VARARGS | METH_KEYWORDS, "Install a flow."},
    {"remove", (PyCFunction)Forwarder_remove, METH_O, "Remove a flow."},
    {"get", (PyCFunction)Forwarder_get, METH_O, "(transceiver, verified, last_seen) or None."},
    {"touch", (PyCFunction)Forwarder_touch, METH_VARARGS, "Mark a flow active."},
    {"expire", (PyCFunction)Forwarder_expire, METH_VARARGS, "Remove flows idle longer than idle; return them."},
    {"active_since", (PyCFunction)Forwarder_active_since, METH_O, "Flows seen since t."},
    {"send_to_transceiver", (PyCFunction)Forwarder_send_to_transceiver, METH_VARARGS, "Slow-path forward."},
    {"stats", (PyCFunction)Forwarder_stats, METH_NOARGS, "Counters."},
    {"take_revoked", (PyCFunction)Forwarder_take_revoked, METH_NOARGS,
     "The (ufrag, transceiver) pairs FORGET messages revoked since the last call."},
    {"close", (PyCFunction)Forwarder_close, METH_NOARGS, "No-op: sockets belong to the caller."},
    {NULL}};

static PySequenceMethods Forwarder_seq = {.sq_length = (lenfunc)Forwarder_len};

static PyTypeObject ForwarderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "voxgate.relay._fastpath.Forwarder",
    .tp_basicsize = sizeof(Forwarder),
    .tp_dealloc = (destructor)Forwarder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Batched UDP fast path with a flow table (see voxgate.relay.forwarder).",
    .tp_methods = Forwarder_methods,
    .tp_as_sequence = &Forwarder_seq,
    .tp_init = (initproc)Forwarder_init,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------ the wire twins, for tests */

static PyObject *mod_packet_classes(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    uint8_t t[256];
    for (int b = 0; b < 256; b++) t[b] = (uint8_t)packet_class((uint8_t)b);
    return PyBytes_FromStringAndSize((const char *)t, 256);
}

static PyObject *mod_fast_classes(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    uint8_t t[256];
    for (int b = 0; b < 256; b++) t[b] = (uint8_t)fast_class((uint8_t)b);
    return PyBytes_FromStringAndSize((const char *)t, 256);
}

static PyObject *mod_encap_header(PyObject *self, PyObject *args) {
    PyObject *client;
    int verified = 0;
    if (!PyArg_ParseTuple(args, "O|p", &client, &verified)) return NULL;
    key_t18 k;
    if (key_from_tuple(client, &k) < 0) return NULL;
    uint8_t hdr[20];
    unsigned hlen = encap_write(&k, verified, hdr);
    return PyBytes_FromStringAndSize((const char *)hdr, hlen);
}

static PyObject *mod_encap_parse(PyObject *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    key_t18 k;
    uint8_t flags = 0;
    unsigned hlen = encap_read(b.buf, (size_t)b.len, &k, &flags);
    PyBuffer_Release(&b);
    if (!hlen) Py_RETURN_NONE;
    return Py_BuildValue("(NOI)", tuple_from_key(&k), (flags & FLAG_VERIFIED) ? Py_True : Py_False, hlen);
}

static PyMethodDef module_methods[] = {
    {"packet_classes", mod_packet_classes, METH_NOARGS, "The class of each first byte (wire.demux.PacketClass values)."},
    {"fast_classes", mod_fast_classes, METH_NOARGS, "1 for each first byte the fast path forwards."},
    {"encap_header", mod_encap_header, METH_VARARGS, "encap_header((ip, port), verified=False) -> bytes"},
    {"encap_parse", mod_encap_parse, METH_O, "((ip, port), verified, header length), or None if malformed."},
    {NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastpath", "voxgate relay fast path", -1, module_methods};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&ForwarderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&ForwarderType);
    if (PyModule_AddObject(m, "Forwarder", (PyObject *)&ForwarderType) < 0) {
        Py_DECREF(&ForwarderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
