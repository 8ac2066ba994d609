#!/usr/bin/perl

# The Redis adapter (ngx_dstack_vpc_api_module/ngx_dstack_redis.c) on its
# own, through a test-only module (ngx_dstack_vpc_api_module/t, built by
# make through its own nginx config into build/test-modules/):
# commands, error replies, timeouts, large replies, and pub/sub
# (multiplexed subscribers, late subscribers, departures, lost and
# re-established subscriptions).

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep);
use Test::Dstack qw(http http_get parse_response wait_for);

my $t = Test::Dstack->new()->has(qw(redis));

my $so = "$Test::Dstack::BUILD/test-modules/"
    . "ngx_http_dstack_redis_test_module.so";

$t->skip_all("no test module $so (run make)") unless -f $so;

my $d = $t->testdir;

$t->plan(24);

my $r = $t->run_redis();
my $port = $t->port(8080);

$t->write_file_expand('nginx.conf', <<"EOF");
load_module $so;
%%TEST_GLOBALS%%
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    dstack_redis_test 127.0.0.1:$r->{port} connect_timeout=500ms;
    server {
        listen 127.0.0.1:%%PORT_8080%%;
        location / {
            dstack_redis_test_handler;
        }
        location = /static {
            return 200 "static\\n";
        }
    }
}
EOF

$t->run();

sub get {
    my ($uri) = @_;
    return parse_response(http_get($uri, port => $port));
}

sub body { get($_[0])->{body} }

sub start {
    my ($uri) = @_;
    return http("GET $uri HTTP/1.0\r\nHost: localhost\r\n\r\n",
        port => $port, start => 1);
}

sub finish { parse_response(http('', socket => $_[0], timeout => 10)) }

sub numsub {
    my ($ch) = @_;
    my ($n) = $t->redis_cli($r, 'PUBSUB', 'NUMSUB', $ch) =~ /(\d+)\s*$/;
    return $n // 0;
}

sub soon { wait_for($_[0], $_[1] // 8) }

###############################################################################
# commands

ok(soon(sub { body('/cmd?c=PING') eq "+PONG\n" }), 'PING');
is(body('/cmd?c=SET+k+v%20w'), "+OK\n", 'SET');
is(body('/cmd?c=GET+k'), "s:v w\n", 'GET');
is(body('/cmd?c=GET+missing'), "nil\n", 'nil');
like(body('/cmd?c=INCR+k'), qr/^-ERR value is not an integer/,
    'error reply passed on');
is(body('/cmd?c=RPUSH+l+a+b+c'), ":3\n", 'integer');
is(body('/cmd?c=LRANGE+l+0+-1'), "[s:a,s:b,s:c]\n", 'array');

$t->write_file('big', 'x' x 300000);
system("redis-cli -p $r->{port} -x SET big < $d/big >/dev/null");
is(body('/cmd?c=GET+big'), "s:300000 bytes\n", '300 KB reply');

# a command that never gets a reply

kill 'STOP', $r->{pid};
my $res = get('/cmd?t=300&c=PING');
is($res->{body}, "err:no reply within 300ms\n", 'timeout');
is(get('/static')->{status}, 200, 'other locations answer meanwhile');
like(body('/cmd?c=PING'), qr/^(fail|err):/, 'fails while paused');
kill 'CONT', $r->{pid};
ok(soon(sub { body('/cmd?c=PING') eq "+PONG\n" }), 'recovers');

###############################################################################
# pub/sub

my $s = start('/sub?ch=c1&n=2');
ok(soon(sub { numsub('c1') == 1 }), 'subscribed');
$t->redis_cli($r, 'PUBLISH', 'c1', 'hello');
is(finish($s)->{body}, "ready,message:hello\n", 'ready, then the message');

my @s = map { start('/sub?ch=c2&n=2') } 1 .. 2;
ok(soon(sub { numsub('c2') == 1 }), 'two subscribers, one subscription');
sleep 0.2;
$t->redis_cli($r, 'PUBLISH', 'c2', 'both');
is(join('', map { finish($_)->{body} } @s),
    "ready,message:both\n" x 2, 'both get the message');

is(body('/sub?ch=c2&n=1'), "ready\n", 'a late subscriber is told too');
is(body('/sub?ch=c2&n=2&t=300'), "ready,timeout\n", 'and can time out');

# a subscriber that leaves

$s = start('/sub?ch=c3&n=5');
ok(soon(sub { numsub('c3') == 1 }), 'subscribed to c3');
close $s;
sleep 0.3;
$t->redis_cli($r, 'PUBLISH', 'c3', 'nobody');
# the worker may read the message after it accepts the next subscriber
sleep 0.3;
$s = start('/sub?ch=c3&n=2');
sleep 0.3;
$t->redis_cli($r, 'PUBLISH', 'c3', 'again');
is(finish($s)->{body}, "ready,message:again\n", 'after a departure');

# the subscription link killed: lost, then ready again

$s = start('/sub?ch=c4&n=3&t=5000');
ok(soon(sub { numsub('c4') == 1 }), 'subscribed to c4');
$t->redis_cli($r, 'CLIENT', 'KILL', 'TYPE', 'pubsub');
is(finish($s)->{body}, "ready,lost,ready\n", 'lost and re-established');

$s = start('/sub?ch=c4&n=2');
sleep 0.3;
$t->redis_cli($r, 'PUBLISH', 'c4', 'after');
is(finish($s)->{body}, "ready,message:after\n", 'messages flow again');

# Redis restarted under both links

$t->restart_redis($r);
ok(soon(sub { body('/cmd?c=PING') eq "+PONG\n" }),
    'commands after a restart');
