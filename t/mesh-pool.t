#!/usr/bin/perl

# ngx_dstack_mesh_module: the keep-alive pool and TLS sessions are per
# target.  Handshakes stay near the pool size however many requests go
# through; interleaved targets never share a connection; a session made
# for one target is never offered to another, even when the gateway
# misroutes to the very peer that issued it and would resume it.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(http json_body parse_response);
use Test::Dstack::Mesh;
use Time::HiRes qw(sleep);

my $t = Test::Dstack->new()->has(qw(auth mesh stream sim))->plan(23);

my $A = 'aa' x 20;
my $B = '0b' x 20;
my $BI = 'b1' x 20;
my $C = '0c' x 20;

my $m = Test::Dstack::Mesh->new($t);
my $b = $m->peer('b', app => $B, instance => $BI);             # TLS 1.3
my $c = $m->peer('c', app => $C, protocols => 'TLSv1.2');
$m->route("$C-444s", $b);
$m->route("$B-445s", $c);

my $d = $t->testdir;
my $gw = $t->port('gateway');
my $fresh = $t->port('node-fresh');

$m->start(a => $A, node => {
    extra => <<"EOF",
    # no pool: every request a new connection, resumed per target
    upstream mesh_fresh {
        dstack_mesh_gateway mesh.test:443 address=127.0.0.1:$gw;
        dstack_mesh_certificate $d/node-a.crt;
        dstack_mesh_certificate_key $d/node-a.key;
        dstack_mesh_trusted_certificate $d/kms/root.crt;
        dstack_mesh_keepalive 0;
    }

    server {
        listen 127.0.0.1:$fresh;

        location / {
            dstack_mesh_target;
            proxy_pass https://mesh_fresh;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
EOF
});

sub connections {
    my ($peer) = @_;
    my %conn = map { (split ' ')[0] => 1 } $m->peer_log($peer);
    return scalar keys %conn;
}

# 200 sequential requests to B, each a new client connection to A

my $ok = 0;
for my $i (1 .. 200) {
    my $r = $m->request('GET', "/seq/$i", app => $B);
    $ok++ if $r->{status} == 200 && json_body($r)->{uri} eq "/seq/$i";
}

is($ok, 200, '200 sequential requests answered');
is($m->peer_count('b', qr{/seq/}, 200), 200, 'B logged 200 requests');
ok(connections('b') <= 2, 'B saw ' . connections('b') . ' connection(s)');

# interleaved B and C: every answer from the right peer, on its own pool

my $crossed = 0;
for my $i (1 .. 40) {
    my ($app, $name) = $i % 2 ? ($B, 'b') : ($C, 'c');
    my $r = $m->request('GET', "/mix/$name/$i", app => $app);
    my $j = json_body($r) || {};
    $crossed++ unless ($j->{backend} // '') eq $name
        && $j->{uri} eq "/mix/$name/$i";
}

is($crossed, 0, 'interleaved: no answer from the wrong peer');
is($m->peer_count('b', qr{/mix/b/}, 20), 20, 'interleaved: B got 20');
is($m->peer_count('c', qr{/mix/c/}, 20), 20, 'interleaved: C got 20');
is(scalar(grep { m{/mix/c/} } $m->peer_log('b')), 0,
    'interleaved: B got none of C\'s requests');
is(scalar(grep { m{/mix/b/} } $m->peer_log('c')), 0,
    'interleaved: C got none of B\'s requests');
ok(connections('c') <= 2, 'interleaved: C saw ' . connections('c')
    . ' connection(s)');

# the instance is part of the target: its own connection

my $before = connections('b');
my $r = $m->request('GET', '/by-instance', app => $B, instance => $BI);
is(json_body($r)->{backend}, 'b', 'instance: answered by B');
$m->peer_count('b', qr{/by-instance });
is(connections('b'), $before + 1, 'instance: a connection of its own');

my ($last) = reverse $m->peer_log('b');
my ($inst_conn) = split ' ', $last;
$r = $m->request('GET', '/by-instance-2', app => $B, instance => $BI);
$m->peer_count('b', qr{/by-instance-2 });
($last) = reverse $m->peer_log('b');
is((split ' ', $last)[0], $inst_conn, 'instance: its connection reused');

# without a pool, each connection resumes this target's session

for my $i (1 .. 4) {
    http($m->raw_request('GET', "/fresh/$i", app => $B), port => $fresh);
}

$m->peer_count('b', qr{/fresh/}, 4);
my @fresh = grep { m{/fresh/} } $m->peer_log('b');
is(scalar @fresh, 4, 'no pool: 4 requests');
is(scalar(keys %{{ map { (split ' ')[0] => 1 } @fresh }}), 4,
    'no pool: 4 connections');
is(scalar(grep { (split ' ')[2] eq 'r' } @fresh[1 .. 3]), 3,
    'no pool: later connections resumed the session (TLS 1.3)');

# B's session is never offered to another target: the gateway sends
# C:444 to B, which would resume its own session and skip the
# certificate, but A starts a full handshake, sees B's app and refuses

$r = parse_response(http($m->raw_request('GET', '/cross', app => $C,
    port => 444), port => $fresh));
is($r->{status}, 526, 'cross-target: no resumption, 526');
is(scalar(grep { m{/cross} } $m->peer_log('b')), 0,
    'cross-target: B got no request');

for my $i (1 .. 3) {
    http($m->raw_request('GET', "/fresh12/$i", app => $C), port => $fresh);
}

$m->peer_count('c', qr{/fresh12/}, 3);
my @fresh12 = grep { m{/fresh12/} } $m->peer_log('c');
is(scalar(grep { (split ' ')[2] eq 'r' } @fresh12[1 .. 2]), 2,
    'no pool: resumed with TLS 1.2 too');

# and C's TLS 1.2 session, when the gateway sends B:445 to C

$r = parse_response(http($m->raw_request('GET', '/cross12', app => $B,
    port => 445), port => $fresh));
is($r->{status}, 526, 'cross-target, TLS 1.2: no resumption, 526');
is(scalar(grep { m{/cross12} } $m->peer_log('c')), 0,
    'cross-target, TLS 1.2: C got no request');

# the same through the pooled upstream, which holds a connection to B

$r = $m->request('GET', '/cross-pooled', app => $C, port => 444);
is($r->{status}, 526, 'cross-target pooled: 526');

# a pooled connection the peer closed meanwhile is replaced quietly

my $conf = $t->read_file('peer-b.conf');
$conf =~ s{(ssl_verify_depth 3;)}{$1\n        keepalive_timeout 1s;};
$t->write_file('peer-b.conf', $conf);
$t->reload('peer-b.conf');

$m->request('GET', '/before-idle', app => $B);
sleep 1.5;
$r = $m->request('GET', '/after-idle', app => $B);
is($r->{status}, 200, 'peer closed the idle connection: next request 200');
is(json_body($r)->{uri}, '/after-idle', 'peer closed: right answer');

$m->stop();

###############################################################################
