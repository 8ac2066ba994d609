#!/usr/bin/perl

# The VPN end to end, nothing stood in for: network namespaces on a
# bridged underlay; the VPC server (nginx with the auth and VPC API
# modules, conf/vpc-api.conf as shipped, Redis); the dstack gateway
# emulator (nginx stream, ssl_preread); nodes with nginx (the mesh as
# shipped in conf/node-mesh.conf, dstack_auth on :443), wireguard-go and
# "wgctl up" reaching the control plane through their own mesh.
#
# Joining with single-use pre-auth keys from the REST API, distinct
# addresses, every device listing the others, HTTP between nodes over VPN
# addresses and <name>.dstack.internal, a fourth node appearing without a
# restart, kill -9 and restart of an agent (same address, same key, no
# duplicate), an nginx reload and a Redis restart of the server (agents
# reconnect, the VPN stays up), a used key refused, a node that polls
# another app's node key refused, and an ephemeral node removed after the
# inactivity timeout once it is gone.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);
use Test::Dstack qw(wait_for);
use Test::DstackNetns;
use Test::Dstack::Vpn;

my $t = Test::Dstack->new()->has(qw(auth mesh api stream sim redis wgctl wg
    curl ping));

my $net = Test::DstackNetns->new()
    or $t->skip_all($Test::DstackNetns::WHY);

$t->plan(35);

# the server's timers, short for the test (docs/control-plane.md)
my $KEEPALIVE = 2;
my $EXPIRY = 6;

my $vpn = Test::Dstack::Vpn->new($t, $net);
my $v = $vpn->vpc(nodes => [qw(n1 n2 n3 n4 n5)], keepalive => $KEEPALIVE,
    server_conf => "dstack_vpc_control_keepalive ${KEEPALIVE}s;\n"
        . "        dstack_vpc_control_inactivity_timeout ${EXPIRY}s;");

my @three = qw(n1 n2 n3);
my %key;

sub pub { $vpn->status($_[0])->{public_key} }
sub addr { $vpn->status($_[0])->{address} }

sub http_ok {
    my ($from, $url) = @_;
    my ($rc, $out) = $vpn->run($from, 'curl', '-sS', '-m', '10', $url);
    return $rc == 0 ? $out : "curl: $out";
}

sub pings {
    my ($from, $to) = @_;
    return ($vpn->run($from, 'ping', '-c', '1', '-w', '10', $to))[0] == 0;
}

