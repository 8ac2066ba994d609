#!/usr/bin/perl

# The control plane's liveness: a node with no stream that stops polling
# goes offline after the inactivity timeout (PeersChangedPatch), an
# ephemeral one is removed (PeersRemoved, its address freed), a node
# whose stream is open stays online; the sweep runs exactly once per
# interval across two workers and a second instance on the same Redis;
# a stream reader too far behind is disconnected; a burst of changes
# reaches every stream.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use IO::Socket::SSL;
use JSON::PP;
use Socket qw(SOL_SOCKET SO_RCVBUF PF_INET SOCK_STREAM pack_sockaddr_in
    inet_aton);
use Time::HiRes qw(time sleep);
use Test::Dstack qw(wait_for);
use Test::Dstack::Api;
use Test::Dstack::Control;

my $t = Test::Dstack->new()->has(qw(auth api sim redis))->plan(30);

my $api = Test::Dstack::Api->new($t);
my $r = $t->run_redis();

my $timers = <<'EOF';
    dstack_vpc_control_keepalive 1s;
    dstack_vpc_control_inactivity_timeout 3s;
    dstack_vpc_control_sweep_interval 500ms;
    dstack_vpc_control_stream_buffer 64k;
EOF

my $slow = $api->tls();

$t->write_file_expand('nginx.conf', $api->conf(redis => $r, allow => 'any',
    workers => 2, http => $timers . <<"EOF"));
    server {
        listen 127.0.0.1:%%PORT_8446%% ssl sndbuf=4k;
$slow
        dstack_vpc_api_allow any;
        dstack_vpc_api_server_url https://vpc.test;

        location / {
            dstack_auth on;
            dstack_auth_allow any;
            dstack_vpc_api;
        }
    }
EOF

$t->write_file_expand('nginx2.conf', $api->conf(redis => $r, allow => 'any',
    port => 9443, plain_port => 9080, pid => 'nginx2.pid',
    http => $timers));

$t->run('nginx.conf');
$t->run('nginx2.conf');

my $cp = Test::Dstack::Control->new($t, $api);
my $cp2 = Test::Dstack::Control->new($t, $api, port => 9443);

sub rcli { $t->redis_cli($r, @_) }

###############################################################################
# the sweep: once per 500 ms slot, whoever asks

sleep(0.2);
rcli('DEL', 'test:vpc:vpn:sweep:log');
my $runs0 = rcli('HGET', 'test:vpc:vpn:sweep', 'runs') || 0;
my $t0 = time;
sleep(4);
my $elapsed = time - $t0;
my $runs = (rcli('HGET', 'test:vpc:vpn:sweep', 'runs') || 0) - $runs0;
my @log = split /\n/, rcli('LRANGE', 'test:vpc:vpn:sweep:log', 0, -1);
my @slots = map { (split / /)[0] } @log;
my %callers = map { (split / /)[1] => 1 } @log;

my $expect = $elapsed / 0.5;
ok($runs >= $expect - 2 && $runs <= $expect + 1,
    "about one run per interval ($runs in ${\ sprintf '%.1f', $elapsed} s)");
is(scalar(keys %{{ map { $_ => 1 } @slots }}), scalar(@slots),
    'never twice in a slot');
