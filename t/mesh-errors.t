#!/usr/bin/perl

# ngx_dstack_mesh_module: the error contract.  400 for malformed targets,
# 526 when the peer's chain or app_id is wrong (and then not one request
# byte reaches it), 525 for a failed handshake, 502 when the gateway
# cannot be reached, 504 on timeouts; every one a JSON body.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(http json_body parse_response);
use Test::Dstack::Mesh;

my $t = Test::Dstack->new()->has(qw(auth mesh stream sim))->plan(61);

my $A = 'aa' x 20;
my $B = '0b' x 20;
my $C = '0c' x 20;
my $D = '0d' x 20;
my $E = '0e' x 20;
my $P = '0f' x 20;
my $S = '05' x 20;
my $N = '99' x 20;

my $m = Test::Dstack::Mesh->new($t);
$m->peer('b', app => $B);
my $c = $m->peer('c', app => $C);
$m->peer('d', app => $D, state => 'kms2');             # another KMS root
$m->peer('e', app => $E, variant => ['--no-app-id']);  # no .3 at all
my $plain = $m->peer('plain', plain => 1);
my $silent = $m->peer('silent', silent => 1);

$m->route("$B-444s", $c);          # the gateway misroutes B to C
$m->route("$P-443s", $plain);      # not TLS behind this name
$m->route("$S-443s", $silent);     # accepts, never answers

my $d = $t->testdir;
my $down = $t->port('closed');
my $node_down = $t->port('node-down');

