#!/usr/bin/perl

# wgctl metrics: the agent's status file joined with the device, in the
# Prometheus text format.  Without a device: agent and peer gauges from
# the status file, label values escaped, promtool accepts it.  With two
# real wireguard-go devices in network namespaces and a ping through the
# tunnel: the device is read, the peer's handshake age and direct bytes
# are there and agree with "wg show".

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;
use Test::DstackNetns;

my $root = "$FindBin::Bin/..";
my $wgctl = ($ENV{DSTACK_BUILD} // "$root/build") . '/bin/wgctl';

plan skip_all => "wgctl not built ($wgctl); run make bins" unless -x $wgctl;
plan skip_all => 'promtool not found (Debian package prometheus)'
    unless grep { -x "$_/promtool" } split /:/, $ENV{PATH};

my $net = Test::DstackNetns->new();
my $why = $Test::DstackNetns::WHY;

plan tests => 15;

my $dir = tempdir(CLEANUP => 1);

sub write_file {
    my ($name, $text) = @_;
    open my $fh, '>', "$dir/$name" or die "$dir/$name: $!";
    print $fh $text;
    close $fh;
    return "$dir/$name";
}

sub promtool_ok {
    my ($text) = @_;
    my $f = write_file('m.prom', $text);
    my $out = `promtool check metrics < $f 2>&1`;
    return ($? == 0, $out);
}

sub value {
    my ($text, $series) = @_;
    for (split /\n/, $text) {
        return $1 if /^\Q$series\E (\S+)$/;
    }
    return undef;
}

my $K1 = 'A' x 43 . '=';
my $K2 = 'B' x 42 . 'A=';

# no device, no agent: what the status file says

mkdir "$dir/s1";
open my $fh, '>', "$dir/s1/status.json" or die;
print $fh encode_json({ name => 'n1', address => '100.64.0.2',
    interface => 'wgnone0', state => 'connected',
    peers => [
        { id => 1, name => 'we"b\\1', address => '100.64.0.3',
          public_key => $K1, online => JSON::PP::true },
        { id => 2, name => 'db', address => '100.64.0.4',
          public_key => $K2, online => JSON::PP::false },
    ] });
close $fh;

my $out = `$wgctl metrics --state-dir $dir/s1`;
is($?, 0, 'metrics: exit 0');
is(value($out, 'dstack_vpn_agent_up'), 0, 'no agent running');
is(value($out, 'dstack_vpn_device_up'), 0, 'no device');
is(value($out, 'dstack_vpn_peers{state="online"}') . '/'
    . value($out, 'dstack_vpn_peers{state="offline"}'), '1/1',
    'peers by state');
is(value($out, 'dstack_vpn_peer_up{peer="we\\"b\\\\1",'
    . 'address="100.64.0.3"}'), 1, 'label value escaped');
my ($ok, $msg) = promtool_ok($out);
ok($ok, 'promtool accepts it') or diag($msg);

$out = `$wgctl metrics --state-dir $dir/none 2>&1`;
isnt($?, 0, 'no status file: an error');

# a real device: two wireguard-go in namespaces, a ping through

SKIP: {
    skip "no network namespaces: $why", 8 unless $net;
    skip 'wg or ping not found', 8
        unless grep({ -x "$_/wg" } split /:/, $ENV{PATH})
            && grep({ -x "$_/ping" } split /:/, $ENV{PATH});

    my $tag = $net->tag();
    my ($ifa, $ifb) = ("wma$tag", "wmb$tag");

    $net->veth('a', '10.201.0.1/24', 'b', '10.201.0.2/24');

    $net->track_link($_) for $ifa, $ifb;
    $net->run('a', $wgctl, 'create', $ifa);
    $net->run('b', $wgctl, 'create', $ifb);

    my ($ka, $kb) = map { my $k = `$wgctl genkey`; chomp $k; $k } 1 .. 2;
    my ($pka, $pkb) = map {
        my $f = write_file('k', "$_\n");
        my $p = `$wgctl pubkey < $f`;
        chomp $p;
        $p
    } $ka, $kb;

    write_file('a.conf', "[Interface]\nPrivateKey = $ka\nListenPort = 51830\n"
        . "\n[Peer]\nPublicKey = $pkb\nEndpoint = 10.201.0.2:51831\n"
        . "AllowedIPs = 100.64.1.2/32\n");
    write_file('b.conf', "[Interface]\nPrivateKey = $kb\nListenPort = 51831\n"
        . "\n[Peer]\nPublicKey = $pka\nEndpoint = 10.201.0.1:51830\n"
        . "AllowedIPs = 100.64.1.1/32\n");

    $net->run('a', $wgctl, 'setconf', $ifa, "$dir/a.conf");
    $net->run('b', $wgctl, 'setconf', $ifb, "$dir/b.conf");
    $net->run('a', $wgctl, 'addr', $ifa, '100.64.1.1/32', '--route',
        '100.64.1.0/24');
    $net->run('b', $wgctl, 'addr', $ifb, '100.64.1.2/32', '--route',
        '100.64.1.0/24');

    my ($rc, $ping) = $net->run('a', 'ping', '-c', '3', '-i', '0.2', '-w',
        '20', '100.64.1.2');
    is($rc, 0, 'device: ping through the tunnel') or diag($ping);

    mkdir "$dir/s2";
    open $fh, '>', "$dir/s2/status.json" or die;
    print $fh encode_json({ name => 'a', address => '100.64.1.1',
        interface => $ifa, state => 'connected',
        peers => [ { id => 2, name => 'b', address => '100.64.1.2',
            public_key => $pkb, online => JSON::PP::true } ] });
    close $fh;

    ($rc, $out) = $net->run('a', $wgctl, 'metrics', '--state-dir',
        "$dir/s2");
    is($rc, 0, 'device: metrics exit 0') or diag($out);
    is(value($out, 'dstack_vpn_device_up'), 1, 'device: read');

    my (undef, $dump) = $net->run('a', 'wg', 'show', $ifa, 'dump');
    my ($peer) = grep { /^\Q$pkb\E\t/ } split /\n/, $dump;
    my @f = split /\t/, $peer // '';

    my $age = value($out, 'dstack_vpn_peer_handshake_age_seconds{peer="b"}');
    ok(defined $age && $age >= 0 && $age < 120,
        'device: handshake age ' . ($age // 'none'));
    is(value($out, 'dstack_vpn_peer_path{peer="b",path="direct"}'), 1,
        'device: the direct path');

    my $rx = value($out, 'dstack_vpn_peer_receive_bytes_total{peer="b",'
        . 'path="direct"}') // 0;
    my $tx = value($out, 'dstack_vpn_peer_transmit_bytes_total{peer="b",'
        . 'path="direct"}') // 0;

    # the counters only grow: between the two reads at most keepalives
    ok($rx > 0 && $rx <= ($f[5] // 0), "device: rx $rx (wg show $f[5])");
    ok($tx > 0 && $tx <= ($f[6] // 0), "device: tx $tx (wg show $f[6])");

    ($ok, $msg) = promtool_ok($out);
    ok($ok, 'device: promtool accepts it') or diag($msg);
}
