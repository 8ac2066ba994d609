#!/usr/bin/perl

# make demo, non-interactively: scripts/demo.sh --check brings up the whole
# local VPC (a gateway emulator, a VPC server and two nodes in network
# namespaces, each CVM started by scripts/entrypoint.sh as in the image),
# walks through the seed's flows, tears everything down, and exits 1 when a
# step failed.  Each printed step is checked here.  UDP between the CVMs is
# blocked (nftables), as in dstack: the VPN must carry its packets over the
# relay path through the gateway emulator (docs/wg-relay.md).  A second
# run with --udp lets UDP through: node2 is then reached directly.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack;

my $t = Test::Dstack->new()
    ->has(qw(entrypoint auth mesh api sim wgctl root stream redis wireguard-go
             supervisord jq envsubst curl ip nft))
    ->plan(26);

my $d = $t->testdir . '/demo';
my $tag = 'dt' . ($$ % 100000);

local $ENV{DEMO_DIR} = $d;
local $ENV{DEMO_TAG} = $tag;
local $ENV{DEMO_KEEP} = 1;
local $ENV{DEMO_TIMEOUT} = 90;
local $ENV{DSTACK_BUILD} = $Test::Dstack::BUILD;

# (output, exit code, steps by number)
sub demo {
    my (@args) = @_;
    my $demo = "$Test::Dstack::REPO/scripts/demo.sh";
    my $out = `timeout 900 $demo --check @args 2>&1`;
    my $rc = $? >> 8;
    my %step;
    for my $s (split /^==> /m, $out) {
        my ($n, $title) = $s =~ /^step (\d+): (.*)/ or next;
        my @r = $s =~ /^    \[(ok|skipped|FAILED)\]/mg;
        my $result = (grep { $_ ne 'ok' } @r)[0] // $r[0];
        $step{$n} = { title => $title, text => $s, result => $result // '' };
    }
    return ($out, $rc, %step);
}

my ($out, $rc, %step) = demo();

sub result {
    my ($n, $re) = @_;
    my $s = $step{$n} || { title => '', result => '', text => '' };
    like($s->{title}, $re, "step $n: $s->{title}");
    return $s;
}

sub vpn_step {
    my ($s, $name) = @_;
    is($s->{result}, 'ok', $name) or diag($s->{text});
}

my $s = result(1, qr/^start/);
is($s->{result}, 'ok', 'server and nodes up through the entry script')
    or diag($out);
like($s->{text}, qr/gateway domain demo\.dstack:443 \(from https/,
    'gateway domain detected from the sys-config');
like($out, qr/UDP between the CVMs: blocked/, 'UDP blocked by default');

$s = result(2, qr/registration/);
is($s->{result}, 'ok', 'nodes registered, shared key, no pre-auth key served')
    or diag($s->{text});

$s = result(3, qr/VPN addresses/);
vpn_step($s, 'VPN addresses and names');

$s = result(4, qr/wgctl status.*relay path/);
vpn_step($s, 'wgctl status, ping over the VPN');
like($s->{text}, qr/^ {6}100\.\d+\.\d+\.\d+ .*  relay  .*  relay rx [1-9]/m,
    'wgctl status shows node2 on the relay path');

$s = result(5, qr/mesh call/);
is($s->{result}, 'ok', 'mesh call with the authenticated x-dstack-app-id')
    or diag($s->{text});

$s = result(6, qr/discover/);
vpn_step($s, 'discover');

$s = result(7, qr/guest-agent fallback/);
is($s->{result}, 'ok', '/info answered by the guest agent')
    or diag($s->{text});

like($out, qr/demo: 7 steps, 0 failed/, 'summary: nothing failed');
is($rc, 0, 'demo --check exit status');

my @left = grep { /^\Q$tag\E-/ } split /\n/, `ip netns list 2>/dev/null`;
is(scalar @left, 0, 'namespaces removed') or diag("@left");
my @procs;
for my $c (glob '/proc/[0-9]*/cmdline') {
    open my $fh, '<', $c or next;
    local $/;
    my $cmd = <$fh> // '';
    push @procs, $cmd =~ s/\0/ /gr if index($cmd, "$d/") >= 0;
}
is(scalar @procs, 0, 'every process of the demo stopped') or diag("@procs");

# --udp: WireGuard goes direct, nothing else changes

($out, $rc, %step) = demo('--udp');
like($out, qr/UDP between the CVMs: allowed/, '--udp: UDP allowed');
$s = result(4, qr/wgctl status.*direct path/);
is($s->{result}, 'ok', '--udp: wgctl status, ping over the VPN')
    or diag($s->{text});
like($s->{text}, qr/^[ ]{6}100\.\d+\.\d+\.\d+[ ].*
    [ ]{2}direct[ ]10\.77\.0\.12:41641[ ]{2}.*[ ]{2}direct[ ]rx[ ][1-9]/mx,
    '--udp: node2 reached directly at its endpoint');
is($rc, 0, '--udp: demo --check exit status') or diag($out);
