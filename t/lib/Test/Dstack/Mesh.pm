package Test::Dstack::Mesh;

# A three-party topology for the mesh tests, every party its own nginx:
#
#   client -> node A (conf/node-mesh.conf as shipped, mesh module)
#          -> gateway emulator (stream, ssl_preread: SNI
#             <id>-<port>s.<domain> -> a peer)
#          -> peer nodes (auth module on TLS :443 in front of echo backends)
#
# With terminator(), the gateway also terminates TLS itself for the names
# <id>-<port>.<domain> (no "s"), as the dstack gateway does with its public
# certificate: an nginx with a certificate from a test CA (standing in for
# the web roots) forwards plain HTTP to 127.0.0.1:<port>.
#
# Certificates come from the guest-agent simulator; peers made with the
# same state share one KMS root.
#
#   my $m = Test::Dstack::Mesh->new($t);
#   my $b = $m->peer('b', app => $B, instance => $BI);
#   $m->route("$B-444s", $c);            # an extra gateway route
#   $m->start(a => $A);
#   my $r = $m->request('GET', '/x', app => $B);   # parse_response() hash

use strict;
use warnings;

use Exporter 'import';
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time);

use Test::Dstack qw(http parse_response);

our $DOMAIN = 'mesh.test';

sub new {
    my ($class, $t, %o) = @_;

    return bless {
        t => $t,
        domain => $o{domain} // $DOMAIN,
        peers => {},
        order => [],
        routes => [],
    }, $class;
}

sub t { $_[0]{t} }
sub domain { $_[0]{domain} }

# A peer node: its certificate (app, KMS state, simulator variant), a TLS
# port with dstack_auth (TLS 1.2 and 1.3, or protocols => '...'), an echo
# backend, and with ws => 1 an upgrade echo at /ws/; extra => more http{}
# text.  plain => 1 makes it a plain HTTP server (not TLS), silent => 1
# a TCP listener that never answers.
sub peer {
    my ($self, $name, %o) = @_;
    my $t = $self->{t};

    my $p = { name => $name, %o };
    $p->{port} = $t->port("peer-$name");
    $p->{echo} = $t->port("echo-$name");
    $p->{ws_port} = $t->port("ws-$name") if $o{ws};

    unless ($o{plain} || $o{silent}) {
        $p->{cert} = $t->sim_cert("peer-$name", app_id => $o{app},
            state => $o{state} // 'kms', usage => $o{usage} // 'both',
            variant => $o{variant});
    }

    $self->{peers}{$name} = $p;
    push @{$self->{order}}, $name;

    # the gateway routes the peer's own names on port 443
    $self->route("$o{app}-443s", $p) if $o{app};
    $self->route("$o{instance}-443s", $p) if $o{instance};

    return $p;
}

# terminator(): the gateway's own TLS termination for <id>-<port>.<domain>.
#   certs => { <id> => {chain, key} } another certificate for that id
# Returns { port, ca (the test web root: {chain, key, root}), cert }.
# Its access log, logs/access-terminator.log, has per request
# "<connection> <SNI> <Host> <client cert verify> "<request>"".
sub terminator {
    my ($self, %o) = @_;
    my $t = $self->{t};

    my $ca = $t->openssl_ca('webroot');
    my $cert = $t->openssl_cert('gateway-public', $ca,
        ext => "subjectAltName=DNS:*.$self->{domain}\n");

    $self->{term} = { port => $t->port('terminator'), ca => $ca,
        cert => $cert, certs => $o{certs} || {} };

    return $self->{term};
}

# route("<id>-<port>s", $peer or port): an SNI the gateway sends there
sub route {
    my ($self, $prefix, $to) = @_;
    push @{$self->{routes}}, ["$prefix.$self->{domain}",
        ref $to ? $to->{port} : $to];
}

sub _conf_globals {
    my ($self, $name) = @_;
    my $t = $self->{t};
    my $d = $t->testdir;

    my $g = $t->expand('%%TEST_GLOBALS%%');
    $g =~ s{pid \S+;}{pid $d/$name.pid;};
    $g =~ s{(error_log \S+/logs/)error\.log}{$1$name-error.log};

    my $h = $t->expand('%%TEST_GLOBALS_HTTP%%');
    $h =~ s{logs/access\.log}{logs/access-$name.log};
    $h =~ s{/(\w+_temp);}{/$name-$1;}g;

    return ($g, $h);
}

