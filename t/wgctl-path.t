#!/usr/bin/perl

# wgctl up's per-peer path choice (docs/wgctl.md, "Paths") against the
# scripted control plane (t/lib/Test/Dstack/FakeControl.pm) in network
# namespaces with real wireguard-go devices: a peer starts direct, moves
# to its relay endpoint when UDP is blocked and back when it is not; the
# map's WGPath and --path force a path; a peer without endpoints is
# relayed; status and status --json show path, bytes and relay state.
# The relay's own tunnels (through nginx and the gateway) are not carried
# here: the mesh is the stand-in, which refuses them; t/vpn-*.t run them.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Test::More;
use Test::Dstack qw(wait_for);
use Test::DstackNetns;
use Test::Dstack::FakeControl;
use Test::Dstack::Vpn;

my $t = Test::Dstack->new()->has(qw(wgctl wg ping nft));

my $net = Test::DstackNetns->new()
    or $t->skip_all($Test::DstackNetns::WHY);

$t->plan(31);

my $d = $t->testdir();
my %ip = $net->lan('10.201.0', qw(srv a b c));
my $ctl = "$d/control.sock";
my $server = "http://$ip{srv}:8080";
my $vpn = Test::Dstack::Vpn->new($t, $net);
my $app = '5b' x 20;

$vpn->perl_daemon('srv', 'Test::Dstack::FakeControl', 'main',
    '--listen', "$ip{srv}:8080", '--control', $ctl, '--keepalive', 1,
    '--key', 'hskey-auth-good', '--app-id', $app);
wait_for(sub { -S $ctl }, 10) or die "control-plane stand-in did not start\n";

sub control { Test::Dstack::FakeControl::command($ctl, {@_}) }

sub agent {
    my ($name, @args) = @_;
    $vpn->agent($name, server => $server, auth_key => 'hskey-auth-good',
        args => ['--relay-socket', "$d/relay-$name.sock",
            '--path-timeout', 2, '--direct-retry', 3, @args]);
}

sub status_json {
    my ($name) = @_;
    my ($rc, $out) = $vpn->wgctl_run($name, 'status', '--json',
        '--state-dir', $vpn->state_dir($name));
    return eval { decode_json($out) } // {};
}

sub peer {
    my ($name, $peer) = @_;
    my ($p) = grep { $_->{name} eq "$peer.dstack.internal" }
        @{status_json($name)->{peers} || []};
    return $p // {};
}

# the device's endpoint for a peer, by the peer's name
sub endpoint {
    my ($name, $peer) = @_;
    my $key = peer($name, $peer)->{public_key} // '';
    my $w = $vpn->wg_dump($name) or return '';
    return $w->{peers}{$key} ? $w->{peers}{$key}{endpoint} : '';
}

sub b64 { encode_base64(pack('H*', $_[0]), '') }

# pings in the background, one every 0.2 s, until killed
sub pinger {
    my ($from, $to) = @_;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', "$d/ping.log";
        open STDERR, '>&', \*STDOUT;
        exec('ip', 'netns', 'exec', $net->netns($from), 'ping', '-i', '0.2',
            '-W', '1', $to) or POSIX::_exit(127);
    }
    return $pid;
}

# --- auto: direct first ------------------------------------------------------

agent('a', '--instance-id', 'c0ffee');
agent('b');

ok($vpn->wait_connected('a') && $vpn->wait_connected('b')
    && $vpn->wait_peers('a', 1) && $vpn->wait_peers('b', 1),
    'two agents connect') or diag($vpn->log('a'));

my ($sa, $sb) = ($vpn->status('a'), $vpn->status('b'));

my ($rc, $out) = $vpn->run('a', 'ping', '-c', '1', '-w', '10',
    $sb->{address});
is($rc, 0, 'ping over the VPN') or diag($out);

ok(-S "$d/relay-a.sock", 'the relay listens on --relay-socket');

my ($reg) = grep { $_->{path} eq '/machine/register'
    && $_->{body}{Hostinfo}{Hostname} eq 'a' } @{control(cmd => 'requests')};
is($reg && $reg->{body}{InstanceID}, 'c0ffee',
    'RegisterRequest carries InstanceID');

