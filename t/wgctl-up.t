#!/usr/bin/perl

# wgctl up, the node agent, against a scripted control plane
# (t/lib/Test/Dstack/FakeControl.pm) in network namespaces joined by a
# bridge, with real wireguard-go devices: joining, the device, address,
# MTU, route and hosts block; deltas; bad peers skipped; protocol errors,
# oversized frames and silence ending the stream while the VPN stays up;
# re-registration after a 401; restart with the same key; refused keys;
# SIGTERM, --ephemeral logout, "down --state-dir"; HTTPS with a client
# certificate through nginx; the CLI's errors.  The stand-in is how these
# server behaviours are produced on demand; the real server is exercised
# by t/vpn-e2e.t.

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

my $t = Test::Dstack->new()->has(qw(wgctl wg ping));

my $net = Test::DstackNetns->new()
    or $t->skip_all($Test::DstackNetns::WHY);

$t->plan(72);

my $d = $t->testdir();
my %ip = $net->lan('10.201.0', qw(srv a b c c2 c4));
my $ctl = "$d/control.sock";
my $server = "http://$ip{srv}:8080";
my $vpn = Test::Dstack::Vpn->new($t, $net);

$vpn->perl_daemon('srv', 'Test::Dstack::FakeControl', 'main',
    '--listen', "$ip{srv}:8080", '--control', $ctl, '--keepalive', 1,
    '--key', 'hskey-auth-good', '--key', 'hskey-auth-once:single');
wait_for(sub { -S $ctl }, 10) or die "control-plane stand-in did not start\n";

sub control { Test::Dstack::FakeControl::command($ctl, {@_}) }

sub requests {
    my ($path) = @_;
    return grep { $_->{path} eq $path } @{control(cmd => 'requests')};
}

sub node_ip {
    my ($name) = @_;
    my ($n) = grep { $_->{name} eq $name } @{control(cmd => 'nodes')};
    return $n ? $n->{ip} : '';
}

sub key_hex {
    my ($n) = @_;
    return sprintf('%064x', $n);
}

sub b64 {
    my ($hex) = @_;
    return encode_base64(pack('H*', $hex), '');
}

# a reply within 10 s: the first handshake may wait for wireguard-go's
# 5-s retry when both peers were added at the same moment
sub ping {
    my ($from, $to) = @_;
    return $vpn->run($from, 'ping', '-c', '1', '-w', '10', $to);
}

