#!/usr/bin/perl

# Each worker's copy of the map (dstack_vpc_control_map_cache): a full map
# rendered from it is the map rendered from Redis, byte for byte, after a
# change of every kind (up, rm, on, ep), in both workers, and after the
# copy is dropped and read again (a gap in the change numbers, a Redis
# restart).  The reference is a second nginx on the same Redis with the
# copy off.  Normalized: ControlTime, and an online node's LastSeen (an
# online node's poll and keepalive refresh it in Redis without a change
# message; the copy has it from the message that brought it online, as a
# stream does).

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use Test::Dstack qw(wait_for);
use Test::Dstack::Api;
use Test::Dstack::Control;

my $t = Test::Dstack->new()->has(qw(auth api sim redis))->plan(18);

my $api = Test::Dstack::Api->new($t);
my $r = $t->run_redis(aof => 1);

my $timers = <<'EOF';
    dstack_vpc_control_keepalive 1s;
    dstack_vpc_control_inactivity_timeout 3s;
    dstack_vpc_control_sweep_interval 500ms;
EOF

$t->write_file_expand('nginx.conf', $api->conf(redis => $r, allow => 'any',
    workers => 2, http => $timers));
$t->write_file_expand('nginx2.conf', $api->conf(redis => $r, allow => 'any',
    port => 9443, plain_port => 9080, pid => 'nginx2.pid',
    http => $timers . "    dstack_vpc_control_map_cache off;\n"));

$t->run('nginx.conf');
$t->run('nginx2.conf');

my $cp = Test::Dstack::Control->new($t, $api);
my $ref = Test::Dstack::Control->new($t, $api, port => 9443);

sub norm {
    my ($b) = @_;
    $b =~ s/"ControlTime":"[^"]*"/"ControlTime":""/g;
    $b =~ s/("Online":true,"LastSeen":")[^"]*"/$1"/g;
    return $b;
}

# the maps of node $key from both workers (several connections: reuseport
# spreads them) equal the reference's, read before and after them (again
# when a sweep changed the map meanwhile)
sub same_map {
    my ($key, $what) = @_;
    my ($want, $got, $res, $bad, $moved);

    # the copies learn a change from the notification, a moment later
    sleep(0.3);

    for my $try (1 .. 5) {
        $res = $ref->poll('a', $key);
        $want = norm($res->{body});
        ($bad, $got) = (0, undef);

        for (1 .. 8) {
            my $x = $cp->poll('a', $key);
            if ($x->{status} != 200 || norm($x->{body}) ne $want) {
                $bad++;
                $got = $x->{body};
            }
        }

        $moved = norm($ref->poll('a', $key)->{body}) ne $want;
        last unless $moved;
    }

    ok($res->{status} == 200 && !$bad && !$moved,
        "$what: maps equal the reference")
        or diag("reference:\n$res->{body}\ncopy:\n" . ($got // ''));
}

# more than 9 nodes: the copy keeps Redis' numeric order (10 after 9)
my @k;
for my $i (0 .. 11) {
    my ($k, $res) = $cp->join_node('a', hostname => "mc$i");
    push @k, $k;
}
is(scalar(@k), 12, 'twelve nodes');

$cp->poll('a', $k[$_], endpoints => ["10.9.0.$_:41641"]) for 1 .. 11;
same_map($k[0], 'up, on, ep');

my $s = $cp->stream('a', $k[0]);
ok($s && $s->first && @{$s->first->{Peers}} == 11, 'a stream: 11 peers');

$cp->poll('a', $k[1], endpoints => ['10.9.1.1:41641', '10.9.1.2:41641']);
same_map($k[0], 'ep');

$cp->poll('a', $k[4], endpoints => []);
same_map($k[0], 'ep, none');

is($cp->logout('a', $k[2])->{status}, 200, 'logout');
same_map($k[0], 'rm');

# a stream's first frame from the copy, too
{
    my ($want, $got);
    for (1 .. 5) {
        my $x = $ref->stream('a', $k[0], raw => 1);
        my $y = $cp->stream('a', $k[0], raw => 1);
        $want = norm(($x && $x->first) // 'none');
        $got = norm(($y && $y->first) // 'none');
        $_ && $_->close() for $x, $y;
        last if $want eq $got;
    }
    ok($want ne 'none' && $got eq $want,
        "a stream's first frame equals the reference's")
        or diag("reference:\n$want\ncopy:\n$got");
}

my ($k12) = $cp->join_node('a', hostname => 'mc12');
same_map($k[0], 'up, a new node');
same_map($k12, 'the new node');

# the nodes that stop polling go offline ("on <id> 0")
ok(wait_for(sub {
    ($cp->poll('a', $k[0])->{body} // '') =~ /"Online":false/
}, 15), 'nodes offline');
same_map($k[0], 'on, offline');

###############################################################################
# the copy dropped and read again

my $loads = () = $t->grep_error_log(qr/map of \d+ nodes loaded/);
ok($loads >= 2, "each worker loaded its copy ($loads)");

# a change number out of sequence: the copy is not trusted any more
$t->redis_cli($r, 'PUBLISH', 'test:vpc:vpn:events', '999999 rm 1');
ok(wait_for(sub {
    $cp->poll('a', $k[0]);
    my $n = () = $t->grep_error_log(qr/map of \d+ nodes loaded/);
    $n > $loads;
}, 10), 'a gap: the copy is read again');
$cp->poll('a', $k[3], endpoints => ['10.9.3.3:41641']);
same_map($k[0], 'after a gap');

$loads = () = $t->grep_error_log(qr/map of \d+ nodes loaded/);
$t->restart_redis($r);
ok(wait_for(sub {
    $cp->poll('a', $k[0]);
    my $n = () = $t->grep_error_log(qr/map of \d+ nodes loaded/);
    $n >= $loads + 2;
}, 15), 'Redis restarted: both workers read their copies again');
$cp->poll('a', $k[5], endpoints => ['10.9.5.5:41641']);
same_map($k[0], 'after a Redis restart');

# both workers answered
my %pids;
for (split /\n/, $t->read_file('logs/api-8443.log')) {
    $pids{$1} = 1 if /^(\d+) 200 \S+ "POST \/machine\/map/;
}
ok(keys %pids >= 2, 'both workers answered maps');

$s->close() if $s;
