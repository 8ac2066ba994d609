#!/usr/bin/perl

# The relay engine (wgctl/relay.c) run alone by "wgctl relay".
#
# First against hand-made parts on loopback, to see the wire: a fake
# device (a UDP socket) and a fake mesh (a TCP listener).  The request the
# engine sends, a refusal logged with its error text, the backoff, the
# 101 and frames both ways; inbound: accepted, frames to the device only,
# keepalives, idle close, a newer tunnel replacing the older, and each
# refusal (wrong To, unknown From, another app, bad Upgrade, bad path,
# oversized headers) answered, logged, nothing delivered; the cap on
# connections that have not sent their request.
#
# Then for real: two wireguard-go devices in two namespaces that cannot
# exchange UDP (nftables), joined only through a stock nginx in a third
# namespace (proxy with Upgrade, X-Dstack-App-Id set, standing in for
# mesh + gateway + :443): ping, 4 MB with its sha256, an app mismatch
# refused through nginx, a stalled receiver (memory bounded, drops
# counted), and the nginx in the middle restarted (the engine dials again).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use JSON::PP;
use MIME::Base64 ();
use POSIX qw(:sys_wait_h);
use Socket qw(inet_ntoa unpack_sockaddr_in);
use Test::More;
use Time::HiRes qw(time sleep);
use Test::Dstack qw(wait_for);
use Test::DstackNetns;

# under CI a missing requirement is a failure, not a skip
sub missing {
    my ($why) = @_;
    if (($ENV{CI} // '') eq 'true') {
        plan(tests => 1);
        fail("requirement missing: $why");
        exit 1;
    }
    plan(skip_all => $why);
}

for my $prog (qw(wg ping nft ip ss wireguard-go)) {
    missing("$prog not found") unless grep { -x "$_/$prog" }
        split(/:/, $ENV{PATH}), qw(/usr/sbin /sbin);
}

missing('needs root') unless $> == 0;
missing("no nginx at $Test::Dstack::NGINX") unless -x $Test::Dstack::NGINX;
missing('no www-data group (nginx workers)')
    unless defined getgrnam('www-data');

my $t = Test::Dstack->new();

missing('wgctl not built (' . $t->bin('wgctl') . ')')
    unless -x $t->bin('wgctl');

my $net = Test::DstackNetns->new()
    or missing("network namespaces: $Test::DstackNetns::WHY");

$t->plan(60);

my $d = $t->testdir();
my $wgctl = $t->bin('wgctl');
my $tag = $net->tag();
my %pids;

END {
    for my $name (keys %pids) {
        kill 'TERM', $pids{$name};
        waitpid($pids{$name}, 0);
    }
}

sub hex_key { unpack 'H*', join '', map { chr(int(rand(256))) } 1 .. 32 }
sub hex_app { unpack 'H*', join '', map { chr(int(rand(256))) } 1 .. 20 }

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    my $s = <$fh>;
    return $s // '';
}

# wgctl relay in a namespace (undef: here); its stdout, stderr, status
sub start_relay {
    my ($ns, $name, @args) = @_;

    my @cmd = ($wgctl, 'relay', @args, '--status', "$d/$name.json");
    unshift @cmd, 'ip', 'netns', 'exec', $net->netns($ns) if defined $ns;

    my $pid = fork() // die "fork: $!";

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', "$d/$name.out";
        open STDERR, '>', "$d/$name.log";
        exec(@cmd) or POSIX::_exit(127);
    }

    $pids{$name} = $pid;

    my %ep;
    wait_for(sub {
        %ep = slurp("$d/$name.out")
            =~ /relay endpoint 127\.0\.0\.1:(\d+) peer (\S+)/g;
        %ep = reverse %ep;
        return %ep > 0;
    }, 20);

    return \%ep;
}

sub stop_relay {
    my ($name) = @_;
    my $pid = delete $pids{$name} or return;
    kill 'TERM', $pid;
    waitpid($pid, 0);
    return $? >> 8;
}

# the peer's stats in the relay's status file
sub stats {
    my ($name, $key) = @_;
    kill 'USR1', $pids{$name};
    sleep 0.2;
    my $j = eval { decode_json(slurp("$d/$name.json")) } // {};
    my ($p) = grep { $_->{key} eq $key } @{$j->{peers} || []};
    return $p // {}, $j;
}