sub log_like {
    my ($name, $re, $timeout) = @_;
    return wait_for(sub { $vpn->log($name) =~ $re }, $timeout // 10);
}

# --- joining ---------------------------------------------------------------

$vpn->agent('a', server => $server, auth_key => 'hskey-auth-good');
$vpn->agent('b', server => $server, auth_key => 'hskey-auth-good',
    target_app => 'ab' x 20);

ok($vpn->wait_connected('a') && $vpn->wait_connected('b'),
    'two agents connect') or diag($vpn->log('a'), $vpn->log('b'));

my ($sa, $sb) = ($vpn->status('a'), $vpn->status('b'));
like($sa->{address}, qr/^100\.(1[2-8]\d|19[01])\.\d+\.\d+$/,
    'the address is in 100.128.0.0/10');
isnt($sa->{address}, $sb->{address}, 'the two addresses differ');
is($sa->{name}, 'a.dstack.internal', 'name from the server');

ok($vpn->wait_peers('a', 1) && $vpn->wait_peers('b', 1),
    'each device has the other as its peer');

my $wa = $vpn->wg_dump('a');
my $pb = $wa->{peers}{$sb->{public_key}};
ok($pb, "a's device has b's public key");
is($pb && $pb->{allowed}, "$sb->{address}/32", 'allowed IPs: its /32');
is($pb && $pb->{endpoint}, "$ip{b}:41641", 'endpoint: b\'s LAN address');
is($pb && $pb->{keepalive}, 25, 'persistent keepalive 25');
is($wa->{port}, 41641, 'listen port 41641');
is($wa->{public}, $sa->{public_key}, 'the device has the node key');

my ($rc, $out) = $vpn->run('a', 'ip', '-o', 'addr', 'show', 'dev',
    $vpn->ifname('a'));
like($out, qr{inet \Q$sa->{address}\E/32}, 'address /32 on the device');

($rc, $out) = $vpn->run('a', 'ip', 'link', 'show', $vpn->ifname('a'));
like($out, qr/mtu 1380\b/, 'MTU 1380');

($rc, $out) = $vpn->run('a', 'ip', 'route', 'show', '100.128.0.0/10');
like($out, qr/100\.128\.0\.0\/10 dev \Q${\ $vpn->ifname('a')}\E/,
    'route to the VPC prefix through the device');

($rc, $out) = ping('a', $sb->{address});
is($rc, 0, 'ping from a to b over the VPN') or diag($out);

like($vpn->hosts('a'), qr/^\Q$sb->{address}\E b\.dstack\.internal b$/m,
    'hosts block names b');

($rc, $out) = ping('b', 'a.dstack.internal');
is($rc, 0, 'ping from b to a.dstack.internal') or diag($out);

my @st = stat($vpn->state_dir('a') . '/node.key');
is($st[2] & 07777, 0600, 'node key file is 0600');

($rc, $out) = $vpn->wgctl_run('a', 'status', '--json', '--state-dir',
    $vpn->state_dir('a'));
my $js = eval { decode_json($out) } // {};
ok($rc == 0 && $js->{running} && $js->{state} eq 'connected'
    && $js->{address} eq $sa->{address}
    && $js->{name} eq 'a.dstack.internal' && $js->{connected_since}
    && @{$js->{peers}} == 1 && $js->{peers}[0]{name} eq 'b.dstack.internal'
    && $js->{peers}[0]{on_device} && $js->{peers}[0]{rx_bytes} > 0,
    'status --json: this node, the agent, peers with device numbers') or diag($out);

($rc, $out) = $vpn->wgctl_run('a', 'status', '--state-dir',
    $vpn->state_dir('a'));
like($out, qr/a\.dstack\.internal \(this node\).*connected since.*b\.dstack\.internal\s+online\s+direct \Q$ip{b}\E:41641\s+handshake \d+ s ago/s,
    'status: text');

# SIGHUP: the agent repairs what was changed behind its back
$vpn->run('a', 'ip', 'route', 'del', '100.128.0.0/10');
$vpn->run('a', 'wg', 'set', $vpn->ifname('a'), 'peer', $sb->{public_key},
    'remove');
kill 'HUP', $vpn->agent_pid('a');
ok($vpn->wait_peers('a', 1), 'SIGHUP: a removed peer is put back');
($rc, $out) = $vpn->run('a', 'ip', 'route', 'show', '100.128.0.0/10');
like($out, qr/dev \Q${\ $vpn->ifname('a')}\E/,
    'SIGHUP: and the removed route');

my ($tapp) = grep { $_->{headers}{'x-dstack-target-app'} }
    requests('/machine/map');
is($tapp && $tapp->{headers}{'x-dstack-target-app'}, 'ab' x 20,
    '--target-app sends x-dstack-target-app');

my ($reg) = grep { $_->{body}{Hostinfo}{Hostname} eq 'a' }
    requests('/machine/register');
ok($reg->{body}{NodeKey} =~ /^nodekey:[0-9a-f]{64}$/
    && $reg->{body}{Auth}{AuthKey} eq 'hskey-auth-good'
    && $reg->{body}{Hostinfo}{Hostname} eq 'a'
    && $reg->{headers}{'content-type'} eq 'application/json',
    'RegisterRequest fields');

my $pid = $vpn->agent_pid('a');
my $cmdline = `cat /proc/$pid/cmdline`;
unlike($cmdline, qr/hskey-auth-good/, 'the auth key is wiped from argv');

# --- deltas ----------------------------------------------------------------

my $fake = control(cmd => 'add', node => { name => 'fake1', key =>
    'nodekey:' . key_hex(1001), ip => '100.128.5.1',
    endpoints => ['10.201.0.99:41641'] });

ok($vpn->wait_peers('a', 2) && $vpn->wait_peers('b', 2),
    'PeersChanged: a new peer reaches both devices');
like($vpn->hosts('a'), qr/^100\.128\.5\.1 fake1\.dstack\.internal fake1$/m,
    'PeersChanged: and the hosts block');

control(cmd => 'patch', patch => { NodeID => $fake->{id},
    Endpoints => ['10.201.0.98:5000'] });
ok(wait_for(sub {
    my $p = $vpn->wg_dump('a')->{peers}{b64(key_hex(1001))};
    $p && $p->{endpoint} eq '10.201.0.98:5000';
}), 'PeersChangedPatch: the endpoint changes on the device');

control(cmd => 'remove', id => $fake->{id});
ok($vpn->wait_peers('a', 1), 'PeersRemoved: the peer leaves the device');
ok(wait_for(sub { $vpn->hosts('a') !~ /fake1/ }),
    'PeersRemoved: and the hosts block');

# one bad peer does not break the frame
control(cmd => 'frame', json => { PeersChanged => [
    { ID => 501, Name => 'good.dstack.internal.', Key => 'nodekey:'
      . key_hex(501), Addresses => ['100.128.9.1/32'] },
    { ID => 502, Name => 'badkey.dstack.internal.', Key => 'nodekey:xyz',
      Addresses => ['100.128.9.2/32'] },
    { ID => 503, Name => 'outside.dstack.internal.', Key => 'nodekey:'
      . key_hex(503), Addresses => ['192.168.1.1/32'] },
    { ID => 504, Name => 'Bad Name', Key => 'nodekey:' . key_hex(504),
      Addresses => ['100.128.9.4/32'] },
] });

ok($vpn->wait_peers('a', 2), 'bad peers skipped, the good one applied');
ok(log_like('a', qr/skipped peer 502: invalid key "nodekey:xyz"/)
    && $vpn->log('a') =~ /skipped peer 503: Addresses entry "192\.168\.1\.1\/32" is outside the VPC prefix/
    && $vpn->log('a') =~ /skipped peer 504: invalid name "Bad Name"/,
    'each skipped peer is logged with its value');

control(cmd => 'frame', json => { PeersRemoved => [501] });
ok($vpn->wait_peers('a', 1), 'and removed again');

# --- protocol errors, silence: reconnect, the VPN stays up -------------------

my $maps = () = requests('/machine/map');

control(cmd => 'frame', to => 'a', raw_b64 =>
    encode_base64(pack('V', 9) . '{"Peers":', ''));
ok(log_like('a', qr/map stream: invalid JSON .*; reconnecting/),
    'a frame that is not JSON ends the stream');
ok(wait_for(sub { requests('/machine/map') > $maps }, 10),
    'and the agent reconnects');
ok($vpn->wait_connected('a'), 'connected again');

control(cmd => 'frame', to => 'a', raw_b64 =>
    encode_base64(pack('V', 8 * 1024 * 1024 + 1), ''));
ok(log_like('a', qr/map stream: a frame above 8388608 bytes/),
    'a frame above 8 MiB is refused from its header');

control(cmd => 'keepalive', interval => 0);
ok(log_like('a', qr/no frame for \d+ ms; reconnecting/, 15),
    'no frame for 2 keepalive intervals: reconnect');

($rc, $out) = ping('a', $sb->{address});
is($rc, 0, 'the VPN stays up meanwhile') or diag($out);

control(cmd => 'keepalive', interval => 1);
ok($vpn->wait_connected('a') && $vpn->wait_connected('b'),
    'both connected again');

# --- the server forgets a node: 401, register again --------------------------

my $regs = () = requests('/machine/register');
control(cmd => 'forget', name => 'a');

ok(log_like('a', qr/does not know this node's key; registering again/),
    '401 on the map: the agent registers again');
ok(wait_for(sub { requests('/machine/register') > $regs }, 10)
    && $vpn->wait_connected('a'), 'registered and connected again');
ok($vpn->wait_peers('b', 1) && $vpn->wait_peers('a', 1),
    'each device has one peer again');

($rc, $out) = $vpn->run('a', 'ip', '-o', 'addr', 'show', 'dev',
    $vpn->ifname('a'));
my @addrs = $out =~ /inet (\S+)/g;
is("@addrs", $vpn->status('a')->{address} . '/32',
    'a new address replaces the old one');
($rc, $out) = $vpn->run('a', 'ip', 'route', 'show', '100.128.0.0/10');
like($out, qr/dev \Q${\ $vpn->ifname('a')}\E/,
    'and the route survives the change');

# --- kill -9 and restart: same key, the device kept meanwhile ----------------

my $old_key = $vpn->status('b')->{public_key};
my $nodes = @{control(cmd => 'nodes')};

$vpn->stop_agent('b', 'KILL');
$sa = $vpn->status('a');

($rc, $out) = ping('b', $sa->{address});
is($rc, 0, 'agent killed: the VPN still works') or diag($out,
    explain($vpn->wg_dump('a'), $vpn->wg_dump('b')),
    ($vpn->run('a', 'ip', 'addr'))[1], ($vpn->run('b', 'ip', 'route'))[1]);

$vpn->agent('b', server => $server, auth_key => 'hskey-auth-good');
ok($vpn->wait_connected('b'), 'restarted agent connects');
is($vpn->status('b')->{public_key}, $old_key, 'with the same node key');
is(scalar @{control(cmd => 'nodes')}, $nodes, 'and no new node record');

# a second agent on the same state directory is refused
$vpn->agent('b2', server => $server, auth_key => 'hskey-auth-good',
    hosts => 0, state_dir => $vpn->state_dir('b'));
is($vpn->wait_exit('b2') >> 8, 1, 'a second agent on one state dir exits 1');
like($vpn->log('b2'), qr/an agent \(pid \d+\) already runs on/,
    'saying which agent holds it');

# --- refused keys --------------------------------------------------------------

$vpn->agent('c', server => $server, auth_key => 'hskey-auth-nope');
is($vpn->wait_exit('c', 15) >> 8, 1, 'an unknown auth key: exit 1');
like($vpn->log('c'), qr/register: refused with 401: unknown auth key/,
    'with the server\'s reason');

$vpn->agent('c', server => $server, auth_key => 'hskey-auth-once',
    state_dir => "$d/state-c1", args => ['--ephemeral']);
ok($vpn->wait_connected('c'), 'a single-use key works once');
ok($vpn->wait_peers('a', 2), 'the third node joins the others');

$vpn->agent('c2', server => $server, auth_key => 'hskey-auth-once',
    hosts => 0);
is($vpn->wait_exit('c2', 15) >> 8, 1, 'the used single-use key is refused');
like($vpn->log('c2'), qr/refused with 401: auth key already used/,
    'as already used');

# --- leaving -------------------------------------------------------------------

is($vpn->stop_agent('c') >> 8, 0, 'SIGTERM: the agent exits 0');
ok(scalar requests('/machine/logout'), '--ephemeral: it logged out');
ok($vpn->wait_peers('a', 1), 'and left the other devices');
ok($vpn->wg_dump('c'), 'its device stays up');
is($vpn->status('c')->{state}, 'stopped', 'status file: stopped');

($rc, $out) = $vpn->wgctl_run('a', 'down', '--state-dir',
    $vpn->state_dir('a'));
is($rc, 0, 'down --state-dir') or diag($out);
ok(defined $vpn->wait_exit('a', 10) && !$vpn->wg_dump('a'),
    'stops the agent and removes the device');
unlike($vpn->hosts('a'), qr/dstack-vpc/, 'and the hosts block');

# --- HTTPS with a client certificate ---------------------------------------------

my $ca = $t->openssl_ca('ca');
$t->openssl_cert('srv', $ca, ext => "subjectAltName=IP:$ip{srv}\n");
$t->openssl_cert('node', $ca);

$t->write_file_expand('tls.conf', $vpn->globals('tls') . <<"EOF");
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen $ip{srv}:8443 ssl;
        ssl_certificate $d/srv.crt;
        ssl_certificate_key $d/srv.key;
        ssl_client_certificate $d/ca.crt;
        ssl_verify_client on;

        location / {
            proxy_pass http://$ip{srv}:8080;
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_read_timeout 1h;
        }
    }
}
EOF
$vpn->nginx('srv', 'tls.conf');

