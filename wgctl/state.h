/*
 * wgctl: the node agent's state directory: the node key (the only
 * secret, 0600), the status file that "wgctl status" reads, and the pid
 * file, locked while an agent runs, that "wgctl down" stops it through.
 */


#ifndef _WG_STATE_H_INCLUDED_
#define _WG_STATE_H_INCLUDED_


#include <stddef.h>
#include <sys/types.h>
#include <jansson.h>


#define WG_STATE_DIR      "/var/lib/wgctl"
#define WG_STATE_KEY      "node.key"
#define WG_STATE_STATUS   "status.json"
#define WG_STATE_PID      "wgctl.pid"
#define WG_STATE_MAX      (16 << 20)


int wg_state_path(char *buf, size_t size, const char *dir, const char *name);
int wg_state_lock(const char *dir, int *fd, pid_t *holder);
void wg_state_unlock(const char *dir, int fd);
int wg_state_agent(const char *dir, pid_t *pid);
int wg_state_stop(const char *dir, int timeout_ms, pid_t *pid);
int wg_state_read(const char *dir, const char *name, char **out,
    size_t *len);
int wg_state_write(const char *dir, const char *name, const char *data,
    size_t len, mode_t mode, int durable);

/* status.c */
int wg_state_status(const char *dir, json_t **out);


#endif /* _WG_STATE_H_INCLUDED_ */
