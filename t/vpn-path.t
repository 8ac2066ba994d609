#!/usr/bin/perl

# The path of a peer chosen per peer, automatically (docs/wg-relay.md,
# docs/wgctl.md): two nodes with UDP between them use "direct"; UDP then
# blocked (nftables) in the middle of a TCP transfer over the VPN: the peer
# moves to "relay" within the configured --path-timeout and the transfer
# completes with its sha256 intact; UDP let through again: back to
# "direct" (a short --direct-retry).  All real: namespaces on a bridge,
# the gateway emulator, nginx mesh and :443, wireguard-go, wgctl.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use POSIX qw(:sys_wait_h);
use Test::More;
use Time::HiRes qw(time sleep);
use Test::Dstack qw(wait_for);
use Test::Dstack::Vpn;

my ($t, $net, $vpn) = Test::Dstack::Vpn->setup(relay => 1);

$t->plan(15);

my $KEEPALIVE = 2;
my $PATH_TIMEOUT = 3;       # s, --path-timeout
my $DIRECT_RETRY = 2;       # s, --direct-retry
my $SLACK = 15;              # s, over the path timeout
my $RATE = 2000;            # KB/s of the transfer
my $SIZE = 40;              # MB

my $v = $vpn->vpc(nodes => [qw(n1 n2)], keepalive => $KEEPALIVE,
    server_conf => "dstack_vpc_control_keepalive ${KEEPALIVE}s;");

sub st { $vpn->status($_[0]) // {} }
sub addr { st($_[0])->{address} }

sub pings {
    my ($from, $to, $wait) = @_;
    return ($vpn->run($from, 'ping', '-c', '1', '-w', $wait // 10, $to))[0]
        == 0;
}

sub peer_status {
    my ($name, $peer) = @_;
    my ($rc, $out) = $vpn->wgctl_run($name, 'status', '--json',
        '--state-dir', $vpn->state_dir($name));
    my $s = eval { decode_json($out) } // {};
    my ($p) = grep { ($_->{name} // '') =~ /^\Q$peer\E(\.|$)/ }
        @{$s->{peers} || []};
    return $p // {};
}

sub path_of { peer_status(@_)->{path} // '' }

for my $n (qw(n1 n2)) {
    $vpn->join_vpc($n, auth_key => $vpn->preauth_key($n),
        path_timeout => $PATH_TIMEOUT, direct_retry => $DIRECT_RETRY,
        relay_keepalive => 2);
}

ok($vpn->wait_connected('n1', 60) && $vpn->wait_connected('n2', 60),
    'two agents connect') or diag($vpn->log('n1'), $vpn->log('n2'));
ok(pings('n1', addr('n2'), 30), 'n1 pings n2 over the VPN');

ok(wait_for(sub {
    path_of('n1', 'n2') eq 'direct' && path_of('n2', 'n1') eq 'direct'
}, 30), 'UDP allowed: both sides use direct')
    or diag(explain(peer_status('n1', 'n2')), explain(peer_status('n2',
        'n1')));
like(peer_status('n1', 'n2')->{endpoint} // '',
    qr/^\Q$v->{ip}{n2}\E:\d+$/, "n1's endpoint for n2 is n2's lan address");

# --- UDP blocked mid-transfer -----------------------------------------------

my $data = $vpn->data_dir('n2') . '/big';
system("head -c ${SIZE}M /dev/urandom > '$data'") == 0 or die $data;
my ($want) = split ' ', `sha256sum '$data'`;

my $got_file = $t->testdir() . '/got';
my $curl_log = $t->testdir() . '/logs/curl-path.log';
my $curl = fork() // die "fork: $!";

if ($curl == 0) {
    open STDOUT, '>', $curl_log;
    open STDERR, '>&', \*STDOUT;
    exec('ip', 'netns', 'exec', $net->netns('n1'), 'curl', '-sS', '-m',
        '600', '--limit-rate', "${RATE}k", '-o', $got_file,
        'http://n2.dstack.internal:8080/data/big') or POSIX::_exit(127);
}

ok(wait_for(sub { (-s $got_file // 0) > 2 << 20 }, 30),
    'a transfer runs over the direct path');

my $t0 = time;
$vpn->block_udp('n2');

for my $side (['n1', 'n2'], ['n2', 'n1']) {
    my $seen = wait_for(sub { path_of(@$side) eq 'relay' },
        $PATH_TIMEOUT + $SLACK + 5);
    my $dt = time - $t0;
    # the agent looks once a second and its status file follows; 2 cores
    # shared by the whole suite
    ok($seen && $dt <= $PATH_TIMEOUT + $SLACK, "UDP blocked: $side->[0] "
        . "moves $side->[1] to relay within the path timeout (+$SLACK s "
        . 'for the agent tick and load)');
    diag(sprintf('%s: %s on relay %.1f s after UDP was blocked '
        . '(--path-timeout %d)', $side->[0], $side->[1], $dt, $PATH_TIMEOUT));
}

my $size_at_switch = -s $got_file // 0;
ok($size_at_switch < $SIZE << 20, 'while the transfer still ran')
    or diag("$size_at_switch bytes already");
ok($vpn->udp_dropped('n2') > 0, 'the firewall did drop UDP');

my $ended = wait_for(sub { waitpid($curl, WNOHANG) == $curl }, 300);
my $curl_rc = $ended ? $? >> 8 : -1;
ok($ended, 'the transfer ends');
if (!$ended) {
    kill 'KILL', $curl;
    waitpid($curl, 0);
}
is($curl_rc, 0, 'curl exits 0') or diag($t->read_file($curl_log));
my ($got) = split ' ', `sha256sum '$got_file'`;
is($got, $want, "$SIZE MB: sha256 intact across the switch");

# --- UDP stays blocked: direct is retried less and less often ------------

my $mark = -s $vpn->log_file('n1');
my ($prc, $pout) = $vpn->run('n1', 'ping', '-n', '-q', '-i', '0.2', '-c',
    150, '-w', 60, addr('n2'));
my ($sent, $recv) = $pout =~ /(\d+) packets transmitted, (\d+) received/;
my $probes = () = substr($vpn->log('n1'), $mark) =~ /direct \(probing\)/g;

cmp_ok($probes, '<=', 4, 'UDP still blocked: n1 probes direct with a '
    . 'doubling interval (at most 4 probes in 30 s)');
diag(sprintf('30 s on the relay with UDP blocked: %d direct probes, '
    . '%d of %d pings answered', $probes, $recv // 0, $sent // 0));

# --- UDP back: direct again ---------------------------------------------------

$t0 = time;
$vpn->unblock_udp('n2');

ok(wait_for(sub {
    pings('n1', addr('n2'), 2);
    path_of('n1', 'n2') eq 'direct' && path_of('n2', 'n1') eq 'direct'
}, $DIRECT_RETRY * 8 + $PATH_TIMEOUT + 30), 'UDP unblocked: back to direct')
    or diag(explain(peer_status('n1', 'n2')), $vpn->log('n1'));
diag(sprintf('direct again %.1f s after UDP was let through '
    . '(--direct-retry %d)', time - $t0, $DIRECT_RETRY));

ok(wait_for(sub {
    path_of('n1', 'n2') eq 'direct' && path_of('n2', 'n1') eq 'direct'
}, 3) && pings('n2', addr('n1')), 'and the VPN works over it');
