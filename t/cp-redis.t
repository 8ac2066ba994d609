#!/usr/bin/perl

# The control plane when Redis fails: open map streams end when the
# change notifications are lost (the agents reconnect for a fresh map);
# while Redis is down every request gets a prompt 503; afterwards streams
# work again; a change sequence that goes backwards (Redis lost its data)
# restarts the streams too.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use Test::Dstack qw(wait_for);
use Test::Dstack::Api;
use Test::Dstack::Control;

my $t = Test::Dstack->new()->has(qw(auth api sim redis))->plan(18);

my $api = Test::Dstack::Api->new($t);
my $r = $t->run_redis(aof => 1);

$t->write_file_expand('nginx.conf', $api->conf(redis => $r, allow => 'any',
    workers => 2, http => "    dstack_vpc_control_keepalive 1s;\n"));
$t->run();

my $cp = Test::Dstack::Control->new($t, $api);

my ($k1) = $cp->join_node('a', hostname => 'r1');
my ($k2) = $cp->join_node('c', hostname => 'r2');

# a stream, retried while the server says 503
sub stream_ok {
    my ($key, $timeout) = @_;
    my $s;
    wait_for(sub {
        $s->close() if $s;
        $s = $cp->stream('a', $key);
        $s && $s->status == 200 && $s->first;
    }, $timeout // 10);
    return $s;
}

my @s = map { stream_ok($k1) } 1 .. 4;
is(scalar(grep { $_ && $_->first } @s), 4, 'four streams');

###############################################################################
# Redis restarts

$t->restart_redis($r);
is(scalar(grep { $_->wait_end(10) } @s), 4,
    'Redis restarted: every stream ends');
$_->close() for @s;

my $s = stream_ok($k1, 15);
ok($s && $s->first, 'a new stream afterwards');
is(scalar(@{$s->first->{Peers}}), 1, 'with the same peers (AOF)');

$cp->poll('c', $k2, endpoints => ['10.3.0.1:41641']);
ok($s->wait(sub { $_[0]{PeersChangedPatch} }, 5), 'and changes on it');

###############################################################################
# Redis down

$t->stop_daemon($r->{pid});
ok($s->wait_end(10), 'Redis down: the stream ends');

my $t0 = time;
my $res = $cp->register('a', $cp->node_key(), auth => 'hskey-auth-x');
is($res->{status}, 503, 'register: 503');
like($res->{json}{Error} // '', qr/^redis unavailable/, 'says why');

my $x = $cp->stream('a', $k1);
is($x && $x->status, 503, 'a new stream: 503');
is($cp->poll('a', $k1)->{status}, 503, 'a plain map: 503');
ok(time - $t0 < 5, sprintf('all promptly (%.1f s)', time - $t0));
$x->close() if $x;

$t->start_redis($r);
$s = stream_ok($k1, 20);
ok($s && $s->first, 'Redis back: streams work');

###############################################################################
# a change out of sequence (Redis lost its data, or a stranger publishes)

my @more = map { stream_ok($k1) } 1 .. 2;
$cp->poll('c', $k2, endpoints => ['10.3.0.2:41641']);
ok($s->wait(sub { $_[0]{PeersChangedPatch} }, 5), 'a change in sequence');

my $id2 = $cp->poll('c', $k2)->{json}{Node}{ID};
$t->redis_cli($r, 'PUBLISH', 'test:vpc:vpn:events', "1 ep $id2 10.9.9.9:1");

is(scalar(grep { $_->wait_end(10) } $s, @more), 3,
    'one out of sequence: the streams end');
ok(scalar($t->grep_error_log(qr/change 1 after \d+, map streams restart/)),
    'and the log says why');

$_->close() for $s, @more;
$s = stream_ok($k1);
$cp->poll('c', $k2, endpoints => ['10.3.0.4:41641']);
my $f = $s->wait(sub { $_[0]{PeersChangedPatch} }, 5);
is_deeply($f && $f->{PeersChangedPatch}[0]{Endpoints}, ['10.3.0.4:41641'],
    'new streams get changes again');

###############################################################################
# Redis emptied: the stream notices at its next keepalive

$t->redis_cli($r, 'FLUSHALL');
ok($s->wait_end(10), 'FLUSHALL: the stream ends');
is($cp->poll('a', $k1)->{status}, 401, 'the node must register again');

$s->close();
