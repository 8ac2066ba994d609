/*
 * wgctl: the subcommands and what they share.
 */


#ifndef _WGCTL_H_INCLUDED_
#define _WGCTL_H_INCLUDED_


#include "ipc.h"


extern const char    *wgctl_prog;
extern int            wgctl_verbose;
extern wg_backend_e   wgctl_backend;


int wgctl_is_help(int argc, char **argv);

int show_main(int argc, char **argv);
int setconf_main(int argc, char **argv);
int create_main(int argc, char **argv);
int addr_main(int argc, char **argv);
int down_main(int argc, char **argv);
int hosts_main(int argc, char **argv);
int genkey_main(int argc, char **argv);
int pubkey_main(int argc, char **argv);
int up_main(int argc, char **argv);
int status_main(int argc, char **argv);
int metrics_main(int argc, char **argv);

/* log.c: the agent's log and clock */
void wg_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
long long wg_now_ms(void);

/* link.c: the device's life */
int wg_link_create(const char *ifname, wg_backend_e backend, int verbose,
    wg_backend_e *used);
int wg_link_delete(const char *ifname);

/* status.c: the agent's peers joined with the device's numbers */
struct json_t *wg_status_peers(struct json_t *st, const wg_device_t *dev);

/* relay_main.c: the relay engine alone, for tests and benches */
int relay_main(int argc, char **argv);

/* admin.c: the server side, on its Redis */
int nodes_main(int argc, char **argv);
int preauthkeys_main(int argc, char **argv);

/* ratls/dstack_verify.c: the verifier CLI on the attestation library */
int dstack_verify_main(int argc, char **argv);


#endif /* _WGCTL_H_INCLUDED_ */
