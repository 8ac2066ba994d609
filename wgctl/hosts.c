/*
 * wgctl: rewrites the dstack-vpc block of a hosts file.  The new file is
 * written beside the old one and renamed over it, keeping its mode and
 * owner; a file that cannot be renamed over (a container's bind-mounted
 * /etc/hosts) is rewritten in place instead.  An unchanged file is not
 * written at all.
 */


#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/stat.h>

#include "hosts.h"


#define WG_HOSTS_MAX_SIZE  (16 << 20)
#define WG_HOSTS_MAX_NAME  63


typedef struct {
    char                    *data;
    size_t                   len;
    size_t                   cap;
} wg_hosts_buf_t;


static int wg_hosts_append(wg_hosts_buf_t *b, const char *p, size_t len);
static int wg_hosts_marker(const char *line, size_t len, const char *marker);
static int wg_hosts_block(wg_hosts_buf_t *b, const wg_host_t *hosts,
    size_t n, char *err, size_t errlen);
static int wg_hosts_read(const char *path, char **out, size_t *len,
    struct stat *st);
static int wg_hosts_write_all(int fd, const char *p, size_t len);


int
wg_hosts_name_valid(const char *name)
{
    size_t  i, len;

    len = strlen(name);

    if (len == 0 || len > WG_HOSTS_MAX_NAME
        || name[0] == '-' || name[len - 1] == '-')
    {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((name[i] >= 'a' && name[i] <= 'z')
              || (name[i] >= '0' && name[i] <= '9')
              || name[i] == '-'))
        {
            return 0;
        }
    }

    return 1;
}


static int
wg_hosts_append(wg_hosts_buf_t *b, const char *p, size_t len)
{
    char    *n;
    size_t   cap;

    if (b->len + len + 1 > b->cap) {
        cap = b->cap ? b->cap : 4096;

        while (cap < b->len + len + 1) {
            cap *= 2;
        }

        n = realloc(b->data, cap);
        if (n == NULL) {
            return -ENOMEM;
        }

        b->data = n;
        b->cap = cap;
    }

    memcpy(b->data + b->len, p, len);
    b->len += len;
    b->data[b->len] = '\0';

    return 0;
}


/* a marker line, allowing trailing blanks and a CR */

static int
wg_hosts_marker(const char *line, size_t len, const char *marker)
{
    size_t  mlen;

    while (len > 0
           && (line[len - 1] == ' ' || line[len - 1] == '\t'
               || line[len - 1] == '\r'))
    {
        len--;
    }

    mlen = strlen(marker);

    return len == mlen && memcmp(line, marker, mlen) == 0;
}


static int
wg_hosts_block(wg_hosts_buf_t *b, const wg_host_t *hosts, size_t n,
    char *err, size_t errlen)
{
    int             rc, family;
    char            line[INET6_ADDRSTRLEN + 2 * WG_HOSTS_MAX_NAME
                         + sizeof(WG_HOSTS_DOMAIN) + 8];
    char            ip[INET6_ADDRSTRLEN];
    size_t          i, j;
    unsigned char   addr[16];

    if (n == 0) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (!wg_hosts_name_valid(hosts[i].name)) {
            snprintf(err, errlen, "invalid host name \"%.*s\"",
                     WG_HOSTS_MAX_NAME + 1, hosts[i].name);
            return -EINVAL;
        }

        family = strchr(hosts[i].ip, ':') ? AF_INET6 : AF_INET;

        if (inet_pton(family, hosts[i].ip, addr) != 1
            || inet_ntop(family, addr, ip, sizeof(ip)) == NULL)
        {
            snprintf(err, errlen, "invalid address \"%.*s\" for \"%s\"",
                     INET6_ADDRSTRLEN, hosts[i].ip, hosts[i].name);
            return -EINVAL;
        }

        for (j = 0; j < i; j++) {
            if (strcmp(hosts[i].name, hosts[j].name) == 0) {
                snprintf(err, errlen, "host name \"%s\" appears twice",
                         hosts[i].name);
                return -EINVAL;
            }
        }
    }

    rc = wg_hosts_append(b, WG_HOSTS_BEGIN "\n", sizeof(WG_HOSTS_BEGIN));

    for (i = 0; rc == 0 && i < n; i++) {
        family = strchr(hosts[i].ip, ':') ? AF_INET6 : AF_INET;
        inet_pton(family, hosts[i].ip, addr);
        inet_ntop(family, addr, ip, sizeof(ip));

        snprintf(line, sizeof(line), "%s %s." WG_HOSTS_DOMAIN " %s\n",
                 ip, hosts[i].name, hosts[i].name);

        rc = wg_hosts_append(b, line, strlen(line));
    }

    if (rc == 0) {
        rc = wg_hosts_append(b, WG_HOSTS_END "\n", sizeof(WG_HOSTS_END));
    }

    return rc;
}


