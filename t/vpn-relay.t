#!/usr/bin/perl

# The VPN where dstack CVMs really are: no UDP between the nodes (nftables
# in every node namespace lets out only TCP to the gateway emulator and the
# VPC server, and in only the gateway), so every WireGuard datagram takes
# the relay path (docs/wg-relay.md): wgctl -> the node's mesh -> gateway
# (ssl_preread) -> the peer's :443 (conf/backend.conf.template's relay
# location, dstack_auth) -> the peer's wgctl -> its wireguard-go.
#
# Three nodes ping each other by address and by name, a 50 MB transfer
# keeps its sha256, "wg show" has handshakes, "wgctl status --json" says
# relay for every peer.  The gateway killed and restarted mid-ping: the
# traffic resumes, wgctl never restarted.  Refusals, each answered and
# logged with nothing delivered: an app not in the VPC dials a relay
# location, a node claims another app's node key, an unknown destination
# key, a node whose key expired (its tunnels gone within a sweep).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use MIME::Base64 qw(decode_base64);
use POSIX qw(:sys_wait_h);
use Test::More;
use Time::HiRes qw(time sleep);
use Test::Dstack qw(wait_for);
use Test::Dstack::Vpn;

my ($t, $net, $vpn) = Test::Dstack::Vpn->setup(relay => 1);

$t->plan(39);

my $KEEPALIVE = 2;          # the control plane's, s
my $SWEEP = 1;              # the control plane's sweep, s
my $RELAY_KEEPALIVE = 2;    # the relay's frames, s

my @three = qw(n1 n2 n3);
my $allow = join ',', map { $vpn->node_app($_) } 1 .. 3;

# "x" is a fourth CVM whose app is not in the VPC
my $v = $vpn->vpc(nodes => [@three, 'x'], udp => 0, allow => $allow,
    keepalive => $KEEPALIVE,
    server_conf => "dstack_vpc_control_keepalive ${KEEPALIVE}s;\n"
        . "        dstack_vpc_control_sweep_interval ${SWEEP}s;");

