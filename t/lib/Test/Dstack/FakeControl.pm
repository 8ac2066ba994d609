package Test::Dstack::FakeControl;

# A scripted stand-in for the control plane of docs/control-plane.md, for
# testing the node agent's side of the protocol: what the real server
# (ngx_dstack_vpc_api_module) cannot easily be made to do — bad frames,
# oversized frames, silence, a forgotten node key, a peer with a bad key.
# NOT a substitute for the real server: t/vpn-e2e.t runs that.
#
# One process, one select() loop, plain HTTP/1.1.  Run it (in a network
# namespace) with
#   perl -It/lib -MTest::Dstack::FakeControl -e \
#       'Test::Dstack::FakeControl::main()' -- \
#       --listen 10.201.0.1:8080 --control /tmp/x/ctl.sock \
#       --key hskey-auth-good --key hskey-auth-once:single --keepalive 2
# and drive it through the control socket, one JSON line per command
# (Test::Dstack::FakeControl::command($socket, {cmd => ...})):
#   nodes                        registered nodes
#   requests                     what was asked: [{method, path, headers, body}]
#   frame   {json|raw_b64, to}   send a frame (or raw bytes) to the streams
#   add     {node}               a peer that is not an agent: PeersChanged
#   remove  {id}                 PeersRemoved
#   patch   {patch}              PeersChangedPatch
#   keepalive {interval}         0 stops KeepAlive frames
#   close                        end every stream
#   forget  {name}               drop a node (PeersRemoved to the others):
#                                its next map answers 401
#   set     {name, app, instance, endpoints}
#                                a node's AppID, InstanceID, Endpoints
#                                (PeersChanged to the others)
#   wgpath  {path}               "WGPath" of the next full maps (null: none)
#
# Nodes get AppID from --app-id (none without it, or "app" given to add/
# set) and InstanceID from their RegisterRequest.

use strict;
use warnings;

use Getopt::Long qw(GetOptionsFromArray);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use Socket qw(SOMAXCONN);
use Time::HiRes qw(time);

my $JSON = JSON::PP->new->canonical->allow_nonref;

# --- the client side, for tests ------------------------------------------

sub command {
    my ($path, $cmd) = @_;

    my $s = IO::Socket::UNIX->new(Peer => $path) or return undef;
    print $s $JSON->encode($cmd), "\n";
    $s->flush();

    my $line = <$s>;
    close $s;

    return defined $line ? $JSON->decode($line) : undef;
}

# --- the server ----------------------------------------------------------

my (%nodes, %keys, @requests, %conns);
my ($next_id, $keepalive, $sel) = (1, 30, undef);
my ($app_id, $wg_path);