sub _peer_conf {
    my ($self, $p) = @_;
    my ($g, $h) = $self->_conf_globals("peer-$p->{name}");
    my $d = $self->{t}->testdir;

    if ($p->{plain}) {
        return <<"EOF";
$g
events {
}

http {
    $h

    server {
        listen 127.0.0.1:$p->{port};
        return 200 "plain\\n";
    }
}
EOF
    }

    my $c = $p->{cert};
    my $ws = '';
    my $extra = $p->{extra} // '';
    my $protocols = $p->{protocols} // 'TLSv1.2 TLSv1.3';

    if ($p->{ws}) {
        $ws = <<"EOF";
        location /ws/ {
            proxy_pass http://127.0.0.1:$p->{ws_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
        }
EOF
    }

    return <<"EOF";
$g
events {
}

http {
    $h

    log_format mesh '\$connection \$connection_requests '
                    '\$ssl_session_reused \$dstack_app_id "\$request" '
                    '\$ssl_protocol';

    upstream echo {
        server 127.0.0.1:$p->{echo};
        keepalive 8;
    }

    server {
        listen 127.0.0.1:$p->{port} ssl;

        ssl_protocols $protocols;
        ssl_certificate $c->{chain};
        ssl_certificate_key $c->{key};
        ssl_client_certificate $c->{root};
        ssl_verify_client on;
        ssl_verify_depth 3;

        access_log $d/logs/access-peer-$p->{name}.log mesh;

        dstack_auth on;
        dstack_auth_allow any;

        location / {
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Host \$host;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }
$ws
    }
$extra
}
EOF
}

sub _gateway_conf {
    my ($self) = @_;
    my ($g) = $self->_conf_globals('gateway');
    my $closed = $self->{t}->port('gateway-nowhere');

    my $map = join '', map { "        $_->[0] 127.0.0.1:$_->[1];\n" }
        @{$self->{routes}};

    # names without the "s": the gateway terminates TLS (exact names of
    # route() still win)
    if (my $term = $self->{term}) {
        $map .= "        \"~^[0-9a-f]{40}-[0-9]+\\.\Q$self->{domain}\E\$\" "
            . "127.0.0.1:$term->{port};\n";
    }

    return <<"EOF";
$g
events {
}

stream {
    map_hash_bucket_size 128;

    map \$ssl_preread_server_name \$mesh_peer {
$map        default 127.0.0.1:$closed;
    }

    server {
        listen 127.0.0.1:$self->{gateway};
        ssl_preread on;
        proxy_pass \$mesh_peer;
        proxy_connect_timeout 2s;
    }
}
EOF
}

sub _terminator_conf {
    my ($self) = @_;
    my ($g, $h) = $self->_conf_globals('terminator');
    my $term = $self->{term};
    my $d = $self->{t}->testdir;
    my $domain = quotemeta $self->{domain};

    my ($certs, $keys) = ('', '');

    for my $id (sort keys %{$term->{certs}}) {
        my $c = $term->{certs}{$id};
        $certs .= "        ~^$id- $c->{chain};\n";
        $keys .= "        ~^$id- $c->{key};\n";
    }

    return <<"EOF";
$g
events {
}

http {
    $h

    map_hash_bucket_size 128;

    map \$ssl_server_name \$term_cert {
$certs        default $term->{cert}{chain};
    }

    map \$ssl_server_name \$term_key {
$keys        default $term->{cert}{key};
    }

    map \$ssl_server_name \$term_port {
        "~^[0-9a-f]{40}-([0-9]+)\\.$domain\$" \$1;
    }

    log_format term '\$connection \$ssl_server_name \$http_host '
                    '\$ssl_client_verify "\$request"';

    server {
        listen 127.0.0.1:$term->{port} ssl;

        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate \$term_cert;
        ssl_certificate_key \$term_key;

        # asks for a client certificate, to see that none comes
        ssl_verify_client optional_no_ca;

        access_log $d/logs/access-terminator.log term;

        location / {
            # an L4 forward: the request goes on as sent
            proxy_pass http://127.0.0.1:\$term_port;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;

            # a target that claims more than it is: node A must not
            # pass this on
            add_header X-Dstack-Mesh-Attested 1 always;
        }
    }
}
EOF
}

