#!/usr/bin/perl

# The Redis adapter (ngx_dstack_vpc_api_module/ngx_dstack_redis.c) on its
# own, through a test-only module compiled here against the build tree:
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

my $ngx = "$Test::Dstack::BUILD/nginx";
my $repo = $t->repo;
my $d = $t->testdir;

$t->skip_all("no configured nginx build tree at $ngx (run make)")
    unless -f "$ngx/objs/Makefile";

# the module, with the build tree's own flags (same module signature)

my $mk = $t->read_file("$ngx/objs/Makefile") =~ s/\\\n\s*/ /gr;
my ($cflags) = $mk =~ /^CFLAGS\s*=\s*(.*)$/m;
my ($incs) = $mk =~ /^ALL_INCS\s*=\s*(.*)$/m;

$t->write_file('redis_test_modules.c', <<'EOF');
#include <ngx_config.h>
#include <ngx_core.h>
extern ngx_module_t  ngx_http_dstack_redis_test_module;
ngx_module_t *ngx_modules[] = { &ngx_http_dstack_redis_test_module, NULL };
char *ngx_module_names[] = { "ngx_http_dstack_redis_test_module", NULL };
char *ngx_module_order[] = { NULL };
EOF

my $dir = "$repo/ngx_dstack_vpc_api_module";
my $out = `cd $ngx && cc -shared -fPIC $cflags $incs -I $dir -o $d/redis_test.so $dir/t/ngx_http_dstack_redis_test_module.c $dir/ngx_dstack_redis.c $d/redis_test_modules.c -lhiredis 2>&1`;
die "cannot build the test module:\n$out" if $?;

$t->plan(24);

my $r = $t->run_redis();
my $port = $t->port(8080);

$t->write_file_expand('nginx.conf', <<"EOF");
load_module $d/redis_test.so;
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
