#!/usr/bin/perl

# The VPN control plane (ngx_http_dstack_vpc_cp_module, docs/control-plane.md)
# against real Redis: register and its refusals, the caller's app id bound
# to the node key, the full map's shape, plain and streamed maps, deltas
# on an open stream (a new node, endpoints, logout), keepalives, bad
# input, and clients that go away mid-stream; what the relay path needs
# (docs/wg-relay.md): each node's AppID and InstanceID, and WGPath from
# dstack_vpc_control_wg_path.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time sleep);
use Test::Dstack qw(wait_for);
use Test::Dstack::Api;
use Test::Dstack::Control;

my $t = Test::Dstack->new()->has(qw(auth api sim redis curl))->plan(105);

my $api = Test::Dstack::Api->new($t);
my $r = $t->run_redis();

$t->write_file_expand('nginx.conf', $api->conf(redis => $r, allow => 'any',
    http => <<'EOF'));
    dstack_vpc_control_keepalive 1s;
    dstack_vpc_control_inactivity_timeout 30s;
EOF

$t->run();

my $cp = Test::Dstack::Control->new($t, $api);
my ($A, $B, $C) = map { $api->app($_) } qw(a b c);

sub rcli { $t->redis_cli($r, @_) }

sub key_id { ($_[0] =~ /^hskey-auth-([^-]+)-/)[0] }