# what the terminator saw: lines "<conn> <sni> <host> <verify> "<request>""
sub terminator_log {
    my ($self) = @_;
    return grep { length } split /\n/,
        $self->{t}->read_file('logs/access-terminator.log');
}

# Node A's http{} content: conf/node-mesh.conf with this test's values.
#   gateway => "<domain>:<port> [address=...]" (default: the emulator)
#   resolver => "127.0.0.1:<port>", agent => socket path,
#   edit => sub { s/// on $_ }, extra => more http{} text
# Every edit of the shipped conf must match: a renamed directive or path
# dies here instead of leaving a test running against the wrong config
# (each s/// in an edit callback says "or die" for the same reason).
sub mesh_conf {
    my ($self, %o) = @_;
    my $t = $self->{t};
    my $a = $self->{a};

    my $c = $t->read_file("$Test::Dstack::REPO/conf/node-mesh.conf");
    die "conf/node-mesh.conf not found\n" unless length $c;

    my $gateway = $o{gateway}
        // "$self->{domain}:443 address=127.0.0.1:$self->{gateway}";
    my $resolver = $o{resolver}
        // '127.0.0.1:' . $t->port('resolver-unused');
    my $agent = $o{agent} // $t->testdir . '/dstack.sock';

    my $no = "conf/node-mesh.conf has no";
    $c =~ s/\$\{DSTACK_GATEWAY\}/$gateway/g
        or die "$no \${DSTACK_GATEWAY}\n";
    $c =~ s/\$\{DSTACK_RESOLVER\}/$resolver/g
        or die "$no \${DSTACK_RESOLVER}\n";
    $c =~ s{/etc/dstack/mesh/cert\.pem}{$a->{chain}}g
        or die "$no /etc/dstack/mesh/cert.pem\n";
    $c =~ s{/etc/dstack/mesh/key\.pem}{$a->{key}}g
        or die "$no /etc/dstack/mesh/key.pem\n";
    $c =~ s{/etc/dstack/mesh/ca\.pem}{$a->{root}}g
        or die "$no /etc/dstack/mesh/ca.pem\n";
    $c =~ s{/var/run/dstack\.sock}{$agent}g
        or die "$no /var/run/dstack.sock\n";
    $c =~ s{/run/dstack-vpc/vpc/}{$o{vpc_files} // $t->testdir . '/vpc/'}ge
        or die "$no /run/dstack-vpc/vpc/\n";

    # the gateway's public roots: the terminator's test CA
    $c =~ s{/etc/ssl/certs/ca-certificates\.crt}
        {$o{gateway_ca} // $self->{term}{ca}{root}}e if $self->{term};
    $c =~ s{listen(\s+)127\.0\.0\.1:80;}
        {"listen$1" . '127.0.0.1:' . $t->port('node-a') . ';'}e
        or die "$no listen 127.0.0.1:80\n";

    # the shipped format in its own file, beside the tests' meshlog
    my $d = $t->testdir;
    $c =~ s{access_log(\s+)/dev/stdout dstack_mesh;}
        {access_log$1$d/logs/access-node-a.log meshlog;
    access_log$1$d/logs/mesh-node-a.log dstack_mesh;};

    if ($o{edit}) {
        local $_ = $c;
        $o{edit}->();
        die "mesh_conf: the edit changed nothing in conf/node-mesh.conf\n"
            if $_ eq $c;
        $c = $_;
    }

    return $c;
}

# start(a => APP, state => 'kms', node => {mesh_conf options})
sub start {
    my ($self, %o) = @_;
    my $t = $self->{t};

    $self->{gateway} = $t->port('gateway');
    $self->{a} = $t->sim_cert('node-a', app_id => $o{a},
        state => $o{state} // 'kms', usage => 'both');
    $self->{a_app} = $o{a};

    for my $name (@{$self->{order}}) {
        my $p = $self->{peers}{$name};

        if ($p->{silent}) {
            $self->_silent_listener($p->{port});
            next;
        }

        $t->echo_backend(port => $p->{echo}, name => $name)
            unless $p->{plain};
        $self->_upgrade_backend($p->{ws_port}) if $p->{ws};
        $t->write_file("peer-$name.conf", $self->_peer_conf($p));
        $t->run("peer-$name.conf");
    }

    if ($self->{term}) {
        $t->write_file('terminator.conf', $self->_terminator_conf());
        $t->run('terminator.conf');
    }

    $t->write_file('gateway.conf', $self->_gateway_conf());
    $t->run('gateway.conf');

    $self->write_node(%{$o{node} || {}});
    $t->run('node-a.conf');

    return $self;
}

# Node A first: the gateway emulator would wait for its pooled
# connections to end before it exits.
sub stop {
    my ($self) = @_;
    my $t = $self->{t};

    $t->stop($_) for grep { -f $t->testdir . "/$_" } 'node-a.conf',
        'gateway.conf', 'terminator.conf',
        map { "peer-$_.conf" } @{$self->{order}};

    return $self;
}

sub write_node {
    my ($self, %o) = @_;
    my $t = $self->{t};
    my ($g, $h) = $self->_conf_globals('node-a');
    my $mesh = $self->mesh_conf(%o);
    my $extra = $o{extra} // '';
    my $d = $t->testdir;

    $t->write_file('node-a.conf', <<"EOF");
$g
events {
}

http {
    $h

    log_format meshlog '\$status \$dstack_mesh_host \$upstream_addr '
                       '"\$request"';
    access_log $d/logs/access-node-a.log meshlog;

$mesh
$extra
}
EOF
}

# Answers an Upgrade request with 101, then echoes lines upper-cased.
sub _upgrade_backend {
    my ($self, $port) = @_;
    my $t = $self->{t};

    my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
        Listen => 16, ReuseAddr => 1) or die "upgrade $port: $!\n";

    $t->run_daemon(sub {
        $SIG{CHLD} = 'IGNORE';
        while (my $c = $l->accept()) {
            my $pid = fork();
            if (defined $pid && $pid == 0) {
                $c->autoflush(1);
                my $head = '';
                while (defined(my $line = <$c>)) {
                    $head .= $line;
                    last if $line =~ /^\r?\n$/;
                }
                if ($head !~ /^upgrade:\s*websocket/mi) {
                    print $c "HTTP/1.1 400 X\r\nContent-Length: 0\r\n\r\n";
                    POSIX::_exit(0);
                }
                print $c "HTTP/1.1 101 Switching Protocols\r\n"
                    . "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                while (defined(my $line = <$c>)) {
                    print $c uc $line;
                }
                POSIX::_exit(0);
            }
            close $c;
        }
    });

    close $l;
}

sub _silent_listener {
    my ($self, $port) = @_;
    my $t = $self->{t};

    my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
        Listen => 16, ReuseAddr => 1) or die "silent $port: $!\n";

    $t->run_daemon(sub {
        my @held;
        while (my $c = $l->accept()) {
            push @held, $c;
        }
    });

    close $l;
}

