#!/usr/bin/perl

# wgctl against real wireguard-go devices in two network namespaces joined
# by a veth pair: keys, configuration, addresses, routes, a ping through the
# tunnel, "wg show" agreeing with what wgctl set, 1000 peers applied with
# syncconf, a no-op re-apply that sends nothing, a one-peer change that
# sends one small request, and removal.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp qw(tempdir);
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Test::More;
use Test::Dstack;
use Test::DstackNetns;

my $root = "$FindBin::Bin/..";
my $wgctl = ($ENV{DSTACK_BUILD} // "$root/build") . '/bin/wgctl';

Test::Dstack->skip_all("wgctl not built ($wgctl); run make bins") unless -x $wgctl;

my $net = Test::DstackNetns->new()
    or Test::Dstack->skip_all($Test::DstackNetns::WHY);

for my $prog (qw(wg ping)) {
    Test::Dstack->skip_all("$prog not found")
        unless grep { -x "$_/$prog" } split /:/, $ENV{PATH};
}

plan tests => 34;

my $tag = $net->tag();
my ($ifa, $ifb) = ("wga$tag", "wgb$tag");
my $dir = tempdir(CLEANUP => 1);

$net->veth('a', '10.200.0.1/24', 'b', '10.200.0.2/24');

sub write_file {
    my ($name, $text) = @_;

    open my $fh, '>', "$dir/$name" or die "$dir/$name: $!";
    print $fh $text;
    close $fh;
    chmod 0600, "$dir/$name";

    return "$dir/$name";
}

sub wgctl {
    my ($ns, @args) = @_;
    return $net->run($ns, $wgctl, @args);
}

sub random_key {
    open my $fh, '<', '/dev/urandom' or die;
    read $fh, my $bytes, 32;
    close $fh;
    return encode_base64($bytes, '');
}

sub pipe_to {
    my ($input, @cmd) = @_;

    my $in = write_file('stdin', $input);
    my $out = `@cmd < $in`;
    unlink $in;
    chomp $out;

    return $out;
}

# wg show <if> dump: { private, public, port, peers => { key => {...} } }
sub wg_dump {
    my ($ns, $ifname) = @_;

    my ($rc, $out) = $net->run($ns, 'wg', 'show', $ifname, 'dump');
    return { peers => {} } if $rc != 0;

    my @lines = split /\n/, $out;
    my @dev = split /\t/, shift @lines;
    my %d = (private => $dev[0], public => $dev[1], port => $dev[2],
        peers => {});

    for (@lines) {
        my @f = split /\t/;
        $d{peers}{$f[0]} = { endpoint => $f[2], allowed => $f[3],
            handshake => $f[4], rx => $f[5], tx => $f[6],
            keepalive => $f[7] };
    }

    return \%d;
}

# devices: one adopted from a wireguard-go we start, one wgctl starts

ok($net->wireguard_go('a', $ifa), 'wireguard-go started in namespace a');

my ($rc, $out) = wgctl('a', '-v', 'create', $ifa);
like($out, qr/is up over uapi/, 'an existing userspace device is adopted');

$net->track_link($ifb);
($rc, $out) = wgctl('b', '-v', 'create', $ifb);
is($rc, 0, 'wgctl create starts wireguard-go in namespace b');
ok(-S "/var/run/wireguard/$ifb.sock", 'its UAPI socket exists');

# keys

my ($ka, $kb) = map { (wgctl('a', 'genkey'))[1] } 1 .. 2;
chomp($ka, $kb);
like($ka, qr{^[A-Za-z0-9+/]{43}=$}, 'genkey prints a base64 key');

my $pka = pipe_to("$ka\n", $wgctl, 'pubkey');
my $pkb = pipe_to("$kb\n", $wgctl, 'pubkey');
is($pka, pipe_to("$ka\n", 'wg', 'pubkey'), 'pubkey agrees with wg pubkey');

# configuration, addresses, routes

my $conf_a = write_file('a.conf', <<"EOF");
[Interface]
PrivateKey = $ka
ListenPort = 51820

[Peer]
PublicKey = $pkb
Endpoint = 10.200.0.2:51821
AllowedIPs = 100.64.0.2/32
PersistentKeepalive = 15
EOF

my $text_b = <<"EOF";
[Interface]
PrivateKey = $kb
ListenPort = 51821

[Peer]
PublicKey = $pka
Endpoint = 10.200.0.1:51820
AllowedIPs = 100.64.0.1/32
EOF
my $conf_b = write_file('b.conf', $text_b);

($rc, $out) = wgctl('a', 'setconf', $ifa, $conf_a);
is($rc, 0, 'setconf on a') or diag($out);
($rc, $out) = wgctl('b', '-v', 'syncconf', $ifb, $conf_b);
like($out, qr/1 added, 0 removed, 0 changed, 0 unchanged peers; private key set; listen port set; sent 1 request/,
    'syncconf on a fresh device adds the peer, sets key and port');

($rc, $out) = wgctl('a', 'addr', $ifa, '100.64.0.1/32', '--mtu', '1380',
    '--route', '100.64.0.0/10');
is($rc, 0, 'address, MTU, route on a') or diag($out);
($rc, $out) = wgctl('b', 'addr', $ifb, '100.64.0.2', '--route',
    '100.64.0.0/10');
is($rc, 0, 'address and route on b') or diag($out);

($rc, $out) = $net->run('a', 'ip', '-o', 'addr', 'show', 'dev', $ifa);
like($out, qr{inet 100\.64\.0\.1/32}, 'address set');
($rc, $out) = $net->run('a', 'ip', '-o', 'link', 'show', 'dev', $ifa);
like($out, qr/<[^>]*\bUP\b[^>]*> mtu 1380 /, 'MTU set, link up');
($rc, $out) = $net->run('a', 'ip', 'route', 'show', '100.64.0.0/10');
like($out, qr/100\.64\.0\.0\/10 dev $ifa/, 'route through the device');

# the first handshake may meet b before its wireguard-go has bound its port
# (that happens when the link goes up); WireGuard retries after 5 s
($rc, $out) = $net->run('a', 'ping', '-c', '1', '-i', '0.2', '-w', '15',
    '100.64.0.2');
is($rc, 0, 'ping through the tunnel') or diag($out);

# a new IPv4 address in the old one's subnet replaces it: it lands as the
# old one's secondary, and a kernel that does not promote secondaries (the
# default without systemd's sysctls) deleted both with the old one
my $ns_a = $net->netns('a');
system('ip', '-n', $ns_a, 'link', 'add', 'vk0', 'type', 'veth', 'peer',
    'name', 'vk1') == 0 or die 'veth vk0';
wgctl('a', 'addr', 'vk0', '10.77.0.1/24');
($rc, $out) = wgctl('a', 'addr', 'vk0', '10.77.0.2/24');
is($rc, 0, 'addr: a new address in the same subnet') or diag($out);
($rc, $out) = $net->run('a', 'ip', '-o', '-4', 'addr', 'show', 'dev', 'vk0');
ok($out =~ m{inet 10\.77\.0\.2/24} && $out !~ m{10\.77\.0\.1/},
    'it replaces the old one, and stays') or diag($out);
system('ip', '-n', $ns_a, 'link', 'del', 'vk0');

# wg show agrees with wgctl, and wgctl show with wg show

my $d = wg_dump('a', $ifa);
is($d->{public} // '', $pka, 'wg show: public key');
is($d->{port} // '', 51820, 'wg show: listen port');
is_deeply([ keys %{$d->{peers}} ], [ $pkb ], 'wg show: the one peer');
my $p = $d->{peers}{$pkb} // {};
is(join(' ', map { $_ // '' } @$p{qw(endpoint allowed keepalive)}),
    '10.200.0.2:51821 100.64.0.2/32 15',
    'wg show: endpoint, allowed IPs, keepalive');
ok(($p->{handshake} // 0) > 0 && ($p->{rx} // 0) > 0 && ($p->{tx} // 0) > 0,
    'wg show: handshake and traffic');

($rc, $out) = wgctl('a', 'show', $ifa, '--json');
my $j = eval { decode_json($out) } // {};
my $jp = $j->{peers}[0] // {};
ok(($j->{public_key} // '') eq $pka && ($j->{listen_port} // 0) == 51820
    && ($jp->{public_key} // '') eq $pkb
    && ($jp->{endpoint} // '') eq '10.200.0.2:51821'
    && ($jp->{allowed_ips}[0] // '') eq '100.64.0.2/32'
    && ($jp->{persistent_keepalive} // 0) == 15
    && ($jp->{latest_handshake} // -1) == ($p->{handshake} // 0)
    && ($jp->{rx_bytes} // 0) > 0 && ($jp->{tx_bytes} // 0) > 0,
    'wgctl show --json agrees with wg show') or diag($out);
unlike($out, qr/\Q$ka\E/, 'the private key is not shown');

# 1000 peers on b

my @peers = map { random_key() } 1 .. 1000;
my $i = 0;
my $many = join '', map {
    $i++;
    sprintf("[Peer]\nPublicKey = %s\nEndpoint = 10.201.%d.%d:51820\n"
        . "AllowedIPs = 100.65.%d.%d/32\n\n", $_, $i >> 8, $i & 255,
        $i >> 8, $i & 255)
} @peers;

my $text_many = $text_b =~ s/^\[Peer\]/$many\[Peer\]/mr;
my $conf_many = write_file('many.conf', $text_many);

my $hs = wg_dump('b', $ifb)->{peers}{$pka}{handshake};

($rc, $out) = wgctl('b', '-v', 'syncconf', $ifb, $conf_many);
like($out, qr/1000 added, 0 removed, 0 changed, 1 unchanged peers; sent 1 request/,
    'syncconf adds 1000 peers, leaves the existing one');
is(scalar keys %{wg_dump('b', $ifb)->{peers}}, 1001, 'wg show: 1001 peers');

($rc, $out) = wgctl('b', '-v', 'syncconf', $ifb, $conf_many);
like($out, qr/0 added, 0 removed, 0 changed, 1001 unchanged peers; sent 0 requests \(0 bytes\)/,
    're-applying the same configuration sends nothing');

# peer 500 is 100.65.1.244
my $changed = $text_many =~ s{AllowedIPs = 100\.65\.1\.244/32\n}
    {AllowedIPs = 100.65.1.244/32, 100.99.0.0/16\n}r;
write_file('changed.conf', $changed);
($rc, $out) = wgctl('b', '-v', 'syncconf', $ifb, "$dir/changed.conf");
like($out, qr/0 added, 0 removed, 1 changed, 1000 unchanged peers; sent 1 request \(\d+ bytes\)/,
    'changing one peer sends one request');
my ($bytes) = $out =~ /\((\d+) bytes\)/;
ok(defined $bytes && $bytes < 300,
    'and only that peer: ' . ($bytes // '?') . ' bytes');

$d = wg_dump('b', $ifb);
is($d->{peers}{$peers[499]}{allowed} // '', '100.65.1.244/32,100.99.0.0/16',
    'wg show: the changed peer has its new allowed IPs');
is($d->{peers}{$peers[498]}{allowed} // '', '100.65.1.243/32',
    'wg show: its neighbour is untouched');
is($d->{peers}{$pka}{handshake}, $hs, 'the live session was not torn down');

($rc, $out) = $net->run('b', 'ping', '-c', '1', '-W', '2', '100.64.0.1');
is($rc, 0, 'the tunnel still carries traffic');

($rc, $out) = wgctl('b', '-v', 'syncconf', $ifb, $conf_b);
like($out, qr/0 added, 1000 removed, 0 changed, 1 unchanged peers; sent 1 request/,
    'back to one peer: 1000 removed');

# teardown through wgctl

($rc, $out) = wgctl('b', 'down', $ifb);
ok($rc == 0 && !-e "/var/run/wireguard/$ifb.sock",
    'down removes the device and its wireguard-go') or diag($out);
