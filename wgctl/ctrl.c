/*
 * wgctl: control-plane HTTP through libcurl's multi interface, so that a
 * request waits in one poll() together with the caller's wake-up
 * descriptor (signals) and can be ended at once.  Bounds: 16 KiB of
 * response headers, 64 KiB of a plain response body, frames of the map
 * stream as peermap.h sets them; a connect timeout on every request and a
 * total one on plain requests (the stream's silence is the caller's).
 */


#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>

#include "ctrl.h"
#include "peermap.h"


typedef struct {
    CURL                    *curl;
    const wg_ctrl_ops_t     *ops;
    wg_ctrl_response_t      *resp;
    wg_frames_t              frames;
    size_t                   header_bytes;
    int                      stream;
    int                      rc;
} wg_ctrl_req_t;


static size_t wg_ctrl_header_cb(char *p, size_t size, size_t n, void *data);
static size_t wg_ctrl_write_cb(char *p, size_t size, size_t n, void *data);
static int wg_ctrl_sockopt_cb(void *data, curl_socket_t fd,
    curlsocktype purpose);
static int wg_ctrl_run(const wg_ctrl_t *c, const char *path,
    const char *body, size_t len, long timeout, int stream,
    const wg_ctrl_ops_t *ops, wg_ctrl_response_t *resp);


int
wg_ctrl_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -ENOMEM;
}


void
wg_ctrl_cleanup(void)
{
    curl_global_cleanup();
}


void
wg_ctrl_response_free(wg_ctrl_response_t *resp)
{
    free(resp->body);
    resp->body = NULL;
    resp->len = 0;
}


static size_t
wg_ctrl_header_cb(char *p, size_t size, size_t n, void *data)
{
    wg_ctrl_req_t  *req;

    req = data;
    req->header_bytes += size * n;

    if (req->header_bytes > WG_CTRL_HEADERS_MAX) {
        req->rc = -EMSGSIZE;
        snprintf(req->resp->error, sizeof(req->resp->error),
                 "response headers above %d bytes", WG_CTRL_HEADERS_MAX);
        return 0;
    }

    /* a new response (after a 1xx) starts the count again */
    if (size * n >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        req->header_bytes = size * n;
    }

    return size * n;
}


/*
 * A 200 stream goes to the frame cutter; anything else (an error answer,
 * a plain response) is kept, up to WG_CTRL_BODY_MAX.
 */

static size_t
wg_ctrl_write_cb(char *p, size_t size, size_t n, void *data)
{
    int                  rc;
    long                 status;
    char                *body;
    size_t               len;
    wg_ctrl_req_t       *req;
    wg_ctrl_response_t  *resp;

    req = data;
    resp = req->resp;
    len = size * n;

    if (resp->status == 0) {
        status = 0;
        curl_easy_getinfo(req->curl, CURLINFO_RESPONSE_CODE, &status);
        resp->status = status;
    }

    if (req->stream && resp->status == 200) {
        rc = wg_frames_feed(&req->frames, p, len, req->ops->frame,
                            req->ops->data);

        if (rc != 0) {
            req->rc = rc;

            if (rc == -EMSGSIZE) {
                snprintf(resp->error, sizeof(resp->error),
                         "a frame above %d bytes", WG_MAP_FRAME_MAX);

            } else if (rc == -EPROTO) {
                snprintf(resp->error, sizeof(resp->error),
                         "an empty frame");
            }

            return 0;
        }

        return len;
    }

    if (resp->len + len > WG_CTRL_BODY_MAX) {
        req->rc = -EMSGSIZE;
        snprintf(resp->error, sizeof(resp->error),
                 "response body above %d bytes", WG_CTRL_BODY_MAX);
        return 0;
    }

    body = realloc(resp->body, resp->len + len + 1);
    if (body == NULL) {
        req->rc = -ENOMEM;
        return 0;
    }

    memcpy(body + resp->len, p, len);
    resp->body = body;
    resp->len += len;
    resp->body[resp->len] = '\0';

    return len;
}


/* wireguard-go, started later, must not inherit our connections */

static int
wg_ctrl_sockopt_cb(void *data, curl_socket_t fd, curlsocktype purpose)
{
    int  flags;

    flags = fcntl(fd, F_GETFD);

    if (flags >= 0) {
        (void) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }

    return CURL_SOCKOPT_OK;
}


