#!/usr/bin/perl

# ngx_dstack_mesh_module: "x-dstack-target-use-tls: false", the seed's
# unattested path through the gateway's own TLS termination, refused unless
# the location allows it; and GET /health answered on the local listener.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(http json_body parse_response);
use Test::Dstack::Mesh;

my $t = Test::Dstack->new()->has(qw(auth mesh stream sim openssl))
    ->plan(81);

my $A = 'aa' x 20;
my $B = '0b' x 20;
my $C = '0c' x 20;
my $W = '0e' x 20;      # the gateway answers with a certificate of another name
my $U = '0f' x 20;      # ... of a CA that is not among the web roots
my $X = '0d' x 20;      # ... with plain HTTP: no TLS at all

my $d = $t->testdir;
my $m = Test::Dstack::Mesh->new($t);

$m->peer('b', app => $B);
my $plain = $m->peer('plain', plain => 1);

my $term = $m->terminator();
$term->{certs}{$W} = $t->openssl_cert('gw-wrongname', $term->{ca},
    ext => "subjectAltName=DNS:*.other.test\n");
my $other = $t->openssl_ca('otherroot');
$term->{certs}{$U} = $t->openssl_cert('gw-otherca', $other,
    ext => "subjectAltName=DNS:*.mesh.test\n");

# a CVM's plain HTTP service, published through the gateway as
# <id>-<web>.mesh.test
my $web = $t->port('web');
$t->echo_backend(port => $web, name => 'web');

# the attested name of the same app and port reaches peer B
$m->route("$B-${web}s", $m->{peers}{b});
$m->route("$X-$web", $plain);
# and C's attested name reaches B, which cannot prove C's app id
$m->route("$C-443s", $m->{peers}{b});

mkdir "$d/vpc";
$m->start(a => $A);

sub headers_x_dstack {
    my ($j) = @_;
    return join ',', sort grep { /^x-dstack/ } keys %{$j->{headers} || {}};
}

sub web_log { $t->echo_log($web) }

