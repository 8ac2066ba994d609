/*
 * wgctl unit tests: a minimal TAP producer.
 */


#ifndef _WG_TEST_H_INCLUDED_
#define _WG_TEST_H_INCLUDED_


#include "wgdev.h"


#define ok(cond, ...)  test_ok((cond) ? 1 : 0, __FILE__, __LINE__, __VA_ARGS__)


void test_ok(int pass, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void test_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void test_key(uint8_t *key, unsigned n);

void test_keys(void);
void test_diff(void);
void test_config(void);
void test_hosts(void);
void test_genl(void);
void test_uapi(void);
void test_peermap(void);
void test_path(void);
void test_relay(void);


#endif /* _WG_TEST_H_INCLUDED_ */
