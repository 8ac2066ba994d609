#!/usr/bin/perl

# The receiving end of the VPN's relay path as the entry script renders
# it (conf/wg-relay.conf.template in the :443 server of backend.conf), in
# front of the real relay engine (wgctl relay): a verified certificate is
# required, the caller's app from its certificate reaches wgctl (a forged
# X-Dstack-App-Id does not), tunnels are bounded per calling app
# (limit_conn on $dstack_app_id, WG_RELAY_TUNNELS) and freed when they
# close, frames pass both ways through the Upgrade; on a CVM without the
# VPN the path answers 404.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use IO::Select;
use IO::Socket::INET;
use IO::Socket::SSL;
use POSIX ();
use Time::HiRes qw(time sleep);
use Test::Dstack qw(wait_for);

my $t = Test::Dstack->new()
    ->has(qw(auth sim wgctl jq envsubst curl))->plan(15);

my $d = $t->testdir;
my $repo = $t->repo;
my $wgctl = $t->bin('wgctl');

my $SELF = '5e' x 20;
my $A = 'a1' x 20;
my $B = 'b2' x 20;

my $sock = $t->run_sim(socket => "$d/dstack.sock", app_id => $SELF,
    instance_id => '1c' x 20);

# entrypoint.sh render -> the rendered conf dir
sub render {
    my ($name, %env) = @_;
    my $r = "$d/$name";
    my %e = (PATH => $ENV{PATH}, DSTACK_SOCKET => $sock,
        DSTACK_SYS_CONFIG => "$r/none.json", DSTACK_VPC_CONF_DIR => "$r/conf",
        DSTACK_VPC_TLS_DIR => "$r/tls", DSTACK_VPC_RUN_DIR => "$r/run",
        DSTACK_VPC_DATA_DIR => "$r/data",
        DSTACK_VPC_MODULES => "$Test::Dstack::BUILD/modules",
        WGCTL => $wgctl, DSTACK_GATEWAY_DOMAIN => 'gw.test:443',
        DSTACK_RESOLVER => '127.0.0.1', Test::Dstack::entry_env(), %env);
    my $envs = join ' ', map { "$_='$e{$_}'" } sort keys %e;
    my $out = `env -i $envs $repo/scripts/entrypoint.sh render 2>&1`;
    die "render $name failed:\n$out" if $?;
    return $r;
}

# an nginx config around the rendered backend.conf, its :443 on $port
sub conf {
    my ($r, $port, $pid) = @_;
    my $b = $t->read_file("$r/conf/backend.conf");
    $b =~ s/^(\s*listen\s+)443\b/${1}127.0.0.1:$port/m
        or die "no listen 443 in $r/conf/backend.conf\n";
    $t->write_file("$pid-backend.conf", $b);
    my $c = $t->expand(<<"EOF");
%%TEST_GLOBALS%%
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    include $d/$pid-backend.conf;
}
EOF
    $c =~ s/^pid \S+;/pid $d\/$pid.pid;/m;
    $t->write_file("$pid.conf", $c);
    return "$pid.conf";
}

my $node = render('node', VPC_NODE_NAME => 'n1', VPC_SERVER_APP_ID => 'self',
    WG_RELAY_TUNNELS => 2);
my $mesh = render('mesh');

my ($np, $mp) = ($t->port(8443), $t->port(8444));
$t->run(conf($node, $np, 'node'));
$t->run(conf($mesh, $mp, 'mesh'));

# the relay engine where the rendered location sends tunnels
sub hex32 { unpack 'H*', join '', map { chr(int(rand(256))) } 1 .. 32 }

my $self_key = hex32();
my %peer = map { $_ => hex32() } qw(a1 a2 a3 b1);
my $dev = IO::Socket::INET->new(LocalAddr => '127.0.0.1:0', Proto => 'udp')
    or die "udp: $!";

my $relay = fork() // die "fork: $!";
if ($relay == 0) {
    open STDIN, '<', '/dev/null';
    open STDOUT, '>', "$d/relay.out";
    open STDERR, '>', "$d/relay.log";
    exec($wgctl, 'relay', '--listen', "$node/run/wg-relay.sock",
        '--mesh', '127.0.0.1:1', '--key', $self_key,
        '--device-port', $dev->sockport(),
        (map { ('--peer', "$peer{$_}," . (/^a/ ? $A : $B)) } sort keys %peer))
        or POSIX::_exit(127);
}
END { if ($relay) { kill 'TERM', $relay; waitpid($relay, 0) } }

