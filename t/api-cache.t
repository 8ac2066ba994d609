#!/usr/bin/perl

# ngx_dstack_vpc_api_module: discover and nodes from the worker's copy
# (dstack_vpc_api_cache), invalidated through Redis pub/sub.  Two API
# nginx with two workers each on one Redis: hits cost no Redis command,
# same bytes and headers as without the cache, a change through one
# replica is seen by every worker of the other, Redis stopped and
# restarted, a change missed while the subscription was down; one more
# nginx for the caps (entries, size) and a flood of types, and one with
# the cache off.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(wait_for);
use Test::Dstack::Api;

my $t = Test::Dstack->new()->has(qw(auth api sim redis curl))->plan(40);

my $api = Test::Dstack::Api->new($t);
my $r = $api->run_redis_conf();

# valid=1h: within this file only pub/sub invalidates
$t->write_file_expand('nginx.conf', $api->conf(redis => $r, workers => 2,
    http => 'dstack_vpc_api_cache entries=64 valid=1h;'));
$t->write_file_expand('nginx2.conf', $api->conf(redis => $r, workers => 2,
    unix => 1, port => 9443, plain_port => 9080, pid => 'nginx2.pid',
    http => 'dstack_vpc_api_cache valid=1h;'));
$t->write_file_expand('nginx3.conf', $api->conf(redis => $r,
    port => 7443, plain_port => 7080, pid => 'nginx3.pid',
    http => 'dstack_vpc_api_cache entries=8 size=16k valid=1h;'));
$t->write_file_expand('nginx4.conf', $api->conf(redis => $r,
    port => 6443, plain_port => 6080, pid => 'nginx4.pid',
    http => 'dstack_vpc_api_cache off;'));

$t->run('nginx.conf');
$t->run('nginx2.conf');
$t->run('nginx3.conf');
$t->run('nginx4.conf');

my $p1 = $t->port(8443);
my $p2 = $t->port(9443);
my $p3 = $t->port(7443);
my $p4 = $t->port(6443);

# Redis's MONITOR, to count the GETs of rendered views that workers send
# (not those of scripts, nor the control plane's sweep)
my ($mon_pid, $mon_log) = (0, $t->testdir . '/monitor.log');

sub monitor {
    if ($mon_pid) {
        kill 'TERM', $mon_pid;
        waitpid $mon_pid, 0;
    }
    $mon_pid = fork() // die "fork: $!\n";
    if ($mon_pid == 0) {
        open STDOUT, '>>', $mon_log or die "$mon_log: $!\n";
        open STDERR, ">", "/dev/null";
        exec 'redis-cli', '-p', $r->{port}, 'monitor' or exit 1;
    }
    wait_for(sub { -s $mon_log }, 10);
}

END { kill 'TERM', $mon_pid if $mon_pid }

# a mark in the log; reads(): the view GETs since the last mark
sub mark { $t->redis_cli($r, 'ECHO', 'mark') }

