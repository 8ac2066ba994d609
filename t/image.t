#!/usr/bin/perl

# The image, built (make image) and run without an engine (make test-image):
# its contents (no compiler or -dev package, size bounded, the installed
# tree, the dstack-vpc user, HEALTHCHECK), then its filesystem running each
# role (server, node, both, mesh only) in network namespaces with a
# dstack-sim socket bind-mounted (scripts/image.sh run: podman image mount,
# overlay, chroot), each reaching `entrypoint.sh health` OK, `nginx -t` of
# its rendered configuration inside the image, the key 0600, nginx workers
# and redis-server as dstack-vpc; last, the same walk-through as `make
# demo` with the server and nodes from the image (DEMO_IMAGE).
#
# Runs only when asked (DSTACK_IMAGE_TEST=1, as make test-image sets): it
# takes minutes.  IMAGE names the image (default dstack-vpc-nginx:latest).

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack;
use Test::DstackNetns;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);

my $image = $ENV{IMAGE} || 'dstack-vpc-nginx:latest';

if (!$ENV{DSTACK_IMAGE_TEST}) {
    plan skip_all => 'make test-image runs this (DSTACK_IMAGE_TEST=1)';
}

# a missing requirement fails under CI=true, skips (recorded) elsewhere
sub need {
    my ($ok, $why) = @_;
    Test::Dstack->skip_all($why) unless $ok;
}

need($> == 0, 'needs root (namespaces, mounts, chroot)');
need(system('command -v podman >/dev/null 2>&1') == 0,
    'podman not installed (make deps)');
need(system("podman image exists '$image' 2>/dev/null") == 0,
    "no image $image: make image");

my $t = Test::Dstack->new()
    ->has(qw(sim wgctl stream ip curl jq nsenter unshare))->plan(49);

my $repo = $t->repo;
my $imgsh = "$repo/scripts/image.sh";
local $ENV{IMAGE} = $image;

# --- what is in the image -----------------------------------------------------