ok(wait_for(sub { -S "$node/run/wg-relay.sock" }, 20),
    'wgctl relay listens where the location proxies');

my %cert = map { $_ => $t->sim_cert("app-$_", app_id => $_ eq 'a' ? $A : $B) }
    qw(a b);

# a tunnel request as a peer's wgctl sends it; (status line, socket)
sub tunnel {
    my (%o) = @_;
    my $c = $o{as} ? $cert{$o{as}} : undef;
    my $s = IO::Socket::SSL->new(PeerAddr => '127.0.0.1:' . ($o{port} // $np),
        Timeout => 10, SSL_verify_mode => 0,
        $c ? (SSL_cert_file => $c->{chain}, SSL_key_file => $c->{key}) : ())
        or return ('connect failed', undef);
    $s->syswrite("GET /.dstack/wg-relay HTTP/1.1\r\nHost: n1\r\n"
        . "Connection: Upgrade\r\nUpgrade: dstack-wg-relay\r\n"
        . "WG-Relay-From: $o{from}\r\nWG-Relay-To: $self_key\r\n"
        . ($o{headers} // '') . "\r\n");
    my ($buf, $sel, $end) = ('', IO::Select->new($s), time + 10);
    while ($buf !~ /\r\n\r\n/ && time < $end) {
        last unless $s->pending() || $sel->can_read($end - time);
        last unless $s->sysread($buf, 4096, length $buf);
    }
    my ($line) = $buf =~ /^(HTTP\/1\.1 \d+[^\r]*)/;
    return ($line // "no answer: $buf", $s, $buf);
}

my ($st, $s, $raw) = tunnel(from => $peer{a1});
like($st, qr/ 401 /, 'no client certificate: 401');

my ($st1, $t1) = tunnel(as => 'a', from => $peer{a1});
like($st1, qr/ 101 /, "app A's peer: 101");

# a WireGuard-shaped datagram, framed: wgctl hands it to the device
my $dgram = "\x04\0\0\0" . ("\xee" x 60);
$t1->syswrite(pack('n', length $dgram) . $dgram);
my $got = '';
if (IO::Select->new($dev)->can_read(10)) {
    $dev->recv($got, 2048);
}
is($got, $dgram, 'a frame through the location reaches the device port');

my ($st2, $t2) = tunnel(as => 'a', from => $peer{a2});
like($st2, qr/ 101 /, "app A's second tunnel: 101");

my ($st3, $t3) = tunnel(as => 'a', from => $peer{a3});
like($st3, qr/ 429 /, "app A's third tunnel: 429 (WG_RELAY_TUNNELS=2)");

my ($stb, $tb) = tunnel(as => 'b', from => $peer{b1});
like($stb, qr/ 101 /, 'app B has tunnels of its own');

($st, $s, $raw) = tunnel(as => 'b', from => $peer{a3},
    headers => "X-Dstack-App-Id: $A\r\n");
like($st, qr/ 403 /, "app B as app A's peer, forged X-Dstack-App-Id: 403");

like($t->read_file('relay.log'), qr/refused .*app "$B"/,
    'wgctl saw the certificate\'s app, not the forged header');

$t1->close(SSL_fast_shutdown => 1);
my $again;
ok(wait_for(sub {
    ($again) = tunnel(as => 'a', from => $peer{a3});
    $again =~ / 101 /;
}, 10), 'a closed tunnel frees its place for the app') or diag($again);

($st, $s, $raw) = tunnel(as => 'a', from => $peer{a1}, port => $mp);
like($st, qr/ 404 /, 'a CVM without the VPN: 404');
like($raw, qr/"error":"this CVM does not run the VPN"/, '... saying why');

my $log = $t->read_file('logs/error.log');
like($log, qr/limiting connections by zone "dstack_wg_relay"/,
    'the refusal over the bound is logged');
like($t->read_file('logs/access.log'),
    qr{"GET /\.dstack/wg-relay HTTP/1\.1" 101}, 'tunnels in the access log');

$_->close(SSL_fast_shutdown => 1) for grep { $_ } $t2, $tb;
kill 'TERM', $relay;
waitpid($relay, 0);
is($? >> 8, 0, 'wgctl relay exits cleanly');
$relay = 0;