static int
wg_ctrl_run(const wg_ctrl_t *c, const char *path, const char *body,
    size_t len, long timeout, int stream, const wg_ctrl_ops_t *ops,
    wg_ctrl_response_t *resp)
{
    int                  rc, running, nmsg;
    char                 url[WG_CTRL_URL_MAX], header[128];
    char                 errbuf[CURL_ERROR_SIZE];
    CURL                *curl;
    CURLM               *multi;
    CURLMsg             *msg;
    CURLcode             result;
    CURLMcode            mc;
    wg_ctrl_req_t        req;
    struct curl_slist   *headers, *h;
    struct curl_waitfd   wfd;

    memset(resp, 0, sizeof(wg_ctrl_response_t));
    memset(&req, 0, sizeof(wg_ctrl_req_t));
    errbuf[0] = '\0';

    if (snprintf(url, sizeof(url), "%s%s", c->server, path)
        >= (int) sizeof(url))
    {
        snprintf(resp->error, sizeof(resp->error), "server URL too long");
        return -ENAMETOOLONG;
    }

    curl = curl_easy_init();
    multi = curl_multi_init();
    headers = NULL;
    rc = -ENOMEM;

    if (curl == NULL || multi == NULL) {
        goto done;
    }

    h = curl_slist_append(headers, "Content-Type: application/json");
    if (h == NULL) {
        goto done;
    }
    headers = h;

    /* no "Expect: 100-continue" round trip */
    h = curl_slist_append(headers, "Expect:");
    if (h == NULL) {
        goto done;
    }
    headers = h;

    h = curl_slist_append(headers, stream
                                   ? "Accept: application/octet-stream"
                                   : "Accept: application/json");
    if (h == NULL) {
        goto done;
    }
    headers = h;

    if (c->target_app != NULL) {
        snprintf(header, sizeof(header), "x-dstack-target-app: %s",
                 c->target_app);

        h = curl_slist_append(headers, header);
        if (h == NULL) {
            goto done;
        }
        headers = h;
    }

    req.curl = curl;
    req.ops = ops;
    req.resp = resp;
    req.stream = stream;
    wg_frames_init(&req.frames, WG_MAP_FRAME_MAX);

    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long) len);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "wgctl (dstack-vpc)");
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, wg_ctrl_header_cb);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &req);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, wg_ctrl_write_cb);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &req);
    curl_easy_setopt(curl, CURLOPT_SOCKOPTFUNCTION, wg_ctrl_sockopt_cb);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPINTVL, 10L);

    /* the mesh is on loopback: never through a proxy from the environment */
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "localhost,127.0.0.1,::1");

    if (c->cacert != NULL) {
        curl_easy_setopt(curl, CURLOPT_CAINFO, c->cacert);
    }

    if (c->cert != NULL) {
        curl_easy_setopt(curl, CURLOPT_SSLCERT, c->cert);
    }

    if (c->key != NULL) {
        curl_easy_setopt(curl, CURLOPT_SSLKEY, c->key);
    }

    if (curl_multi_add_handle(multi, curl) != CURLM_OK) {
        goto done;
    }

    result = CURLE_OK;
    running = 1;

    for ( ;; ) {
        mc = curl_multi_perform(multi, &running);

        if (mc != CURLM_OK) {
            snprintf(resp->error, sizeof(resp->error), "%s",
                     curl_multi_strerror(mc));
            rc = -EIO;
            goto removed;
        }

        if (req.rc != 0 || !running) {
            break;
        }

        if (ops != NULL && ops->tick != NULL) {
            rc = ops->tick(ops->data);

            if (rc != 0) {
                req.rc = rc;
                break;
            }
        }

        wfd.fd = (ops != NULL) ? ops->wake_fd : -1;
        wfd.events = CURL_WAIT_POLLIN;
        wfd.revents = 0;

        mc = curl_multi_poll(multi, &wfd, wfd.fd >= 0 ? 1 : 0, 1000, NULL);

        if (mc != CURLM_OK) {
            snprintf(resp->error, sizeof(resp->error), "%s",
                     curl_multi_strerror(mc));
            rc = -EIO;
            goto removed;
        }
    }

    while ((msg = curl_multi_info_read(multi, &nmsg)) != NULL) {
        if (msg->msg == CURLMSG_DONE) {
            result = msg->data.result;
        }
    }

    if (resp->status == 0) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
    }

    if (req.rc != 0) {
        rc = req.rc;

    } else if (running) {
        rc = -EIO;

    } else if (result == CURLE_OK) {
        rc = 0;

    } else {
        snprintf(resp->error, sizeof(resp->error), "%s",
                 errbuf[0] ? errbuf : curl_easy_strerror(result));
        rc = (result == CURLE_OPERATION_TIMEDOUT) ? -ETIMEDOUT : -EIO;
    }

removed:

    curl_multi_remove_handle(multi, curl);

done:

    if (rc == -ENOMEM && resp->error[0] == '\0') {
        snprintf(resp->error, sizeof(resp->error), "out of memory");
    }

    wg_frames_free(&req.frames);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    curl_multi_cleanup(multi);

    return rc;
}


/*
 * One request and its whole answer: 0 when an HTTP answer came (any
 * status, resp->status), else -errno with resp->error saying why.
 */

int
wg_ctrl_post(const wg_ctrl_t *c, const char *path, const char *body,
    size_t len, long timeout, const wg_ctrl_ops_t *ops,
    wg_ctrl_response_t *resp)
{
    return wg_ctrl_run(c, path, body, len, timeout, 0, ops, resp);
}


/*
 * The map stream: frames go to ops->frame as they complete.  0 when the
 * server ended the stream (or answered other than 200: resp->status and
 * resp->body), else -errno: a callback's, -EMSGSIZE/-EPROTO for a bad
 * frame, -EIO/-ETIMEDOUT for the transport.
 */

int
wg_ctrl_stream(const wg_ctrl_t *c, const char *path, const char *body,
    size_t len, const wg_ctrl_ops_t *ops, wg_ctrl_response_t *resp)
{
    return wg_ctrl_run(c, path, body, len, 0, 1, ops, resp);
}