$vpn->agent('c', server => "https://$ip{srv}:8443",
    auth_key => 'hskey-auth-good', state_dir => "$d/state-c3",
    args => ['--cacert', "$d/ca.crt", '--cert', "$d/node.crt", '--key',
    "$d/node.key"]);
ok($vpn->wait_connected('c'), 'HTTPS with a client certificate');
ok($vpn->wait_peers('c', 2), 'the map stream through nginx');

$vpn->agent('c4', server => "https://$ip{srv}:8443", hosts => 0,
    auth_key => 'hskey-auth-good', args => ['--cacert', "$d/ca.crt"]);
ok(log_like('c4', qr/register: answered|refused with 400|register: .*(certificate|SSL|alert)/i, 10),
    'without a client certificate nginx refuses it');
$vpn->stop_agent('c4');

# --- the command line --------------------------------------------------------------

($rc, $out) = $vpn->wgctl_run('a', 'up', '--help');
ok($rc == 0 && $out =~ /Usage: .* up --server/, 'up --help');

($rc, $out) = $vpn->wgctl_run('a', 'up', '--server', $server,
    '--auth-key', 'k', '--hostname', 'x', '--mtu', '9000');
ok($rc == 1 && $out =~ /invalid MTU "9000" \(1280\.\.1420\)/,
    'invalid MTU, quoted');

($rc, $out) = $vpn->wgctl_run('a', 'up', '--server', 'ftp://x',
    '--auth-key', 'k', '--hostname', 'x');
ok($rc == 1 && $out =~ /invalid server URL "ftp:\/\/x"/,
    'invalid server URL, quoted');

($rc, $out) = $vpn->wgctl_run('a', 'up', '--server', $server);
ok($rc == 1 && $out =~ /--auth-key and --hostname are required/,
    'missing options');