/*
 * Renders the new file: the old text with its block replaced, or the block
 * appended when there was none.  No hosts: the block is removed.
 */

int
wg_hosts_render(const char *old, size_t len, const wg_host_t *hosts,
    size_t n, char **out, size_t *outlen, char *err, size_t errlen)
{
    int              rc, in_block, done;
    size_t           llen;
    const char      *line, *next, *end;
    wg_hosts_buf_t   b;

    memset(&b, 0, sizeof(wg_hosts_buf_t));
    in_block = 0;
    done = 0;
    rc = wg_hosts_append(&b, "", 0);
    end = old + len;

    for (line = old; rc == 0 && line < end; line = next) {
        next = memchr(line, '\n', (size_t) (end - line));
        next = next ? next + 1 : end;
        llen = (size_t) (next - line);

        if (wg_hosts_marker(line, llen - (line[llen - 1] == '\n'),
                            WG_HOSTS_BEGIN))
        {
            if (in_block || done) {
                snprintf(err, errlen, "second \"%s\" line", WG_HOSTS_BEGIN);
                rc = -EINVAL;
                break;
            }

            in_block = 1;
            continue;
        }

        if (wg_hosts_marker(line, llen - (line[llen - 1] == '\n'),
                            WG_HOSTS_END))
        {
            if (!in_block) {
                snprintf(err, errlen, "\"%s\" without \"%s\"",
                         WG_HOSTS_END, WG_HOSTS_BEGIN);
                rc = -EINVAL;
                break;
            }

            in_block = 0;
            done = 1;
            rc = wg_hosts_block(&b, hosts, n, err, errlen);
            continue;
        }

        if (in_block) {
            continue;
        }

        rc = wg_hosts_append(&b, line, llen);

        if (rc == 0 && next == end && line[llen - 1] != '\n') {
            rc = wg_hosts_append(&b, "\n", 1);
        }
    }

    if (rc == 0 && in_block) {
        snprintf(err, errlen, "\"%s\" without \"%s\"", WG_HOSTS_BEGIN,
                 WG_HOSTS_END);
        rc = -EINVAL;
    }

    if (rc == 0 && !done) {
        rc = wg_hosts_block(&b, hosts, n, err, errlen);
    }

    if (rc != 0) {
        free(b.data);
        return rc;
    }

    *out = b.data;
    *outlen = b.len;

    return 0;
}


static int
wg_hosts_read(const char *path, char **out, size_t *len, struct stat *st)
{
    int       fd, rc;
    char     *buf;
    size_t    n;
    ssize_t   r;

    *out = NULL;
    *len = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }

    if (fstat(fd, st) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }

    if (!S_ISREG(st->st_mode) || st->st_size > WG_HOSTS_MAX_SIZE) {
        close(fd);
        return S_ISREG(st->st_mode) ? -EFBIG : -EINVAL;
    }

    buf = malloc((size_t) st->st_size + 1);
    if (buf == NULL) {
        close(fd);
        return -ENOMEM;
    }

    n = 0;

    while (n <= (size_t) st->st_size) {
        r = read(fd, buf + n, (size_t) st->st_size + 1 - n);

        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }

            rc = -errno;
            free(buf);
            close(fd);
            return rc;
        }

        if (r == 0) {
            break;
        }

        n += (size_t) r;
    }

    close(fd);

    if (n > (size_t) st->st_size) {
        /* it grew while read: someone else is writing it */
        free(buf);
        return -EAGAIN;
    }

    *out = buf;
    *len = n;

    return 0;
}


