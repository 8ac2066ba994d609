#!/usr/bin/perl

# ngx_dstack_vpc_api_module and Redis: large replies, Redis stopped,
# paused, restarted, killed, flushed of its scripts or out of memory;
# clients that leave while their request waits; persistence (AOF, as
# conf/redis.conf ships it) across Redis restarts and nginx reloads.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use Test::Dstack qw(http wait_for);
use Test::Dstack::Api;

my $t = Test::Dstack->new()->has(qw(auth api sim redis curl))->plan(46);

my $api = Test::Dstack::Api->new($t);
my $r = $api->run_redis_conf();

$t->write_file_expand('nginx.conf', $api->conf(redis => $r,
    timeout => '1s'));
$t->run();

my $port = $t->port(8443);

sub ok_soon {
    my ($cond, $secs) = @_;
    return wait_for($cond, $secs // 8);
}

###############################################################################
# a reply much larger than hiredis' 16 KiB reads

my $res = $api->get('/api/register?instance_id=aa01&node_name=first',
    as => 'a');
is($res->{status}, 200, 'register');
my $shared = $res->{json}{shared_key};

my @urls = map {
    "https://127.0.0.1:$port/api/nodes/update?uuid=big-$_&node_type=big"
    . "&tailscale_ip=100.100." . int($_ / 250) . "." . ($_ % 250)
    . "&hostname=node-$_.with-a-rather-long-host-name.dstack.internal"
} 1 .. 400;

my @done = $api->parallel('a', \@urls, method => 'POST', max => 20);
is(scalar(grep { $_->[0] == 200 } @done), 400, '400 updates');

$res = $api->get('/api/discover/big', as => 'a');
is($res->{status}, 200, 'large discover');
cmp_ok(length $res->{body}, '>', 2 * 16384, 'reply spans several reads');
is($res->{json}{count}, 400, 'all nodes');
is(scalar @{$res->{json}{nodes} || []}, 400, 'all nodes listed');

$res = $api->get('/api/nodes', as => 'a');
is($res->{json}{count}, 401, 'large nodes list');

###############################################################################
# Redis errors: out of memory

$t->redis_cli($r, 'CONFIG', 'SET', 'maxmemory', '1');
$res = $api->get('/api/register?instance_id=aa02', as => 'a');
is_deeply([$res->{status}, $res->{json}], [503, { error => 'redis error' }],
    'redis error reply: 503');
$t->redis_cli($r, 'CONFIG', 'SET', 'maxmemory', '0');
$res = $api->get('/api/register?instance_id=aa02', as => 'a');
is($res->{status}, 200, 'and back');

###############################################################################
# Redis turned into a replica (a failover seen through a proxy)

$t->redis_cli($r, 'REPLICAOF', '127.0.0.1', $t->port(6999));
$res = $api->get('/api/register?instance_id=aa02', as => 'a');
is($res->{status}, 503, 'read-only replica: 503');
$t->redis_cli($r, 'REPLICAOF', 'NO', 'ONE');
ok(ok_soon(sub {
    $api->get('/api/register?instance_id=aa02', as => 'a')->{status} == 200
}), 'primary again');

###############################################################################
# scripts flushed from Redis: reloaded by reconnecting

$t->redis_cli($r, 'SCRIPT', 'FLUSH');
ok(ok_soon(sub {
    $api->get('/api/discover/big', as => 'a')->{status} == 200
}), 'scripts loaded again after SCRIPT FLUSH');

###############################################################################
# Redis stopped: 503 at once, other locations unaffected

$api->kill_redis($r, 'TERM');

$res = $api->get('/api/discover/big?stopped=1', as => 'a');
is($res->{status}, 503, 'redis stopped: 503');
like($res->{json}{error} // '', qr/^redis unavailable: /, '503 body');
cmp_ok($api->request_time('stopped=1') // 9, '<', 0.1, '503 at once');

$res = $api->get('/health');
is($res->{status}, 200, 'health while redis is down');
is($res->{json}{redis}, 'unavailable', 'health says so');

$res = $api->get('/static');
is($res->{status}, 200, 'static location');

$t->start_redis($r);

ok(ok_soon(sub {
    $api->get('/api/discover/big', as => 'a')->{status} == 200
}), 'recovers without a reload');

$res = $api->get('/api/discover/big', as => 'a');
is($res->{json}{count}, 400, 'nodes survived the restart');
$res = $api->get('/api/register?instance_id=aa03', as => 'a');
is($res->{json}{shared_key}, $shared, 'shared key survived the restart');

###############################################################################
# Redis paused: 503 within the timeout, other locations at full speed

kill 'STOP', $r->{pid};

# a type no worker holds a copy of (dstack_vpc_api_cache), so that the
# request waits for Redis
my $s = $api->request('GET', '/api/discover/paused?paused=1', as => 'a',
    start => 1);

my @static = map { $api->get('/static', plain => 1) } 1 .. 5;
is(scalar(grep { $_->{status} == 200 } @static), 5,
    'static location while a request waits');
# a blocked worker would take the whole timeout (1s) to answer
cmp_ok((sort { $b <=> $a } map { $_->{time} } @static)[0], '<', 0.5,
    'static location fast');

$res = $api->finish($s);
is($res->{status}, 503, 'paused redis: 503');
like($res->{json}{error} // '', qr/no reply within 1000ms/, 'timeout body');
my $waited = $api->request_time('paused=1');
ok(defined $waited && $waited >= 0.95 && $waited < 2,
    'within the timeout') or diag("waited " . ($waited // 'n/a'));

$res = $api->get('/api/register?instance_id=aa04', as => 'a');
is($res->{status}, 503, 'still paused: 503');

kill 'CONT', $r->{pid};

ok(ok_soon(sub {
    $api->get('/api/discover/big', as => 'a')->{status} == 200
}), 'recovers after the pause');

# clients that go away while their requests wait

kill 'STOP', $r->{pid};

my @gone = map { $api->connect(as => 'a') } 1 .. 3;
$_->syswrite("GET /api/discover/gone?gone=1 HTTP/1.0\r\n\r\n") for @gone;
sleep 0.05;
close $_ for @gone;

ok(ok_soon(sub {
    my @l = $t->read_file("logs/api-8443.log") =~ / 499 .*gone=1/g;
    @l == 3;
}, 5), 'departures noticed while waiting');

kill 'CONT', $r->{pid};

ok(ok_soon(sub {
    $api->get('/api/discover/big', as => 'a')->{status} == 200
}), 'recovers after the second pause');

# ... and one whose reply arrives after it left

kill 'STOP', $r->{pid};
$s = $api->request('GET', '/api/nodes', as => 'a', start => 1);
sleep 0.1;
close $s;
sleep 0.1;
kill 'CONT', $r->{pid};
sleep 0.3;

$res = $api->get('/api/discover/big', as => 'a');
is($res->{status}, 200, 'reply for a departed client dropped');

###############################################################################
# persistence: AOF, as shipped, survives a kill -9

$res = $api->post('/api/nodes/update?uuid=late&node_type=late'
    . '&hostname=late.example', '', as => 'a');
is($res->{json}{status}, 'created', 'a late write');

sleep 1.5;    # appendfsync everysec
$api->kill_redis($r, 'KILL');

$res = $api->get('/api/discover/late', as => 'a');
is($res->{status}, 503, 'redis killed: 503');

$t->start_redis($r);

ok(ok_soon(sub {
    $api->get('/api/discover/late', as => 'a')->{status} == 200
}), 'back after kill -9');

$res = $api->get('/api/discover/late', as => 'a');
is($res->{json}{nodes}[0]{hostname}, 'late.example', 'late write kept');
$res = $api->get('/api/register?instance_id=aa05', as => 'a');
is($res->{json}{shared_key}, $shared, 'shared key kept');
ok(-d "$r->{dir}/appendonlydir", 'AOF on disk');

###############################################################################
# nginx reload

$t->reload();

$res = $api->get('/api/discover/big', as => 'a');
is($res->{status}, 200, 'after reload');
is($res->{json}{count}, 400, 'same nodes after reload');
$res = $api->get('/api/register?instance_id=aa06', as => 'a');
is($res->{json}{shared_key}, $shared, 'same shared key after reload');

$res = $api->get('/health');
is_deeply($res->{json}, { status => 'ok', redis => 'ok' }, 'healthy');

###############################################################################

$t->stop();

my $log = $t->error_log();
like($log, qr/redis command link to .*: connection lost/,
    'link loss logged');
like($log, qr/redis command link to .* is back/, 'recovery logged');
like($log, qr/read-only replica, retrying/, 'replica noticed');
unlike($log, qr/\[(crit|alert|emerg)\]/, 'no crit');
unlike($log, qr/open socket .* left/, 'no socket left on exit');
