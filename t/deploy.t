#!/usr/bin/perl

# The entry script (scripts/entrypoint.sh render): roles from the seed's
# environment variables, certificates from the guest agent (key 0600, the
# KMS root as CA), gateway domain detection, configs rendered from conf/
# that pass nginx -t, and a missing or bad variable failing fast with its
# name in the message.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack;
use Time::HiRes qw(time);

my $t = Test::Dstack->new()->has(qw(auth mesh api sim jq envsubst curl))
    ->plan(78);

my $repo = $t->repo;
my $d = $t->testdir;
my $entry = "$repo/scripts/entrypoint.sh";

my $SELF = '5e' x 20;
my $INST = '1c' x 20;
my $OTHER = 'AbCdEf0123456789abcdef0123456789ABCDEF01';

my $sock = $t->run_sim(socket => "$d/dstack.sock", app_id => $SELF,
    instance_id => $INST);
my $root = `$Test::Dstack::BUILD/bin/dstack-sim root --state-dir $d/kms`;
chomp $root;

# a gateway RPC for domain detection: /prpc/Info over TLS
my $ca = $t->openssl_ca('gwca');
$t->write_file_expand('gw.conf', <<"EOF");
%%TEST_GLOBALS%%
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:%%PORT_9202%% ssl;
        ssl_certificate $ca->{chain};
        ssl_certificate_key $ca->{key};
        location = /prpc/Info {
            return 200 '{"base_domain":"gw.example","external_port":8443}';
        }
    }
}
EOF
$t->run('gw.conf');
my $gw_port = $t->port(9202);

my $n = 0;

# render(VAR => value, ...) -> (exit code, output, dir, seconds)
sub render {
    my (%env) = @_;
    my $dir = "$d/r" . ++$n;
    my $cmd = delete $env{_cmd} // 'render';

    my %base = (
        PATH => $ENV{PATH},
        DSTACK_SOCKET => $sock,
        DSTACK_SYS_CONFIG => "$dir/none.json",
        DSTACK_VPC_CONF_DIR => "$dir/conf",
        DSTACK_VPC_TLS_DIR => "$dir/tls",
        DSTACK_VPC_RUN_DIR => "$dir/run",
        DSTACK_VPC_DATA_DIR => "$dir/data",
        DSTACK_VPC_MODULES => "$Test::Dstack::BUILD/modules",
        WGCTL => "$Test::Dstack::BUILD/bin/wgctl",
        DSTACK_GATEWAY_DOMAIN => 'gw.test:443',
        DSTACK_RESOLVER => '127.0.0.1',
        Test::Dstack::entry_env(),
        %env,
    );
    delete @base{grep { !defined $base{$_} } keys %base};

    my $envs = join ' ', map { my $v = $base{$_}; $v =~ s/'/'\\''/g;
        "$_='$v'" } sort keys %base;

    my $t0 = time;
    my $out = `env -i $envs $entry $cmd 2>&1`;
    return ($? >> 8, $out, $dir, time - $t0);
}

sub conf {
    my ($dir, $name) = @_;
    return $t->read_file("$dir/conf/$name");
}

# --- the seed's server: VPC_SERVER_ENABLED=true VPC_ALLOWED_APPS=any
#     MESH_BACKEND=127.0.0.1:8000

my ($rc, $out, $dir) = render(VPC_SERVER_ENABLED => 'true',
    VPC_ALLOWED_APPS => 'any', MESH_BACKEND => '127.0.0.1:8000');
is($rc, 0, 'seed server env: renders') or diag($out);
like($out, qr/role: server\b/, 'server: role');
like($out, qr/nginx -t: .* is valid/, 'server: nginx -t passed');
my $nginx = conf($dir, 'nginx.conf');
like($nginx, qr/ngx_http_dstack_vpc_api_module\.so/, 'server: api module');
like($nginx, qr/include \S+vpc-api\.conf;/, 'server: vpc-api.conf');
like(conf($dir, 'vpc-api.conf'), qr/server_name\s+vpc-server;/,
    'server: the API answers Host: vpc-server');
like(conf($dir, 'vpc-api.conf'),
    qr/dstack_vpc_api_server_gateway\s+$SELF\s+gw\.test:443 443;/,
    'server: its own app id and gateway in server_url');
like(conf($dir, 'vpc-api.conf'), qr{unix:$dir/run/redis\.sock},
    'server: redis socket in this instance\'s run dir');
