/*
 * wgctl: HTTP to the control plane (docs/control-plane.md) through
 * libcurl: the local mesh on plain HTTP (x-dstack-target-app names the VPC
 * server), or HTTPS straight to a server in tests.  Every wait is bounded
 * and interruptible: a callback runs at least once a second and whenever
 * the caller's wake-up descriptor is readable, and may end the request.
 */


#ifndef _WG_CTRL_H_INCLUDED_
#define _WG_CTRL_H_INCLUDED_


#include <stddef.h>


#define WG_CTRL_BODY_MAX        (64 * 1024)
#define WG_CTRL_HEADERS_MAX     (16 * 1024)
#define WG_CTRL_URL_MAX         1024
#define WG_CTRL_APP_ID_LEN      40


typedef struct {
    const char              *server;        /* no trailing slash */
    const char              *target_app;    /* or NULL */
    const char              *cacert;
    const char              *cert;
    const char              *key;
    long                     connect_timeout;   /* ms */
} wg_ctrl_t;


typedef struct {
    long                     status;        /* 0: no HTTP answer */
    char                    *body;          /* NUL-terminated, bounded */
    size_t                   len;
    char                     error[256];    /* why the exchange failed */
} wg_ctrl_response_t;


typedef struct {
    /* a frame of the map stream; non-zero ends the stream with it */
    int                    (*frame)(void *data, const char *frame,
                                    size_t len);
    /* at least once a second; non-zero ends the request with it */
    int                    (*tick)(void *data);
    void                    *data;
    int                      wake_fd;       /* or -1 */
} wg_ctrl_ops_t;


int wg_ctrl_init(void);
void wg_ctrl_cleanup(void);
int wg_ctrl_post(const wg_ctrl_t *c, const char *path, const char *body,
    size_t len, long timeout, const wg_ctrl_ops_t *ops,
    wg_ctrl_response_t *resp);
int wg_ctrl_stream(const wg_ctrl_t *c, const char *path, const char *body,
    size_t len, const wg_ctrl_ops_t *ops, wg_ctrl_response_t *resp);
void wg_ctrl_response_free(wg_ctrl_response_t *resp);


#endif /* _WG_CTRL_H_INCLUDED_ */