# log lines matching, once at least $n are there (written just after the
# response, so they may trail it)
sub lines {
    my ($file, $re, $n) = @_;
    my @l;
    Test::Dstack::wait_for(sub {
        @l = grep { /$re/ } split /\n/, $t->read_file($file);
        @l >= ($n // 1);
    }, 5);
    return @l;
}

###############################################################################
# conf/node-mesh.conf as shipped: the header alone cannot downgrade a call

for my $v ('false', '0', 'yes', 'FALSE', 'True', '') {
    my $r = $m->request('GET', "/refused-$v", app => $B, port => $web,
        use_tls => $v);
    is($r->{status}, 403, "shipped: use-tls \"$v\" refused");
}

my $r = $m->request('POST', '/refused-post', app => $B, port => $web,
    use_tls => 'false', body => 'x' x 5000);
my $j = json_body($r);

is($r->{status}, 403, 'shipped: POST refused');
like($j->{error}, qr/^USE_TLS_REFUSED: .*dstack_mesh_allow_unattested/,
    'shipped: error names the directive');
is($r->{headers}{'content-type'}, 'application/json', 'shipped: JSON');
is(scalar($m->terminator_log()), 0, 'shipped: nothing reached the gateway\'s '
    . 'TLS termination');
is(web_log(), '', 'shipped: nothing reached the service');
is($m->peer_count('b', qr/refused/, 0), 0, 'shipped: nor peer B');

# true, 1 or no header: the attested path, as before

for my $v ('true', '1', undef) {
    my $name = $v // 'absent';
    $r = $m->request('GET', "/attested-$name", app => $B, use_tls => $v);
    $j = json_body($r);
    is($j->{backend}, 'b', "use-tls $name: peer B, attested");
    is($r->{headers}{'x-dstack-mesh-attested'}, '1',
        "use-tls $name: X-Dstack-Mesh-Attested 1");
}

is(join(',', grep { /x-dstack-target/ } keys %{$j->{headers}}), '',
    'attested: use-tls header not forwarded');
is($m->peer_count('b', qr/ $A "GET \/attested-true /), 1,
    'attested: B authenticated A');

$r = $m->request('GET', '/dup', app => $B, use_tls => 'true',
    headers => "X-Dstack-Target-Use-Tls: false\r\n");
is($r->{status}, 400, 'two use-tls headers: 400');
like(json_body($r)->{error}, qr/^BAD_TARGET: more than one/,
    'two use-tls headers: BAD_TARGET');

###############################################################################
# allowed in the location: the gateway terminates TLS, plain HTTP behind it

$m->write_node(edit => sub {
    s/#\s*(dstack_mesh_allow_unattested\s+on;)/$1/ or die "no directive\n";
    # short enough to see the timeout, longer than the stream's pauses
    s/proxy_read_timeout(\s+)300s/proxy_read_timeout${1}3s/ or die "no read\n";
});
$t->reload('node-a.conf');

$r = $m->request('GET', '/web/x?q=1', app => $B, port => $web,
    use_tls => 'false',
    headers => "X-Custom: kept\r\nX-Dstack-App-Id: $C\r\n"
        . "X-Dstack-Target-Extra: gone\r\n");
$j = json_body($r);

is($r->{status}, 200, 'unattested: 200');
is($j->{backend}, 'web', 'unattested: reached the service');
is($j->{uri}, '/web/x?q=1', 'unattested: path and query');
is_deeply($j->{headers}{host}, ["$B-$web.mesh.test"],
    'unattested: Host is <id>-<port>.<domain>');
is(headers_x_dstack($j), '', 'unattested: no x-dstack-* forwarded');
is_deeply($j->{headers}{'x-custom'}, ['kept'], 'unattested: others kept');
is($r->{headers}{'x-dstack-mesh-attested'}, '0',
    'unattested: X-Dstack-Mesh-Attested 0, the target\'s own claim dropped');

my @tl = lines('logs/access-terminator.log', qr/"GET \/web\/x/);
like($tl[0] // '',
    qr/^\d+ $B-$web\.mesh\.test $B-$web\.mesh\.test NONE "GET /,
    'unattested: SNI <id>-<port>.<domain>, no client certificate');

ok(lines('logs/mesh-node-a.log', qr/"GET \/web\/x\?q=1 HTTP\/1\.1" 200 \d+ /
    . qr/target=$B-$web\.mesh\.test attested=0 /),
    'unattested: access log says attested=0');
ok(lines('logs/mesh-node-a.log',
    qr/"GET \/attested-true HTTP\/1\.1" 200 \d+ \S+ attested=1 /),
    'attested: access log says attested=1');

# the caller's own Host does not go to the gateway

$r = http($m->raw_request('GET', '/host', app => $B, port => $web,
    use_tls => 'false') =~ s/Host: localhost/Host: vpc-server/r,
    port => $m->node_port);
is_deeply(json_body($r)->{headers}{host}, ["$B-$web.mesh.test"],
    'unattested: Host names the target even when the caller sent one');

# seed parity: anything but true or 1 counts as false

$r = $m->request('GET', '/yes', app => $B, port => $web, use_tls => 'yes');
is(json_body($r)->{backend}, 'web', 'use-tls "yes": the unattested path');

$r = $m->request('GET', '/still', app => $B, port => $web, use_tls => '1');
is(json_body($r)->{backend}, 'b', 'use-tls "1" where allowed: still attested');

# status, bodies and streams pass through as on the mesh

$r = $m->request('GET', '/status/418', app => $B, port => $web,
    use_tls => 'false');
is($r->{status}, 418, 'unattested: 418 passes through');
is(json_body($r)->{backend}, 'web', 'unattested: with the service\'s body');

$r = $m->request('GET', '/status/502', app => $B, port => $web,
    use_tls => 'false');
is($r->{status}, 502, 'unattested: a 502 of the service passes through');
is(json_body($r)->{backend}, 'web', 'unattested: not replaced by ours');

my $body = join '', map { chr(33 + ($_ * 7) % 90) } 1 .. 60000;
$r = $m->request('POST', '/post', app => $B, port => $web, use_tls => 'false',
    body => $body);
$j = json_body($r);
is($j->{body_length}, length $body, 'unattested: POST body');
is($j->{body}, $body, 'unattested: POST body intact');

$r = $m->request('PUT', '/chunked', app => $B, port => $web,
    use_tls => 'false', chunked => ['abc', 'defg', 'h' x 3000]);
is(json_body($r)->{body}, 'abcdefg' . 'h' x 3000, 'unattested: chunked body');

my ($sr, $parts) = $m->request_timed('GET', '/stream?chunks=3&delay=1',
    app => $B, port => $web, use_tls => 'false');
is($sr->{body}, "chunk 1\nchunk 2\nchunk 3\n", 'unattested: stream');
my @with_chunk = grep { $_->[1] =~ /chunk/ } @$parts;
ok(@with_chunk >= 2 && $parts->[-1][0] - $with_chunk[0][0] > 0.5,
    'unattested: stream arrived in pieces');

# the same timeouts: a service slower than proxy_read_timeout is a 504

$r = $m->request('GET', '/sleep?s=6', app => $B, port => $web,
    use_tls => 'false');
is($r->{status}, 504, 'unattested: slow service 504');
like(json_body($r)->{error}, qr/^TIMEOUT: $B-$web\.mesh\.test did not answer/,
    'unattested: TIMEOUT names the target host');

# its own keep-alive pool: one connection to the gateway for the target
# host, never used for the attested name of the same app and port

my $before = scalar($m->terminator_log());
$m->request('GET', "/pool-$_", app => $B, port => $web, use_tls => 'false')
    for 1 .. 3;
$r = $m->request('GET', '/pool-attested', app => $B, port => $web);
is(json_body($r)->{backend}, 'b',
    'pool: the attested call of the same app and port reaches peer B');
$m->request('GET', '/pool-4', app => $B, port => $web, use_tls => 'false');

@tl = lines('logs/access-terminator.log', qr/"GET \/pool-/, 4);
is(scalar @tl, 4, 'pool: 4 unattested requests at the gateway');
my %conns = map { (split ' ')[0] => 1 } @tl;
is(scalar keys %conns, 1, 'pool: all over one connection');
ok(!grep({ /pool-attested/ } @tl), 'pool: the attested one not among them');
is($m->peer_count('b', qr/ $A "GET \/pool-attested /), 1,
    'pool: B authenticated A for the attested one');

# the gateway's certificate: name and chain checked, nothing sent otherwise

$r = $m->request('GET', '/wrongname', app => $W, port => $web,
    use_tls => 'false');
is($r->{status}, 526, 'wrong host name: 526');
like(json_body($r)->{error}, qr/^PEER_REJECTED: .*$W-$web\.mesh\.test.*hostname mismatch/,
    'wrong host name: reason');

$r = $m->request('GET', '/otherca', app => $U, port => $web,
    use_tls => 'false');
is($r->{status}, 526, 'untrusted CA: 526');
like(json_body($r)->{error}, qr/^PEER_REJECTED: .*not trusted/,
    'untrusted CA: reason');

$r = $m->request('POST', '/otherca-post', app => $U, port => $web,
    use_tls => 'false', body => 'secret');
is($r->{status}, 526, 'untrusted CA, POST: 526');

ok(!grep({ /wrongname|otherca/ } $m->terminator_log()),
    'rejected gateways got no request');
unlike(web_log(), qr/wrongname|otherca/, 'the service got none either');

$r = $m->request('GET', '/notls', app => $X, port => $web, use_tls => 'false');
is($r->{status}, 525, 'no TLS behind the name: 525');
like(json_body($r)->{error}, qr/^TLS_HANDSHAKE_FAILED: /,
    'no TLS: TLS_HANDSHAKE_FAILED');

# the attested path is unchanged where the directive is on

$r = $m->request('GET', '/attested-again', app => $B);
is(json_body($r)->{backend}, 'b', 'allowed: attested calls still attested');
is($r->{headers}{'x-dstack-mesh-attested'}, '1', 'allowed: header 1');

$r = $m->request('GET', '/c', app => $C, use_tls => 'true');
is($r->{status}, 526, 'allowed: use-tls true still checks the app id')
    or diag($r->{raw});

###############################################################################
# GET /health on the local listener, without a target

$r = $m->request('GET', '/health');
$j = json_body($r);

is($r->{status}, 200, 'health: 200');
is($r->{headers}{'content-type'}, 'application/json', 'health: JSON');
is($j->{status}, 'ok', 'health: status ok');
ok($j->{ready}, 'health: ready');
is($j->{mesh_certificate}, 'valid', 'health: mesh certificate valid');
is($j->{gateway_domain}, 'mesh.test:443', 'health: gateway domain');
ok(exists $j->{vpn_ip} && !defined $j->{vpn_ip},
    'health: no VPN address yet');
ok(!exists $r->{headers}{'x-dstack-mesh-attested'},
    'health: no attested header');

$t->write_file('vpc/vpn_ip', "10.128.0.7\n");
$j = json_body($m->request('GET', '/health'));
is($j->{vpn_ip}, '10.128.0.7', 'health: VPN address of the node');

$t->write_file('vpc/vpn_ip', "fd00::7\n");
$j = json_body($m->request('GET', '/health'));
is($j->{vpn_ip}, 'fd00::7', 'health: IPv6 VPN address');

$t->write_file('vpc/vpn_ip', "10.0.0.1\"}, \"x\": \"\n");
$j = json_body($m->request('GET', '/health'));
ok($j && !defined $j->{vpn_ip}, 'health: a file with junk is no address');
ok(!exists $j->{x}, 'health: and its content stays out of the JSON');

$t->write_file('vpc/vpn_ip', '1' x 200);
$j = json_body($m->request('GET', '/health'));
ok($j && !defined $j->{vpn_ip}, 'health: an overlong file is no address');

$r = $m->request('POST', '/health', body => 'x');
is($r->{status}, 405, 'health: POST 405');

$r = $m->request('HEAD', '/health');
is($r->{status}, 200, 'health: HEAD 200');
is($r->{body}, '', 'health: HEAD has no body');

# with a target, /health is the peer's

$r = $m->request('GET', '/health', app => $B);
$j = json_body($r);
is($j->{backend}, 'b', 'health with a target: the peer\'s');
is($j->{uri}, '/health', 'health with a target: its path');

###############################################################################
