#!/usr/bin/perl

# CVM-shaped nodes: two QEMU guests (Debian's generic kernel, the host's /
# read-only over 9p under a tmpfs overlay) on QEMU's user-mode NAT, the way
# dstack's VMM runs CVMs: outbound TCP/UDP only, nothing inbound but the
# gateway's TCP to :443 (a hostfwd, standing for the dstack gateway's own
# path into a CVM).  Each guest runs the node's nginx (conf/node-mesh.conf
# and the :443 relay location as shipped, the project's modules from the
# host's build) and `wgctl up` on kernel WireGuard; the VPC server, its
# Redis and the gateway emulator run on the host side, in a network
# namespace where the guests reach them at 10.0.2.2.  The guests share no
# UDP path (each NAT is its own, and both guests are 10.0.2.15), so the VPN
# between them can only be the relay path over the gateway (issue 10):
# ping and a 10 MB transfer in each direction by VPN name.
#
# ~50 s here with the kit cached (build/vm); `make test-vm` runs it alone
# with t/wgctl-kernel.t.  Every wait in the guests is bounded, so a broken
# path fails in a few minutes rather than hanging.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA;
use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);

use Test::Dstack qw(wait_for);
use Test::DstackNetns;
use Test::Dstack::Vm;
use Test::Dstack::Vpn;

my $t = Test::Dstack->new()->has(qw(auth mesh api stream sim redis wgctl));
my $net = Test::DstackNetns->new()
    or $t->skip_all($Test::DstackNetns::WHY);
my $vm = Test::Dstack::Vm->new(kernel => 'generic')
    or $t->skip_all($Test::Dstack::Vm::WHY);

my $wgctl = $t->bin('wgctl');
my $relay = `'$wgctl' up --help 2>&1` =~ /--relay-socket/;

if (!$relay) {
    plan tests => 1;
    fail('needs the relay path (issue 10): wgctl up has no --relay-socket');
    exit 1;
}

$t->plan(15);

my $d = $t->testdir();
my $vpn = Test::Dstack::Vpn->new($t, $net);
my $SERVER_APP = $Test::Dstack::Vpn::SERVER_APP;
my @nodes = qw(n1 n2);

# --- the host side: server, Redis, gateway -----------------------------------

my $h = $net->netns('h');
my %fwd = (n1 => '10.202.0.11', n2 => '10.202.0.12');

for my $ip ('10.202.0.1', values %fwd) {
    system('ip', '-n', $h, 'addr', 'add', "$ip/32", 'dev', 'lo') == 0
        or die "ip addr add $ip in $h failed\n";
}

my $v = $vpn->{vpc} = {
    net => '10.202.0', domain => 'vpc.test', nodes => \@nodes, n => {},
    keepalive => 5, udp => 0,
    ip => { srv => '10.202.0.1', gw => '127.0.0.1', %fwd },
};

my $i = 0;
for my $name (@nodes) {
    $i++;
    my $n = $v->{n}{$name} = { index => $i, app => $vpn->node_app($i),
        instance => $vpn->node_instance($i) };
    $n->{cert} = $t->sim_cert("node-$name", app_id => $n->{app},
        usage => 'both');
}

$v->{server_cert} = $t->sim_cert('vpc-server', app_id => $SERVER_APP,
    usage => 'both');
$v->{redis} = $t->run_redis(aof => 1);

# the server's own nginx and the gateway listen in the host-side namespace
# ("srv" and "gw" name it for Vpn.pm's nginx())
$net->{ns}{srv} = $net->{ns}{gw} = $h;

$t->write_file('vpc-server.conf', $vpn->_server_conf(
    server_conf => "dstack_vpc_control_keepalive 5s;"));
$vpn->nginx('srv', 'vpc-server.conf');
$t->write_file('vpc-gateway.conf', $vpn->_gateway_conf());
$vpn->nginx('gw', 'vpc-gateway.conf');

