#!/usr/bin/perl

# The control plane's addresses and names: concurrent registrations get
# distinct addresses (one instance with two workers, and a second
# instance on the same Redis), a tiny prefix is exhausted without ever
# handing out its network or broadcast address, freed addresses are
# reused, a node keeps its address when it registers again (same node key,
# or same instance with a new key); names are sanitized, a different
# instance taking a used name gets a suffix from its instance id, and the
# same instance replaces its old record.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use JSON::PP;
use POSIX qw(_exit);
use Test::Dstack qw(wait_for);
use Test::Dstack::Api;
use Test::Dstack::Control;

my $t = Test::Dstack->new()->has(qw(auth api sim redis))->plan(32);

my $api = Test::Dstack::Api->new($t);
my $r = $t->run_redis();

# 10.99.0.0/29: .1 to .6 are the only addresses to give
$t->write_file_expand('nginx.conf', $api->conf(redis => $r, allow => 'any',
    http => "    dstack_vpc_control_prefix 10.99.0.0/29;\n"));

# replicas on another prefix of keys, the default address prefix
$t->write_file_expand('nginx2.conf', $api->conf(redis => $r, allow => 'any',
    workers => 2, prefix => 'test2:vpc:', port => 9443, plain_port => 9080,
    pid => 'nginx2.pid'));
$t->write_file_expand('nginx3.conf', $api->conf(redis => $r, allow => 'any',
    prefix => 'test2:vpc:', port => 7443, plain_port => 7080,
    pid => 'nginx3.pid', unix => 1));

$t->run('nginx.conf');
$t->run('nginx2.conf');
$t->run('nginx3.conf');

my $cp = Test::Dstack::Control->new($t, $api);
my $cp2 = Test::Dstack::Control->new($t, $api, port => 9443);
my $cp3 = Test::Dstack::Control->new($t, $api, port => 7443);