sub logged {
    my ($name, $re, $timeout) = @_;
    return wait_for(sub { slurp("$d/$name.log") =~ $re }, $timeout // 10);
}

sub b64 { MIME::Base64::encode_base64(pack('H*', $_[0]), '') }

sub wg_datagram { "\x04\0\0\0" . join '', map { chr(int(rand(256))) } 1 .. 60 }
sub frame { pack('n', length $_[0]) . $_[0] }

sub read_headers {
    my ($s, $timeout) = @_;
    my ($buf, $sel) = ('', IO::Select->new($s));
    my $deadline = time() + ($timeout // 10);

    while ($buf !~ /\r\n\r\n/ && time() < $deadline) {
        last unless $sel->can_read($deadline - time());
        my $n = sysread($s, $buf, 65536, length $buf);
        last unless $n;
    }

    return $buf;
}

sub read_all {
    my ($s, $timeout) = @_;
    my ($buf, $sel) = ('', IO::Select->new($s));
    my $deadline = time() + ($timeout // 10);

    while (time() < $deadline) {
        last unless $sel->can_read($deadline - time());
        my $n = sysread($s, $buf, 65536, length $buf);
        last unless $n;
    }

    return $buf;
}

# the first datagram on a UDP socket within the timeout
sub udp_recv {
    my ($sock, $timeout) = @_;
    return undef unless IO::Select->new($sock)->can_read($timeout // 5);
    my $from = recv($sock, my $buf, 65536, 0);
    my ($port) = unpack_sockaddr_in($from);
    return ($buf, $port);
}

# the command line

sub cli {
    my $out = `$wgctl relay @_ 2>&1`;
    return ($? >> 8, $out);
}

my ($crc, $cout) = cli('--help');
ok($crc == 0 && $cout =~ /^Usage: \S+ relay --listen/, 'cli: --help, exit 0');

my @base = ('--listen', "$d/x.sock", '--device-port', 1);

($crc, $cout) = cli(@base, '--mesh', '127.0.0.1:80', '--key', '00');
ok($crc == 1 && $cout =~ /cannot open "00"/, 'cli: a bad key, quoted, exit 1');

($crc, $cout) = cli(@base, '--mesh', '127.0.0.1');
ok($crc == 1 && $cout =~ /invalid mesh "127\.0\.0\.1"/,
    'cli: a mesh without a port, quoted, exit 1');

($crc, $cout) = cli(@base, '--mesh', '127.0.0.1:80', '--key', hex_key(),
    '--peer', 'nokey,app');
ok($crc == 1 && $cout =~ /invalid peer "nokey,app"/,
    'cli: a bad peer, quoted, exit 1');

($crc, $cout) = cli('--listen', "$d/x.sock");
ok($crc == 1 && $cout =~ /are required/ && $cout =~ /^Usage:/m,
    'cli: missing options, usage on stderr, exit 1');

###########################################################################
# Part one: on loopback, with a fake device and a fake mesh

my $self_key = hex_key();
my $key_a = hex_key();
my $app_a = hex_app();
my $app_other = hex_app();
my $inst_a = 'inst-a0';

my $device = IO::Socket::INET->new(Proto => 'udp', LocalAddr => '127.0.0.1',
    LocalPort => 0) or die "udp: $!";
my $mesh = IO::Socket::INET->new(Listen => 128, LocalAddr => '127.0.0.1',
    LocalPort => 0, ReuseAddr => 1) or die "tcp: $!";
my $gid = getgrnam('www-data');

my $ep = start_relay(undef, 'c', '--listen', "$d/c.sock", '--gid', $gid,
    '--mesh', '127.0.0.1:' . $mesh->sockport(), '--target-port', 8443,
    '--key', $self_key, '--device-port', $device->sockport(),
    '--peer', b64($key_a) . ",$app_a,$inst_a", '--keepalive', 1);
my $cport = $ep->{b64($key_a)};

ok($cport, 'relay: an endpoint on 127.0.0.1 for the peer');

my @st = stat("$d/c.sock");
ok(-S "$d/c.sock" && ($st[2] & 07777) == 0660 && $st[5] == $gid,
    'relay: the listener is a socket, mode 0660, group set');

my $to_relay = pack_sockaddr_in_lo($cport);

sub pack_sockaddr_in_lo {
    return Socket::pack_sockaddr_in($_[0], Socket::inet_aton('127.0.0.1'));
}

# a datagram from another port than the device's dials nothing

my $stranger = IO::Socket::INET->new(Proto => 'udp', LocalAddr => '127.0.0.1',
    LocalPort => 0) or die;
send($stranger, wg_datagram(), 0, $to_relay);
ok(!IO::Select->new($mesh)->can_read(1),
    'dial: a datagram from another port dials nothing');

# outbound: the first datagram dials the mesh

my $dg = wg_datagram();
send($device, $dg, 0, $to_relay);

my $sel = IO::Select->new($mesh);
my $conn = $sel->can_read(10) ? $mesh->accept() : undef;
my $req = $conn ? read_headers($conn) : '';

my $hex_a = $key_a;
my $hex_self = $self_key;
like($req, qr{^GET /\.dstack/wg-relay HTTP/1\.1\r\n}, 'dial: the request line');
ok($req =~ /\r\nUpgrade: dstack-wg-relay\r\n/
    && $req =~ /\r\nConnection: Upgrade\r\n/
    && $req =~ /\r\nx-dstack-target-app: $app_a\r\n/
    && $req =~ /\r\nx-dstack-target-instance: $inst_a\r\n/
    && $req =~ /\r\nx-dstack-target-port: 8443\r\n/
    && $req =~ /\r\nWG-Relay-From: $hex_self\r\n/
    && $req =~ /\r\nWG-Relay-To: $hex_a\r\n/,
    'dial: target app, instance, port, Upgrade, From and To')
    or diag($req);
is(length($req) - index($req, "\r\n\r\n") - 4, 0,
    'dial: no frame before the 101');

# refused: the error text is logged; then the peer backs off

print $conn "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
    . "Content-Length: 30\r\n\r\n{\"error\":\"app not in the vpc\"}";
ok(logged('c', qr/tunnel refused with 403: "app not in the vpc"/),
    'dial: a refusal is logged with its status and error text');
close $conn;

my ($dials, $t0) = (0, time());

while (time() - $t0 < 3) {
    send($device, wg_datagram(), 0, $to_relay);

    while ($sel->can_read(0.02)) {
        my $c = $mesh->accept() or last;
        $dials++;
        read_headers($c, 2);
        print $c "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
        close $c;
    }
}

ok($dials >= 1 && $dials <= 4,
    "dial: backoff, $dials dials in 3 s of datagrams every 20 ms");

my ($s) = stats('c', b64($key_a));
ok(($s->{drops} // 0) > 50 && ($s->{last_error} // '') =~ /502/,
    'dial: datagrams dropped and counted while backing off')
    or diag(explain($s));

# accepted: frames both ways (the backoff is at most 8 s by now)

my $up;
my $deadline = time() + 15;

while (!$up && time() < $deadline) {
    send($device, wg_datagram(), 0, $to_relay);
    next unless $sel->can_read(0.1);
    $up = $mesh->accept() or next;
    read_headers($up, 2);
    print $up "HTTP/1.1 101 Switching Protocols\r\n"
        . "Upgrade: dstack-wg-relay\r\nConnection: upgrade\r\n\r\n";
}

ok($up, 'dial: dialled again after the backoff');

$dg = wg_datagram();
send($device, $dg, 0, $to_relay);
my $got = read_until($up, frame($dg));
ok($got, 'tunnel: a datagram from the device goes out framed');

sub read_until {
    my ($sock, $want, $timeout) = @_;
    my ($buf, $sel) = ('', IO::Select->new($sock));
    my $deadline = time() + ($timeout // 5);

    while (index($buf, $want) < 0 && time() < $deadline) {
        last unless $sel->can_read($deadline - time());
        sysread($sock, $buf, 65536, length $buf) or last;
    }

    return index($buf, $want) >= 0 ? $buf : '';
}

# from elsewhere than the device's port: not carried

my $odd = wg_datagram();
send($stranger, $odd, 0, $to_relay);
sleep 0.2;
send($device, $dg = wg_datagram(), 0, $to_relay);
my $seen = read_until($up, frame($dg));
ok($seen && index($seen, $odd) < 0,
    'tunnel: a datagram from another port is not carried');

$dg = wg_datagram();
syswrite($up, frame($dg));
my ($back, $port) = udp_recv($device);
ok(defined $back && $back eq $dg && $port == $cport,
    'tunnel: a frame goes to the device, from the endpoint');

syswrite($up, frame("\x07garbage-not-wireguard") . frame(''));
($back) = udp_recv($device, 1);
ok(!defined $back, 'tunnel: a frame that is no WireGuard message is dropped');

ok(read_until($up, "\0\0", 5), 'tunnel: keepalives when idle');

# the fake mesh stays silent: closed after three keepalive intervals
my $t1 = time();
read_all($up, 10);
my $idle = time() - $t1;
ok($idle >= 0.3 && $idle < 8, sprintf('tunnel: closed after %.1f s silent',
    $idle));
close $up;

# inbound

sub inbound {
    my (%o) = @_;

    my $s = IO::Socket::UNIX->new(Peer => "$d/c.sock") or die "unix: $!";
    my $r = $o{raw} // join '',
        "GET ", $o{path} // '/.dstack/wg-relay', " HTTP/1.1\r\n",
        "Host: localhost\r\n",
        "Upgrade: ", $o{upgrade} // 'dstack-wg-relay', "\r\n",
        "Connection: upgrade\r\n",
        "WG-Relay-From: ", $o{from} // $key_a, "\r\n",
        "WG-Relay-To: ", $o{to} // $self_key, "\r\n",
        defined $o{app} && $o{app} eq '' ? ()
            : ("X-Dstack-App-Id: ", $o{app} // uc $app_a, "\r\n"),
        "\r\n";
    syswrite($s, $r . ($o{frames} // ''));

    my $h = read_headers($s);
    my ($status) = $h =~ m{^HTTP/1\.1 (\d+)};

    return ($s, $status // 0, $h);
}

my ($in, $status, $head) = inbound(frames => frame($dg = wg_datagram()));
is($status, 101, 'inbound: accepted (app id in another case)');
like($head, qr/\r\nUpgrade: dstack-wg-relay\r\nConnection: Upgrade\r\n\r\n$/,
    'inbound: the 101 names the protocol');
($back, $port) = udp_recv($device);
ok(defined $back && $back eq $dg && $port == $cport,
    'inbound: a frame sent right after the request reaches the device');

send($device, $dg = wg_datagram(), 0, $to_relay);
ok(read_until($in, frame($dg)), 'inbound: the device sends on it');

my ($in2, $status2) = inbound();
is($status2, 101, 'inbound: a second tunnel for the same peer');
# (within 1.5 s: the idle close, 3 s, must not be what closes it)
ok(eof_soon($in, 1.5), 'inbound: the newer tunnel replaces the older');

sub eof_soon {
    my ($sock, $timeout) = @_;
    my $sel = IO::Select->new($sock);
    my $deadline = time() + ($timeout // 5);
    while (time() < $deadline) {
        return 0 unless $sel->can_read($deadline - time());
        my $n = sysread($sock, my $buf, 65536);
        return 1 if defined $n && $n == 0;
    }
    return 0;
}

send($device, $dg = wg_datagram(), 0, $to_relay);
ok(read_until($in2, frame($dg)), 'inbound: the newest tunnel carries');
close $in2;

# refusals: answered, logged, nothing delivered (frames after the request)

my @refusals = (
    [ 'To another key', 403, qr/not addressed/, to => hex_key() ],
    [ 'unknown From', 403, qr/unknown peer/, from => hex_key() ],
    [ 'another app', 403, qr/app id does not match/, app => $app_other ],
    [ 'no app id', 403, qr/no verified app id/, app => '' ],
    [ 'Upgrade: websocket', 400, qr/upgrade to dstack-wg-relay required/,
      upgrade => 'websocket' ],
    [ 'another path', 404, qr/no such path/, path => '/wg' ],
    [ '9 KiB of headers', 400, qr/malformed request/,
      raw => "GET /.dstack/wg-relay HTTP/1.1\r\nX: " . ('a' x 9000)
          . "\r\n\r\n" ],
);

for my $r (@refusals) {
    my ($name, $code, $why, %o) = @$r;

    my ($sock, $st, $h) = inbound(%o, frames => frame(wg_datagram()));
    my $body = $h . read_all($sock, 5);
    ok($st == $code && $body =~ /\{"error":"[^"]+"\}/
        && logged('c', qr/refused inbound tunnel .*: $code .*$why/),
        "refused: $name, $code, logged") or diag($body);
}

($back) = udp_recv($device, 1);
ok(!defined $back, 'refused: nothing reached the device');

# a flood of refusals: at most 20 lines a second, then a count

sleep 1.1;
my $before = () = slurp("$d/c.log") =~ /refused inbound tunnel/g;

# all written before any answer is read: the flood takes well under 1 s
my @flood = map { IO::Socket::UNIX->new(Peer => "$d/c.sock") } 1 .. 40;

for my $sock (@flood) {
    syswrite($sock, "GET /.dstack/wg-relay HTTP/1.1\r\n"
        . "Upgrade: dstack-wg-relay\r\nWG-Relay-From: $key_a\r\n"
        . "WG-Relay-To: " . hex_key() . "\r\n\r\n");
}

read_all($_, 5) for @flood;
close $_ for @flood;

sleep 1.1;
close((inbound(to => hex_key()))[0]);
logged('c', qr/\d+ more inbound tunnels refused, not logged/);
my $after = () = slurp("$d/c.log") =~ /refused inbound tunnel from/g;
my ($quiet) = slurp("$d/c.log") =~ /(\d+) more inbound tunnels refused/;
ok($after - $before <= 21 && $after - $before >= 20 && ($quiet // 0) >= 19
    && $after - $before + $quiet == 41,
    sprintf('refused: a flood logs %d lines and a count of %d',
        $after - $before, $quiet // 0));

# connections that never send their request: capped at 64

# (within 2 s: the 5 s request timeout must not be what closes it)
my @idle = map { IO::Socket::UNIX->new(Peer => "$d/c.sock") } 1 .. 64;
sleep 0.5;
my $extra = IO::Socket::UNIX->new(Peer => "$d/c.sock");
ok(eof_soon($extra, 2), 'pending: the 65th connection awaiting its request '
    . 'is closed at once');
ok(logged('c', qr/64 inbound connections awaiting their request/),
    'pending: logged');
close $_ for @idle;
sleep 0.5;

($in, $status) = inbound();
is($status, 101, 'pending: accepted again once they are gone');
close $in;

is(stop_relay('c'), 0, 'relay: exits 0 on SIGTERM');
ok(!-e "$d/c.sock", 'relay: its socket removed');
unlike(slurp("$d/c.log"), qr/$self_key|\Q$key_a\E/,
    'relay: the log has no full key');

###########################################################################
# Part two: two wireguard-go devices joined only through nginx

my %ip = $net->lan('10.201.0', qw(gw a b));
my $gw = $ip{gw};

for my $n (qw(a b)) {
    $net->firewall($n, udp => 0, only => 1,
        tcp_out => [ "$gw:" . ($n eq 'a' ? 8001 : 8002) ]);
}

my %wg;

for my $n (qw(a b)) {
    my $priv = `wg genkey`;
    chomp $priv;
    open my $fh, '>', "$d/$n.key" or die;
    print $fh "$priv\n";
    close $fh;
    chmod 0600, "$d/$n.key";
    my $pub = `echo $priv | wg pubkey`;
    chomp $pub;
    $wg{$n} = { pub => $pub, hex => unpack('H*',
        MIME::Base64::decode_base64($pub)), app => hex_app(),
        if => "wr$n$tag", port => $n eq 'a' ? 51820 : 51821 };
}

my $conf = <<"EOF";
user www-data www-data;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/logs/error.log info;
events { worker_connections 1024; }
http {
    access_log $d/logs/access.log;
    client_body_temp_path $d/cbt;
    proxy_temp_path $d/pt;
    fastcgi_temp_path $d/ft;
    uwsgi_temp_path $d/ut;
    scgi_temp_path $d/st;
    proxy_http_version 1.1;
    proxy_read_timeout 1h;
    proxy_send_timeout 1h;
    server {
        listen $gw:8001;
        location / {
            proxy_pass http://unix:$d/b.sock;
            proxy_set_header X-Dstack-App-Id $wg{a}{app};
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection upgrade;
        }
    }
    server {
        listen $gw:8002;
        location / {
            proxy_pass http://unix:$d/a.sock;
            proxy_set_header X-Dstack-App-Id $wg{b}{app};
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection upgrade;
        }
    }
    server {
        listen $gw:8003;
        location / {
            proxy_pass http://unix:$d/b.sock;
            proxy_set_header X-Dstack-App-Id $app_other;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection upgrade;
        }
    }
}
EOF
$t->write_file('gw.conf', $conf);

sub start_nginx {
    my ($rc, $out) = $net->run('gw', $Test::Dstack::NGINX, '-p', "$d/",
        '-c', "$d/gw.conf");
    return $rc == 0 && wait_for(sub { -s "$d/nginx.pid" }, 10)
        && wait_for(sub { ($net->run('gw', 'ss', '-ltn'))[1] =~ /:8003/ },
            10);
}

sub stop_nginx {
    my $pid = slurp("$d/nginx.pid");
    chomp $pid;
    return unless $pid;
    kill 'TERM', $pid;
    wait_for(sub { !kill 0, $pid }, 10);
}

ok(start_nginx(), 'nginx in the middle started');
END { stop_nginx() if $d }

my %rep;

for my $n (qw(a b)) {
    my $o = $n eq 'a' ? 'b' : 'a';
    $rep{$n} = start_relay($n, $n, '--listen', "$d/$n.sock", '--gid', $gid,
        '--mesh', "$gw:" . ($n eq 'a' ? 8001 : 8002),
        '--key', "$d/$n.key", '--device-port', $wg{$n}{port},
        '--peer', "$wg{$o}{pub},$wg{$o}{app}", '--keepalive', 1,
        '--buffer', 65536)->{$wg{$o}{pub}};

    ok($net->wireguard_go($n, $wg{$n}{if}), "wireguard-go in $n");

    my $addr = $n eq 'a' ? '100.64.0.1' : '100.64.0.2';
    my $peer = $n eq 'a' ? '100.64.0.2' : '100.64.0.1';
    $net->run($n, 'wg', 'set', $wg{$n}{if}, 'private-key', "$d/$n.key",
        'listen-port', $wg{$n}{port}, 'peer', $wg{$o}{pub}, 'endpoint',
        "127.0.0.1:$rep{$n}", 'allowed-ips', "$peer/32");
    $net->run($n, 'ip', 'addr', 'add', "$addr/24", 'dev', $wg{$n}{if});
    $net->run($n, 'ip', 'link', 'set', $wg{$n}{if}, 'mtu', 1380, 'up');
}

my ($rc, $out) = $net->run('a', 'ping', '-c', '3', '-i', '0.2', '-w', '20',
    '100.64.0.2');
like($out, qr/ [123] received/, 'ping over the relay, UDP between the '
    . 'nodes dropped') or diag($out);

($s) = stats('a', $wg{b}{pub});
ok(($s->{tunnels} // 0) >= 1 && ($s->{tx_packets} // 0) > 0
    && ($s->{rx_packets} // 0) > 0, 'stats: tunnel, packets both ways')
    or diag(explain($s));

($rc, $out) = $net->run('a', 'wg', 'show', $wg{a}{if}, 'latest-handshakes');
ok($out =~ /\t([1-9]\d*)$/m, 'wg show: a handshake');

# 4 MB over TCP through the tunnel, its sha256 intact

my $blob = join '', map { chr(int(rand(256))) } 1 .. 4 * 1024 * 1024;
$t->write_file('blob', $blob);
my $sum = sha256_hex($blob);

my $sink = fork() // die;

if ($sink == 0) {
    exec('ip', 'netns', 'exec', $net->netns('b'), 'perl', '-MIO::Socket::INET',
        '-MDigest::SHA', '-e', <<"EOF") or POSIX::_exit(127);
my \$l = IO::Socket::INET->new(Listen => 1, LocalAddr => '100.64.0.2:5001',
    ReuseAddr => 1) or die;
my \$c = \$l->accept() or die;
my \$sha = Digest::SHA->new(256);
my \$n = 0;
while (sysread(\$c, my \$buf, 65536)) { \$sha->add(\$buf); \$n += length \$buf }
open my \$fh, '>', '$d/sink.sum';
print \$fh \$n, ' ', \$sha->hexdigest, "\\n";
EOF
}

sleep 0.5;
my $t2 = time();
($rc, $out) = $net->run('a', 'perl', '-MIO::Socket::INET', '-e', <<"EOF");
my \$c;
for (1 .. 50) {
    \$c = IO::Socket::INET->new(PeerAddr => '100.64.0.2:5001') and last;
    select(undef, undef, undef, 0.1);
}
die "connect: \$!" unless \$c;
open my \$fh, '<', '$d/blob' or die;
binmode \$fh;
while (read(\$fh, my \$buf, 65536)) { print \$c \$buf or die "send: \$!" }
close \$c;
EOF
waitpid($sink, 0);
my $secs = time() - $t2;
is(slurp("$d/sink.sum"), length($blob) . " $sum\n",
    sprintf('4 MB over the relay, sha256 intact (%.1f s)', $secs))
    or diag($out);

# through nginx, the app it vouches for does not match: 403, JSON, logged

($rc, $out) = $net->run('gw', 'curl', '-s', '-i', '--max-time', '10',
    '-H', 'Upgrade: dstack-wg-relay', '-H', 'Connection: Upgrade',
    '-H', "WG-Relay-From: $wg{a}{hex}", '-H', "WG-Relay-To: $wg{b}{hex}",
    "http://$gw:8003/.dstack/wg-relay");
ok($out =~ m{^HTTP/1\.1 403} && $out =~ /\{"error":"app id does not match/
    && logged('b', qr/refused inbound tunnel from "\Q@{[substr $wg{a}{hex},
        0, 16]}\E".*app "$app_other"\): 403/),
    'through nginx: another app is refused with 403, logged') or diag($out);

# a stalled receiver: the sender's buffer stays bounded, drops counted

my (undef, $ja) = stats('a', $wg{b}{pub});
my $rss0 = $ja->{rss_kb};
my ($s0) = stats('a', $wg{b}{pub});

kill 'STOP', $pids{b};

($rc, $out) = $net->run('a', 'perl', '-MIO::Socket::INET', '-e', <<'EOF');
my $u = IO::Socket::INET->new(Proto => 'udp', PeerAddr => '100.64.0.2:9')
    or die;
my $p = 'x' x 1300;
for (1 .. 30000) { send($u, $p, 0) }
EOF

sleep 1;
my ($s1, $j1) = stats('a', $wg{b}{pub});
kill 'CONT', $pids{b};

ok(($s1->{drops} // 0) - ($s0->{drops} // 0) > 100,
    sprintf('stalled receiver: %d datagrams dropped at the sender',
        ($s1->{drops} // 0) - ($s0->{drops} // 0)));
ok(defined $j1->{rss_kb} && $j1->{rss_kb} - $rss0 < 16 * 1024,
    sprintf('stalled receiver: the sender grew by %d KiB',
        ($j1->{rss_kb} // 0) - ($rss0 // 0)));

($rc, $out) = $net->run('a', 'ping', '-c', '2', '-i', '0.3', '-w', '30',
    '100.64.0.2');
like($out, qr/ [12] received/, 'the receiver resumed: ping again')
    or diag($out);

# the nginx in the middle restarted: tunnels are dialled again

stop_nginx();
($rc, $out) = $net->run('a', 'ping', '-c', '1', '-w', '2', '100.64.0.2');
unlike($out, qr/ 1 received/, 'nginx down: no ping');
ok(start_nginx(), 'nginx started again');

($rc, $out) = $net->run('a', 'ping', '-c', '1', '-i', '0.5', '-w', '40',
    '100.64.0.2');
like($out, qr/ 1 received/, 'nginx back: ping resumes, relays not '
    . 'restarted') or diag($out);
ok(kill(0, $pids{a}) && kill(0, $pids{b}), 'both relays kept running');

for my $n (qw(a b)) {
    is(stop_relay($n), 0, "relay $n exits 0");
}