like(conf($dir, 'backend.conf'), qr{proxy_pass\s+http://127\.0\.0\.1:8000;},
    'server: MESH_BACKEND behind :443');
like(conf($dir, 'control-plane.conf'), qr{location /machine/},
    'server: control plane under the gateway name');
like(conf($dir, 'supervisord.d/server.conf'), qr/program:redis/,
    'server: supervises redis');
ok(!-e "$dir/conf/supervisord.d/node.conf", 'server: no node agent');
like(conf($dir, 'wg-relay.conf'), qr{location[ ]=[ ]/\.dstack/wg-relay[ ]\{
    \s+default_type\s+application/json;\s+return\s404\s}sx,
    'server without a node: the relay path answers 404');
like(conf($dir, 'control-plane.conf'), qr/dstack_vpc_control_wg_path\s+auto;/,
    'server: WGPath auto without VPC_WG_PATH');
like(conf($dir, 'redis.conf'), qr{^dir $dir/data/redis$}m,
    'server: redis data dir moved');

# certificates
my $mode = (stat "$dir/tls/key.pem")[2] & 07777;
is(sprintf('%o', $mode), '600', 'key file is 0600');
my @chain = $t->read_file("$dir/tls/cert.pem") =~ /BEGIN CERTIFICATE/g;
is(scalar @chain, 3, 'chain of leaf, app CA, KMS root');
my ($got_ca, $want_ca) = map { my $c = $t->read_file($_); $c =~ s/\s+\z//;
    $c } "$dir/tls/ca.pem", $root;
is($got_ca, $want_ca, 'CA file is the KMS root');
like(`openssl verify -CAfile $dir/tls/ca.pem -untrusted $dir/tls/cert.pem $dir/tls/cert.pem 2>&1`,
    qr/OK/, 'chain verifies to the CA file');
my $all = join '', map { $t->read_file($_) } glob("$dir/conf/*.conf $dir/conf/*/*.conf");
unlike($all, qr/PRIVATE KEY/, 'no key material in rendered configs');

# --- the seed's node: VPC_NODE_NAME, VPC_SERVER_APP_ID, MESH_BACKEND,
#     VPC_NODE_TYPE

($rc, $out, $dir) = render(VPC_NODE_NAME => 'my-node',
    VPC_SERVER_APP_ID => $OTHER, MESH_BACKEND => '127.0.0.1:27017',
    VPC_NODE_TYPE => 'mongodb');
is($rc, 0, 'seed node env: renders') or diag($out);
like($out, qr/role: node\b/, 'node: role');
$nginx = conf($dir, 'nginx.conf');
unlike($nginx, qr/vpc_api/, 'node: no api module');
like(conf($dir, 'backend.conf'), qr{proxy_pass\s+http://127\.0\.0\.1:27017;},
    'node: MESH_BACKEND');
like(conf($dir, 'node-mesh.conf'),
    qr/dstack_mesh_gateway\s+gw\.test:443;/, 'node: mesh gateway');
like(conf($dir, 'node-mesh.conf'), qr{alias\s+$dir/run/vpc/;},
    'node: /vpc/0/ from the run dir');
like(conf($dir, 'supervisord.d/node.conf'), qr/entrypoint\.sh node-agent/,
    'node: supervises the node agent');
like(conf($dir, 'backend.conf'), qr{^\s*include $dir/conf/wg-relay\.conf;}m,
    'node: the relay location in the :443 server');
like(conf($dir, 'backend.conf'),
    qr/limit_conn_zone \$dstack_app_id zone=dstack_wg_relay:1m;/,
    'node: tunnels counted per calling app');
my $relay = conf($dir, 'wg-relay.conf');
like($relay, qr{location = /\.dstack/wg-relay \{}, 'node: relay location');
like($relay, qr/dstack_auth\s+on;/, 'relay: verified callers only');
like($relay, qr/limit_conn\s+dstack_wg_relay 256;/,
    'relay: 256 tunnels per app by default');
like($relay, qr{proxy_pass\s+http://unix:$dir/run/wg-relay\.sock;},
    'relay: to wgctl\'s socket in this instance\'s run dir');
like($relay, qr/proxy_set_header\s+Connection upgrade;/, 'relay: Upgrade');
like($relay, qr/proxy_read_timeout\s+75s;/, 'relay: idle timeout above 30 s');

($rc, $out, $dir) = render(VPC_NODE_NAME => 'n1', VPC_SERVER_APP_ID => 'self');
is($rc, 0, 'node with VPC_SERVER_APP_ID=self') or diag($out);

($rc, $out, $dir) = render(VPC_SERVER_ENABLED => 'true',
    VPC_ALLOWED_APPS => "$SELF,$OTHER", VPC_NODE_NAME => 'srv',
    VPC_SERVER_APP_ID => 'self', VPC_SERVER_URL => 'https://vpc.example:8443',
    MESH_ALLOWED_APPS => $OTHER);
is($rc, 0, 'server and node, an id list, VPC_SERVER_URL') or diag($out);
like($out, qr/role: server\+node/, 'server+node: role');
ok(-e "$dir/conf/supervisord.d/node.conf"
    && -e "$dir/conf/supervisord.d/server.conf", 'server+node: both programs');
like(conf($dir, 'vpc-api.d/server-url.conf'),
    qr{dstack_vpc_api_server_url "https://vpc\.example:8443";},
    'VPC_SERVER_URL becomes server_url');
like(conf($dir, 'vpc-api.conf'), qr/dstack_vpc_api_allow\s+"$SELF,$OTHER";/,
    'VPC_ALLOWED_APPS list');
like(conf($dir, 'backend.conf'), qr/dstack_auth_allow\s+$OTHER;/,
    'MESH_ALLOWED_APPS');

like(conf($dir, 'backend.conf'),
    qr/include \S+control-plane\.conf; include \S+wg-relay\.conf;/,
    'server+node: control plane and relay location');

($rc, $out, $dir) = render(VPC_SERVER_ENABLED => 'true',
    VPC_ALLOWED_APPS => 'any', VPC_NODE_NAME => 'srv',
    VPC_SERVER_APP_ID => 'self', VPC_WG_PATH => 'relay',
    WG_RELAY_TUNNELS => 8);
is($rc, 0, 'VPC_WG_PATH=relay, WG_RELAY_TUNNELS=8: nginx -t passes')
    or diag($out);
like(conf($dir, 'control-plane.conf'), qr/dstack_vpc_control_wg_path\s+relay;/,
    'VPC_WG_PATH sets the server\'s WGPath');
like(conf($dir, 'wg-relay.conf'), qr/limit_conn\s+dstack_wg_relay 8;/,
    'WG_RELAY_TUNNELS');

($rc, $out, $dir) = render();
is($rc, 0, 'no role variables: mesh only') or diag($out);
like($out, qr/role: mesh\b/, 'mesh: role');
unlike(conf($dir, 'wg-relay.conf'), qr/proxy_pass/,
    'mesh: no relay to wgctl');

# --- workers that may not connect to the guest agent's socket (a root
#     daemon's, srwxr-xr-x, as the simulator's): a root-side forwarder

($rc, $out, $dir) = render(DSTACK_VPC_USER => 'www-data');
is($rc, 0, 'workers as www-data: renders') or diag($out);
like(conf($dir, 'node-mesh.conf'),
    qr{proxy_pass\s+http://unix:\Q$dir\E/run/agent\.sock;},
    'www-data: the guest-agent fallback goes through the forwarder');
my $fwd = qr{socat UNIX-LISTEN:\Q$dir\E/run/agent\.sock,\S*group=www-data};
like(conf($dir, 'supervisord.d/agent-socket.conf') // '',
    qr{$fwd\S* UNIX-CONNECT:\Q$sock\E},
    'www-data: the forwarder, for the workers\' group only');
($rc, $out, $dir) = render();
ok(!-e "$dir/conf/supervisord.d/agent-socket.conf",
    'root workers: no forwarder');

# --- gateway domain from the host's sys-config (as the seed)

$t->write_file('sys.json', qq({"gateway_urls":["https://127.0.0.1:1",)
    . qq("https://127.0.0.1:$gw_port"]}));
($rc, $out, $dir) = render(DSTACK_GATEWAY_DOMAIN => undef,
    DSTACK_SYS_CONFIG => "$d/sys.json");
is($rc, 0, 'gateway from sys-config') or diag($out);
like($out, qr/gateway domain gw\.example:8443 \(from https/,
    'gateway Info: base_domain:external_port');
like(conf($dir, 'node-mesh.conf'), qr/dstack_mesh_gateway\s+gw\.example:8443;/,
    'detected domain rendered');

($rc, $out, $dir) = render(DSTACK_GATEWAY_DOMAIN => 'gw.test:443',
    DSTACK_GATEWAY_ADDRESS => '10.1.2.3:443');
like(conf($dir, 'node-mesh.conf'),
    qr/dstack_mesh_gateway\s+gw\.test:443 address=10\.1\.2\.3:443;/,
    'DSTACK_GATEWAY_ADDRESS');

# --- failing fast, naming the variable

my $secs;
($rc, $out, $dir, $secs) = render(VPC_SERVER_ENABLED => 'true', _cmd => 'run');
isnt($rc, 0, 'server without VPC_ALLOWED_APPS refuses to start');
like($out, qr/VPC_ALLOWED_APPS is not set/, '... naming VPC_ALLOWED_APPS');
ok($secs < 5, '... at once');
ok(!-e "$dir/conf/nginx.conf", '... before rendering anything');

($rc, $out) = render(VPC_NODE_NAME => 'n1');
isnt($rc, 0, 'node without VPC_SERVER_APP_ID');
like($out, qr/VPC_SERVER_APP_ID is not set/, '... naming VPC_SERVER_APP_ID');

($rc, $out) = render(DSTACK_GATEWAY_DOMAIN => undef);
isnt($rc, 0, 'no gateway domain');
like($out, qr/DSTACK_GATEWAY_DOMAIN is not set/, '... naming DSTACK_GATEWAY_DOMAIN');

$t->write_file('dead.json', '{"gateway_urls":["https://127.0.0.1:1"]}');
($rc, $out) = render(DSTACK_GATEWAY_DOMAIN => undef,
    DSTACK_SYS_CONFIG => "$d/dead.json");
like($out, qr/none of the gateway_urls .* answered; set DSTACK_GATEWAY_DOMAIN/,
    'unreachable gateways: names DSTACK_GATEWAY_DOMAIN');

($rc, $out) = render(VPC_SERVER_ENABLED => 'true', VPC_ALLOWED_APPS => 'app1');
like($out, qr/VPC_ALLOWED_APPS="app1": "app1" is not an app id/,
    'bad VPC_ALLOWED_APPS');

($rc, $out) = render(VPC_NODE_NAME => 'bad name', VPC_SERVER_APP_ID => 'self');
like($out, qr/VPC_NODE_NAME="bad name"/, 'bad VPC_NODE_NAME');

($rc, $out) = render(VPC_NODE_NAME => 'n', VPC_SERVER_APP_ID => 'xyz');
like($out, qr/VPC_SERVER_APP_ID="xyz"/, 'bad VPC_SERVER_APP_ID');

($rc, $out) = render(VPC_WG_PATH => 'udp');
like($out, qr/VPC_WG_PATH="udp": use auto, direct or relay/,
    'bad VPC_WG_PATH');

($rc, $out) = render(VPC_NODE_NAME => 'n', VPC_SERVER_APP_ID => 'self',
    WG_RELAY_TUNNELS => '0');
like($out, qr/WG_RELAY_TUNNELS="0"/, 'bad WG_RELAY_TUNNELS');

($rc, $out) = render(VPC_SERVER_ENABLED => 'yes please');
like($out, qr/VPC_SERVER_ENABLED="yes please"/, 'bad VPC_SERVER_ENABLED');

($rc, $out) = render(MESH_BACKEND => 'x; include /etc/passwd');
like($out, qr/MESH_BACKEND=.*expected host:port/, 'bad MESH_BACKEND');

($rc, $out) = render(DSTACK_SOCKET => "$d/nowhere.sock");
like($out, qr/DSTACK_SOCKET=/, 'no guest agent: names DSTACK_SOCKET');

($rc, $out) = render(VPC_SERVER_ENABLED => 'true', VPC_ALLOWED_APPS => 'any',
    VPC_SERVER_URL => 'ftp://x');
like($out, qr/VPC_SERVER_URL="ftp:\/\/x"/, 'bad VPC_SERVER_URL');

# --- the scripts are shellcheck-clean

SKIP: {
    Test::Dstack::skip_missing('shellcheck not installed', 3)
        unless Test::Dstack::_which('shellcheck');

    for my $s (qw(scripts/entrypoint.sh scripts/demo.sh scripts/deps.sh)) {
        my $sc = `shellcheck $repo/$s 2>&1`;
        is($?, 0, "shellcheck $s") or diag($sc);
    }
}