sub node_port { $_[0]{t}->port('node-a') }
sub gateway_port { $_[0]{gateway} }
sub a_app { $_[0]{a_app} }

# The raw request a local app sends to node A.
#   app/port/instance/use_tls => target headers, headers => "K: v\r\n...",
#   body => string, chunked => [pieces], http11 => 1
sub raw_request {
    my ($self, $method, $uri, %o) = @_;

    my $h = "$method $uri HTTP/1.1\r\nHost: localhost\r\n"
        . "Connection: close\r\n";
    $h .= "X-Dstack-Target-App: $o{app}\r\n" if defined $o{app};
    $h .= "X-Dstack-Target-Port: $o{port}\r\n" if defined $o{port};
    $h .= "X-Dstack-Target-Instance: $o{instance}\r\n"
        if defined $o{instance};
    $h .= "X-Dstack-Target-Use-Tls: $o{use_tls}\r\n" if defined $o{use_tls};
    $h .= $o{headers} // '';

    if ($o{chunked}) {
        $h .= "Transfer-Encoding: chunked\r\n\r\n";
        $h .= sprintf("%x\r\n%s\r\n", length $_, $_) for @{$o{chunked}};
        return $h . "0\r\n\r\n";
    }

    if (defined $o{body}) {
        return $h . "Content-Length: " . length($o{body}) . "\r\n\r\n"
            . $o{body};
    }

    return "$h\r\n";
}

