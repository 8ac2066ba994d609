#!/usr/bin/perl

# Coalescing of map stream frames (dstack_vpc_control_coalesce,
# docs/control-plane.md "Coalescing"): a burst of changes reaches each
# stream as at most two frames holding every change in order (the first
# change at once, the rest at the window's end); a change after a quiet
# window goes out alone and at once; a node's entries that a later "rm" of
# the batch overrides are left out; a stream is told nothing about its own
# node and gets a frame of its own when the batch holds one; with the
# window 0 every change is a frame.  The window is 4s here, so that
# "at once" and "held" differ by seconds however loaded the machine; the
# bursts are published in one Redis
# script, so they reach nginx together whatever the machine's load.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use Test::Dstack qw(wait_for);
use Test::Dstack::Api;
use Test::Dstack::Control;

my $t = Test::Dstack->new()->has(qw(auth api sim redis))->plan(16);

my $api = Test::Dstack::Api->new($t);
my $r = $t->run_redis();

# one worker: every stream sees the same batches
$t->write_file_expand('nginx.conf', $api->conf(redis => $r, allow => 'any',
    workers => 1, http => <<'EOF'));
    dstack_vpc_control_keepalive 60s;
    dstack_vpc_control_inactivity_timeout 600s;
    dstack_vpc_control_coalesce 4s;
EOF

$t->run();

my $cp = Test::Dstack::Control->new($t, $api);

my (%key, %id);
for my $n (qw(a b c)) {
    my ($k, $res) = $cp->join_node('a', hostname => "co-$n");
    die "register $n: $res->{status} $res->{body}\n"
        unless $res->{status} == 200;
    $key{$n} = $k;
    $id{$n} = $res->{json}{NodeID};
}

my $sa = $cp->stream('a', $key{a});
my $sb = $cp->stream('a', $key{b});
ok($sa->first && $sb->first, 'two map streams open');

# publish "ep"/"on"/"rm" messages as the control plane's scripts do: one
# sequence number each, all in one script
my $PUB = <<'EOF';
local K = ARGV[1]
for i = 2, #ARGV do
  local s = redis.call('INCR', K .. 'evseq')
  redis.call('PUBLISH', K .. 'events', s .. ' ' .. ARGV[i])
end
return #ARGV - 1
EOF

sub publish {
    my $out = $t->redis_cli($r, 'EVAL', $PUB, 0, 'test:vpc:vpn:', @_);
    die "publish: $out\n" unless $out eq scalar(@_);
}

# frames (not KeepAlive) until $done says the last one came, or $timeout
sub frames_until {
    my ($s, $done, $timeout) = @_;
    my @f;
    my $end = time + $timeout;
    while ((my $left = $end - time) > 0) {
        my $f = $s->next($left) // last;
        next if $f->{KeepAlive};
        push @f, $f;
        last if $done->($f);
    }
    return @f;
}

# what came before (the streams' own "on" patches, KeepAlive), until a
# whole window passed without a frame: the next change finds it quiet
sub quiet {
    my ($first, @more) = @_;
    1 while $first->next(4.5);
    for my $s (@more) { 1 while $s->next(0.3) }
}

sub patches { map { @{$_->{PeersChangedPatch} || []} } @_ }

sub port_of { ($_[0]{Endpoints}[0] // '') =~ /:(\d+)"?$/ ? $1 : undef }

###############################################################################
# a burst of 100 changes: at most two frames, every change in order

quiet($sa, $sb);

my @burst = map {
    my $n = $_ % 2 ? 'b' : 'c';
    "ep $id{$n} 10.20.0.1:" . (20000 + $_)
} 1 .. 100;

publish(@burst);

my $last = sub { grep { (port_of($_) // 0) == 20100 } patches($_[0]) };
my @fa = frames_until($sa, $last, 15);
my @fb = frames_until($sb, $last, 15);

ok(@fa >= 1 && @fa <= 2, 'a burst of 100 changes: at most 2 frames')
    or diag(scalar(@fa) . ' frames');
is_deeply([map { port_of($_) } patches(@fa)], [20001 .. 20100],
    'every change of the burst, in order');
is(scalar(patches($fa[0])), 1, 'the first change went alone, at once')
    or diag(explain([map { scalar(patches($_)) } @fa]));
is_deeply([map { $_->{NodeID} } patches(@fa)],
    [map { $_ % 2 ? $id{b} : $id{c} } 1 .. 100], 'each change its node');

# b's stream gets the changes about c, none about b itself
is_deeply([map { port_of($_) } patches(@fb)],
    [map { 20000 + $_ } grep { $_ % 2 == 0 } 1 .. 100],
    'a stream is told nothing about its own node');
ok(@fb >= 1 && @fb <= 2, 'and at most 2 frames too');

###############################################################################
# a change after a quiet window: alone, at once; a second one right after
# it waits for the window

quiet($sa);
my $t0 = time;
publish("ep $id{b} 10.21.0.1:1");
my @one = frames_until($sa, sub { 1 }, 10);
my $took = time - $t0;
is_deeply([map { port_of($_) } patches(@one)], [1],
    'a single change: one frame with it');
ok($took < 2, 'a single change is not held for the 4s window')
    or diag("took ${took}s");

###############################################################################
# superseded entries: the batch's later "rm" of b drops b's earlier patch

quiet($sa, $sb);
publish("on $id{c} 1 1700000000", "ep $id{b} 10.22.0.1:2",
    "on $id{c} 0 1700000001", "rm $id{b}");

my @rm = frames_until($sa, sub { $_[0]{PeersRemoved} }, 15);
is(scalar(@rm), 2, 'leading change, then the held three in one frame');
is_deeply($rm[-1]{PeersRemoved}, [$id{b}], 'PeersRemoved: b');
is_deeply([map { [$_->{NodeID}, $_->{Online} ? 1 : 0] }
    patches($rm[-1])], [[$id{c}, 0]],
    "b's patch left out, c's patch kept");
ok(!grep({ ($_->{Endpoints} // [''])->[0] =~ /10\.22/ } patches(@rm)),
    'no endpoints of the removed node');

# b's own stream ends: the batch removed its node
ok($sb->wait_end(10), "the removed node's stream ends");

###############################################################################
# window 0: every change is a frame

$sa->close();
$sb->close();

my $conf = $t->read_file('nginx.conf');
$conf =~ s/dstack_vpc_control_coalesce 4s;/dstack_vpc_control_coalesce 0;/;
$t->write_file('nginx.conf', $conf);
$t->reload();

my $sc;
ok(wait_for(sub { $sc = $cp->stream('a', $key{c}); $sc && $sc->first }, 30),
    'a stream after the reload');

publish(map { "ep $id{a} 10.23.0.1:" . (30000 + $_) } 1 .. 5);
my @zero = frames_until($sc,
    sub { grep { (port_of($_) // 0) == 30005 } patches($_[0]) }, 15);
is(scalar(@zero), 5, 'dstack_vpc_control_coalesce 0: 5 changes, 5 frames');

$sc->close();
