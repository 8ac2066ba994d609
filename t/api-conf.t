#!/usr/bin/perl

# ngx_dstack_vpc_api_module configuration: directive checks, and the
# shipped conf/vpc-api.conf (with its placeholders filled in) serving the
# API on the shipped conf/redis.conf.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack;
use Test::Dstack::Api;

my $t = Test::Dstack->new()->has(qw(auth api sim redis))->plan(30);

my $api = Test::Dstack::Api->new($t);
my ($A, $B, $SRV) = map { $api->app($_) } qw(a b server);

sub try_conf {
    my ($http, $server, $location) = @_;

    $t->write_file_expand('bad.conf', <<"EOF");
%%TEST_GLOBALS%%
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    $http
    server {
        listen 127.0.0.1:%%PORT_8080%%;
        $server
        location / {
            $location
        }
    }
}
EOF

    my ($ok, $out) = $t->test_config('bad.conf');
    return $ok ? 'ok' : $out;
}

my $redis = 'dstack_vpc_redis 127.0.0.1:6379;';
my $url = 'dstack_vpc_api_server_url https://vpc.test;';

is(try_conf($redis, $url, 'dstack_vpc_api;'), 'ok', 'minimal');
is(try_conf("dstack_vpc_redis unix:/tmp/x.sock password=p db=3 "
    . "connect_timeout=200ms max_backoff=5s;", $url, 'dstack_vpc_api;'),
    'ok', 'all redis parameters');
is(try_conf('dstack_vpc_redis [::1]:6380;', $url, 'dstack_vpc_api;'), 'ok',
    'ipv6 address');
is(try_conf($redis, "dstack_vpc_api_server_gateway $SRV gw.test:4443;",
    'dstack_vpc_api;'), 'ok', 'gateway with a port in the domain');
is(try_conf($redis, "dstack_vpc_api_allow '$A,$B';",
    "dstack_vpc_api; $url"), 'ok', 'comma separated ids');
is(try_conf($redis, "dstack_vpc_api_allow '' ;", "dstack_vpc_api; $url"),
    'ok', 'empty list');
is(try_conf('', '', ''), 'ok', 'module loaded, unused');

like(try_conf('', $url, 'dstack_vpc_api;'),
    qr/needs "dstack_vpc_redis"/, 'no redis');
like(try_conf('dstack_vpc_redis localhost:6379;', $url, 'dstack_vpc_api;'),
    qr/must be a numeric IP address/, 'host names refused');
like(try_conf('dstack_vpc_redis 127.0.0.1:0;', $url, 'dstack_vpc_api;'),
    qr/invalid redis address/, 'bad port');
my $out = try_conf('dstack_vpc_redis 127.0.0.1 passwd=hunter2;', $url,
    'dstack_vpc_api;');
like($out, qr/invalid redis parameter #2/, 'unknown redis parameter');
unlike($out, qr/hunter2/, 'its value not echoed');
like(try_conf('dstack_vpc_redis 127.0.0.1 db=x;', $url, 'dstack_vpc_api;'),
    qr/invalid redis database/, 'bad db');
like(try_conf($redis, '', 'dstack_vpc_api;'),
    qr/needs "dstack_vpc_api_server_url" or/, 'no server url');
like(try_conf($redis, "dstack_vpc_api_allow any $A;",
    "dstack_vpc_api; $url"), qr/either "any" or app ids/, 'any and ids');
like(try_conf($redis, 'dstack_vpc_api_allow abc;', "dstack_vpc_api; $url"),
    qr/invalid app id "abc"/, 'short id');
like(try_conf($redis, 'dstack_vpc_api_allow ' . ('g' x 40) . ';',
    "dstack_vpc_api; $url"), qr/invalid app id/, 'not hex');
like(try_conf($redis, "dstack_vpc_api_server_gateway abc gw.test;",
    'dstack_vpc_api;'), qr/invalid server app id/, 'bad gateway app id');
like(try_conf($redis, $url, 'dstack_vpc_api; dstack_vpc_api_key_ttl 0;'),
    qr/must be positive/, 'zero key ttl');

# dstack_vpc_control_prefix (the control plane's address pool)

sub prefix { try_conf("$redis dstack_vpc_control_prefix $_[0];", $url,
    'dstack_vpc_api;') }

is(prefix('10.99.0.0/29'), 'ok', 'prefix');
like(prefix('10.99.0.1/29'), qr/"10.99.0.1\/29" has host bits set/,
    'prefix with host bits');
like(prefix('10.0.0.0/31'), qr/prefix length of "10.0.0.0\/31" must be 8/,
    'prefix longer than /30');
like(prefix('0.0.0.0/4'), qr/prefix length of "0.0.0.0\/4" must be 8/,
    'prefix shorter than /8');
like(prefix('10.0.0.0'), qr/invalid prefix "10.0.0.0"/, 'no prefix length');
like(prefix('fd00::/64'), qr/invalid prefix "fd00::\/64"/, 'IPv6 refused');

$out = try_conf($redis, $url, 'dstack_vpc_api;');
$t->write_file('bad.conf', $t->read_file('bad.conf')
    =~ s/load_module \S+auth\S+;\n//r);
(undef, $out) = $t->test_config('bad.conf');
like($out, qr/unknown "dstack_app_id" variable/,
    'needs ngx_dstack_auth_module for the identity');

###############################################################################
# the shipped snippet, placeholders filled as the entrypoint does

my $r = $api->run_redis_conf();
my $d = $t->testdir;

my $snippet = $t->read_file($t->repo . '/conf/vpc-api.conf');
my %env = (
    VPC_ALLOWED_APPS => "$A, $B",
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

my $res = $api->get('/health');
is_deeply($res->{json}, { status => 'ok', redis => 'ok' },
    'shipped snippet: health');

$res = $api->get('/api/register?instance_id=a1b2&node_name=n1', as => 'a');
is($res->{json}{server_url}, "https://$SRV-443.gw.test:4443",
    'shipped snippet: register');

$res = $api->get('/api/nodes', as => 'c');
is($res->{status}, 403, 'shipped snippet: allowlist from VPC_ALLOWED_APPS');

$res = $api->post('/api/nodes/update?uuid=a1b2', 'x' x 20000, as => 'b');
is_deeply([$res->{status}, $res->{json}],
    [413, { error => 'request body too large' }],
    'shipped snippet: JSON 413 from client_max_body_size');