static int
wg_hosts_write_all(int fd, const char *p, size_t len)
{
    ssize_t  n;

    while (len) {
        n = write(fd, p, len);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            return -errno;
        }

        p += n;
        len -= (size_t) n;
    }

    return 0;
}


/* returns 1 when the file was rewritten, 0 when it was already right */

int
wg_hosts_update(const char *path, const wg_host_t *hosts, size_t n,
    char *err, size_t errlen)
{
    int           rc, fd, exists;
    char         *old, *text, real[PATH_MAX], tmp[PATH_MAX + 32];
    size_t        len, tlen;
    struct stat   st;

    old = NULL;
    text = NULL;
    fd = -1;
    tmp[0] = '\0';

    /* a symlinked hosts file is updated where it points */
    if (realpath(path, real) == NULL) {
        if (errno != ENOENT) {
            rc = -errno;
            snprintf(err, errlen, "\"%s\": %s", path, strerror(errno));
            return rc;
        }

        snprintf(real, sizeof(real), "%s", path);
    }

    memset(&st, 0, sizeof(struct stat));

    rc = wg_hosts_read(real, &old, &len, &st);
    exists = (rc == 0);

    if (rc == -ENOENT) {
        st.st_mode = S_IFREG | 0644;
        st.st_uid = getuid();
        st.st_gid = getgid();
        rc = 0;
    }

    if (rc != 0) {
        snprintf(err, errlen, "cannot read \"%s\": %s", real, strerror(-rc));
        return rc;
    }

    rc = wg_hosts_render(old ? old : "", old ? len : 0, hosts, n, &text,
                         &tlen, err, errlen);
    if (rc != 0) {
        goto done;
    }

    if (exists && tlen == len && memcmp(text, old, len) == 0) {
        rc = 0;
        goto done;
    }

    snprintf(tmp, sizeof(tmp), "%s.dstack-vpc.XXXXXX", real);

    fd = mkstemp(tmp);
    if (fd < 0) {
        rc = -errno;
        tmp[0] = '\0';
        goto in_place;
    }

    if (fchmod(fd, st.st_mode & 07777) != 0
        || (fchown(fd, st.st_uid, st.st_gid) != 0 && errno != EPERM)
        || (rc = wg_hosts_write_all(fd, text, tlen)) != 0
        || fsync(fd) != 0)
    {
        rc = rc ? rc : -errno;
        snprintf(err, errlen, "cannot write \"%s\": %s", tmp, strerror(-rc));
        goto done;
    }

    close(fd);
    fd = -1;

    if (rename(tmp, real) == 0) {
        tmp[0] = '\0';
        rc = 1;
        goto done;
    }

    rc = -errno;

in_place:

    if (rc != -EBUSY && rc != -EXDEV && rc != -EACCES && rc != -EROFS) {
        snprintf(err, errlen, "cannot replace \"%s\": %s", real,
                 strerror(-rc));
        goto done;
    }

    /* a bind-mounted file cannot be renamed over: rewrite it in place */
    rc = 0;
    fd = open(real, O_WRONLY | O_CREAT | O_CLOEXEC, st.st_mode & 07777);

    if (fd < 0
        || (rc = wg_hosts_write_all(fd, text, tlen)) != 0
        || ftruncate(fd, (off_t) tlen) != 0
        || fsync(fd) != 0)
    {
        rc = rc ? rc : -errno;
        snprintf(err, errlen, "cannot write \"%s\": %s", real,
                 strerror(-rc));
        goto done;
    }

    rc = 1;

done:

    if (fd >= 0) {
        close(fd);
    }

    if (tmp[0] != '\0') {
        unlink(tmp);
    }

    free(old);
    free(text);

    return rc;
}

