
/*
 * Input checks shared by the REST API and the VPN control plane
 * (ngx_dstack_vpc_check.c).
 */


#ifndef _NGX_DSTACK_VPC_CHECK_H_INCLUDED_
#define _NGX_DSTACK_VPC_CHECK_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


ngx_int_t ngx_dstack_vpc_parse_ipv4(u_char *p, size_t len, uint32_t *addr);
time_t ngx_dstack_vpc_parse_time(u_char *p, size_t len);


#endif /* _NGX_DSTACK_VPC_CHECK_H_INCLUDED_ */
