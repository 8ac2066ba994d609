#!/usr/bin/perl

# ngx_dstack_vpc_api_module: the REST endpoints, their success and error
# shapes, the allowlist, and malformed input.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Digest::SHA qw(sha256_hex);
use MIME::Base64 qw(decode_base64);
use Test::Dstack qw(http);
use Test::Dstack::Api;

my $t = Test::Dstack->new()->has(qw(auth api sim redis curl))->plan(125);

my $api = Test::Dstack::Api->new($t);
my $r = $t->run_redis();

my ($A, $B, $C, $SRV) = map { $api->app($_) } qw(a b c server);

$t->write_file_expand('nginx.conf', $api->conf(redis => $r,
    http => <<"EOF", server => <<"EOF"));
    server {
        listen 127.0.0.1:%%PORT_8444%% ssl;
@{[ $api->tls() ]}
        dstack_vpc_api_allow any;
        dstack_vpc_api_server_url https://\$host:8443/vpc;
        dstack_vpc_api_key_ttl 10m;
        dstack_vpc_api_key_reusable on;
        dstack_vpc_api_max_body 256;

        location / {
            dstack_vpc_api;
        }

        location /none/ {
            dstack_vpc_api_allow "";
            rewrite ^/none(/.*)\$ \$1 break;
            dstack_vpc_api;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_8445%% ssl;
@{[ $api->tls() ]}
        dstack_vpc_api_server_url https://vpc.test;

        location / {
            dstack_vpc_api;
        }
    }
EOF
        location /other/ {
            dstack_vpc_api_allow $B;
            rewrite ^/other(/.*)\$ \$1 break;
            dstack_vpc_api;
        }
EOF

$t->run();

my $any = $t->port(8444);
my $unset = $t->port(8445);

sub keys_of { join ',', sort keys %{$_[0] || {}} }

sub redis_state {
    my @keys = sort split /\n/, $t->redis_cli($r, '--scan', '--pattern',
        'test:vpc:*');
    my %h;
    for my $k (@keys) {
        next if $k =~ /:view:/;
        my $type = $t->redis_cli($r, 'TYPE', $k);
        $h{$k} = $type eq 'hash' ? $t->redis_cli($r, 'HGETALL', $k)
            : $type eq 'zset' ? $t->redis_cli($r, 'ZRANGE', $k, 0, -1)
            : $t->redis_cli($r, 'GET', $k);
    }
    return join "\n", map { "$_=$h{$_}" } sort keys %h;
}

###############################################################################
# health

my $res = $api->get('/health');
is($res->{status}, 200, 'health without certificate');
is_deeply($res->{json}, { status => 'ok', redis => 'ok' }, 'health body');
is($res->{headers}{'content-type'}, 'application/json', 'json type');

$res = $api->get('/health', plain => 1);
is($res->{status}, 200, 'health over plain http');

###############################################################################
# register

$res = $api->get("/api/register?instance_id=AB01CD&node_name=Web_Server.1",
    as => 'a');
is($res->{status}, 200, 'register');
is_deeply($res->{shape}, { pre_auth_key => 'string', shared_key => 'string',
    server_url => 'string' }, 'register shape');
like($res->{json}{pre_auth_key},
    qr/^hskey-auth-[0-9A-Za-z]{12}-[0-9A-Za-z]{64}$/, 'headscale-style key');
is(length(decode_base64($res->{json}{shared_key} // '')), 64,
    'shared key is 64 bytes');
is($res->{json}{server_url}, "https://$SRV-8080.gw.test",
    'server_url built like the seed');
is($res->{headers}{'cache-control'}, 'no-store', 'not cached');

my $key1 = $res->{json}{pre_auth_key};
my $shared = $res->{json}{shared_key};

$res = $api->get("/api/register?instance_id=ab01cd&node_name=web", as => 'a');
isnt($res->{json}{pre_auth_key}, $key1, 'a new key every time');
is($res->{json}{shared_key}, $shared, 'one shared key');

$res = $api->get("/api/register?instance_id=ab01cd", as => 'c', port => $any);
is($res->{status}, 403, 'another app cannot take over an instance');
is(keys_of($res->{json}), 'error', 'takeover error shape');

$res = $api->get("/api/register?instance_id=ef02&node_name=db", as => 'c');
is($res->{status}, 200, 'register, second app');
is($res->{json}{shared_key}, $shared, 'same shared key for all apps');

# the key is stored hashed, with an expiry, and nowhere in clear

my ($kid) = $key1 =~ /^hskey-auth-([^-]+)-/;
my %k = split /\n/, $t->redis_cli($r, 'HGETALL', "test:vpc:preauthkey:$kid");
is($k{hash}, sha256_hex($key1), 'key stored as its sha256');
is($k{instance_id}, 'ab01cd', 'key names its instance');
is($k{app_id}, $A, 'key names its app');
is($k{reusable}, '0', 'single-use by default');
cmp_ok($k{expiration} - $k{created_at}, '==', 3600, 'default ttl 1h');
my $ttl = $t->redis_cli($r, 'TTL', "test:vpc:preauthkey:$kid");
ok($ttl > 3600 && $ttl <= 3600 + 86400, 'redis expires the record');
unlike(join("\n", map { $t->redis_cli($r, 'DUMP', $_) }
    split /\n/, $t->redis_cli($r, '--scan')), qr/\Q@{[ substr $key1, 24 ]}/,
    'secret not in redis');

$res = $api->get("/api/register?instance_id=77aa", as => 'b', port => $any);
is($res->{status}, 200, 'register on the second server');
is($res->{json}{server_url}, 'https://localhost:8443/vpc',
    'server_url from a variable');
($kid) = $res->{json}{pre_auth_key} =~ /^hskey-auth-([^-]+)-/;
%k = split /\n/, $t->redis_cli($r, 'HGETALL', "test:vpc:preauthkey:$kid");
is($k{reusable}, '1', 'reusable by directive');
is($k{expiration} - $k{created_at}, 600, 'ttl by directive');

# the node record

$res = $api->get('/api/nodes', as => 'a');
is($res->{status}, 200, 'nodes');
my %nodes = map { $_->{uuid} => $_ } @{$res->{json}{nodes} || []};
is($nodes{ab01cd}{name}, 'web', 'node recorded with its name');
is($nodes{ab01cd}{app_id}, $A, 'node recorded with its app');
is($nodes{ef02}{app_id}, $C, 'second node with its app');
is($res->{json}{count}, 3, 'nodes count');

$res = $api->get("/api/register?instance_id=ab01cd&node_name=", as => 'a');
$res = $api->get('/api/nodes', as => 'a');
%nodes = map { $_->{uuid} => $_ } @{$res->{json}{nodes} || []};
is($nodes{ab01cd}{name}, 'node-ab01cd', 'default name as the seed');

# errors, and nothing stored by them

my $before = redis_state();

for my $case (
    ['', 'no instance_id'],
    ['?node_name=x', 'only node_name'],
    ['?instance_id=', 'empty instance_id'],
    ['?instance_id=xyz', 'not hex'],
    ['?instance_id=ab%20cd', 'space'],
    ['?instance_id=' . ('a' x 129), 'too long'],
    ['?instance_id=..%2Fab', 'path'],
) {
    $res = $api->get("/api/register$case->[0]", as => 'a');
    is($res->{status}, 400, "register 400: $case->[1]");
    is_deeply($res->{json}, { error => 'Missing required parameters' },
        "register error body: $case->[1]") if $case->[1] eq 'not hex';
}

for my $case (
    ['x' x 10240, '10 KB'],
    ['x' x 64, '64 characters'],
    ['%C3%A9t%C3%A9', 'unicode'],
    ['..%2F..%2Fetc', '../'],
    ["a'%3B DROP TABLE nodes%3B--", 'sql'],
    ['%22%7D%2C%22x%22%3A%22', 'json-breaking'],
    ['a%00b', 'nul byte'],
    ['---', 'only dashes'],
) {
    $res = $api->get("/api/register?instance_id=cc03&node_name=$case->[0]",
        as => 'a');
    is($res->{status}, 400, "node_name 400: $case->[1]");
}

is_deeply($res->{json}, { error => 'invalid node_name' }, 'node_name error');
is(redis_state(), $before, 'state unchanged by bad registers');

###############################################################################
# update

$res = $api->post('/api/nodes/update?uuid=n1&node_type=app'
    . '&tailscale_ip=100.64.0.1&hostname=N1.Example', '', as => 'a');
is($res->{status}, 200, 'update');
is_deeply($res->{json}, {
    status => 'created',
    message => 'Node information updated successfully',
    node => { uuid => 'n1', node_type => 'app', tailscale_ip => '100.64.0.1',
        hostname => 'n1.example' },
}, 'update created');

$res = $api->post('/api/nodes/update?uuid=n1&tailscale_ip=100.64.0.9', '',
    as => 'a');
is($res->{json}{status}, 'updated', 'update updated');
is_deeply($res->{json}{node}, { uuid => 'n1', node_type => 'app',
    tailscale_ip => '100.64.0.9', hostname => 'n1.example' },
    'only given fields change');

$res = $api->post('/api/nodes/update', '{"uuid":"n2","node_type":"app",'
    . '"hostname":"n2.example","tailscale_ip":null}', as => 'a',
    headers => "Content-Type: application/json\r\n");
is($res->{status}, 200, 'update with a JSON body');
is_deeply($res->{json}{node}, { uuid => 'n2', node_type => 'app',
    tailscale_ip => undef, hostname => 'n2.example' }, 'JSON body fields');
is_deeply($res->{shape}, { status => 'string', message => 'string',
    node => { uuid => 'string', node_type => 'string', tailscale_ip => 'null',
        hostname => 'string' } }, 'update shape');

$res = $api->post('/api/nodes/update?node_type=db',
    '{"uuid":"n2","node_type":"app"}', as => 'a');
is($res->{json}{node}{node_type}, 'db', 'query wins over body');

$res = $api->post('/api/nodes/update?uuid=n2&node_type=app', 'junk=1',
    as => 'a');
is($res->{status}, 200, 'non-JSON body ignored, as the seed');

$res = $api->post('/api/nodes/update?uuid=n1&node_type=db', '', as => 'c',
    port => $any);
is($res->{status}, 403, 'another app cannot update a node');
is(keys_of($res->{json}), 'error', 'update 403 shape');

$res = $api->get('/api/nodes/update?uuid=n1', as => 'a');
is($res->{status}, 405, 'update is POST only');
is($res->{headers}{allow}, 'POST', 'allow header');
is_deeply($res->{json}, { error => 'Method not allowed' }, '405 body');

$before = redis_state();

for my $case (
    ['?node_type=app', '', 'uuid parameter is required', 'no uuid'],
    ['?uuid=', '', 'uuid parameter is required', 'empty uuid'],
    ['?uuid=a/b', '', 'invalid uuid', 'slash in uuid'],
    ['?uuid=' . ('u' x 200), '', 'invalid uuid', 'long uuid'],
    ['?uuid=n1&tailscale_ip=100.64.0.256', '', 'invalid tailscale_ip',
        'ip > 255'],
    ['?uuid=n1&tailscale_ip=100.64.0', '', 'invalid tailscale_ip',
        'three parts'],
    ['?uuid=n1&tailscale_ip=100.64.00.1', '', 'invalid tailscale_ip',
        'leading zero'],
    ['?uuid=n1&tailscale_ip=fd00::1', '', 'invalid tailscale_ip', 'ipv6'],
    ['?uuid=n1&hostname=-bad.example', '', 'invalid hostname', 'hostname -'],
    ['?uuid=n1&hostname=a..b', '', 'invalid hostname', 'empty label'],
    ['?uuid=n1&hostname=a_b', '', 'invalid hostname', 'underscore'],
    ['?uuid=n1&hostname=' . ('a' x 64), '', 'invalid hostname', 'label 64'],
    ['?uuid=n1&hostname=%22%3E%3Cx', '', 'invalid hostname', 'markup'],
    ['?uuid=n1&node_type=App', '', 'invalid node_type', 'uppercase type'],
    ['?uuid=n1&node_type=' . ('t' x 33), '', 'invalid node_type',
        'long type'],
    ['?uuid=n1&node_type=..%2Fx', '', 'invalid node_type', 'type path'],
    ['', '{"uuid":', 'invalid JSON body', 'broken JSON'],
    ['', '{"uuid":"a","uuid":"b"}', 'invalid JSON body', 'duplicate keys'],
    ['', '{"uuid":1}', 'invalid JSON body: "uuid" must be a string',
        'number field'],
    ['', '{"uuid":"n1","hostname":"a\u0000b"}', 'invalid JSON body',
        'NUL in JSON'],
) {
    $res = $api->post("/api/nodes/update$case->[0]", $case->[1], as => 'a');
    is_deeply([$res->{status}, $res->{json}], [400, { error => $case->[2] }],
        "update 400: $case->[3]");
}

$res = $api->post('/api/nodes/update', '{"uuid":"' . ('x' x 300) . '"}',
    as => 'b', port => $any);
is($res->{status}, 413, 'body over dstack_vpc_api_max_body');
is_deeply($res->{json}, { error => 'request body too large' }, '413 body');

$res = $api->get('/api/register?instance_id=ab&pad=' . ('x' x 3000),
    as => 'a');
is_deeply([$res->{status}, $res->{json}],
    [400, { error => 'query string too long' }], 'bounded query string');

is(redis_state(), $before, 'state unchanged by bad updates');

###############################################################################
# discover

$api->post("/api/nodes/update?uuid=$_&node_type=web&hostname=$_.web"
    . "&tailscale_ip=100.64.1.$_", '', as => 'a') for qw(30 10 20);
$api->post('/api/nodes/update?uuid=40&node_type=web', '', as => 'a');

$res = $api->get('/api/discover/web', as => 'a');
is($res->{status}, 200, 'discover');
is_deeply($res->{json}, {
    nodes => [
        { hostname => '10.web', tailscale_ip => '100.64.1.10', uuid => '10' },
        { hostname => '20.web', tailscale_ip => '100.64.1.20', uuid => '20' },
        { hostname => '30.web', tailscale_ip => '100.64.1.30', uuid => '30' },
    ],
    count => 3,
    node_type => 'web',
}, 'discover: stable order, nodes without hostname left out');
is_deeply($res->{shape}{count}, 'number', 'count is a number');

$api->post('/api/nodes/update?uuid=20&node_type=db', '', as => 'a');
$res = $api->get('/api/discover/web', as => 'a');
is_deeply([map { $_->{uuid} } @{$res->{json}{nodes}}], [10, 30],
    'a node that changes type leaves the index');
$res = $api->get('/api/discover/db', as => 'a');
is_deeply([map { $_->{uuid} } @{$res->{json}{nodes}}], [20],
    'and joins the other');

$res = $api->get('/api/discover/nothing', as => 'a');
is($res->{status}, 404, 'discover none');
is_deeply($res->{json}, { error => 'No nothing nodes found' }, '404 body');

for my $bad ('Web', 'a.b', 'a%2Fb', '', 'web/', 'x' x 33, '%00') {
    $res = $api->get("/api/discover/$bad", as => 'a');
    is($res->{status}, 400, "discover invalid type '$bad'");
}

$res = $api->request('HEAD', '/api/discover/web', as => 'a');
is($res->{status}, 200, 'HEAD discover');
is($res->{body}, '', 'HEAD without body');

###############################################################################
# nodes, unknown paths, methods

$res = $api->get('/api/nodes', as => 'a');
is($res->{json}{count}, scalar @{$res->{json}{nodes}}, 'nodes count');
my ($n1) = grep { $_->{uuid} eq 'n1' } @{$res->{json}{nodes}};
is_deeply($n1 && shape_of($n1), {
    uuid => 'string', name => 'string', app_id => 'string',
    node_type => 'string', tailscale_ip => 'string', hostname => 'string',
    created_at => 'number', updated_at => 'number', registered_at => 'null',
}, 'node fields');

sub shape_of { Test::Dstack::Api::shape($_[0]) }

$res = $api->get('/api/unknown', as => 'a');
is_deeply([$res->{status}, $res->{json}], [404, { error => 'Not found' }],
    'unknown path');
$res = $api->get('/api/nodes/', as => 'a');
is($res->{status}, 404, 'trailing slash is another path');
$res = $api->post('/api/discover/web', '', as => 'a');
is_deeply([$res->{status}, $res->{headers}{allow}], [405, 'GET, HEAD'],
    'discover is GET');
$res = $api->request('DELETE', '/api/nodes', as => 'a');
is($res->{status}, 405, 'DELETE nodes');

###############################################################################
# identity and allowlists

$res = $api->get('/api/nodes', as => 'b');
is_deeply([$res->{status}, $res->{json}], [403, { error => 'Forbidden' }],
    'app outside the list');
$res = $api->get('/other/api/nodes', as => 'b');
is($res->{status}, 200, 'per-location list');
$res = $api->get('/other/api/nodes', as => 'a');
is($res->{status}, 403, 'per-location list excludes');

my $forged = "x-dstack-app-id: $A\r\n";

$res = $api->get('/api/nodes', headers => $forged);
is($res->{status}, 401, 'forged header, no certificate: 401');
$res = $api->get('/api/nodes', headers => $forged, port => $any);
is_deeply([$res->{status}, $res->{json}], [401, { error => 'Unauthorized' }],
    'forged header, no dstack_auth: 401 from the api');
$res = $api->get('/api/nodes', headers => $forged, plain => 1);
is($res->{status}, 401, 'forged header over plain http: 401');
$res = $api->get("/api/register?instance_id=dd04", plain => 1,
    headers => $forged);
is($res->{status}, 401, 'no register over plain http');

$res = $api->get('/api/nodes', as => 'b', port => $any);
is($res->{status}, 200, 'allow any');
$res = $api->get('/none/api/nodes', as => 'a', port => $any);
is($res->{status}, 403, 'empty list allows nobody');
$res = $api->get('/api/nodes', as => 'a', port => $unset);
is($res->{status}, 403, 'no list allows nobody');
$res = $api->get('/health', port => $unset);
is($res->{status}, 200, 'health needs no list');

###############################################################################
# HTTP/2

my $a = $api->cert('a');
my @h2 = ('--http2', '-k', '--cert', $a->{chain}, '--key', $a->{key});
my ($code, $body) = $t->curl(@h2, '-H', 'Content-Type: application/json',
    '--data', '{"uuid":"h2","node_type":"h2","hostname":"h2.example"}',
    "https://127.0.0.1:@{[ $t->port(8443) ]}/api/nodes/update");
is($code, 200, 'update over HTTP/2');
($code, $body) = $t->curl(@h2, '-w', ' %{http_version}',
    "https://127.0.0.1:@{[ $t->port(8443) ]}/api/discover/h2");
like($body, qr/"count":1,"node_type":"h2"\}\n 2$/, 'discover over HTTP/2');

###############################################################################

$t->stop();
unlike($t->error_log(), qr/\Q$key1\E|\Q$shared\E/, 'no secrets logged');
