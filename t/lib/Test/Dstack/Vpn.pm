package Test::Dstack::Vpn;

# VPN tests: node agents ("wgctl up") in network namespaces, and what to
# look at on each node: the agent's status file and log, "wg show", the
# namespace's hosts file, commands run there.
#
#   my $net = Test::DstackNetns->new() or $t->skip_all(...);
#   my $vpn = Test::Dstack::Vpn->new($t, $net);
#   my %ip = $net->lan('10.201.0', qw(srv a b));
#   $vpn->agent('a', server => "http://$ip{srv}:8080", auth_key => $k);
#   $vpn->wait_connected('a') or diag($vpn->log('a'));
#   my $dump = $vpn->wg_dump('a');          # {public, port, peers => {}}
#   $vpn->stop_agent('a');                  # SIGTERM, waits
#
# Each node's device is "wg<name><tag>" (unique across namespaces: the
# UAPI sockets share /var/run/wireguard), its state dir is in the test
# dir, and its /etc/hosts is the namespace's own (hosts_file()).

use strict;
use warnings;

use JSON::PP;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);

use Test::Dstack qw(wait_for);
use Test::DstackNetns;

my $JSON = JSON::PP->new->canonical->allow_nonref;
my @ALL;

# my ($t, $net, $vpn) = Test::Dstack::Vpn->setup(relay => 1): the start
# of a whole-VPC test (vpc() below): what it needs (a missing piece skips
# the file, and fails it under CI), the namespaces, the kit; with relay,
# also a wgctl that has the relay path
sub setup {
    my ($class, %o) = @_;

    my $t = Test::Dstack->new()->has(qw(auth mesh api stream sim redis
        wgctl wg wireguard-go curl ping nft sha256sum));

    my $net = Test::DstackNetns->new()
        or $t->skip_all($Test::DstackNetns::WHY);

    my $vpn = $class->new($t, $net);

    $t->skip_all('wgctl up has no --relay-socket (the relay path)')
        if $o{relay} && !$vpn->relay_supported();

    return ($t, $net, $vpn);
}

sub new {
    my ($class, $t, $net) = @_;

    my $self = bless { t => $t, net => $net, agents => {} }, $class;
    push @ALL, $self;

    return $self;
}

sub wgctl { $_[0]{t}->bin('wgctl') }

sub ifname {
    my ($self, $name) = @_;
    return "wg$name" . $self->{net}->tag();
}

sub state_dir {
    my ($self, $name) = @_;
    my $a = $self->{agents}{$name};
    return $a && $a->{state_dir} ? $a->{state_dir}
        : $self->{t}->testdir() . "/state-$name";
}

sub log_file {
    my ($self, $name) = @_;
    return $self->{t}->testdir() . "/logs/wgctl-$name.log";
}

# starts "wgctl up" in the node's namespace; options:
#   server, auth_key, hostname (default: the node's name), target_app,
#   state_dir, args => [...] (more options), keepalive, max_backoff,
#   hosts => 0 (no hosts file)
sub agent {
    my ($self, $name, %o) = @_;

    my $net = $self->{net};
    my $ns = $net->netns($name);
    my $ifname = $self->ifname($name);
    my $dir = $o{state_dir} // $self->{t}->testdir() . "/state-$name";

    $net->hosts_file($name) unless defined $o{hosts} && !$o{hosts};
    $net->track_link($ifname);

    my @cmd = ($self->wgctl(), 'up', '--server', $o{server},
        '--auth-key', $o{auth_key}, '--hostname', $o{hostname} // $name,
        '--interface', $ifname, '--state-dir', $dir,
        '--keepalive', $o{keepalive} // 2,
        '--max-backoff', $o{max_backoff} // 2);
    push @cmd, '--target-app', $o{target_app} if $o{target_app};
    push @cmd, (defined $o{hosts} && !$o{hosts}) ? '--no-hosts'
        : ('--hosts-file', '/etc/hosts');
    push @cmd, @{$o{args} || []};

    my $log = $self->log_file($name);
    my $pid = fork() // die "fork: $!";

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>>', $log;
        exec('ip', 'netns', 'exec', $ns, @cmd) or POSIX::_exit(127);
    }

    $self->{agents}{$name} = { pid => $pid, ifname => $ifname,
        state_dir => $dir };

    return $pid;
}

