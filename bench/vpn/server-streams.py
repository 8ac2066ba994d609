# gdb script for bench/vpn/server (BENCH_MALLOC=on): in an nginx worker,
# the heap bytes each open HTTPS request holds, averaged: its connection's
# and its request's pools (blocks and large allocations), and of OpenSSL
# the SSL object and its session, by malloc_usable_size()

import gdb


def usable(a):
    if int(a) == 0:
        return 0
    return int(gdb.parse_and_eval(
        '(unsigned long) malloc_usable_size((void *) %d)' % int(a)))


def pool(p):
    blocks = large = 0
    b = p
    while int(b) != 0:
        blocks += usable(b)
        b = b['d']['next']
    l = p['large']
    while int(l) != 0:
        large += usable(l['alloc'])
        l = l['next']
    return blocks, large


cycle = gdb.parse_and_eval('(ngx_cycle_t *) ngx_cycle')
rtype = gdb.lookup_type('ngx_http_request_t').pointer()
conns = cycle['connections']
total = {}
n = 0

for i in range(int(cycle['connection_n'])):
    c = conns[i]
    if int(c['fd']) == -1 or int(c['ssl']) == 0 or int(c['data']) == 0:
        continue
    r = c['data'].cast(rtype)
    if int(r['signature']) != 0x50545448:       # "HTTP"
        continue
    n += 1
    ssl = c['ssl']['connection']
    sess = gdb.parse_and_eval('(void *) SSL_get_session((void *) %d)'
                              % int(ssl))
    v = {}
    v['c_pool_blocks'], v['c_pool_large'] = pool(c['pool'])
    v['r_pool_blocks'], v['r_pool_large'] = pool(r['pool'])
    v['ssl_buf'] = (int(c['ssl']['buf']['end'])
                    - int(c['ssl']['buf']['start'])
                    if int(c['ssl']['buf']) else 0)
    v['SSL'] = usable(ssl)
    v['SSL_SESSION'] = usable(sess)
    for k in v:
        total[k] = total.get(k, 0) + v[k]

print('STREAMS %d %s' % (n, ' '.join('%s=%.0f' % (k, total[k] / max(n, 1))
                                     for k in sorted(total))))