ok(wait_for(sub { (peer('a', 'b')->{path} // '') eq 'direct' }, 10),
    'status --json: path direct');

my $pb = peer('a', 'b');
is($pb->{endpoint}, "$ip{b}:41641", 'the endpoint is b\'s advertised one');
like($pb->{relay_endpoint} // '', qr/^127\.0\.0\.1:\d+$/,
    'and it has a relay endpoint');
ok($pb->{direct_rx_bytes} > 0 && $pb->{relay_rx_bytes} == 0
    && defined $pb->{handshake_age} && $pb->{handshake_age} < 60
    && ref $pb->{relay} eq 'HASH' && defined $pb->{relay}{state}
    && defined $pb->{relay}{drops},
    'direct bytes, handshake age, relay state and drops')
    or diag(explain $pb);
is(peer('b', 'a')->{instance_id}, 'c0ffee', 'peers see the InstanceID');
is($pb->{app_id}, $app, 'and the AppID');

($rc, $out) = $vpn->wgctl_run('a', 'status', '--state-dir',
    $vpn->state_dir('a'));
like($out, qr/b\.dstack\.internal\s+online\s+direct \Q$ip{b}\E:41641\s+handshake \d+ s ago\s+direct rx \S+ \S+ tx .*relay rx .*drops\)/,
    'status: direct <endpoint>, bytes per path');
like($out, qr/paths: auto; relay tunnels in on \Q$d\E\/relay-a\.sock/,
    'status: the path mode and the relay');

# --- UDP blocked: relay; unblocked: direct again -----------------------------

my $ping = pinger('a', $sb->{address});
$net->block_udp('a');

ok(wait_for(sub { (peer('a', 'b')->{path} // '') eq 'relay' }, 15),
    'UDP blocked: the peer moves to the relay');
$pb = peer('a', 'b');
is(endpoint('a', 'b'), $pb->{relay_endpoint},
    'the device sends to the relay endpoint');
like($vpn->log('a'), qr/path: b\.dstack\.internal: relay \(no answer over direct\) 127\.0\.0\.1:\d+/,
    'the switch is logged with its reason');
ok($vpn->wg_dump('a')->{peers}{$pb->{public_key}},
    'the peer stays on the device');

# a full check of the device (SIGHUP) leaves the path as it is
my $mark = length $vpn->log('a');
kill 'HUP', $vpn->agent_pid('a');
ok(wait_for(sub { $vpn->log('a') =~ /SIGHUP/ }, 10)
    && !wait_for(sub { substr($vpn->log('a'), $mark)
        =~ /\d+ added, \d+ removed, [1-9]\d* changed/ }, 3),
    'a resync does not put the map\'s endpoint back')
    or diag(substr($vpn->log('a'), $mark));

$net->unblock_udp('a');

ok(wait_for(sub { (peer('a', 'b')->{path} // '') eq 'direct' }, 60),
    'UDP back: direct again') or diag($vpn->log('a'));
is(endpoint('a', 'b'), "$ip{b}:41641", 'at b\'s address');
ok(peer('a', 'b')->{path_switches} >= 2, 'two switches counted');

kill 'TERM', $ping;
waitpid($ping, 0);

($rc, $out) = $vpn->run('a', 'ping', '-c', '1', '-w', '10', $sb->{address});
is($rc, 0, 'and the VPN carries packets directly') or diag($out);

# --- a peer without endpoints, a peer without AppID ---------------------------

control(cmd => 'add', node => { name => 'noep', key => 'nodekey:'
    . sprintf('%064x', 901), ip => '100.128.7.1', endpoints => [] });
control(cmd => 'add', node => { name => 'noapp', key => 'nodekey:'
    . sprintf('%064x', 902), ip => '100.128.7.2', app => undef,
    endpoints => ['10.201.0.99:41641'] });

control(cmd => 'add', node => { name => 'mine', key => 'nodekey:'
    . sprintf('%064x', 903), ip => '100.128.7.3',
    endpoints => ["$ip{a}:41641"] });

ok(wait_for(sub { (peer('a', 'noep')->{path} // '') eq 'relay' }, 15)
    && endpoint('a', 'noep') eq peer('a', 'noep')->{relay_endpoint},
    'a peer that advertises no endpoint is relayed');
ok(wait_for(sub { (peer('a', 'mine')->{path} // '') eq 'relay' }, 15)
    && endpoint('a', 'mine') eq peer('a', 'mine')->{relay_endpoint}
    && peer('a', 'mine')->{path_switches} == 0
    && $vpn->log('a') !~ /path: mine\.dstack\.internal: direct/,
    'one that advertises only this host\'s own address too, from the start '
    . '(user-mode NAT)');
ok(wait_for(sub { endpoint('a', 'noapp') eq '10.201.0.99:41641' }, 15)
    && !defined peer('a', 'noapp')->{relay},
    'a peer without AppID has no relay: direct only');

# --- forced paths ------------------------------------------------------------

control(cmd => 'wgpath', path => 'relay');
control(cmd => 'close');

ok(wait_for(sub { (peer('b', 'a')->{path} // '') eq 'relay'
    && (status_json('b')->{path_mode} // '') eq 'relay' }, 20),
    'WGPath relay in the map: relay') or diag($vpn->log('b'));
is(endpoint('b', 'a'), peer('b', 'a')->{relay_endpoint},
    'the device sends to the relay endpoint');

agent('c', '--path', 'direct');
ok($vpn->wait_connected('c') && wait_for(sub {
    (peer('c', 'a')->{path} // '') eq 'direct'
    && endpoint('c', 'a') eq "$ip{a}:41641" }, 20),
    '--path direct wins over the map\'s WGPath');

control(cmd => 'wgpath', path => undef);
control(cmd => 'close');

ok(wait_for(sub { (status_json('b')->{path_mode} // '') eq 'auto' }, 20),
    'a map without WGPath: auto again');

# --- the command line --------------------------------------------------------

($rc, $out) = $vpn->wgctl_run('a', 'up', '--server', $server,
    '--auth-key', 'k', '--hostname', 'x', '--path', 'udp');
ok($rc == 1 && $out =~ /invalid path "udp" \(auto, direct or relay\)/,
    'invalid --path, quoted');

($rc, $out) = $vpn->wgctl_run('a', 'up', '--server', $server,
    '--auth-key', 'k', '--hostname', 'x', '--path-timeout', '0');
ok($rc == 1 && $out =~ /invalid path timeout "0"/,
    'invalid --path-timeout, quoted');

($rc, $out) = $vpn->wgctl_run('a', 'up', '--server', $server,
    '--auth-key', 'k', '--hostname', 'x', '--mesh', 'mesh.local');
ok($rc == 1 && $out =~ /invalid mesh "mesh\.local" \(<ipv4>:<port>\)/,
    'invalid --mesh, quoted');