sub reads {
    wait_for(sub { 0 }, 0.3);
    my ($since) = $t->read_file('monitor.log') =~ /.*"echo" "mark"\n(.*)/si;
    return scalar(() = ($since // '') =~
        /^\S+ \[\d+ (?!lua)[^\]]*\] "get" "test:vpc:view:/mig);
}

sub update {
    my ($q, $port) = @_;
    return $api->post("/api/nodes/update?$q", '', as => 'a',
        port => $port)->{json}{status} // 'failed';
}

sub hosts {
    my ($port, $type) = @_;
    my $res = $api->get("/api/discover/$type", as => 'a', port => $port);
    return $res->{status} unless $res->{status} == 200;
    return join ',', map { $_->{hostname} } @{$res->{json}{nodes}};
}

# every one of n requests to each port answers $want
sub everywhere {
    my ($type, $want, @ports) = @_;
    for my $port (@ports) {
        for (1 .. 12) {
            return 0 unless hosts($port, $type) eq $want;
        }
    }
    return 1;
}

sub subscribers {
    my ($n) = $t->redis_cli($r, 'PUBSUB', 'NUMSUB', 'test:vpc:events')
        =~ /\n(\d+)/;
    return $n // 0;
}

ok(wait_for(sub { subscribers() == 5 }, 10),
    'every worker of the cached instances subscribed');

monitor();

###############################################################################
# hits: no Redis command, every worker of both instances

is(update('uuid=n1&node_type=db&tailscale_ip=100.64.0.1&hostname=db-1', $p1),
    'created', 'a node');

ok(everywhere('db', 'db-1', $p1, $p2), 'discover through both');
$api->get('/api/nodes', as => 'a', port => $_) for ($p1, $p2) x 6;

# reuseport spreads connections at random: until each worker has served
sub workers {
    my %pids;
    for my $port (8443, 9443) {
        for my $line (split /\n/, $t->read_file("logs/api-$port.log")) {
            $pids{$1}++ if $line =~ /^(\d+) 200 .*discover/;
        }
    }
    return scalar keys %pids;
}
ok(wait_for(sub { workers() == 4 || !everywhere('db', 'db-1', $p1, $p2) },
    30) && workers() == 4, 'all four workers served');

mark();
ok(everywhere('db', 'db-1', $p1, $p2), 'again');
my $nodes = 0;
for (1 .. 12) {
    for my $port ($p1, $p2) {
        $nodes++ if $api->get('/api/nodes', as => 'a', port => $port)
            ->{json}{count} == 1;
    }
}
is($nodes, 24, 'nodes');
# at most one fill per worker and view that the first round missed
cmp_ok(reads(), '<=', 8, '48 answers, no Redis read for most');

mark();
$api->get('/api/discover/db', as => 'a', port => $p4) for 1 .. 5;
is(reads(), 5, 'cache off: a read per request');

###############################################################################
# the same bytes and headers as from Redis

sub same {
    my ($method, $uri) = @_;
    my $want = $api->request($method, $uri, as => 'a', port => $p4);
    my @got = map {
        $api->request($method, $uri, as => 'a', port => $_)
    } ($p1, $p2) x 4;
    my $j = JSON::PP->new->canonical;
    delete $_->{headers}{date} for $want, @got;
    return scalar grep {
        $_->{status} == $want->{status} && $_->{body} eq $want->{body}
            && $j->encode($_->{headers}) eq $j->encode($want->{headers})
    } @got;
}

is(same('GET', '/api/discover/db'), 8, 'discover: same answer');
is(same('HEAD', '/api/discover/db'), 8, 'discover HEAD: same answer');
is(same('GET', '/api/nodes'), 8, 'nodes: same answer');
is(same('GET', '/api/discover/nothing'), 8, '404: same answer');
is(same('GET', '/api/discover/nothing'), 8, '404 again: same answer');
like($api->get('/api/discover/nothing', as => 'a', port => $p1)->{body},
    qr/^\{"error":"No nothing nodes found"\}\n\z/, '404 body');

###############################################################################
# a change through one instance, seen by every worker of the other

is(update('uuid=n1&hostname=db-2', $p2), 'updated', 'change through one');
ok(wait_for(sub { everywhere('db', 'db-2', $p1, $p2) }, 10),
    'seen everywhere');

is(update('uuid=n2&node_type=db&hostname=db-3', $p1), 'created',
    'a second node through the other');
ok(wait_for(sub { everywhere('db', 'db-2,db-3', $p1, $p2) }, 10),
    'seen everywhere');
ok(wait_for(sub {
    $api->get('/api/nodes', as => 'a', port => $p2)->{json}{count} == 2
}, 10), 'nodes too');

# a type that was 404 and now has a node
is(update('uuid=n3&node_type=nothing&hostname=x-1', $p2), 'created',
    'first node of a type cached as absent');
ok(wait_for(sub { everywhere('nothing', 'x-1', $p1, $p2) }, 10),
    'seen everywhere');

###############################################################################
# Redis stopped: nothing from the cache, 503 as without it; restarted:
# the state as Redis has it

ok(everywhere('db', 'db-2,db-3', $p1, $p2), 'cached before the stop');

$api->kill_redis($r, 'TERM');

my %codes;
$codes{hosts($_, 'db')}++ for ($p1, $p2) x 8;
is_deeply(\%codes, { 503 => 16 }, 'redis stopped: 503, not the copy');

$t->start_redis($r);

ok(wait_for(sub { subscribers() == 5 }, 20), 'subscribed again');
ok(wait_for(sub { everywhere('db', 'db-2,db-3', $p1, $p2) }, 10),
    'after the restart');
monitor();

# a change whose message nobody gets: the subscriptions are dropped
# first, in the same transaction; after they are back, nobody may serve
# what it had before

ok(everywhere('db', 'db-2,db-3', $p1, $p2), 'cached again');

my $out = `printf '%s\\n' MULTI 'CLIENT KILL TYPE pubsub' \\
    'HSET test:vpc:node:n2 hostname db-4' 'DEL test:vpc:view:type:db' \\
    'DEL test:vpc:view:nodes' 'PUBLISH test:vpc:events "node n2"' EXEC \\
    | redis-cli -p $r->{port}`;
like($out, qr/^OK\n(QUEUED\n){5}[1-9]\d*\n.*\n0\n\z/s,
    'a change published to nobody');

ok(wait_for(sub { subscribers() == 5 }, 20), 'subscribed again');
ok(everywhere('db', 'db-2,db-4', $p1, $p2), 'the missed change everywhere');

###############################################################################
# caps: 8 entries, 16k; a flood of types

mark();
hosts($p3, "f$_") for 1 .. 8;
hosts($p3, 'f1');
is(reads(), 8, 'eight types kept');

$api->parallel('a', [ map { "https://127.0.0.1:$p3/api/discover/g$_" }
    1 .. 300 ], max => 20);
mark();
hosts($p3, 'f1');
is(reads(), 1, 'after a flood of types: the oldest was dropped');

my @urls = map {
    "https://127.0.0.1:$p1/api/nodes/update?uuid=big-$_&node_type=big"
    . "&hostname=node-$_.with-a-rather-long-host-name.dstack.internal"
} 1 .. 200;
is(scalar(grep { $_->[0] == 200 } $api->parallel('a', \@urls,
    method => 'POST', max => 20)), 200, 'a type with a large answer');

hosts($p4, 'big');
mark();
my $big = 0;
$big += length $api->get('/api/discover/big', as => 'a', port => $p3)
    ->{body} for 1 .. 3;
cmp_ok($big / 3, '>', 16384, 'larger than size=');
is(reads(), 3, 'not kept');

###############################################################################
# the directive

sub try_cache {
    my ($args) = @_;
    $t->write_file_expand('bad.conf', <<"EOF");
%%TEST_GLOBALS%%
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    dstack_vpc_redis 127.0.0.1:6379;
    dstack_vpc_api_cache $args;
    server {
        listen 127.0.0.1:%%PORT_8080%%;
        location / {
            dstack_vpc_api;
            dstack_vpc_api_server_url https://vpc.test;
        }
    }
}
EOF
    my ($ok, $out) = $t->test_config('bad.conf');
    return $ok ? 'ok' : $out;
}

is(try_cache('entries=10 size=1m valid=1s'), 'ok', 'all parameters');
is(try_cache('off'), 'ok', 'off');
like(try_cache('entries=0'), qr/invalid parameter "entries=0"/,
    'no entries');
like(try_cache('size=0'), qr/invalid parameter "size=0"/, 'no size');
like(try_cache('valid=x'), qr/invalid parameter "valid=x"/, 'bad time');
like(try_cache('on off'), qr/invalid parameter "on"/, 'on with more');

###############################################################################

$t->stop();