sub agent_pid {
    my ($self, $name) = @_;
    my $a = $self->{agents}{$name} or return undef;
    return $a->{pid};
}

# the exit status once it ended, or undef while it runs
sub reap {
    my ($self, $name) = @_;

    my $a = $self->{agents}{$name} or return undef;
    return $a->{status} if defined $a->{status};

    my $r = waitpid($a->{pid}, WNOHANG);
    return undef if $r == 0;

    $a->{status} = $r == $a->{pid} ? $? : -1;

    return $a->{status};
}

sub wait_exit {
    my ($self, $name, $timeout) = @_;

    wait_for(sub { defined $self->reap($name) }, $timeout // 10)
        or return undef;

    return $self->reap($name);
}

# SIGTERM (or another signal) and wait; returns the exit status
sub stop_agent {
    my ($self, $name, $sig) = @_;

    my $a = $self->{agents}{$name} or return undef;
    return $a->{status} if defined $a->{status};

    kill $sig // 'TERM', $a->{pid};
    my $status = $self->wait_exit($name, 20);

    if (!defined $status) {
        kill 'KILL', $a->{pid};
        $status = $self->wait_exit($name, 5);
    }

    return $status;
}

sub log {
    my ($self, $name) = @_;
    return $self->{t}->read_file($self->log_file($name));
}

sub status {
    my ($self, $name) = @_;

    my $text = $self->{t}->read_file($self->state_dir($name)
        . '/status.json');

    return eval { $JSON->decode($text) };
}

# connected, as the running agent (not a killed one) wrote it
sub wait_connected {
    my ($self, $name, $timeout) = @_;

    my $pid = $self->agent_pid($name) // 0;

    return wait_for(sub {
        my $s = $self->status($name);
        $s && ($s->{state} // '') eq 'connected' && $s->{pid} == $pid;
    }, $timeout // 20);
}

# runs a command in the node's namespace: (exit code, output)
sub run {
    my ($self, $name, @cmd) = @_;
    return $self->{net}->run($name, @cmd);
}

# "wgctl <args>" in the node's namespace
sub wgctl_run {
    my ($self, $name, @args) = @_;
    return $self->{net}->run($name, $self->wgctl(), @args);
}

# wg show <if> dump: {public, port, peers => {key => {endpoint, allowed,
# handshake, rx, tx, keepalive}}}
sub wg_dump {
    my ($self, $name) = @_;

    my ($rc, $out) = $self->run($name, 'wg', 'show', $self->ifname($name),
        'dump');
    return undef if $rc != 0;

    my @lines = split /\n/, $out;
    my @dev = split /\t/, shift @lines // '';
    my %d = (public => $dev[1], port => $dev[2], peers => {});

    for (@lines) {
        my @f = split /\t/;
        $d{peers}{$f[0]} = { endpoint => $f[2], allowed => $f[3],
            handshake => $f[4], rx => $f[5], tx => $f[6],
            keepalive => $f[7] };
    }

    return \%d;
}

sub wait_peers {
    my ($self, $name, $n, $timeout) = @_;

    return wait_for(sub {
        my $d = $self->wg_dump($name);
        $d && keys %{$d->{peers}} == $n;
    }, $timeout // 20);
}

sub hosts {
    my ($self, $name) = @_;
    return $self->{t}->read_file($self->{net}->hosts_file($name));
}

# the main-context lines of one nginx instance among several (its own pid
# file and error log; the harness's modules): for configs run by nginx()
sub globals {
    my ($self, $tag) = @_;

    my $t = $self->{t};
    my $d = $t->testdir();
    my $g = $t->expand('%%TEST_GLOBALS%%');

    $g =~ s{^pid .*$}{pid $d/$tag.pid;}m;
    $g =~ s{^error_log \S+}{error_log $d/logs/$tag-error.log}m;

    return $g;
}

# nginx with the harness's config file <conf> (its own "pid" and logs),
# run inside the node's namespace; stopped by the harness at the end.
# Waits until every "listen <ip>:<port>" accepts, seen from inside.
sub nginx {
    my ($self, $name, $conf) = @_;

    my $t = $self->{t};
    my $d = $t->testdir();
    my %env = Test::Dstack::_nginx_env();
    local @ENV{keys %env} = values %env;

    my ($rc, $out) = $self->run($name, $Test::Dstack::NGINX, '-p', "$d/",
        '-c', "$d/$conf", '-e', "$d/logs/error.log");
    die "nginx ($conf) in $name failed: $out\n" if $rc != 0;

    $t->{running}{$conf} = 1;

    my @listen = $t->read_file($conf) =~ /^\s*listen\s+([\d.]+:\d+)/mg;

    for my $l (@listen) {
        my ($ip, $port) = split /:/, $l;
        wait_for(sub {
            ($self->run($name, 'bash', '-c',
                "exec 3<>/dev/tcp/$ip/$port"))[0] == 0;
        }, 10) or die "nginx ($conf) in $name: $l not listening\n";
    }

    return $self;
}

# a Perl function run in the node's namespace as its own process
# ("ip netns exec <ns> perl -M<module> -e '<module>::<func>()' -- @args"),
# its output in logs/<name>-<func>.log; stopped by the harness at the end
sub perl_daemon {
    my ($self, $name, $module, $func, @args) = @_;

    my $t = $self->{t};
    my $lib = $t->repo() . '/t/lib';
    my $log = $t->testdir() . "/logs/$name-$func.log";
    my $ns = $self->{net}->netns($name);

    return $t->run_daemon(sub {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>>', $log;
        exec('ip', 'netns', 'exec', $ns, $^X, "-I$lib", "-M$module", '-e',
            "${module}::$func()", '--', @args);
    });
}


# --- a whole VPC ------------------------------------------------------------
#
# vpc() builds, on one bridged underlay <net>.0/24:
#   srv    the VPC server: conf/vpc-api.conf as shipped (auth + api
#          modules) on <net>.1:443, Redis in the test's own namespace
#          reached over its Unix socket
#   gw     the dstack gateway emulator: nginx stream, ssl_preread, the SNI
#          "<app or instance>-443s.<domain>" to that node's :443
#   nodes  nginx with conf/node-mesh.conf as shipped (127.0.0.1:80 in the
#          node's namespace) and a :443 mTLS server (dstack_auth) in front
#          of a small backend; :8080 answers "<name>" on every address, so
#          the VPN addresses serve HTTP too
# Certificates come from the guest-agent simulator, one KMS root.  Nodes
# are made (and their gateway routes exist) up front; they join later.
#
#   $vpn->vpc(nodes => [qw(n1 n2 n3)], server_conf => '...');
#   my $key = $vpn->preauth_key('n1');         # REST, through n1's mesh
#   $vpn->join_vpc('n1', auth_key => $key);    # wgctl up through the mesh
#
# vpc(udp => 0) drops UDP between the nodes and all but the gateway's TCP
# (nftables, isolate()); block_udp()/unblock_udp() toggle UDP for one node.
# Each node's :443 is conf/backend.conf.template rendered, with its relay
# location proxying to relay_socket(), which join_vpc() hands to wgctl.

our $SERVER_APP = '5e77e75e77e75e77e75e77e75e77e75e77e75e77';

sub node_app { sprintf('%02x', 0xa0 + $_[1]) x 20 }
sub node_instance { sprintf('%02x', 0xc0 + $_[1]) x 20 }

sub vpc {
    my ($self, %o) = @_;

    my $t = $self->{t};
    my $net = $self->{net};
    my $d = $t->testdir();
    my @nodes = @{$o{nodes}};

    my $v = $self->{vpc} = {
        net => $o{net} // '10.202.0',
        domain => $o{domain} // 'vpc.test',
        nodes => \@nodes,
        n => {},
        keepalive => $o{keepalive},
        allow => $o{allow},
        node_allow => $o{node_allow},
        relay_tunnels => $o{relay_tunnels},
        udp => $o{udp} // 1,
        relay => $o{relay},
    };

    my %ip = $net->lan($v->{net}, 'srv', 'gw', @nodes);
    $v->{ip} = \%ip;

    my $i = 0;
    for my $name (@nodes) {
        $i++;
        $v->{n}{$name} = { index => $i, app => $self->node_app($i),
            instance => $self->node_instance($i) };
        $v->{n}{$name}{cert} = $t->sim_cert("node-$name",
            app_id => $v->{n}{$name}{app}, usage => 'both');
    }

    $v->{server_cert} = $t->sim_cert('vpc-server', app_id => $SERVER_APP,
        usage => 'both');

    $v->{redis} = $t->run_redis(aof => 1);

    $t->write_file('vpc-server.conf', $self->_server_conf(%o));
    $self->nginx('srv', 'vpc-server.conf');

    $t->write_file('vpc-gateway.conf', $self->_gateway_conf());
    $self->nginx('gw', 'vpc-gateway.conf');

    for my $name (@nodes) {
        $net->hosts_file($name);
        $t->write_file("vpc-$name.conf", $self->_node_conf($name));
        $self->nginx($name, "vpc-$name.conf");
    }

    # the dstack reality: a CVM reaches the gateway (and the server) over
    # TCP, only the gateway reaches into it, no UDP between CVMs
    if (!$v->{udp}) {
        $self->isolate($_) for @nodes;
    }

    return $v;
}

# nftables in a node: only TCP to the gateway's and the server's :443 out,
# from the gateway to its :443 in; UDP blocked ('udp_dropped' counts it)
sub isolate {
    my ($self, $name) = @_;

    my $ip = $self->{vpc}{ip};

    $self->{net}->firewall($name, only => 1, udp => 0,
        tcp_out => ["$ip->{gw}:443", "$ip->{srv}:443"],
        tcp_in => ["$ip->{gw}:443"]);

    return $self;
}

sub block_udp { $_[0]{net}->block_udp($_[1]); $_[0] }
sub unblock_udp { $_[0]{net}->unblock_udp($_[1]); $_[0] }
sub udp_dropped { $_[0]{net}->udp_dropped($_[1]) }

# whether this wgctl has the relay path ("wgctl up --relay-socket")
sub relay_supported {
    my ($self) = @_;

    my $wgctl = $self->wgctl();

    $self->{relay_supported} //=
        (`'$wgctl' up --help 2>&1` =~ /--relay-socket/ ? 1 : 0);

    return $self->{relay_supported};
}

sub vpc_info { $_[0]{vpc} }

sub _http_globals {
    my ($self, $tag) = @_;

    my $h = $self->{t}->expand('%%TEST_GLOBALS_HTTP%%');
    $h =~ s{logs/access\.log}{logs/access-$tag.log};
    $h =~ s{/(\w+_temp);}{/$tag-$1;}g;

    return $h;
}

sub _server_conf {
    my ($self, %o) = @_;

    my $t = $self->{t};
    my $v = $self->{vpc};
    my $c = $v->{server_cert};

    my $api = $t->read_file($t->repo() . '/conf/vpc-api.conf');
    die "conf/vpc-api.conf not found\n" unless length $api;

    my $allow = $o{allow} // 'any';
    my $extra = $o{server_conf} // '';

    $api =~ s/\$\{VPC_ALLOWED_APPS\}/$allow/g;
    $api =~ s/\$\{VPC_SERVER_APP_ID\}/$SERVER_APP/g;
    $api =~ s/\$\{DSTACK_GATEWAY_DOMAIN\}/$v->{domain}/g;
    $api =~ s{/etc/dstack/mesh/cert\.pem}{$c->{chain}}g;
    $api =~ s{/etc/dstack/mesh/key\.pem}{$c->{key}}g;
    $api =~ s{/etc/dstack/mesh/ca\.pem}{$c->{root}}g;
    $api =~ s{^(\s*)include /etc/dstack-vpc/\S+;}{$1$extra}m;
    $api =~ s{unix:/run/dstack-vpc/redis\.sock}{unix:$v->{redis}{socket}}g;
    $api =~ s{^(\s*)listen(\s+)443\b}{$1listen$2$v->{ip}{srv}:443}m
        or die "conf/vpc-api.conf: no \"listen 443\"\n";

    return $self->globals('vpc-server') . "events {\n}\n\nhttp {\n"
        . $self->_http_globals('vpc-server')
        . ($o{server_http} // '') . "\n$api\n}\n";
}

sub _gateway_conf {
    my ($self) = @_;

    my $v = $self->{vpc};
    my $map = "        $SERVER_APP-443s.$v->{domain} $v->{ip}{srv}:443;\n";

    for my $name (@{$v->{nodes}}) {
        my $n = $v->{n}{$name};
        $map .= "        $n->{app}-443s.$v->{domain} $v->{ip}{$name}:443;\n"
            . "        $n->{instance}-443s.$v->{domain} "
            . "$v->{ip}{$name}:443;\n";
    }

    return $self->globals('vpc-gateway') . <<"EOF";
events {
}

stream {
    map_hash_bucket_size 128;

    map \$ssl_preread_server_name \$vpc_peer {
$map        default 127.0.0.1:1;
    }

    server {
        listen $v->{ip}{gw}:443;
        ssl_preread on;
        proxy_pass \$vpc_peer;
        proxy_connect_timeout 2s;
    }
}
EOF
}

# the node's :443 as the image renders it: conf/backend.conf.template with
# conf/wg-relay.conf.template included, so the relay location
# (/.dstack/wg-relay) and everything else in front of the backend cannot
# drift from what ships; its backend is 127.0.0.1:8081
sub _backend_conf {
    my ($self, $name) = @_;

    my $t = $self->{t};
    my $d = $t->testdir();
    my $v = $self->{vpc};
    my $c = $v->{n}{$name}{cert};
    my $sock = $self->relay_socket($name);

    my $b = $t->read_file($t->repo() . '/conf/backend.conf.template');
    die "conf/backend.conf.template not found\n" unless length $b;

    # a node's relay end, included in :443 as the entry script does
    my $relay = $t->read_file($t->repo() . '/conf/wg-relay.conf.template');

    my %var = (
        MESH_BACKEND => '127.0.0.1:8081',
        MESH_ALLOW => $v->{node_allow} // 'any',
        VPC_ALLOWED_APPS => $v->{allow} // 'any',
        WG_RELAY_TUNNELS => $v->{relay_tunnels} // 256,
        WG_RELAY_SOCKET => $sock,
    );

    # comments go first: they name the placeholders too
    $relay =~ s/^\s*#.*\n//mg;
    $b =~ s/^\s*#.*\n//mg;

    $relay =~ s/\$\{(\w+)\}/exists $var{$1} ? $var{$1} : "\${$1}"/ge;
    $var{BACKEND_INCLUDES} = $relay;

    $b =~ s/\$\{(\w+)\}/exists $var{$1} ? $var{$1} : "\${$1}"/ge;
    $b =~ s{/etc/dstack/mesh/cert\.pem}{$c->{chain}}g;
    $b =~ s{/etc/dstack/mesh/key\.pem}{$c->{key}}g;
    $b =~ s{/etc/dstack/mesh/ca\.pem}{$c->{root}}g;
    # the relay's Unix socket, wherever the image puts it
    $b =~ s{unix:/[^\s:;]*relay[^\s:;]*}{unix:$sock}g;
    $b =~ s{^(\s*listen\s+)443\b}{$1$v->{ip}{$name}:443}m
        or die "conf/backend.conf.template: no \"listen 443\"\n";

    die "conf/backend.conf.template: unknown placeholder $1\n"
        if $b =~ /(\$\{\w+\})/;

    return $b;
}

sub relay_socket {
    my ($self, $name) = @_;
    return $self->{t}->testdir() . "/relay-$name.sock";
}

# the files a node's :8080 serves under /data/ (over the VPN)
sub data_dir {
    my ($self, $name) = @_;

    my $dir = $self->{t}->testdir() . "/www-$name";
    mkdir $dir;

    return $dir;
}

sub _node_conf {
    my ($self, $name) = @_;

    my $t = $self->{t};
    my $d = $t->testdir();
    my $v = $self->{vpc};
    my $c = $v->{n}{$name}{cert};

    my $mesh = $t->read_file($t->repo() . '/conf/node-mesh.conf');
    die "conf/node-mesh.conf not found\n" unless length $mesh;

    mkdir "$d/vpc-files-$name";
    my $data = $self->data_dir($name);

    $mesh =~ s/\$\{DSTACK_GATEWAY\}/$v->{domain}:443 address=$v->{ip}{gw}:443/g;
    $mesh =~ s/\$\{DSTACK_RESOLVER\}/127.0.0.1:53/g;
    $mesh =~ s{/etc/dstack/mesh/cert\.pem}{$c->{chain}}g;
    $mesh =~ s{/etc/dstack/mesh/key\.pem}{$c->{key}}g;
    $mesh =~ s{/etc/dstack/mesh/ca\.pem}{$c->{root}}g;
    $mesh =~ s{/var/run/dstack\.sock}{$d/dstack-$name.sock}g;
    $mesh =~ s{/run/dstack-vpc/vpc/}{$d/vpc-files-$name/}g;
    $mesh =~ s{access_log\s+/dev/stdout}{access_log $d/access-mesh-$name.log}g;

    my $backend = $self->_backend_conf($name);

    return $self->globals("vpc-$name") . "events {\n}\n\nhttp {\n"
        . $self->_http_globals("vpc-$name") . <<"EOF";

$mesh

# a peer's mesh arrives at :443 (conf/backend.conf.template)
$backend

    # the app behind :443: its caller's app id from the certificate
    server {
        listen 127.0.0.1:8081;

        location / {
            return 200 "$name via mesh from \$http_x_dstack_app_id\\n";
        }

        location /data/ {
            alias $data/;
        }
    }

    # over the VPN, by address or by name
    server {
        listen 8080;

        location / {
            return 200 "$name\\n";
        }

        location /data/ {
            alias $data/;
        }
    }
}
EOF
}

# curl in the node's namespace against its mesh: (status, body)
#   app => target app (default: the VPC server), method, body, headers
sub mesh {
    my ($self, $name, $path, %o) = @_;

    my @cmd = ('curl', '-sS', '-m', $o{timeout} // 10, '-w', '\n%{http_code}',
        '-H', 'x-dstack-target-app: ' . ($o{app} // $SERVER_APP));
    push @cmd, '-X', $o{method} if $o{method};
    push @cmd, '-H', 'Content-Type: application/json', '--data-binary',
        $o{body} if defined $o{body};
    push @cmd, '-H', $_ for @{$o{headers} || []};
    push @cmd, "http://127.0.0.1:80$path";

    my ($rc, $out) = $self->run($name, @cmd);
    my ($body, $code) = $out =~ /^(.*)\n(\d+)$/s;

    return ($code // 0, $body // $out);
}

# A relay dial by hand, from a node through its mesh to a peer's relay
# location (docs/wg-relay.md), as wgctl's engine would: the Upgrade
# request, then at once "frames" WireGuard-shaped datagrams (type 4,
# 64 bytes) behind it, and the same again after a 101.  Returns (status,
# what followed the headers or the error body).
#   app, instance   the target (x-dstack-target-*)
#   from, to        WG-Relay-From/-To, 64 hex (undef: header left out)
#   frames          how many datagrams to push (default 16)
sub relay_request {
    my ($self, $name, %o) = @_;

    my @h = ('GET /.dstack/wg-relay HTTP/1.1', 'Host: 127.0.0.1',
        'Connection: Upgrade', 'Upgrade: dstack-wg-relay',
        "x-dstack-target-app: $o{app}", 'x-dstack-target-port: 443');
    push @h, "x-dstack-target-instance: $o{instance}" if $o{instance};
    push @h, "WG-Relay-From: $o{from}" if defined $o{from};
    push @h, "WG-Relay-To: $o{to}" if defined $o{to};

    my $frame = pack('n', 64) . "\x04\0\0\0" . ("\xee" x 60);
    my $frames = $frame x ($o{frames} // 16);
    my $req = join("\r\n", @h) . "\r\n\r\n";

    # the frames go right behind the request (a refused dial must not
    # deliver them) and, after a 101, once more
    my $code = <<'EOF';
use IO::Socket::INET; use IO::Select;
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:80', Timeout => 10)
    or die "connect: $!\n";
binmode $s; binmode STDIN;
my $n = <STDIN>; local $/; my $in = <STDIN>;
my $frames = substr($in, -$n); my $req = substr($in, 0, -$n) . $frames;
syswrite($s, $req) == length $req or die "write: $!\n";
my ($buf, $sel, $end) = ('', IO::Select->new($s), time + 15);
while (time < $end && $sel->can_read($end - time)) {
    last unless sysread($s, $buf, 65536, length $buf);
    last if $buf =~ /^HTTP\/1\.1 101/ && $buf =~ /\r\n\r\n/;
}
if ($buf =~ /^HTTP\/1\.1 101/) {
    syswrite($s, $frames);
    sleep 1;
}
print $buf;
EOF

    $req = length($frames) . "\n" . $req . $frames;

    my $ns = $self->{net}->netns($name);
    my $tmp = $self->{t}->testdir() . "/relay-request-$$.bin";
    open my $fh, '>', $tmp or die "$tmp: $!";
    binmode $fh;
    print $fh $req;
    close $fh;

    my $pid = open(my $rd, '-|') // die "fork: $!";

    if ($pid == 0) {
        open STDIN, '<', $tmp or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        exec('ip', 'netns', 'exec', $ns, $^X, '-e', $code)
            or POSIX::_exit(127);
    }

    binmode $rd;
    my $out = do { local $/; <$rd> } // '';
    close $rd;
    unlink $tmp;

    my ($status) = $out =~ m{^HTTP/1\.[01] (\d{3})};
    my ($rest) = $out =~ /\r\n\r\n(.*)$/s;

    return ($status // 0, $rest // $out);
}

# a pre-auth key from the VPC API (seed-compatible REST) through the mesh
sub preauth_key {
    my ($self, $name, %o) = @_;

    my $n = $self->{vpc}{n}{$name};
    my ($code, $body) = $self->mesh($name, '/api/register?instance_id='
        . ($o{instance} // $n->{instance}) . "&node_name=$name");
    my $j = eval { $JSON->decode($body) } // {};

    return $code == 200 ? $j->{pre_auth_key} : undef;
}

# wgctl up in a node, through its mesh, to the VPC server; with the relay
# path when wgctl has it (relay => 0: without), and its options
# relay_keepalive, path (auto|direct|relay), path_timeout, direct_retry
sub join_vpc {
    my ($self, $name, %o) = @_;

    my $n = $self->{vpc}{n}{$name};

    my @relay;

    if ($o{relay} // $self->{vpc}{relay} // $self->relay_supported()) {
        @relay = ('--relay-socket', $self->relay_socket($name));
        push @relay, '--relay-keepalive', $o{relay_keepalive}
            if $o{relay_keepalive};
        push @relay, '--path', $o{path} if $o{path};
        push @relay, '--path-timeout', $o{path_timeout}
            if $o{path_timeout};
        push @relay, '--direct-retry', $o{direct_retry}
            if $o{direct_retry};
    }

    return $self->agent($name, server => 'http://127.0.0.1:80',
        target_app => $SERVER_APP, auth_key => $o{auth_key},
        keepalive => $o{keepalive} // $self->{vpc}{keepalive} // 30,
        max_backoff => $o{max_backoff},
        state_dir => $o{state_dir},
        args => ['--instance-id', $o{instance} // $n->{instance}, @relay,
            @{$o{args} || []}]);
}

sub cleanup {
    my ($self) = @_;

    for my $name (keys %{$self->{agents}}) {
        my $a = $self->{agents}{$name};
        next if defined $self->reap($name);
        kill 'TERM', $a->{pid};
    }

    for my $name (keys %{$self->{agents}}) {
        my $a = $self->{agents}{$name};
        next if defined $self->wait_exit($name, 5);
        kill 'KILL', $a->{pid};
        waitpid($a->{pid}, 0);
    }

    $self->{agents} = {};
}

END {
    my $status = $?;
    $_->cleanup() for grep { defined } @ALL;
    @ALL = ();
    $? = $status;
}

1;