# the nodes' files, as the guests will see them: their :443 on the guest's
# 10.0.2.15, the gateway at 10.0.2.2
my %sha;

for my $name (@nodes) {
    local $v->{ip} = { %{$v->{ip}}, $name => '10.0.2.15', gw => '10.0.2.2' };
    $t->write_file("vpc-$name.conf", $vpn->_node_conf($name));

    my $data = $vpn->data_dir($name);
    open my $fh, '>', "$data/big" or die;
    open my $r, '<', '/dev/urandom' or die;
    read($r, my $bytes, 10 * 1024 * 1024) == 10 * 1024 * 1024 or die;
    print $fh $bytes;
    close $fh;
    $sha{$name} = Digest::SHA::sha256_hex($bytes);
}

# single-use pre-auth keys minted on the server's Redis (wgctl preauthkeys)
my %key;

for my $name (@nodes) {
    my $out = `'$wgctl' preauthkeys create --json --redis unix:$v->{redis}{socket} 2>&1`;
    my $j = eval { JSON::PP->new->decode($out) } // {};
    $key{$name} = $j->{key} or die "preauthkeys create: $out\n";
}

# --- the guests --------------------------------------------------------------

sub node_script {
    my ($name, $other) = @_;
    my $n = $v->{n}{$name};
    # under make test-asan the guest's nginx loads ASan modules: the
    # runtime (from the host's root over 9p) goes in first, as on the host
    my %ne = Test::Dstack::_nginx_env();
    my $ne = join ' ', map { "$_=$ne{$_}" } sort keys %ne;

    return <<EOF;
export D=$d
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
step nginx env $ne /usr/sbin/nginx -p \$D/ -c \$D/vpc-$name.conf -e \$D/logs/error-$name.log
mkdir -p /var/lib/wgctl && chmod 700 /var/lib/wgctl
$wgctl up --server http://127.0.0.1:80 --target-app $SERVER_APP \\
    --auth-key $key{$name} --hostname $name --instance-id $n->{instance} \\
    --relay-socket \$D/relay-$name.sock --state-dir /var/lib/wgctl \\
    --keepalive 5 >/tmp/agent.log 2>&1 &
sec joined
for i in \$(seq 1 240); do
    grep -q "$other\\.dstack\\.internal" /etc/hosts && break
    sleep 0.5
done
grep dstack /etc/hosts
end joined \$?
step kernel sh -c 'ip -d link show dstack0 | grep -o "wireguard"; lsmod | grep -c ^wireguard'
# barriers over the VPN: "mark" is a request the other guest's :8080
# logs; neither guest powers off before the other has all it fetched
mark() {
    for i in \$(seq 1 8); do
        curl -s -m 10 -o /dev/null http://$other.dstack.internal:8080/mark-\$1-$name && return 0
        sleep 1
    done
    return 1
}
await() {
    for i in \$(seq 1 \$2); do
        grep -q "GET /mark-\$1-$other " \$D/logs/access-vpc-$name.log && return 0
        sleep 0.5
    done
    return 1
}
timed ping ping -c 6 -w 40 $other.dstack.internal
mark pinged
await pinged 240
timed fetch sh -c 'curl -sS --connect-timeout 60 -m 240 -o /tmp/big http://$other.dstack.internal:8080/data/big && sha256sum /tmp/big'
step status $wgctl status --state-dir /var/lib/wgctl
mark fetched
sec served
await fetched 480
grep -c 'GET /data/big HTTP/1.1" 200 10485760' \$D/logs/access-vpc-$name.log
end served \$?
sleep 3
step agent_log tail -40 /tmp/agent.log
step error_log sh -c 'grep -h "\\[\\(alert\\|emerg\\|crit\\)\\]" \$D/logs/*error*.log | tail -20'
step nginx_log sh -c 'tail -n 30 \$D/logs/vpc-$name-error.log'
EOF
}