$m->start(a => $A, node => {
    agent => "$d/no-agent.sock",
    edit => sub {
        s/proxy_read_timeout(\s+)300s/proxy_read_timeout${1}1s/
            or die "no proxy_read_timeout 300s to edit\n";
        s/proxy_connect_timeout(\s+)10s/proxy_connect_timeout${1}1s/
            or die "no proxy_connect_timeout 10s to edit\n";
    },
    extra => <<"EOF",
    upstream mesh_down {
        dstack_mesh_gateway mesh.test:443 address=127.0.0.1:$down;
        dstack_mesh_certificate $d/node-a.crt;
        dstack_mesh_certificate_key $d/node-a.key;
        dstack_mesh_trusted_certificate $d/kms/root.crt;
    }

    server {
        listen 127.0.0.1:$node_down;

        location / {
            dstack_mesh_target;
            proxy_pass https://mesh_down;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
EOF
});

sub error_of {
    my ($r) = @_;
    my $j = json_body($r);
    return ref $j eq 'HASH' ? ($j->{error} // '') : "not JSON: $r->{body}";
}

# malformed targets: 400

my @bad = (
    ['app not hex', app => 'zz' x 20],
    ['app 39 chars', app => substr($B, 1)],
    ['app 41 chars', app => "${B}0"],
    ['app with 0x', app => '0x' . substr($B, 2)],
    ['app empty', app => '', port => 443],
    ['port 0', app => $B, port => 0],
    ['port 65536', app => $B, port => 65536],
    ['port not a number', app => $B, port => 'https'],
    ['port negative', app => $B, port => -1],
    ['port 6 digits', app => $B, port => '000443'],
    ['instance not hex', app => $B, instance => 'x' x 40],
    ['instance without app', instance => $B],
);

for my $case (@bad) {
    my ($name, %h) = @$case;
    my $r = $m->request('GET', '/x', %h);
    is($r->{status}, 400, "400: $name");
    like(error_of($r), qr/^BAD_TARGET: /, "400 JSON: $name");
}

my $r = $m->request('GET', '/x', app => $B,
    headers => "X-Dstack-Target-App: $C\r\n");
is($r->{status}, 400, '400: two target-app headers');
like(error_of($r), qr/^BAD_TARGET: more than one/, '400: says why');
is($r->{headers}{'content-type'}, 'application/json', '400: JSON type');

$r = $m->request('GET', '/x', app => $B, port => 443,
    headers => "X-Dstack-Target-Port: 443\r\n");
is($r->{status}, 400, '400: two target-port headers');

is(join('', $m->echo_log('b'), $m->echo_log('c')), '',
    '400s reached no backend');

# the gateway routes B's name to C: 526, and C never sees a request

$r = $m->request('POST', '/secret', app => $B, port => 444,
    body => 'do not leak');
is($r->{status}, 526, 'app mismatch: 526');
like($r->{raw}, qr{^HTTP/1\.1 526 Invalid SSL Certificate\r\n},
    'app mismatch: status line');
like(error_of($r), qr/^PEER_REJECTED: $B-444s\.mesh\.test answered with (?#
    )app_id $C, not the target $B$/, 'app mismatch: JSON names both apps');
is($m->echo_log('c'), '', 'app mismatch: C\'s backend saw nothing');
is(join("\n", $m->peer_log('c')), '',
    'app mismatch: C\'s nginx logged no request');
like($t->read_file('logs/node-a-error.log'),
    qr/\[error\].*dstack mesh: peer rejected: .*app_id $C/,
    'app mismatch: logged at node A');

# C is fine when asked for itself, B too

is(json_body($m->request('GET', '/ok', app => $C))->{backend}, 'c',
    'C still reachable as itself');
is(json_body($m->request('GET', '/ok', app => $B))->{backend}, 'b',
    'B still reachable');

# a peer certificate from another KMS root: 526

$r = $m->request('GET', '/x', app => $D);
is($r->{status}, 526, 'other root: 526');
like(error_of($r),
    qr/^PEER_REJECTED: certificate of $D-443s\.mesh\.test not trusted: /,
    'other root: says why');
is($m->echo_log('d'), '', 'other root: D\'s backend saw nothing');

# a certificate of the right root without app_id: 526

$r = $m->request('GET', '/x', app => $E);
is($r->{status}, 526, 'no app_id: 526');
like(error_of($r), qr/^PEER_REJECTED: certificate of \S+ has no valid app_id/,
    'no app_id: says why');
is($m->echo_log('e'), '', 'no app_id: E\'s backend saw nothing');

# something that is not TLS behind the name: 525

$r = $m->request('GET', '/x', app => $P);
is($r->{status}, 525, 'not TLS: 525');
like($r->{raw}, qr{^HTTP/1\.1 525 SSL Handshake Failed\r\n},
    'not TLS: status line');
like(error_of($r),
    qr/^TLS_HANDSHAKE_FAILED: TLS handshake with $P-443s\.mesh\.test failed/,
    'not TLS: JSON');

# the gateway knows no route: it closes at once

$r = $m->request('GET', '/x', app => $N);
is($r->{status}, 502, 'no route: 502');
like(error_of($r), qr/^CONNECT_FAILED: the gateway at 127\.0\.0\.1:\d+ (?#
    )closed the connection/, 'no route: JSON');

# the gateway is down

$r = parse_response(http($m->raw_request('GET', '/x', app => $B),
    port => $node_down));
is($r->{status}, 502, 'gateway down: 502');
like(error_of($r),
    qr/^CONNECT_FAILED: cannot connect to the gateway at 127\.0\.0\.1:$down$/,
    'gateway down: JSON');

# timeouts: a peer that does not answer in time, a handshake that stalls

$r = $m->request('GET', '/sleep?s=3', app => $B);
is($r->{status}, 504, 'slow peer: 504');
like(error_of($r), qr/^TIMEOUT: $B-443s\.mesh\.test did not answer in time$/,
    'slow peer: JSON');

$r = $m->request('GET', '/x', app => $S);
is($r->{status}, 504, 'stalled handshake: 504');
like(error_of($r),
    qr/^TIMEOUT: TLS handshake with $S-443s\.mesh\.test timed out$/,
    'stalled handshake: JSON');

# a POST to the slow peer is not retried

$r = $m->request('POST', '/sleep?s=2', app => $B, body => 'once');
is($r->{status}, 504, 'slow POST: 504');
is(scalar(grep { m{^POST /sleep} } split /\n/, $m->echo_log('b')), 1,
    'slow POST: sent once');

# no guest agent behind the socket

$r = $m->request('GET', '/info');
is($r->{status}, 502, 'agent down: 502');
like(error_of($r), qr/^AGENT_UNAVAILABLE: /, 'agent down: JSON');
is($r->{headers}{'content-type'}, 'application/json', 'agent down: type');

# HEAD of an error: no body

$r = $m->request('HEAD', '/x', app => $B, port => 444);
is($r->{status}, 526, 'HEAD: 526');
is($r->{body}, '', 'HEAD: no body');

$m->stop();

###############################################################################