is(scalar(grep { $slots[$_] != $slots[$_ + 1] + 1 } 0 .. $#slots - 1), 0,
    'and no slot skipped');
ok(keys %callers >= 2, 'run by more than one worker ('
    . join(' ', sort keys %callers) . ')');

###############################################################################
# liveness

my ($k0, $r0) = $cp->join_node('a', hostname => 'watcher');
my $s = $cp->stream('a', $k0);
ok($s && $s->first, 'a watcher streams');

my ($k1, $r1) = $cp->join_node('a', hostname => 'quiet');
my ($k2, $r2) = $cp2->join_node('c', hostname => 'eph', ephemeral => 1);
my ($id1, $id2) = ($r1->{json}{NodeID}, $r2->{json}{NodeID});
my ($ip2) = $r2->{json}{Addresses}[0] =~ m{^(.*)/32$};

is($cp->poll('a', $k1)->{status}, 200, 'a node polls once');
is($cp2->poll('c', $k2)->{status}, 200, 'an ephemeral node polls once');

my $f = $s->wait(sub { ($_[0]{PeersChangedPatch} || [])->[0]
    && $_[0]{PeersChangedPatch}[0]{NodeID} == $id1
    && $_[0]{PeersChangedPatch}[0]{Online} }, 5);
ok($f, 'online patch for the polling node');

$t0 = time;
$f = $s->wait(sub { ($_[0]{PeersChangedPatch} || [])->[0]
    && $_[0]{PeersChangedPatch}[0]{NodeID} == $id1
    && exists $_[0]{PeersChangedPatch}[0]{Online}
    && !$_[0]{PeersChangedPatch}[0]{Online} }, 10);
ok($f, 'silent for the timeout: PeersChangedPatch Online:false');
my $dt = time - $t0;
ok($dt < 6, sprintf('offline %.1f s later (timeout 3 s)', $dt));

$f = $s->wait(sub { $_[0]{PeersRemoved} }, 10);
is_deeply($f && $f->{PeersRemoved}, [$id2],
    'the ephemeral one: PeersRemoved');
is(rcli('EXISTS', "test:vpc:vpn:node:$id2"), '0', 'its record is gone');
is(rcli('HGET', 'test:vpc:vpn:ips', $ip2), '', 'its address is free');

my ($k3, $r3) = $cp->join_node('a', hostname => 'next');
is($r3->{json}{Addresses}[0], "$ip2/32", 'and given to the next node');

my $m = $cp->poll('a', $k1)->{json};
my ($w) = grep { $_->{ID} == $r0->{json}{NodeID} } @{$m->{Peers}};
is($w && $w->{Online}, JSON::PP::true, 'the streaming watcher stays online');
my ($q) = grep { $_->{ID} == $id1 } @{$m->{Peers}};
ok(!$q, 'a node does not list itself as a peer');
is($m->{Node}{Online}, JSON::PP::true, 'the quiet node is online again');

is($cp->poll('a', $k1)->{status}, 200, 'an offline node is still known');

###############################################################################
# a node key past its Expiry leaves the maps until it registers again

my @tm = gmtime(time() + 3);
my $when = sprintf('%04d-%02d-%02dT%02d:%02d:%02dZ', $tm[5] + 1900,
    $tm[4] + 1, @tm[3, 2, 1, 0]);
my $i4 = Test::Dstack::Control::instance_id();
my ($k4, $r4) = $cp->join_node('a', hostname => 'shortlived', instance => $i4,
    expiry => $when);
my $id4 = $r4->{json}{NodeID};
$f = $s->wait(sub { ($_[0]{PeersChanged} || [])->[0]
    && $_[0]{PeersChanged}[0]{ID} == $id4 }, 5);
is($f && $f->{PeersChanged}[0]{KeyExpiry}, $when, 'KeyExpiry in the map');

$f = $s->wait(sub { $_[0]{PeersRemoved} }, 10);
is_deeply($f && $f->{PeersRemoved}, [$id4], 'expired: PeersRemoved');
is($cp->poll('a', $k4)->{status}, 403, 'its own map: 403');
is($cp->register('a', $k4)->{status}, 401,
    'registering again needs an auth key');
my $r4b = $cp->register('a', $k4, instance => $i4,
    auth => $cp->auth_key('a', instance => $i4));
is($r4b->{json}{NodeID}, $id4, 'with one it is the same node');
$f = $s->wait(sub { ($_[0]{PeersChanged} || [])->[0]
    && $_[0]{PeersChanged}[0]{ID} == $id4 }, 5);
is($f && $f->{PeersChanged}[0]{KeyExpiry}, '0001-01-01T00:00:00Z',
    'back in the maps, no expiry');

###############################################################################
# a burst of changes reaches every stream, in order

my @streams = map { $cp->stream('a', $k0) } 1 .. 3;
push @streams, map { $cp2->stream('a', $k0) } 1 .. 2;
is(scalar(grep { $_ && $_->first } @streams), 5, 'five more streams');

my $burst = <<'EOF';
local K = ARGV[1]
for i = 1, tonumber(ARGV[2]) do
  local s = redis.call('INCR', K .. 'evseq')
  redis.call('PUBLISH', K .. 'events', s .. ' ep ' .. ARGV[3] .. ' 10.9.'
    .. math.floor(i / 256) .. '.' .. (i % 256) .. ':41641')
end
return 1
EOF

rcli('EVAL', $burst, 0, 'test:vpc:vpn:', 300, $id1);

my $ok = 0;
for my $st (@streams, $s) {
    my @eps;
    # coalesced: several changes a frame (dstack_vpc_control_coalesce)
    while (my $x = $st->wait(sub { $_[0]{PeersChangedPatch} }, 5)) {
        push @eps, map { $_->{Endpoints} ? $_->{Endpoints}[0] : () }
            @{$x->{PeersChangedPatch}};
        last if @eps >= 300;
    }
    $ok++ if @eps == 300 && $eps[-1] eq '10.9.1.44:41641'
        && $eps[0] eq '10.9.0.1:41641';
}
is($ok, 6, 'three hundred changes, in order, on six streams');

###############################################################################
# a reader too far behind

sub slow_stream {
    my ($key) = @_;

    socket(my $sock, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
    setsockopt($sock, SOL_SOCKET, SO_RCVBUF, 4096);
    connect($sock, pack_sockaddr_in($t->port(8446), inet_aton('127.0.0.1')))
        or die "connect: $!";

    my $c = $api->cert('a');
    my $ssl = IO::Socket::SSL->start_SSL($sock, SSL_verify_mode => 0,
        SSL_cert_file => $c->{chain}, SSL_key_file => $c->{key})
        or die "ssl: $SSL_ERROR";

    my $body = encode_json({ NodeKey => $key, Stream => JSON::PP::true });
    $ssl->syswrite("POST /machine/map HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body");

    return $ssl;
}

my $lazy = slow_stream($k0);
sleep(0.5);

# big frames: a node with sixteen endpoints changing
my $big = <<'EOF';
local K = ARGV[1]
local eps = {}
for j = 1, 16 do
  eps[j] = '[fd00:1234:5678:9abc:def0:1234:5678:' .. j .. ']:65535'
end
eps = table.concat(eps, ',')
for i = 1, tonumber(ARGV[2]) do
  local s = redis.call('INCR', K .. 'evseq')
  redis.call('PUBLISH', K .. 'events', s .. ' ep ' .. ARGV[3] .. ' ' .. eps)
end
return 1
EOF

rcli('EVAL', $big, 0, 'test:vpc:vpn:', 400, $id1);

ok(wait_for(sub { $t->grep_error_log(qr/closed: \d+ bytes not read/) }, 10),
    'the slow reader is disconnected');

my $got = '';
eval {
    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm(10);
    while ($lazy->sysread(my $buf, 65536)) { $got .= $buf; }
    alarm(0);
};
alarm(0);
ok(length($got) < 400 * 1000, sprintf('after %d bytes', length $got));
ok(!$@, 'its connection is closed');

my $n = 0;
for my $st (@streams, $s) {
    my $x = $st->wait(sub { ($_[0]{PeersChangedPatch} || [])->[0]
        && @{$_[0]{PeersChangedPatch}[0]{Endpoints} || []} == 16 }, 5);
    $n++ if $x;
}
is($n, 6, 'the other streams are fine');

$_->close() for @streams, $s;
