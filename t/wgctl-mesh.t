#!/usr/bin/perl

# wgctl up through the real mesh: nodes with conf/node-mesh.conf as
# shipped reach the VPC server's nginx (conf/vpc-api.conf as shipped,
# dstack_auth) through the gateway emulator, by x-dstack-target-app; the
# server's /machine/ is proxied to the scripted control plane
# (t/lib/Test/Dstack/FakeControl.pm).  Checks that the map stream crosses
# the mesh unbuffered — a delta reaches the devices at once — and that
# the server sees each node's app id from its RA-TLS certificate.
# t/vpn-e2e.t does the same with the real control plane.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time);
use Test::Dstack qw(wait_for);
use Test::DstackNetns;
use Test::Dstack::FakeControl;
use Test::Dstack::Vpn;

my $t = Test::Dstack->new()->has(qw(auth mesh api stream sim redis wgctl wg
    curl ping));

my $net = Test::DstackNetns->new()
    or $t->skip_all($Test::DstackNetns::WHY);

$t->plan(9);

my $d = $t->testdir();
my $ctl = "$d/control.sock";
my $vpn = Test::Dstack::Vpn->new($t, $net);

my $v = $vpn->vpc(nodes => [qw(m1 m2)], keepalive => 2, server_conf => <<'EOF');

    # the scripted control plane, behind the server's dstack_auth
    location /machine/ {
        dstack_auth        on;
        dstack_auth_allow  any;

        proxy_pass               http://127.0.0.1:8080;
        proxy_http_version       1.1;
        proxy_set_header         x-caller-app $dstack_app_id;
        proxy_buffering          off;
        proxy_read_timeout       1h;
    }
EOF

$vpn->perl_daemon('srv', 'Test::Dstack::FakeControl', 'main',
    '--listen', '127.0.0.1:8080', '--control', $ctl, '--keepalive', 1,
    '--key', 'hskey-auth-mesh');
wait_for(sub { -S $ctl }, 10) or die "control-plane stand-in did not start\n";

sub control { Test::Dstack::FakeControl::command($ctl, {@_}) }

for my $n (qw(m1 m2)) {
    $vpn->join_vpc($n, auth_key => 'hskey-auth-mesh');
}

ok($vpn->wait_connected('m1', 30) && $vpn->wait_connected('m2', 30),
    'two agents connect through their mesh')
    or diag($vpn->log('m1'), $vpn->log('m2'));

ok($vpn->wait_peers('m1', 1) && $vpn->wait_peers('m2', 1),
    'each device has the other');

my $a2 = $vpn->status('m2')->{address};
is(($vpn->run('m1', 'ping', '-c', '1', '-w', '10', $a2))[0], 0,
    'ping over the VPN');

my ($rc, $out) = $vpn->run('m1', 'curl', '-sS', '-m', '10',
    'http://m2.dstack.internal:8080/');
is($out, "m2\n", 'HTTP by name over the VPN');

my @req = grep { $_->{path} eq '/machine/map' }
    @{control(cmd => 'requests')};
my %apps = map { $_->{headers}{'x-caller-app'} => 1 } @req;
ok($apps{$vpn->node_app(1)} && $apps{$vpn->node_app(2)},
    'the server knows each node by its certificate\'s app id');
ok(!grep({ exists $_->{headers}{'x-dstack-target-app'} } @req),
    'the mesh strips x-dstack-target-app');

# a delta crosses the mesh at once, not when a buffer fills
my $t0 = time;
my $fake = control(cmd => 'add', node => { name => 'fake', key =>
    sprintf('nodekey:%064x', 77), ip => '100.128.77.1' });
ok($vpn->wait_peers('m1', 2, 10), 'a delta reaches the device');
my $ms = (time - $t0) * 1000;
cmp_ok($ms, '<', 3000, 'through the mesh without buffering');
diag(sprintf('PeersChanged through the mesh to the device: %.0f ms '
    . '(polling wg show)', $ms));

# silence longer than the mesh's own timeouts is the agent's to detect
control(cmd => 'close');
ok(wait_for(sub {
    (() = $vpn->log('m1') =~ /map: full/g) >= 2
}, 20), 'a closed stream is reopened through the mesh');