sub err { $_[0]{json} ? $_[0]{json}{Error} // '' : "(no JSON: $_[0]{body})" }

my $NODE_KEYS = 'Addresses,AllowedIPs,AppID,Endpoints,Hostinfo,ID,'
    . 'InstanceID,Key,KeyExpiry,LastSeen,Name,Online,StableID,User';

###############################################################################
# register: refusals

my $k1 = $cp->node_key();
my $i1 = Test::Dstack::Control::instance_id();

my $res = $cp->register('a', $k1, hostname => 'n1');
is($res->{status}, 401, 'no auth key: 401');
is_deeply($res->{json}, { MachineAuthorized => JSON::PP::false,
    Error => 'unknown auth key' }, 'refusal shape');

$res = $cp->register('a', $k1, auth => 'hskey-auth-nonsense');
is(err($res), 'unknown auth key', 'malformed auth key');

my $good = $cp->auth_key('a', instance => $i1, name => 'n1');
like($good, qr/^hskey-auth-/, 'pre-auth key from the REST API');

(my $wrong = $good) =~ s/.$/$& eq 'A' ? 'B' : 'A'/e;
$res = $cp->register('a', $k1, auth => $wrong);
is($res->{status}, 401, 'right id, wrong secret: 401');
is(err($res), 'unknown auth key', 'wrong secret is unknown');

my $exp = $cp->auth_key('a', instance => $i1);
rcli('HSET', 'test:vpc:preauthkey:' . key_id($exp), 'expiration',
    time() - 10);
$res = $cp->register('a', $k1, auth => $exp, instance => $i1);
is($res->{status}, 401, 'expired key: 401');
is(err($res), 'auth key expired', 'expired key error');

my $rev = $cp->auth_key('a', instance => $i1);
rcli('HSET', 'test:vpc:preauthkey:' . key_id($rev), 'revoked', 1);
$res = $cp->register('a', $k1, auth => $rev, instance => $i1);
is($res->{status}, 401, 'revoked key: 401');
is(err($res), 'auth key revoked', 'revoked key error');

my $ckey = $cp->auth_key('c');
$res = $cp->register('a', $k1, auth => $ckey);
is($res->{status}, 403, "another app's key: 403");

for my $bad ('nodekey:xyz', 'nodekey:' . ('a' x 63), 'mkey:' . ('a' x 64),
    'nodekey:' . ('0' x 64), 'nodekey:' . ('g' x 64))
{
    $res = $cp->register('a', $bad, auth => $good);
    is(err($res), 'invalid NodeKey', "malformed NodeKey \"$bad\"");
}

$res = $cp->post('a', '/machine/register', { Auth => { AuthKey => $good } });
is($res->{status}, 400, 'no NodeKey: 400');

$res = $cp->post('a', '/machine/register', '{"NodeKey": ');
is($res->{status}, 400, 'invalid JSON: 400');
is(err($res), 'invalid JSON body', 'invalid JSON error');

$res = $cp->post('a', '/machine/register',
    '{"NodeKey":' . ('[' x 20) . (']' x 20) . '}');
is($res->{status}, 400, 'deeply nested JSON: 400');

$res = $cp->post('a', '/machine/register', '{"NodeKey":"' . $k1 . '",'
    . '"Hostinfo":{"Hostname":"' . ('x' x 20000) . '"}}');
is($res->{status}, 413, 'oversized body: 413');
is($res->{json}{MachineAuthorized}, JSON::PP::false,
    'oversized body: register shape');

$res = $cp->register('a', $k1, auth => $good, instance => 'not hex');
is(err($res), 'invalid InstanceID', 'bad InstanceID');

$res = $cp->register('a', $k1, auth => $good, type => 'Bad Type');
is(err($res), 'invalid NodeType', 'bad NodeType');

$res = $cp->register('a', $k1, auth => $good,
    expiry => '2001-01-01T00:00:00Z');
is(err($res), 'invalid Expiry', 'Expiry in the past');

# RFC 3339 in UTC only: the shared parser takes more than the contract
for my $e ('2999-01-01T00:00:00+00:00', '2999-01-01 00:00:00Z',
    '2999-01-01T24:00:00.5Z')
{
    $res = $cp->register('a', $k1, auth => $good, expiry => $e);
    is(err($res), 'invalid Expiry', "Expiry $e refused");
}

$res = $cp->register('a', $k1, auth => $good,
    extra => { Ephemeral => 'yes' });
is(err($res), 'invalid Ephemeral', 'non-boolean Ephemeral');

$res = $cp->post(undef, '/machine/register', { NodeKey => $k1 });
is($res->{status}, 401, 'no client certificate: 401');

$res = $cp->post('a', '/machine/nothing', {});
is($res->{status}, 404, 'unknown /machine/ path: 404');

$res = $api->get('/machine/map', as => 'a');
is($res->{status}, 405, 'GET: 405');

is(rcli('HGET', 'test:vpc:preauthkey:' . key_id($good), 'used'), '0',
    'refusals did not use the key');

###############################################################################
# register: success

$res = $cp->register('a', $k1, auth => $good, instance => $i1,
    hostname => 'N1 web!', type => 'web');
is($res->{status}, 200, 'register');
my $j = $res->{json};
is($j->{MachineAuthorized}, JSON::PP::true, 'authorized');
is($j->{Name}, 'n1-web.dstack.internal', 'sanitized host name');
like($j->{Addresses}[0] // '', qr{^100\.(12[89]|1[3-8]\d|19[01])\.\d+\.\d+/32$},
    'an address in 100.128.0.0/10');
is($j->{User}{LoginName}, $A, 'user is the app');
is($j->{Login}{LoginName}, $A, 'login is the app');
is($j->{Error}, '', 'no error');
is(join(',', sort keys %$j), 'Addresses,Error,Login,MachineAuthorized,Name,'
    . 'NodeID,User', 'register response keys');

my $id1 = $j->{NodeID};
my $ip1 = $j->{Addresses}[0];

is(rcli('HGET', 'test:vpc:preauthkey:' . key_id($good), 'used'), '1',
    'the key is used');
is(rcli('HGET', "test:vpc:node:$i1", 'tailscale_ip') . '/32', $ip1,
    'the REST record has the VPN address');

$res = $cp->register('a', $cp->node_key(), auth => $good);
is($res->{status}, 401, 'single-use key used again: 401');
is(err($res), 'auth key already used', 'used key error');

$res = $cp->register('a', $k1, hostname => 'n1');
is($res->{status}, 200, 'same node key again without a key: 200');
is($res->{json}{NodeID}, $id1, 'same node');
is($res->{json}{Addresses}[0], $ip1, 'same address');

$res = $cp->register('c', $k1, auth => $ckey);
is($res->{status}, 403, 'same node key from another app: 403');

###############################################################################
# map: plain

$res = $cp->poll('a', $k1, endpoints => ['10.1.0.1:41641', '[fd00::1]:41641']);
is($res->{status}, 200, 'Stream:false: 200');
is($res->{headers}{'content-type'}, 'application/json', 'plain JSON');
$j = $res->{json};
is(join(',', sort keys %$j), 'CollectServices,ControlTime,DNSConfig,Domain,'
    . 'Node,Peers,WGPath', 'map keys');
is($j->{WGPath}, 'auto', 'WGPath: auto by default');
is($j->{Node}{AppID}, $A, 'AppID: the app that registered the key');
is($j->{Node}{InstanceID}, $i1, 'InstanceID: from the register request');
is(join(',', sort keys %{$j->{Node}}), $NODE_KEYS, 'node keys');
is($j->{Node}{ID}, $id1, 'Node is this node');
is($j->{Node}{Name}, 'n1-web.dstack.internal.', 'FQDN');
is($j->{Node}{Key}, $k1, 'its key');
is_deeply($j->{Node}{AllowedIPs}, [$ip1], 'AllowedIPs');
is_deeply($j->{Node}{Endpoints}, ['10.1.0.1:41641', '[fd00::1]:41641'],
    'endpoints stored');
is($j->{Node}{Online}, JSON::PP::true, 'online');
like($j->{Node}{LastSeen}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/,
    'LastSeen is RFC 3339');
is($j->{Node}{KeyExpiry}, '0001-01-01T00:00:00Z', 'no key expiry');
is($j->{Node}{StableID}, $i1, 'StableID is the instance id');
is_deeply($j->{Peers}, [], 'no peers yet');
is_deeply($j->{DNSConfig}{Domains}, ['dstack.internal'], 'DNS domain');

$res = $cp->poll('c', $k1);
is($res->{status}, 403, "another app cannot map this node key: 403");
$res = $cp->poll('a', $cp->node_key());
is($res->{status}, 401, 'unknown node key: 401');
$res = $cp->poll('a', $k1, endpoints => ['10.1.0.1']);
is(err($res), 'invalid Endpoints', 'endpoint without port');
$res = $cp->poll('a', $k1, endpoints => [map { "10.1.0.$_:1" } 1 .. 17]);
is(err($res), 'invalid Endpoints', 'too many endpoints');

###############################################################################
# map: a stream

my $s = $cp->stream('a', $k1);
is($s->status, 200, 'stream: 200');
is($s->headers->{'content-type'}, 'application/octet-stream', 'octet-stream');
like($s->headers->{'transfer-encoding'} // '', qr/chunked/, 'chunked');
is($s->first->{Node}{ID}, $id1, 'first frame: the full map');

my $t0 = time;
my $i2 = Test::Dstack::Control::instance_id();
my ($k2, $res2) = $cp->join_node('c', hostname => 'n2', instance => $i2);
is($res2->{status}, 200, 'a second node registers');
my $id2 = $res2->{json}{NodeID};
my $f = $s->wait(sub { $_[0]{PeersChanged} }, 5);
ok($f && $f->{PeersChanged}[0]{ID} == $id2,
    'the first node hears of it: PeersChanged');
diag(sprintf 'PeersChanged %.0f ms after register', (time - $t0) * 1000);
is(join(',', sort keys %{$f->{PeersChanged}[0] || {}}), $NODE_KEYS,
    'PeersChanged carries whole nodes');
is(scalar(keys %$f), 1, 'only the delta');
is($f && $f->{PeersChanged}[0]{AppID}, $C, 'PeersChanged: AppID of app c');
is($f && $f->{PeersChanged}[0]{InstanceID}, $i2,
    'PeersChanged: its InstanceID');

$cp->poll('c', $k2, endpoints => ['10.2.0.1:41641']);
$f = $s->wait(sub { $_[0]{PeersChangedPatch}
    && $_[0]{PeersChangedPatch}[0]{Endpoints} }, 5);
is_deeply($f && $f->{PeersChangedPatch}, [{ NodeID => $id2,
    Endpoints => ['10.2.0.1:41641'] }], 'new endpoints: PeersChangedPatch');

$f = $s->wait(sub { $_[0]{KeepAlive} }, 5);
ok($f, 'KeepAlive frames');

my $s2 = $cp->stream('c', $k2);
is(scalar(@{$s2->first->{Peers}}), 1, 'the second node sees the first');
is($s2->first->{Peers}[0]{Key}, $k1, 'with its key');
is($s2->first->{Peers}[0]{AppID}, $A, 'and its AppID');
is($s2->first->{Node}{AppID}, $C, 'its own AppID');
is($s2->first->{WGPath}, 'auto', 'a full map in a stream has WGPath');

my $s3 = $cp->stream('a', $k2);
is($s3->status, 403, "a stream of another app's node: 403");

$res = $cp->logout('a', $k2);
is($res->{status}, 403, "logout of another app's node: 403");

$res = $cp->logout('c', $k2);
is($res->{status}, 200, 'logout');
$f = $s->wait(sub { $_[0]{PeersRemoved} }, 5);
is_deeply($f && $f->{PeersRemoved}, [$id2], 'logout: PeersRemoved');
ok($s2->wait_end(5), 'and its own stream ends');

$res = $cp->logout('c', $k2);
is($res->{status}, 401, 'logout again: 401');
$res = $cp->poll('c', $k2);
is($res->{status}, 401, 'its map: 401');

###############################################################################
# clients that go away

# mid-stream, and right after asking
for my $i (1 .. 5) {
    my $x = $cp->stream('a', $k1, first => $i % 2);
    $x->close() if $x;
}

# and with a delta in flight
my @many = map { $cp->stream('a', $k1) } 1 .. 5;
my ($k3) = $cp->join_node('c', hostname => 'n3');
$_->close() for @many;
$f = $s->wait(sub { $_[0]{PeersChanged} }, 5);
ok($f, 'the remaining stream still gets changes');

$res = $cp->poll('a', $k1);
is(scalar(@{$res->{json}{Peers} || []}), 1, 'the map has the third node');

$res = $api->get('/health');
is($res->{status}, 200, 'server alive after disconnects');

# the node's own logout ends its stream
$cp->logout('a', $k1);
ok($s->wait_end(5), 'own logout ends the stream');
$s->close();

###############################################################################
# over HTTP/2 as well

my ($k4) = $cp->join_node('a', hostname => 'h2');
my $c = $api->cert('a');
my $port = $t->port(8443);
my $body = encode_json({ NodeKey => $k4, Stream => JSON::PP::true });

my $pid = fork() // die "fork: $!";
if ($pid == 0) {
    sleep(1);
    $cp->join_node('c', hostname => 'h2-peer');
    POSIX::_exit(0);
}

my $d = $t->testdir();
system("curl -sk --http2 --cert $c->{chain} --key $c->{key} -m 3"
    . " -d '$body' https://127.0.0.1:$port/machine/map -o $d/h2.out");
waitpid($pid, 0);

my $raw = $t->read_file('h2.out');
my @frames;
while (length($raw) >= 4) {
    my $n = unpack('V', substr($raw, 0, 4, ''));
    push @frames, eval { decode_json(substr($raw, 0, $n, '')) } // {};
}
ok(@frames >= 3 && $frames[0]{Node} && (grep { $_->{PeersChanged} } @frames)
    && (grep { $_->{KeepAlive} } @frames), 'a map stream over HTTP/2');

my $out = `curl -sk --http2 --cert $c->{chain} --key $c->{key} -m 5 \\
    -d '{"NodeKey":"$k4"}' https://127.0.0.1:$port/machine/map`;
like($out, qr/"Peers":\[\{/, 'a plain map over HTTP/2');

###############################################################################
# a node registered without InstanceID; dstack_vpc_control_wg_path

# as a key made by wgctl preauthkeys create: bound to no instance
my $k5 = $cp->node_key();
my $free = $cp->auth_key('a');
rcli('HSET', 'test:vpc:preauthkey:' . key_id($free), 'instance_id', '');
$res = $cp->register('a', $k5, auth => $free, hostname => 'noinst');
is($res->{status}, 200, 'register without InstanceID');
$res = $cp->poll('a', $k5);
is($res->{json} && $res->{json}{Node}{InstanceID}, '',
    'no InstanceID: ""');

my $conf = $t->read_file('nginx.conf');
my $ka = 'dstack_vpc_control_keepalive';
$t->write_file('bad.conf',
    $conf =~ s/($ka)/dstack_vpc_control_wg_path udp;\n    $1/r);
my ($ok, $msg) = $t->test_config('bad.conf');
ok(!$ok && $msg =~ /invalid value "udp"/, 'nginx -t: bad wg_path refused');

$t->write_file('nginx.conf',
    $conf =~ s/($ka)/dstack_vpc_control_wg_path relay;\n    $1/r);
$t->reload();
$res = $cp->poll('a', $k5);
is($res->{json} && $res->{json}{WGPath}, 'relay',
    'dstack_vpc_control_wg_path relay: WGPath relay');