sub main {
    my @args = @ARGV;
    my ($listen, $control, @keys);

    GetOptionsFromArray(\@args, 'listen=s' => \$listen,
        'control=s' => \$control, 'key=s' => \@keys,
        'keepalive=f' => \$keepalive, 'app-id=s' => \$app_id,
        'wg-path=s' => \$wg_path) or die "usage\n";

    for (@keys) {
        my ($k, $flag) = split /:/;
        $keys{$k} = { single => ($flag // '') eq 'single', used => 0 };
    }

    $SIG{PIPE} = 'IGNORE';

    my $srv = IO::Socket::INET->new(LocalAddr => $listen, Listen => SOMAXCONN,
        ReuseAddr => 1) or die "listen $listen: $!\n";
    unlink $control;
    my $ctl = IO::Socket::UNIX->new(Local => $control, Listen => 16)
        or die "control $control: $!\n";

    $sel = IO::Select->new($srv, $ctl);
    my $next_keepalive = time + $keepalive;

    while (1) {
        my $wait = $keepalive > 0 ? $next_keepalive - time : 1;
        $wait = 0 if $wait < 0;

        for my $fh ($sel->can_read($wait)) {
            if ($fh == $srv) {
                my $c = $srv->accept() or next;
                $conns{fileno $c} = { fh => $c, buf => '' };
                $sel->add($c);

            } elsif ($fh == $ctl) {
                my $c = $ctl->accept() or next;
                my $line = <$c>;
                my $reply = eval { control($JSON->decode($line)) }
                    // { error => "$@" };
                print $c $JSON->encode($reply), "\n";
                close $c;

            } else {
                client($fh);
            }
        }

        if ($keepalive > 0 && time >= $next_keepalive) {
            broadcast({ KeepAlive => JSON::PP::true });
            $next_keepalive = time + $keepalive;
        }
    }
}

sub close_conn {
    my ($fh) = @_;
    my $c = delete $conns{fileno $fh};
    $sel->remove($fh);
    close $fh;

    for my $n (values %nodes) {
        delete $n->{stream} if $n->{stream} && $n->{stream} == $fh;
    }
}

sub client {
    my ($fh) = @_;
    my $c = $conns{fileno $fh} or return;

    my $n = sysread($fh, my $data, 65536);
    if (!$n) {
        close_conn($fh);
        return;
    }

    return if $c->{streaming};
    $c->{buf} .= $data;

    my $end = index($c->{buf}, "\r\n\r\n");
    return if $end < 0;

    my ($head) = substr($c->{buf}, 0, $end);
    my ($line, @h) = split /\r\n/, $head;
    my ($method, $path) = split / /, $line;
    my %h = map { /^([^:]+):\s*(.*)$/ ? (lc $1 => $2) : () } @h;
    my $len = $h{'content-length'} // 0;

    return if length($c->{buf}) < $end + 4 + $len;

    my $body = substr($c->{buf}, $end + 4, $len);
    my $req = eval { $JSON->decode($body) } // {};

    push @requests, { method => $method, path => $path, headers => \%h,
        body => $req };

    if ($path eq '/machine/register') {
        register($fh, $req);
    } elsif ($path eq '/machine/map') {
        map_request($fh, $req);
    } elsif ($path eq '/machine/logout') {
        logout($fh, $req);
    } else {
        answer($fh, 404, { error => 'not found' });
    }
}

sub answer {
    my ($fh, $status, $obj) = @_;
    my $body = $JSON->encode($obj);
    syswrite($fh, "HTTP/1.1 $status X\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\nConnection: close\r\n\r\n"
        . $body);
    close_conn($fh);
}

sub node_json {
    my ($n) = @_;
    my $app = exists $n->{app} ? $n->{app} : $app_id;
    return {
        (defined $app ? (AppID => $app) : ()),
        InstanceID => $n->{instance} // '',
        ID => $n->{id}, StableID => "s$n->{id}",
        Name => "$n->{name}.dstack.internal.", Key => $n->{key},
        Addresses => ["$n->{ip}/32"], AllowedIPs => ["$n->{ip}/32"],
        Endpoints => $n->{endpoints} // [],
        Online => $n->{stream} || $n->{fake} ? JSON::PP::true
                                             : JSON::PP::false,
        LastSeen => '2026-11-26T12:00:00Z',
        KeyExpiry => '0001-01-01T00:00:00Z',
        Hostinfo => { Hostname => $n->{name} }, User => 1,
    };
}

sub by_key {
    my ($key) = @_;
    for my $n (values %nodes) {
        return $n if $n->{key} eq ($key // '');
    }
    return undef;
}

sub register {
    my ($fh, $req) = @_;

    my $key = $req->{NodeKey} // '';
    my $auth = $req->{Auth}{AuthKey} // '';
    my $name = lc($req->{Hostinfo}{Hostname} // '');
    $name =~ s/[^a-z0-9-]/-/g;

    return answer($fh, 400, { MachineAuthorized => JSON::PP::false,
        Error => 'NodeKey' }) unless $key =~ /^nodekey:[0-9a-f]{64}$/;

    my $n = by_key($key);

    if (!$n) {
        my $k = $keys{$auth};
        return answer($fh, 401, { MachineAuthorized => JSON::PP::false,
            Error => "unknown auth key" }) unless $k;
        return answer($fh, 401, { MachineAuthorized => JSON::PP::false,
            Error => "auth key already used" }) if $k->{single} && $k->{used};
        $k->{used}++;

        my $id = $next_id++;
        $n = $nodes{$id} = { id => $id, key => $key, name => $name,
            ip => '100.128.0.' . (10 + $id), ephemeral => $req->{Ephemeral},
            instance => $req->{InstanceID} };
        broadcast({ PeersChanged => [node_json($n)] }, $n);
    }

    answer($fh, 200, { MachineAuthorized => JSON::PP::true,
        NodeID => $n->{id}, Name => "$n->{name}.dstack.internal",
        Addresses => ["$n->{ip}/32"], Error => '' });
}

sub frame {
    my ($fh, $bytes) = @_;
    return syswrite($fh, sprintf("%x\r\n", length $bytes) . $bytes . "\r\n");
}

sub send_json {
    my ($fh, $obj) = @_;
    my $j = ref $obj ? $JSON->encode($obj) : $obj;
    frame($fh, pack('V', length $j) . $j);
}

# to every stream but the one of $except
sub broadcast {
    my ($obj, $except) = @_;
    for my $n (values %nodes) {
        next unless $n->{stream};
        next if $except && $n == $except;
        send_json($n->{stream}, $obj);
    }
}

sub map_request {
    my ($fh, $req) = @_;

    my $n = by_key($req->{NodeKey});
    return answer($fh, 401, { Error => 'node key not registered' })
        unless $n;

    $n->{endpoints} = $req->{Endpoints} // [];

    close_conn($n->{stream}) if $n->{stream};

    syswrite($fh, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream"
        . "\r\nTransfer-Encoding: chunked\r\n\r\n");
    $conns{fileno $fh}{streaming} = 1;
    $n->{stream} = $fh;

    send_json($fh, {
        Node => node_json($n),
        Peers => [map { node_json($_) } grep { $_ != $n }
            sort { $a->{id} <=> $b->{id} } values %nodes],
        DNSConfig => { Domains => ['dstack.internal'], Routes => {} },
        Domain => 'dstack.internal', CollectServices => JSON::PP::false,
        ControlTime => '2026-11-26T12:00:00Z',
        (defined $wg_path ? (WGPath => $wg_path) : ()),
    });

    broadcast({ PeersChanged => [node_json($n)] }, $n);
}

sub logout {
    my ($fh, $req) = @_;
    my $n = by_key($req->{NodeKey});
    return answer($fh, 401, { Error => 'node key not registered' })
        unless $n;
    delete $nodes{$n->{id}};
    close_conn($n->{stream}) if $n->{stream};
    broadcast({ PeersRemoved => [$n->{id}] });
    answer($fh, 200, {});
}

sub control {
    my ($cmd) = @_;
    my $c = $cmd->{cmd} // '';

    if ($c eq 'nodes') {
        return [map { { id => $_->{id}, name => $_->{name}, key => $_->{key},
            ip => $_->{ip}, endpoints => $_->{endpoints},
            streaming => $_->{stream} ? 1 : 0,
            ephemeral => $_->{ephemeral} ? 1 : 0 } }
            sort { $a->{id} <=> $b->{id} } values %nodes];
    }

    if ($c eq 'requests') {
        return \@requests;
    }

    if ($c eq 'frame') {
        my $bytes = defined $cmd->{raw_b64} ? decode_base64($cmd->{raw_b64})
            : undef;
        for my $n (values %nodes) {
            next unless $n->{stream};
            next if $cmd->{to} && $cmd->{to} ne $n->{name};
            if (defined $bytes) {
                frame($n->{stream}, $bytes);
            } else {
                send_json($n->{stream}, $cmd->{json});
            }
        }
        return { ok => 1 };
    }

    if ($c eq 'add') {
        my $n = { %{$cmd->{node}}, fake => 1 };
        $n->{id} //= $next_id++;
        $nodes{$n->{id}} = $n;
        broadcast({ PeersChanged => [node_json($n)] }, $n);
        return { id => $n->{id} };
    }

    if ($c eq 'remove') {
        my $n = delete $nodes{$cmd->{id}};
        close_conn($n->{stream}) if $n && $n->{stream};
        broadcast({ PeersRemoved => [$cmd->{id} + 0] });
        return { ok => 1 };
    }

    if ($c eq 'patch') {
        broadcast({ PeersChangedPatch => [$cmd->{patch}] });
        return { ok => 1 };
    }

    if ($c eq 'keepalive') {
        $keepalive = $cmd->{interval};
        return { ok => 1 };
    }

    if ($c eq 'close') {
        for my $n (values %nodes) {
            next unless $n->{stream};
            next if $cmd->{to} && $cmd->{to} ne $n->{name};
            syswrite($n->{stream}, "0\r\n\r\n");
            close_conn($n->{stream});
        }
        return { ok => 1 };
    }

    if ($c eq 'set') {
        my ($n) = grep { $_->{name} eq ($cmd->{name} // '') } values %nodes;
        return { error => "no node $cmd->{name}" } unless $n;
        for my $f (qw(app instance endpoints)) {
            $n->{$f} = $cmd->{$f} if exists $cmd->{$f};
        }
        broadcast({ PeersChanged => [node_json($n)] }, $n);
        return { ok => 1 };
    }

    if ($c eq 'wgpath') {
        $wg_path = $cmd->{path};
        return { ok => 1 };
    }

    if ($c eq 'forget') {
        for my $n (values %nodes) {
            next unless $n->{name} eq $cmd->{name};
            close_conn($n->{stream}) if $n->{stream};
            delete $nodes{$n->{id}};
            broadcast({ PeersRemoved => [$n->{id}] });
        }
        return { ok => 1 };
    }

    return { error => "unknown command $c" };
}

1;