my %info = map { split / /, $_, 2 } split /\n/, `$imgsh info`;
my $size = $info{size} // 0;
chomp $size;
diag(sprintf 'image %s: %d bytes (%.1f MB), engine %s', $image, $size,
    $size / 1e6, $info{engine} // '?');
ok($size > 50e6, 'image size reported');
# a Debian minbase, nginx, redis, supervisor (Python), wireguard-go, curl:
# ~350 MB (nginx-core's own dependencies, libgd's codecs and ICU among
# them, are ~120 MB); the build stage's toolchain would add ~200 MB more
cmp_ok($size, '<', 400e6, 'image size under 400 MB');

chomp(my $root = `$imgsh mount`);
ok(-d "$root/usr/local/lib/dstack-vpc", "image filesystem at $root");

my (@installed, @dev);
{
    local $/ = '';
    open my $fh, '<', "$root/var/lib/dpkg/status" or die "dpkg status: $!";
    while (my $para = <$fh>) {
        my ($p) = $para =~ /^Package: (\S+)/m or next;
        next unless $para =~ /^Status: install ok installed$/m;
        push @installed, $p;
        push @dev, $p if $p =~ /-dev$/;
    }
}
is_deeply(\@dev, [], 'no -dev package installed');
my @cc = grep { -e "$root$_" } qw(/usr/bin/gcc /usr/bin/cc /usr/bin/clang
    /usr/bin/make /usr/bin/ld /usr/bin/as);
is_deeply(\@cc, [], 'no compiler, linker or make');
my %have = map { $_ => 1 } @installed;
my @want = qw(nginx-core redis-server supervisor wireguard-go
    wireguard-tools curl jq iproute2);
is_deeply([grep { !$have{$_} } @want], [], 'runtime packages present');

my $lib = "$root/usr/local/lib/dstack-vpc";
is(join(' ', sort map { s{.*/}{}r } glob "$lib/modules/*.so"),
    'ngx_http_dstack_auth_module.so ngx_http_dstack_mesh_module.so '
    . 'ngx_http_dstack_metrics_module.so ngx_http_dstack_vpc_api_module.so',
    'the four modules installed');
ok(-x "$lib/scripts/entrypoint.sh" && -x "$root/usr/local/bin/wgctl",
    'entry script and wgctl installed');
ok(-f "$lib/conf/nginx.conf.template", 'templates installed');

my ($pw) = grep { /^dstack-vpc:/ } split /\n/,
    $t->read_file("$root/etc/passwd");
my ($uid, $shell) = (split /:/, $pw // '')[2, 6];
ok(defined $uid && $uid > 0 && $shell eq '/usr/sbin/nologin',
    "user dstack-vpc (uid $uid, no login)");

require JSON::PP;
my $cfg = eval { JSON::PP->new->decode(
    scalar `podman image inspect '$image'`)->[0] } || {};
is_deeply($cfg->{Healthcheck}{Test},
    ['CMD', '/usr/local/lib/dstack-vpc/scripts/entrypoint.sh', 'health'],
    'HEALTHCHECK kept (docker format)');
ok((grep { $_ eq 'DSTACK_VPC_USER=dstack-vpc' } @{$cfg->{Config}{Env} || []}),
    'ENV DSTACK_VPC_USER=dstack-vpc');

# --- each role from the image's filesystem -------------------------------------

my $net = Test::DstackNetns->new() or BAIL_OUT($Test::DstackNetns::WHY);
my $d = $t->testdir;
my $domain = 'img.dstack';
my @cvms = qw(srv n1 both mesh);
my %ip = $net->lan('10.79.' . ($$ % 200 + 20), 'gw', @cvms);
my $gw = $ip{gw};

sub hex40 { substr(`printf '%s' 'image.t $_[0]' | sha1sum`, 0, 40) }
my %app = map { $_ => hex40("app $_") } @cvms;

# one guest agent per CVM, one KMS root
for my $n (@cvms) {
    mkdir "$d/$n";
    $t->run_sim(socket => "$d/$n/dstack.sock", app_id => $app{$n},
        instance_id => hex40("instance $n"), state => 'kms');
    $t->write_file("$d/$n/hosts", "127.0.0.1 localhost\n");
}

# the gateway: TLS passthrough on the SNI <app id>-443s.<domain>
my $routes = join '', map { "        $app{$_}-443s.$domain $ip{$_}:443;\n" }
    @cvms;
mkdir "$d/gw";
$t->write_file("$d/gw/nginx.conf", <<"EOF");
load_module $Test::Dstack::STREAM_SO;
pid $d/gw/nginx.pid;
error_log $d/gw/error.log notice;
user root;
worker_processes 1;
events {}
stream {
    map_hash_bucket_size 128;
    map \$ssl_preread_server_name \$cvm {
$routes        default 127.0.0.1:1;
    }
    server {
        listen $gw:443;
        ssl_preread on;
        proxy_pass \$cvm;
    }
}
EOF

my @pids;
sub spawn {
    my ($log, @cmd) = @_;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        exec(@cmd) or POSIX::_exit(127);
    }
    push @pids, $pid;
    return $pid;
}

spawn("$d/gw/stderr.log", 'ip', 'netns', 'exec', $net->netns('gw'),
    '/usr/sbin/nginx', '-p', "$d/gw/", '-c', "$d/gw/nginx.conf",
    '-g', 'daemon off;');

my %env = (
    srv  => ['VPC_SERVER_ENABLED=true',
             "VPC_ALLOWED_APPS=$app{n1}"],
    n1   => ['VPC_NODE_NAME=node1', "VPC_SERVER_APP_ID=$app{srv}",
             'WG_INTERFACE=dwi1' . $net->tag, "WG_ENDPOINT=$ip{n1}:41641"],
    both => ['VPC_SERVER_ENABLED=true', 'VPC_ALLOWED_APPS=any',
             'VPC_NODE_NAME=both', 'VPC_SERVER_APP_ID=self',
             'WG_INTERFACE=dwi2' . $net->tag, "WG_ENDPOINT=$ip{both}:41641"],
    mesh => [],
);

for my $n (@cvms) {
    spawn("$d/$n/entrypoint.log", $imgsh, 'run', $net->netns($n), "$d/$n",
        "DSTACK_GATEWAY_DOMAIN=$domain:443", "DSTACK_GATEWAY_ADDRESS=$gw:443",
        'VPC_REGISTER_MAX_DELAY=3', @{$env{$n}});
}

sub in_cvm {
    my ($n, @cmd) = @_;
    my $out = `$imgsh exec '$d/$n' @cmd 2>&1`;
    return ($? >> 8, $out);
}

my %role = (srv => 'server', n1 => 'node', both => 'server\+node',
    mesh => 'mesh');
my $deadline = time() + 240;
for my $n (@cvms) {
    my ($rc, $out) = (1, '');
    while (time() < $deadline) {
        ($rc, $out) = in_cvm($n,
            '/usr/local/lib/dstack-vpc/scripts/entrypoint.sh health');
        last if $rc == 0;
        sleep 1;
    }
    my $log = $t->read_file("$d/$n/entrypoint.log") // '';
    is($rc, 0, "$n: entrypoint.sh health OK")
        or diag("$out\n" . join("\n", (split /\n/, $log)[-15 .. -1]));
    like($log, qr/role: $role{$n}\b/, "$n: role $role{$n}");
}

for my $n (@cvms) {
    my ($rc, $out) = in_cvm($n, '/usr/sbin/nginx -t -p /run/dstack-vpc/nginx/'
        . ' -c /etc/dstack-vpc/nginx.conf');
    is($rc, 0, "$n: nginx -t in the image with its rendered config")
        or diag($out);
    my @st = stat "$d/$n/tls/key.pem";
    is(@st ? sprintf('%o', $st[2] & 07777) : 'none', '600',
        "$n: key.pem 0600");
}

# processes in a namespace: name => [uids]
sub procs {
    my ($n) = @_;
    my %p;
    for my $pid (split /\s+/, `ip netns pids ${\ $net->netns($n)}`) {
        my $st = $t->read_file("/proc/$pid/status") // next;
        my ($name) = $st =~ /^Name:\s+(\S+)/m;
        my ($u) = $st =~ /^Uid:\s+(\d+)/m;
        my ($cmd) = ($t->read_file("/proc/$pid/cmdline") // '') =~ /^([^\0]*)/;
        $name = 'nginx-worker' if ($cmd // '') =~ /^nginx: worker/;
        $name = 'nginx-master' if ($cmd // '') =~ /^nginx: master/;
        push @{$p{$name}}, $u;
    }
    return \%p;
}

my $p = procs('srv');
ok(@{$p->{'nginx-worker'} || []}
    && !grep({ $_ != $uid } @{$p->{'nginx-worker'}}),
    'server: nginx workers run as dstack-vpc');
is_deeply($p->{'redis-server'}, [$uid], 'server: redis-server as dstack-vpc');
is_deeply($p->{'nginx-master'}, [0], 'server: nginx master as root');
$p = procs('n1');
ok(@{$p->{'nginx-worker'} || []}
    && !grep({ $_ != $uid } @{$p->{'nginx-worker'}}),
    'node: nginx workers run as dstack-vpc');

# the node's VPN address, served to its apps
# (written by the agent after wgctl has the address: wait for it)
my ($rc, $vip);
$deadline = time() + 60;
do {
    ($rc, $vip) = $net->run('n1', 'curl', '-fsS', '--max-time', '10',
        'http://127.0.0.1/vpc/0/vpn_ip');
} while ($rc != 0 && time() < $deadline && sleep 0.5);
chomp $vip;
like($vip, qr/^100\.(1(2[89]|[3-9]\d)|2[0-5]\d)\.\d+\.\d+$/,
    "node: /vpc/0/vpn_ip $vip");

# mesh calls from the mesh-only CVM to the server, through the gateway: its
# API's /health (no identity needed), and /api/nodes refused (403: not in
# VPC_ALLOWED_APPS)
my @call = ('curl', '-sS', '--max-time', '20', '-w', ' %{http_code}',
    '-H', "x-dstack-target-app: $app{srv}", '-H', 'Host: vpc-server');
($rc, my $out) = $net->run('mesh', @call, 'http://127.0.0.1/health');
like($out, qr/"status".* 200$/s, 'mesh-only CVM reaches the server API');
($rc, $out) = $net->run('mesh', @call, 'http://127.0.0.1/api/nodes');
like($out, qr/ 403$/, 'the server refuses it: not in VPC_ALLOWED_APPS');

# stop: SIGTERM to each image.sh run reaches supervisord, pid 1 inside
kill 'TERM', @pids;
my $stopped = 1;
for my $pid (@pids) {
    my $until = time() + 30;
    sleep 0.1 while waitpid($pid, WNOHANG) == 0 && time() < $until;
    if (waitpid($pid, WNOHANG) == 0) {
        $stopped = 0;
        kill 'KILL', $pid;
        waitpid($pid, 0);
    }
}
ok($stopped, 'every CVM stopped on SIGTERM within 30 s');
my @left = map { split /\s+/, `ip netns pids ${\ $net->netns($_)}` } @cvms;
is_deeply([grep { /\d/ } @left], [], 'nothing left running in the namespaces');
$net->cleanup();

# --- the demo's walk-through, server and nodes from the image --------------------

my $tag = 'di' . ($$ % 100000);
local $ENV{DEMO_DIR} = "$d/demo";
local $ENV{DEMO_TAG} = $tag;
local $ENV{DEMO_KEEP} = 1;
local $ENV{DEMO_TIMEOUT} = 120;
local $ENV{DEMO_IMAGE} = $image;
local $ENV{DSTACK_BUILD} = $Test::Dstack::BUILD;

my $start = time();
my $demo = `timeout 900 $repo/scripts/demo.sh --check 2>&1`;
my $demo_rc = $? >> 8;
diag(sprintf 'walk-through from the image: %.0f s', time() - $start);
my $srvlog = $t->read_file("$d/demo/srv/entrypoint.log") // '';
like($srvlog, qr/role: server\b/, 'demo: the server ran from the image');
like($t->read_file("$d/demo/srv/pid") // '', qr/^\d+$/,
    'demo: through image.sh run');
# nginx workers run as dstack-vpc, which may not connect to the guest
# agent's root-only socket (dstack-sim's, like any root daemon's under umask
# 022, is srwxr-xr-x): the entry script then gives them a root-side
# forwarder (agent-socket), and step 7's /info must pass through it
my $n1log = $t->read_file("$d/demo/n1/entrypoint.log") // '';
unlike($n1log, qr{connect\(\) to unix:\S+ failed \(13: Permission denied\)},
    'demo: the workers reach the guest agent');
for my $s (1 .. 7) {
    my ($text) = $demo =~ /^==> (step $s: .*?)(?=^==> |^demo: \d+ steps)/ms;
    like($text // '', qr/^    \[ok\]/m, 'demo ' . (($text // "step $s") =~ s/\n.*//sr))
        or diag($text // $demo);
}
is($demo_rc, 0, 'demo --check from the image: exit status 0')
    or diag($demo);
my @dleft = grep { /^\Q$tag\E-/ } split /\n/, `ip netns list 2>/dev/null`;
is_deeply(\@dleft, [], 'demo namespaces removed');

system("$imgsh umount");
