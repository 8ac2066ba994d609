/*
 * wgctl: files of the state directory.  The pid file is held with an
 * exclusive flock() for the agent's lifetime, so a stale file (the agent
 * was killed) is told apart from a running agent without trusting the
 * pid in it, and a second agent on the same directory is refused.
 */


#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "state.h"
#include "wgdev.h"


static pid_t wg_state_pid_read(int fd);
static void wg_state_sleep_ms(long ms);


int
wg_state_path(char *buf, size_t size, const char *dir, const char *name)
{
    int  n;

    n = snprintf(buf, size, "%s/%s", dir, name);

    return (n < 0 || (size_t) n >= size) ? -ENAMETOOLONG : 0;
}


static pid_t
wg_state_pid_read(int fd)
{
    char     buf[32];
    ssize_t  n;
    long     pid;

    n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0) {
        return 0;
    }

    buf[n] = '\0';
    pid = strtol(buf, NULL, 10);

    return (pid > 0 && pid < (1L << 30)) ? (pid_t) pid : 0;
}


/*
 * Takes the agent's lock: 0 with *fd open (close-on-exec, so that a
 * wireguard-go started later does not keep it), -EBUSY with *holder when
 * another agent holds it.
 */

int
wg_state_lock(const char *dir, int *fd, pid_t *holder)
{
    int    rc, f, n;
    char   path[4096], buf[32];

    *fd = -1;
    *holder = 0;

    rc = wg_state_path(path, sizeof(path), dir, WG_STATE_PID);
    if (rc != 0) {
        return rc;
    }

    f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (f < 0) {
        return -errno;
    }

    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        rc = (errno == EWOULDBLOCK) ? -EBUSY : -errno;
        *holder = wg_state_pid_read(f);
        close(f);
        return rc;
    }

    n = snprintf(buf, sizeof(buf), "%ld\n", (long) getpid());

    if (ftruncate(f, 0) != 0 || pwrite(f, buf, (size_t) n, 0) != n) {
        rc = -errno;
        close(f);
        return rc;
    }

    *fd = f;

    return 0;
}


void
wg_state_unlock(const char *dir, int fd)
{
    char  path[4096];

    if (fd < 0) {
        return;
    }

    if (wg_state_path(path, sizeof(path), dir, WG_STATE_PID) == 0) {
        unlink(path);
    }

    close(fd);
}


/* 1 and *pid when an agent holds the lock, 0 when none does */

int
wg_state_agent(const char *dir, pid_t *pid)
{
    int   rc, fd;
    char  path[4096];

    *pid = 0;

    rc = wg_state_path(path, sizeof(path), dir, WG_STATE_PID);
    if (rc != 0) {
        return rc;
    }

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return (errno == ENOENT) ? 0 : -errno;
    }

    if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
        close(fd);
        return 0;
    }

    rc = (errno == EWOULDBLOCK) ? 1 : -errno;

    if (rc == 1) {
        *pid = wg_state_pid_read(fd);
    }

    close(fd);

    return rc;
}


static void
wg_state_sleep_ms(long ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;

    nanosleep(&ts, NULL);
}


/*
 * Stops a running agent with SIGTERM and waits, bounded, until it let go
 * of its lock.  0 when none ran or it stopped, -ETIMEDOUT, or -errno.
 */

int
wg_state_stop(const char *dir, int timeout_ms, pid_t *pid)
{
    int  rc, waited;

    rc = wg_state_agent(dir, pid);
    if (rc <= 0) {
        return rc;
    }

    if (*pid <= 0) {
        return -ESRCH;
    }

    if (kill(*pid, SIGTERM) != 0) {
        return -errno;
    }

    for (waited = 0; waited < timeout_ms; waited += 20) {
        pid_t  now;

        rc = wg_state_agent(dir, &now);
        if (rc <= 0) {
            return rc;
        }

        wg_state_sleep_ms(20);
    }

    return -ETIMEDOUT;
}


int
wg_state_read(const char *dir, const char *name, char **out, size_t *len)
{
    int          rc, fd;
    char        *buf, path[4096];
    size_t       have;
    ssize_t      n;
    struct stat  st;

    *out = NULL;
    *len = 0;

    rc = wg_state_path(path, sizeof(path), dir, name);
    if (rc != 0) {
        return rc;
    }

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return -errno;
    }

    if (fstat(fd, &st) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }

    if (!S_ISREG(st.st_mode) || st.st_size > WG_STATE_MAX) {
        close(fd);
        return -EFBIG;
    }

    buf = malloc((size_t) st.st_size + 1);
    if (buf == NULL) {
        close(fd);
        return -ENOMEM;
    }

    have = 0;

    while (have < (size_t) st.st_size) {
        n = read(fd, buf + have, (size_t) st.st_size - have);

        if (n < 0 && errno == EINTR) {
            continue;
        }

        if (n <= 0) {
            break;
        }

        have += (size_t) n;
    }

    close(fd);
    buf[have] = '\0';

    *out = buf;
    *len = have;

    return 0;
}


/*
 * Beside the old file, renamed over it: readers see one or the other.
 * "durable" adds an fsync() first (the key; not the status, rewritten
 * on every change and again after a restart).
 */

int
wg_state_write(const char *dir, const char *name, const char *data,
    size_t len, mode_t mode, int durable)
{
    int      rc, fd;
    char     path[4096], tmp[4096];
    size_t   done;
    ssize_t  n;

    rc = wg_state_path(path, sizeof(path), dir, name);
    if (rc != 0) {
        return rc;
    }

    if (snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long) getpid())
        >= (int) sizeof(tmp))
    {
        return -ENAMETOOLONG;
    }

    unlink(tmp);

    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
              mode);
    if (fd < 0) {
        return -errno;
    }

    rc = 0;

    for (done = 0; done < len; done += (size_t) n) {
        n = write(fd, data + done, len - done);

        if (n < 0 && errno == EINTR) {
            n = 0;
            continue;
        }

        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            break;
        }
    }

    if (rc == 0 && (fchmod(fd, mode) != 0 || (durable && fsync(fd) != 0))) {
        rc = -errno;
    }

    if (close(fd) != 0 && rc == 0) {
        rc = -errno;
    }

    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -errno;
    }

    if (rc != 0) {
        unlink(tmp);
    }

    return rc;
}