sub addr { my ($a) = ($_[0]{json}{Addresses}[0] // '') =~ m{^(.*)/32$}; $a }

# registrations in parallel processes: [[status, json], ...]
sub parallel_register {
    my (@jobs) = @_;
    my $d = $t->testdir();
    my @pids;

    for my $i (0 .. $#jobs) {
        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            my ($c, $as, $key, %o) = @{$jobs[$i]};
            my $res = $c->register($as, $key, %o);
            open my $fh, '>', "$d/par-$i" or _exit(1);
            print $fh "$res->{status}\n$res->{body}";
            close $fh;
            _exit(0);
        }
        push @pids, $pid;
    }

    waitpid($_, 0) for @pids;

    return map {
        my ($status, $body) = split /\n/, $t->read_file("par-$_"), 2;
        { status => $status // 0, json => eval { decode_json($body) } }
    } 0 .. $#jobs;
}

###############################################################################
# a /29, six at once

my (@keys, @jobs);

for my $i (1 .. 6) {
    my $key = $cp->node_key();
    my $inst = Test::Dstack::Control::instance_id();
    push @keys, [$key, $inst];
    push @jobs, [$cp, 'a', $key, hostname => "p$i", instance => $inst,
        auth => $cp->auth_key('a', instance => $inst)];
}

my @res = parallel_register(@jobs);
is(scalar(grep { $_->{status} == 200 } @res), 6, 'six at once: all 200')
    or diag(explain \@res);

my @ips = map { addr($_) } @res;
is(scalar(keys %{{ map { $_ => 1 } @ips }}), 6, 'six distinct addresses');
is(join(' ', sort @ips), join(' ', map { "10.99.0.$_" } 1 .. 6),
    'exactly .1 to .6: never the network or broadcast address');

my $inst7 = Test::Dstack::Control::instance_id();
my $key7 = $cp->node_key();
my $auth7 = $cp->auth_key('a', instance => $inst7);
my $res = $cp->register('a', $key7, auth => $auth7, instance => $inst7,
    hostname => 'p7');
is($res->{status}, 503, 'the seventh: 503');
is($res->{json}{Error}, 'no free address in 10.99.0.0/29',
    'no free address');

# a refused registration does not use the key
my ($gone) = grep { $_->{json}{Name} eq 'p3.dstack.internal' } @res;
my $freed = addr($gone);
$res = $cp->logout('a', $keys[2][0]);
is($res->{status}, 200, 'one leaves');

$res = $cp->register('a', $key7, auth => $auth7, instance => $inst7,
    hostname => 'p7');
is($res->{status}, 200, 'now the seventh fits, same key');
is(addr($res), $freed, 'in the freed address');

$res = $cp->register('a', $keys[0][0]);
is($res->{status}, 200, 'the same node key again');
is(addr($res), addr($res[0]), 'keeps its address');

# the same instance with a new node key (its state was lost)
my $new0 = $cp->node_key();
$res = $cp->register('a', $new0, instance => $keys[0][1], hostname => 'p1',
    auth => $cp->auth_key('a', instance => $keys[0][1]));
is($res->{status}, 200, 'same instance, new node key');
is(addr($res), addr($res[0]), 'keeps its address');
is($res->{json}{NodeID}, $res[0]{json}{NodeID}, 'and its node id');
is($res->{json}{Name}, 'p1.dstack.internal', 'and its name');
is($cp->poll('a', $keys[0][0])->{status}, 401, 'the old node key is gone');

$res = $cp->poll('a', $new0);
is(scalar(@{$res->{json}{Peers}}), 5, 'five peers, no stale duplicate');

###############################################################################
# names (on the other prefix of keys)

my ($ia, $ib, $ic) = map { Test::Dstack::Control::instance_id() } 1 .. 3;

my ($ka, $ra) = $cp2->join_node('a', instance => $ia, hostname => 'web');
is($ra->{json}{Name}, 'web.dstack.internal', 'first "web"');

my ($kb, $rb) = $cp2->join_node('c', instance => $ib, hostname => 'Web');
is($rb->{json}{Name}, 'web-' . substr($ib, 0, 6) . '.dstack.internal',
    'another instance: suffix from its instance id');

my ($kb2, $rb2) = $cp2->join_node('c', instance => $ib, hostname => 'web');
is($rb2->{json}{Name}, $rb->{json}{Name}, 'same instance again: same name');
is($rb2->{json}{NodeID}, $rb->{json}{NodeID}, 'replaces its record');

my ($ka2, $ra2) = $cp2->join_node('a', instance => $ia,
    hostname => 'renamed');
is($ra2->{json}{Name}, 'renamed.dstack.internal', 'an instance renames');

my ($kc, $rc) = $cp2->join_node('a', instance => $ic, hostname => 'web');
is($rc->{json}{Name}, 'web.dstack.internal', 'the freed name is taken');

my ($kd, $rd) = $cp2->join_node('a', hostname => "\x{dc}ber Server!!");
is($rd->{json}{Name}, 'ber-server.dstack.internal', 'sanitized name');

my ($ke, $re) = $cp2->join_node('a', hostname => '---');
is($re->{json}{Name}, 'node.dstack.internal',
    'nothing left: the name given to /api/register');

my ($kf, $rf) = $cp2->join_node('a', hostname => 'x' x 100);
is($rf->{json}{Name}, ('x' x 63) . '.dstack.internal', 'at most 63');

$res = $cp2->poll('a', $kc);
my @names = sort map { $_->{Name} } $res->{json}{Node},
    @{$res->{json}{Peers}};
is(scalar(@names), 6, 'six nodes in the map');
is(scalar(grep { !/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.dstack\.internal\.$/ }
    @names), 0, 'every name is a valid label');
is(scalar(keys %{{ map { $_ => 1 } @names }}), 6, 'and unique');

###############################################################################
# many at once through two instances (three workers) of one VPC

@jobs = ();
for my $i (1 .. 40) {
    my $inst = Test::Dstack::Control::instance_id();
    my $c = $i % 2 ? $cp2 : $cp3;
    push @jobs, [$c, 'a', $cp->node_key(), hostname => "storm$i",
        instance => $inst, auth => $c->auth_key('a', instance => $inst)];
}

@res = parallel_register(@jobs);
is(scalar(grep { $_->{status} == 200 } @res), 40, 'forty at once: all 200');
@ips = map { addr($_) } @res;
is(scalar(keys %{{ map { $_ => 1 } @ips }}), 40, 'forty distinct addresses');
is(scalar(grep { !/^100\.128\.0\.\d+$/ } @ips), 0, 'from the bottom up');
my %ids = map { $_->{json}{NodeID} => 1 } @res;
is(scalar(keys %ids), 40, 'forty node ids');