# a peer's path in wgctl status: "direct <endpoint>" or "relay"
sub path_to {
    my ($name, $peer) = @_;
    my ($rc, $out) = $vpn->wgctl_run($name, 'status', '--json',
        '--state-dir', $vpn->state_dir($name));
    my $s = eval { decode_json($out) } // {};
    my ($p) = grep { ($_->{name} // '') =~ /^\Q$peer\E(\.|$)/ }
        @{$s->{peers} || []};
    return ($p // {})->{path} // '';
}

sub direct_pair {
    my ($x, $y) = @_;
    return wait_for(sub {
        pings($x, addr($y));
        path_to($x, $y) =~ /^direct/ && path_to($y, $x) =~ /^direct/;
    }, 60);
}

sub peers_are {
    my ($name, @others) = @_;

    return wait_for(sub {
        my $d = $vpn->wg_dump($name) or return 0;
        my %want = map { pub($_) => 1 } @others;
        keys %{$d->{peers}} == keys %want
            && !grep { !$want{$_} } keys %{$d->{peers}};
    }, 20);
}

# --- three nodes join ---------------------------------------------------------

for my $n (@three) {
    $key{$n} = $vpn->preauth_key($n);
    $vpn->join_vpc($n, auth_key => $key{$n}, direct_retry => 2);
}

ok(!grep({ !$_ } map { $key{$_} } @three), 'pre-auth keys from the API');

ok(!grep({ !$vpn->wait_connected($_, 30) } @three),
    'three agents connect through their mesh')
    or diag(map { $vpn->log($_) } @three);

my @addr = map { addr($_) } @three;
is(scalar(grep { m{^100\.(12[89]|1[3-8]\d|19[01])\.\d+\.\d+$} } @addr), 3,
    'addresses in 100.128.0.0/10');
is(scalar(keys %{{ map { $_ => 1 } @addr }}), 3, 'three distinct addresses');

for my $n (@three) {
    ok(peers_are($n, grep { $_ ne $n } @three),
        "wg show in $n lists the other two");
}

is(http_ok('n1', 'http://' . addr('n2') . ':8080/'), "n2\n",
    'HTTP from n1 to n2 over its VPN address');
is(http_ok('n2', 'http://n3.dstack.internal:8080/'), "n3\n",
    'HTTP from n2 to n3.dstack.internal');
is(http_ok('n3', 'http://n1.dstack.internal:8080/'), "n1\n",
    'HTTP from n3 to n1.dstack.internal');

# --- a fourth node appears without restarting anything -------------------------

$key{n4} = $vpn->preauth_key('n4');
my $t0 = time;
$vpn->join_vpc('n4', auth_key => $key{n4}, direct_retry => 2,
    args => ['--ephemeral']);
ok($vpn->wait_connected('n4', 30), 'a fourth node joins');

sub on_device {
    my ($name, $key) = @_;
    my $d = $vpn->wg_dump($name) or return 0;
    return exists $d->{peers}{$key};
}

my $k4 = pub('n4');
my $seen = wait_for(sub { !grep { !on_device($_, $k4) } @three }, 20);
ok($seen, 'the other three devices have it');
diag(sprintf('fourth node: joined and on every device %.2f s after start',
    time - $t0));

is(http_ok('n4', 'http://n1.dstack.internal:8080/'), "n1\n",
    'and it reaches n1 by name');

# --- a used single-use key, another app's node key ----------------------------

$vpn->agent('n5', server => 'http://127.0.0.1:80', target_app =>
    $Test::Dstack::Vpn::SERVER_APP, auth_key => $key{n4}, hosts => 0,
    args => ['--instance-id', $vpn->node_instance(5)]);
is(($vpn->wait_exit('n5', 30) // 0) >> 8, 1, 'a used single-use key: exit 1');
like($vpn->log('n5'), qr/register: refused with 40[13]/,
    'refused by the server');

my ($code) = $vpn->mesh('n2', '/machine/map', body => encode_json({
    Version => 1, NodeKey => $vpn->status('n1')->{node_key},
    Stream => JSON::PP::false }));
is($code, 403, "n2 (another app) cannot poll n1's node key");

($code) = $vpn->mesh('n1', '/machine/map', body => encode_json({
    Version => 1, NodeKey => $vpn->status('n1')->{node_key},
    Stream => JSON::PP::false }));
is($code, 200, 'n1 can');

# --- kill -9 and restart: same address, same key, no duplicate ----------------

my ($a3, $k3) = (addr('n3'), pub('n3'));
ok(direct_pair('n1', 'n3'), 'n1 and n3 on the direct path');
$vpn->stop_agent('n3', 'KILL');
ok(pings('n1', $a3), 'agent killed: n3 still answers over the VPN');

$vpn->join_vpc('n3', auth_key => $key{n3}, direct_retry => 2);
ok($vpn->wait_connected('n3', 30), 'restarted agent connects');
is(addr('n3'), $a3, 'with the same address');
is(pub('n3'), $k3, 'and the same key');
ok(peers_are('n1', qw(n2 n3 n4)), 'no duplicate on the other devices');
unlike($vpn->log('n3'), qr/register: refused/,
    'its used key was not needed again');

# --- the server reloads, Redis restarts: reconnect, the VPN stays up ----------

sub full_maps { scalar(() = $vpn->log($_[0]) =~ /map: full/g) }

my %maps = map { $_ => full_maps($_) } @three;

$t->reload('vpc-server.conf');
ok(pings('n1', addr('n2')), 'server reload: the VPN stays up');
ok(wait_for(sub {
    !grep { full_maps($_) <= $maps{$_} } @three;
}, 30), 'and every agent has a new map stream');

%maps = map { $_ => full_maps($_) } @three;

$t->restart_redis($v->{redis});
ok(pings('n2', addr('n3')), 'Redis restart: the VPN stays up');
ok(wait_for(sub {
    !grep { $vpn->status($_)->{state} ne 'connected'
        || full_maps($_) <= $maps{$_} } @three
}, 30), 'agents connected after it, with new map streams');
ok(peers_are('n2', qw(n1 n3 n4)), 'peers unchanged');

# --- a node that is gone is removed after the inactivity timeout --------------

$t0 = time;
$vpn->stop_agent('n4', 'KILL');
$net->run('n4', 'ip', 'link', 'del', $vpn->ifname('n4'));

ok(wait_for(sub { !grep { on_device($_, $k4) } @three }, $EXPIRY * 4 + 10),
    'the ephemeral node killed: removed from every device');
diag(sprintf('removed %.1f s after it was killed (timeout %d s)',
    time - $t0, $EXPIRY));

ok(wait_for(sub { $vpn->hosts('n1') !~ /n4\.dstack\.internal/ }, 10),
    'and from the hosts blocks');

# --- leaving cleanly --------------------------------------------------------------

# UDP flows here, so the pair settles on the direct path (a first handshake
# that raced the peer's map may have sent it to the relay for a while);
# only the direct path outlives the agent, whose relay engine goes with it
ok(direct_pair('n1', 'n2'), 'n1 and n2 on the direct path');

is($vpn->stop_agent('n2') >> 8, 0, 'SIGTERM: the agent exits 0');
ok(pings('n1', addr('n2')), 'and the VPN stays up');

my ($rc, $out) = $vpn->wgctl_run('n1', 'status', '--json', '--state-dir',
    $vpn->state_dir('n1'));
my $st = eval { decode_json($out) } // {};
ok($st->{running} && @{$st->{peers} || []} == 2, 'status on n1: two peers')
    or diag($out);