sub st { $vpn->status($_[0]) // {} }
sub addr { st($_[0])->{address} }
sub key_hex { unpack('H*', decode_base64(st($_[0])->{public_key} // '')) }

sub pings {
    my ($from, $to, $wait) = @_;
    return ($vpn->run($from, 'ping', '-c', '1', '-w', $wait // 10, $to))[0]
        == 0;
}

# wgctl status --json of a node: {peers => [...]}, by peer name
sub status_json {
    my ($name) = @_;
    my ($rc, $out) = $vpn->wgctl_run($name, 'status', '--json',
        '--state-dir', $vpn->state_dir($name));
    return eval { decode_json($out) } // {};
}

sub peer_status {
    my ($name, $peer) = @_;
    my ($p) = grep { ($_->{name} // '') =~ /^\Q$peer\E(\.|$)/ }
        @{status_json($name)->{peers} || []};
    return $p;
}

# relayed datagrams a node received, all peers
sub relay_rx_packets {
    my ($name) = @_;
    my $n = 0;
    for my $p (@{status_json($name)->{peers} || []}) {
        my $r = $p->{relay} // {};
        $n += $r->{rx_packets} // 0;
    }
    return $n;
}

# --- three nodes join, with no UDP between them ----------------------------

for my $n (@three) {
    $vpn->join_vpc($n, auth_key => $vpn->preauth_key($n),
        relay_keepalive => $RELAY_KEEPALIVE);
}

ok(!grep({ !$vpn->wait_connected($_, 60) } @three),
    'three agents connect through their mesh')
    or diag(map { $vpn->log($_) } @three);

ok(!grep({ !$vpn->wait_peers($_, 2, 30) } @three),
    'every device lists the other two');

my %pid = map { $_ => $vpn->agent_pid($_) } @three;

ok(pings('n1', addr('n2'), 30), 'n1 pings n2 by its VPN address')
    or diag($vpn->log('n1'), $vpn->log('n2'));
ok(pings('n2', addr('n3'), 30), 'n2 pings n3 by its VPN address');
ok(pings('n3', addr('n1'), 30), 'n3 pings n1 by its VPN address');
ok(pings('n1', 'n3.dstack.internal', 30), 'n1 pings n3.dstack.internal');
ok(pings('n3', 'n2.dstack.internal', 30), 'n3 pings n2.dstack.internal');

my $udp = 0;
$udp += $vpn->udp_dropped($_) // 0 for @three;
ok($udp > 0, 'UDP between the nodes was tried and dropped')
    or diag(join ' ', map { "$_: " . ($vpn->udp_dropped($_) // 'undef') }
        @three);

ok(wait_for(sub {
    !grep {
        my $d = $vpn->wg_dump($_);
        !$d || grep { !$_->{handshake} } values %{$d->{peers}};
    } @three
}, 30), 'wg show: a handshake with every peer on every node')
    or diag(explain({ map { $_ => $vpn->wg_dump($_) } @three }));

my @paths = map {
    my $n = $_;
    map { "$n->" . ($_->{name} // '?') . ': ' . ($_->{path} // 'none') }
        @{status_json($n)->{peers} || []}
} @three;
is(scalar(grep { /: relay$/ } @paths), 6,
    'wgctl status --json: relay for every peer')
    or diag(join "\n", @paths);

my ($rc, $out) = $vpn->wgctl_run('n1', 'status', '--state-dir',
    $vpn->state_dir('n1'));
like($out, qr/relay/, 'wgctl status (text) shows the relay path');

# --- 50 MB over the VPN, through the relay ---------------------------------

my $data = $vpn->data_dir('n2') . '/big';
system("head -c 52428800 /dev/urandom > '$data'") == 0 or die "$data";
my ($want) = split ' ', `sha256sum '$data'`;

my $t0 = time;
($rc, $out) = $vpn->run('n1', 'bash', '-o', 'pipefail', '-c',
    'curl -sS -m 600 http://n2.dstack.internal:8080/data/big | sha256sum');
my $dt = time - $t0;
my ($got) = split ' ', $out;
is($got, $want, '50 MB from n2 to n1 over the relay: sha256 intact')
    or diag($out);
diag(sprintf('50 MB over the relay in %.1f s (%.1f Mbit/s)', $dt,
    400 / ($dt || 1)));

# --- the gateway killed and restarted mid-ping -----------------------------

my $ping_log = $t->testdir() . '/logs/ping-gw.log';
my $ping = fork() // die "fork: $!";

if ($ping == 0) {
    open STDOUT, '>', $ping_log;
    open STDERR, '>&', \*STDOUT;
    exec('ip', 'netns', 'exec', $net->netns('n1'), 'ping', '-n', '-i',
        '0.2', '-w', '120', '-c', '400', addr('n2')) or POSIX::_exit(127);
}

sleep 2;
my %gw_mark = map { $_ => -s $vpn->log_file($_) } qw(n1 n2);
my @gw = ($t->master_pid('vpc-gateway.conf'),
    $t->worker_pids('vpc-gateway.conf'));
kill 'KILL', @gw;
ok(wait_for(sub { !grep { kill 0, $_ } @gw }, 10), 'gateway killed (-9)');

sleep 3;
my $replies_down = () = $t->read_file($ping_log) =~ /bytes from/g;
$vpn->nginx('gw', 'vpc-gateway.conf');
my $t_up = time;

ok(wait_for(sub {
    my $n = () = $t->read_file($ping_log) =~ /bytes from/g;
    $n >= $replies_down + 10;
}, 60), 'gateway restarted: pings over the relay resume')
    or diag($t->read_file($ping_log), $vpn->log('n1'));
diag(sprintf('pings resumed within %.1f s of the restart', time - $t_up));

kill 'INT', $ping;
waitpid($ping, 0);

my $reopened = join '', map { substr($vpn->log($_), $gw_mark{$_}) }
    qw(n1 n2);
like($reopened, qr/relay: .*tunnel open/,
    'the relay tunnel between n1 and n2 was opened again');

is(join(',', map { $vpn->agent_pid($_) } @three),
    join(',', map { $pid{$_} } @three), 'no agent was restarted');
ok(!grep({ defined $vpn->reap($_) } @three), 'and every agent still runs');
is(peer_status('n1', 'n2')->{path} // '', 'relay', 'n1 -> n2 still relay');
ok(pings('n2', addr('n3'), 30), 'n2 -> n3 after the restart too');

# --- a stalled peer does not stall the others ---------------------------------
#
# n3's agent stopped (SIGSTOP: its relay engine reads nothing) while n1
# sends UDP at n3 over the VPN (about 3 MB/s, so that n1's own device and
# CPU are not what is saturated): the tunnel n1 -> n3 fills up through n1's
# mesh, the gateway and n3's :443; n1's engine drops what its bounded
# buffer cannot hold, and n1 <-> n2, through the same nginx workers, goes
# on.

my $blast = fork() // die "fork: $!";

if ($blast == 0) {
    exec('ip', 'netns', 'exec', $net->netns('n1'), $^X,
        '-MIO::Socket::INET', '-e', <<'EOF', addr('n3')) or POSIX::_exit(127);
my $s = IO::Socket::INET->new(PeerAddr => "$ARGV[0]:9", Proto => 'udp')
    or die "socket: $!";
my ($d, $end) = ('x' x 1300, time + 20);
while (time < $end) {
    $s->send($d) for 1 .. 24;
    select(undef, undef, undef, 0.01);
}
EOF
}

my $drops0 = (peer_status('n1', 'n3') // {})->{relay}{drops} // 0;
kill 'STOP', $pid{n3};
# the socket and proxy buffers along the way fill up first
sleep 8;

($rc, $out) = $vpn->run('n1', 'ping', '-n', '-q', '-i', '0.2', '-c', 30,
    '-W', 2, addr('n2'));
my ($sent, $recv) = $out =~ /(\d+) packets transmitted, (\d+) received/;
cmp_ok($recv // 0, '>=', 27, 'n3 stalled, n1 sending to it: n1 still '
    . 'pings n2 over the relay') or diag($out);
diag("n3 stalled: n1 -> n2 " . ($recv // 0) . ' of ' . ($sent // 0)
    . ' pings answered, '
    . (($out =~ m{= [\d.]+/([\d.]+)/}) ? "avg $1 ms" : 'no RTT'));

my $drops = (peer_status('n1', 'n3') // {})->{relay}{drops} // 0;
cmp_ok($drops, '>', $drops0, "n1's relay drops what n3 cannot take "
    . '(bounded buffer)');

kill 'CONT', $pid{n3};
kill 'TERM', $blast;
waitpid($blast, 0);

ok(pings('n1', addr('n3'), 30), 'n3 resumed: n1 reaches it again')
    or diag($vpn->log('n1'), $vpn->log('n3'));

# --- refusals -----------------------------------------------------------------

my %k = map { $_ => key_hex($_) } @three;
my $n1 = $v->{n}{n1};
# what n1's agent and nginx logged since a mark
my @logs1 = ($vpn->log_file('n1'), $t->testdir() . '/logs/vpc-n1-error.log');
sub mark { [map { -s $_ // 0 } @logs1] }
sub since {
    my ($m) = @_;
    return join '', map { substr($t->read_file($logs1[$_]), $m->[$_]) }
        0 .. $#logs1;
}

# an app not allowed in the VPC, with a valid certificate from the same KMS
my $rx0 = relay_rx_packets('n1');
my $mark0 = mark();
my ($code, $body) = $vpn->relay_request('x', app => $n1->{app},
    instance => $n1->{instance}, from => key_hex('n2') , to => $k{n1},
    frames => 200);
is($code, 403, 'an app not in the VPC: 403 at the relay location')
    or diag($body);
like(since($mark0), qr/refused.*403|not allowed/i, 'and logged')
    or diag(since($mark0));

# a node of the VPC claims another app's node key as its own
($code, $body) = $vpn->relay_request('n2', app => $n1->{app},
    instance => $n1->{instance}, from => $k{n3}, to => $k{n1},
    frames => 200);
is($code, 403, "n2 claims n3's node key as WG-Relay-From: 403")
    or diag($body);

# an unknown destination key
my $nobody = unpack('H*', pack('C*', map { int rand 256 } 1 .. 32));
($code, $body) = $vpn->relay_request('n2', app => $n1->{app},
    instance => $n1->{instance}, from => $k{n2}, to => $nobody,
    frames => 200);
ok($code == 403 || $code == 404, 'an unknown WG-Relay-To: 403 or 404')
    or diag("$code $body");

# the same dial with n1's own key would pass: the refusals above are not an
# accident of the request's shape
my $refusals = since($mark0);
my $rx1 = relay_rx_packets('n1');
($code, $body) = $vpn->relay_request('n2', app => $n1->{app},
    instance => $n1->{instance}, from => $k{n2}, to => $k{n1},
    frames => 200);
is($code, 101, "n2 with its own key and n1's: 101");
ok(wait_for(sub { relay_rx_packets('n1') - $rx1 >= 200 }, 10),
    'and its 200 datagrams reach n1 (so refused ones would be counted)')
    or diag(relay_rx_packets('n1') - $rx1);

cmp_ok(scalar(() = $refusals =~ /refused.*40[34]|not allowed/gi), '>=', 3,
    'every refusal logged by the relay location or wgctl')
    or diag($refusals);
cmp_ok($rx1 - $rx0, '<', 200,
    'nothing of the refused dials was delivered on n1');

# --- an expired node loses its tunnels within a sweep -----------------------

my $redis = "127.0.0.1:$v->{redis}{port}";
my $wgctl = $vpn->wgctl();
my $admin = "--redis $redis --prefix dstack:vpc:";
$out = `'$wgctl' nodes list --json $admin 2>&1`;
my $nodes = eval { decode_json($out) } // [];
$nodes = $nodes->{nodes} if ref $nodes eq 'HASH';
my ($rec3) = grep { ($_->{name} // $_->{hostname} // '') =~ /^n3(\.|$)/ }
    @$nodes;
ok($rec3, 'n3 in wgctl nodes list') or diag($out);

my $k3 = st('n3')->{public_key};
ok(!grep({ !($vpn->wg_dump($_) // {})->{peers}{$k3} } qw(n1 n2)),
    'before: n3 is on the devices of n1 and n2');

$t0 = time;
$out = `'$wgctl' nodes expire $rec3->{id} $admin 2>&1`;
is($? >> 8, 0, 'wgctl nodes expire n3') or diag($out);

ok(wait_for(sub {
    my ($d1, $d2) = map { $vpn->wg_dump($_) } qw(n1 n2);
    $d1 && $d2 && !$d1->{peers}{$k3} && !$d2->{peers}{$k3};
}, 10 * $SWEEP + 10), 'n3 expired: gone from the devices of n1 and n2');
diag(sprintf('gone %.1f s after the expiry (sweep %d s)', time - $t0,
    $SWEEP));

# the agent's status file follows the device within a second or two
ok(wait_for(sub { !peer_status('n1', 'n3') }, 10),
    'and from n1\'s relay table')
    or diag(explain(peer_status('n1', 'n3')));
ok(!pings('n3', addr('n1'), 3), 'n3 cannot reach n1 any more');

($code, $body) = $vpn->relay_request('n3', app => $n1->{app},
    instance => $n1->{instance}, from => $k{n3}, to => $k{n1});
is($code, 403, "n3's own dial to n1 is now refused") or diag($body);
ok(pings('n1', addr('n2')), 'n1 and n2 unaffected');

# --- the end ------------------------------------------------------------------

ok(!grep({ defined $vpn->reap($_) } qw(n1 n2)), 'n1 and n2 agents run');
