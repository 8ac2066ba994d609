#!/usr/bin/perl

# ngx_dstack_vpc_api_module: GET /api/ping, the seed's liveness probe
# ("pong", no identity, no Redis), through the shipped conf/vpc-api.conf.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack;
use Test::Dstack::Api;

my $t = Test::Dstack->new()->has(qw(auth api sim redis))->plan(12);

my $api = Test::Dstack::Api->new($t);
my ($A, $B, $SRV) = map { $api->app($_) } qw(a b server);

my $r = $api->run_redis_conf();

my $snippet = $t->read_file($t->repo . '/conf/vpc-api.conf');
my %env = (
    VPC_ALLOWED_APPS => $A,
    VPC_SERVER_APP_ID => $SRV,
    DSTACK_GATEWAY_DOMAIN => 'gw.test:4443',
);
$snippet =~ s/\$\{(\w+)\}/$env{$1} \/\/ die "no $1\n"/ge;

my $s = $api->cert('server');
$snippet =~ s{/etc/dstack/mesh/cert\.pem}{$s->{chain}}g;
$snippet =~ s{/etc/dstack/mesh/key\.pem}{$s->{key}}g;
$snippet =~ s{/etc/dstack/mesh/ca\.pem}{$s->{root}}g;
$snippet =~ s{unix:/run/dstack-vpc/redis\.sock}{unix:$r->{socket}}g;
$snippet =~ s{listen\s+443 }{'listen 127.0.0.1:' . $t->port(8443) . ' '}e;
$snippet =~ s{include /etc/dstack-vpc/vpc-api\.d/\*\.conf;}{};
$t->write_file('vpc-api.conf', $snippet);

$t->write_file_expand('nginx.conf', <<'EOF');
%%TEST_GLOBALS%%
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    include %%TESTDIR%%/vpc-api.conf;
}
EOF

$t->run();

# no client certificate: the seed answered anyone

my $res = $api->get('/api/ping');
is($res->{status}, 200, 'ping: 200 without a certificate');
is($res->{body}, 'pong', 'ping: pong');
is($res->{headers}{'content-type'}, 'text/plain', 'ping: plain text');

# an app outside the allowlist too

$res = $api->get('/api/ping', as => 'b');
is($res->{status}, 200, 'ping: 200 for an app not allowed');
is($res->{body}, 'pong', 'ping: pong for it');

$res = $api->request('HEAD', '/api/ping');
is($res->{status}, 200, 'ping: HEAD 200');
is($res->{body}, '', 'ping: HEAD without body');

$res = $api->post('/api/ping', 'x');
is($res->{status}, 405, 'ping: POST 405');

# beside it, the rest still wants an identity

$res = $api->get('/api/nodes');
is($res->{status}, 401, 'nodes: still 401 without a certificate');

$res = $api->get('/api/pings');
isnt($res->{body}, 'pong', 'only /api/ping itself');

# no Redis round trip: it answers while Redis is down

$t->redis_cli($r, 'SHUTDOWN', 'NOSAVE');
Test::Dstack::wait_for(sub { !-S $r->{socket} }, 10);

$res = $api->get('/api/ping');
is($res->{body}, 'pong', 'ping: pong while Redis is down');

$res = $api->get('/health');
is($res->{json}{redis}, 'unavailable', 'health: Redis down then');
