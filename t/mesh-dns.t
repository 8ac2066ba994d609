#!/usr/bin/perl

# ngx_dstack_mesh_module: without a fixed gateway address, the target's
# host name <id>-<port>s.<domain> is resolved with nginx's resolver (the
# gateway serves a wildcard domain), cached, and a name that does not
# resolve is a JSON 502.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(json_body);
use Test::Dstack::Mesh;

my $t = Test::Dstack->new()->has(qw(auth mesh stream sim))->plan(11);

my $A = 'aa' x 20;
my $B = '0b' x 20;
my $C = '0c' x 20;
my $N = '99' x 20;

my $m = Test::Dstack::Mesh->new($t);
$m->peer('b', app => $B);
$m->peer('c', app => $C);

my $dns = $m->dns_server(nx => qr/^9999/);
my $gw = $t->port('gateway');

$m->start(a => $A, node => {
    gateway => "mesh.test:$gw",
    resolver => "127.0.0.1:$dns",
});

sub queries {
    my ($re) = @_;
    return scalar grep { /$re/ } split /\n/, $t->read_file('dns.log');
}

my $r = $m->request('GET', '/one', app => $B);
is($r->{status}, 200, 'resolved: 200');
is(json_body($r)->{backend}, 'b', 'resolved: reached B');
is(queries(qr/^$B-443s\.mesh\.test 1$/), 1, 'asked for B\'s host, type A');

for my $i (1 .. 5) {
    $m->request('GET', "/again/$i", app => $B);
}

is($m->peer_count('b', qr{/again/}, 5), 5, 'five more to B');
is(queries(qr/^$B-/), 1, 'the answer was cached');

my %conn = map { (split ' ')[0] => 1 } $m->peer_log('b');
is(scalar keys %conn, 1, 'one pooled connection');

$r = $m->request('GET', '/two', app => $C);
is(json_body($r)->{backend}, 'c', 'C resolved and reached');
is(queries(qr/^$C-443s\.mesh\.test 1$/), 1, 'asked for C\'s host');

$r = $m->request('GET', '/nx', app => $N);
is($r->{status}, 502, 'unresolvable: 502');
like(json_body($r)->{error} // '',
    qr/^RESOLVE_FAILED: $N-443s\.mesh\.test could not be resolved/,
    'unresolvable: JSON');
like($t->read_file('logs/node-a-error.log'),
    qr/\[error\].*"$N-443s\.mesh\.test" could not be resolved/,
    'unresolvable: logged');

$m->stop();

###############################################################################