sub request {
    my ($self, $method, $uri, %o) = @_;
    my $raw = http($self->raw_request($method, $uri, %o),
        port => $self->node_port, timeout => $o{timeout} // 15);
    my $r = parse_response($raw);
    $r->{raw} = $raw;
    return $r;
}

# Reads a response as it arrives: [[seconds since sent, bytes], ...]
sub request_timed {
    my ($self, $method, $uri, %o) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:'
        . $self->node_port, Timeout => 5) or die "connect: $!\n";

    my $t0 = time;
    $s->syswrite($self->raw_request($method, $uri, %o));

    my (@parts, $all);
    my $sel = IO::Select->new($s);
    $all = '';

    while ($sel->can_read($o{timeout} // 15)) {
        my $n = $s->sysread(my $buf, 65536);
        last unless $n;
        push @parts, [time - $t0, $buf];
        $all .= $buf;
    }

    close $s;
    return (parse_response($all), \@parts);
}

# the lines of a peer's access log: "conn reqs reused app_id "request""
sub peer_log {
    my ($self, $name) = @_;
    return grep { length } split /\n/,
        $self->{t}->read_file("logs/access-peer-$name.log");
}

# How many lines of a peer's access log match, once at least $expect do
# (or after 3 s): nginx writes the line just after the response went out,
# so it may trail the client by a moment.
sub peer_count {
    my ($self, $name, $re, $expect) = @_;
    my $n = 0;

    Test::Dstack::wait_for(sub {
        $n = grep { /$re/ } $self->peer_log($name);
        $n >= ($expect // 1);
    }, 3);

    return $n;
}

# what the peer's echo backend received
sub echo_log {
    my ($self, $name) = @_;
    return $self->{t}->echo_log($self->{peers}{$name}{echo});
}

# A DNS server for the resolver tests: A <answer> for any name under the
# domain but those matching nx => qr//, NXDOMAIN otherwise; every question
# is logged to dns.log.
sub dns_server {
    my ($self, %o) = @_;
    my $t = $self->{t};
    my $port = $t->port('dns');
    my $answer = $o{answer} // '127.0.0.1';
    my $domain = lc($o{domain} // $self->{domain});
    my $log = $t->testdir . '/dns.log';

    my $sock = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
        Proto => 'udp') or die "dns $port: $!\n";

    $t->run_daemon(sub {
        while (1) {
            $sock->recv(my $q, 512) // next;
            next if length $q < 12;

            my ($id, $flags, $qd) = unpack 'n n n', $q;
            my ($pos, @labels) = (12);

            while ((my $len = ord substr($q, $pos, 1)) && $pos < length $q) {
                push @labels, substr($q, $pos + 1, $len);
                $pos += $len + 1;
            }

            my $name = lc join '.', @labels;
            my $question = substr($q, 12, $pos + 5 - 12);
            my ($qtype) = unpack 'n', substr($q, $pos + 1, 2);

            if (open my $fh, '>>', $log) {
                print $fh "$name $qtype\n";
                close $fh;
            }

            my $ours = ($name eq $domain || $name =~ /\.\Q$domain\E$/)
                && !($o{nx} && $name =~ $o{nx});
            my $an = ($ours && $qtype == 1) ? 1 : 0;
            my $rcode = $ours ? 0 : 3;

            my $reply = pack('n n n n n n', $id, 0x8180 | $rcode, 1, $an, 0, 0)
                . $question;
            $reply .= pack('n n n N n', 0xc00c, 1, 1, 30, 4)
                . pack('C4', split /\./, $answer) if $an;

            $sock->send($reply);
        }
    });

    return $port;
}

1;