my $t0 = time;
my %g;

for my $name (@nodes) {
    my ($other) = grep { $_ ne $name } @nodes;
    $g{$name} = $vm->start($name, node_script($name, $other),
        kernel => 'generic', mem => '768M', timeout => 720, netns => $h,
        net => "user,hostfwd=tcp:$fwd{$name}:443-:443");
}

for my $name (@nodes) {
    my $out = $vm->wait_for($g{$name}, qr/^VM-EXIT \d+/m, 750);
    ok(defined $out, "$name: the guest ran its script and powered off")
        or diag($vm->console($g{$name}), $vm->output($g{$name}));
}

my $took = time - $t0;
my %s = map { $_ => Test::Dstack::Vm::sections($vm->output($g{$_})) } @nodes;

diag(sprintf('two CVM-shaped guests: prepare %.1f s (the kit, cached when '
    . '~0), boot to the script %s s, whole run %.1f s', $vm->prepare_seconds(),
    join(' / ', map { $s{$_}{_uptime} // '?' } @nodes), $took));

for my $name (@nodes) {
    my ($other) = grep { $_ ne $name } @nodes;
    my $s = $s{$name};
    my $sec = sub {
        my ($k, $re, $what) = @_;
        my $x = $s->{$k} // { out => '(no section)', rc => -1 };
        ok(($x->{rc} // -1) == 0 && $x->{out} =~ $re, "$name: $what")
            or diag("$name $k: rc " . ($x->{rc} // 'none') . "\n$x->{out}\n"
                . "agent:\n" . ($s->{agent_log}{out} // '')
                . "nginx:\n" . ($s->{nginx_log}{out} // ''));
    };

    $sec->('joined', qr/\b\Q$other\E\.dstack\.internal\b/,
        "joined; $other in its hosts block");
    $sec->('kernel', qr/wireguard\n1\n/, 'dstack0 is a kernel WireGuard link');
    # the first datagram opens the relay tunnel and the handshake; six
    # answers within 40 s (under make test-asan on a loaded host the first
    # handshake initiation can miss, and WireGuard retries it after 5 s)
    $sec->('ping', qr/\d+ packets transmitted, 6 received/,
        "ping $other.dstack.internal (before any bulk transfer)");
    $sec->('fetch', qr/^\Q$sha{$other}\E /m,
        "10 MB from $other by VPN name, sha256 equal");
    # what crossed each path (the path shown may be a direct probe of the
    # moment: every guest is 10.0.2.15, so is every announced endpoint)
    my ($drx, $dunit, $rrx) = ($s->{status}{out} // '')
        =~ /^\S+\s+\Q$other\E\.dstack\.internal\s+online\s.*direct rx ([\d.]+) (B|KiB|MiB) .*relay rx ([\d.]+) MiB/m;
    # (bytes that arrive while a direct probe is on count as direct)
    ok(defined $rrx && $rrx >= 5,
        "$name: status: $other online, most of the 10 MB counted on the "
        . 'relay (' . ($rrx // '?') . ' MiB; direct: ' . ($drx // '?') . ' '
        . ($dunit // '') . ')')
        or diag($s->{status}{out});
    $sec->('served', qr/^1$/m, "$other fetched the 10 MB from it");

    diag("$name: wgctl status:\n" . ($s->{status}{out} // ''));
    diag(sprintf("$name: ping %.1f s, 10 MB %.1f s (%.2f MB/s)",
        $s->{ping}{seconds} // -1, $s->{fetch}{seconds} // -1,
        $s->{fetch}{seconds} ? 10 / $s->{fetch}{seconds} : 0));
}

my @alerts = map { $s{$_}{error_log}{out} // '' } @nodes;
ok(!grep({ /\S/ } @alerts), 'no [alert]/[emerg]/[crit] in the nodes\' logs')
    or diag(@alerts);

for my $name (@nodes) {
    $vm->stop($g{$name});
}
