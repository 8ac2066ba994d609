package Test::Dstack::Api;

# Helpers for the VPC API tests: certificates for a server and a few
# client apps, an nginx http{} block serving the API behind dstack_auth,
# requests over mTLS, and redis-server started from the shipped
# conf/redis.conf.
#
#   my $api = Test::Dstack::Api->new($t);           # certs for server, a, b, c
#   $t->write_file_expand('nginx.conf', $api->conf(redis => $r));
#   $t->run();
#   my $res = $api->get('/api/register?instance_id=ab', as => 'a');
#   is($res->{status}, 200); is_deeply([sort keys %{$res->{json}}], ...);

use strict;
use warnings;

use B ();
use Exporter 'import';
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);

use Test::Dstack qw(http parse_response wait_for);

our @EXPORT_OK = qw(shape);

our %APP = (
    server => '1111111111111111111111111111111111111111',
    a => '5bb4ff9a3837357f19dc176407a5709c62eb6c56',
    b => '00112233445566778899aabbccddeeff00112233',
    c => 'c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00',
);

my $JSON = JSON::PP->new->canonical->allow_nonref;

sub new {
    my ($class, $t, %o) = @_;

    my $self = bless { t => $t, certs => {} }, $class;

    $self->{certs}{server} = $t->sim_cert('api-server',
        app_id => $APP{server}, usage => 'server');

    for my $who (qw(a b c)) {
        $self->{certs}{$who} = $t->sim_cert("api-$who", app_id => $APP{$who},
            usage => 'client');
    }

    return $self;
}

sub app { $APP{$_[1]} }
sub cert { $_[0]{certs}{$_[1]} }

# The TLS part of a server block: dstack certificates, client certificate
# optional so that dstack_auth answers with JSON.
sub tls {
    my ($self) = @_;
    my $s = $self->{certs}{server};
    return <<"EOF";
        ssl_certificate $s->{chain};
        ssl_certificate_key $s->{key};
        ssl_client_certificate $s->{root};
        ssl_verify_client optional;
        ssl_verify_depth 3;
EOF
}

# redis => run_redis() hash, or an address string
sub redis_directive {
    my ($self, $r, %o) = @_;
    my $addr = ref $r ? ($o{unix} ? "unix:$r->{socket}"
        : "127.0.0.1:$r->{port}") : $r;
    my $extra = join ' ', @{$o{params} || []};
    return "dstack_vpc_redis $addr $extra;";
}

# A complete nginx.conf with the API on %%PORT_8443%% (mTLS, dstack_auth,
# allowlist a and c), a static location on it, and %%PORT_8080%% plain.
sub conf {
    my ($self, %o) = @_;

    my $redis = $self->redis_directive($o{redis}, %o);
    my $tls = $self->tls();
    my $workers = $o{workers} // 1;
    my $port = $o{port} // 8443;
    my $plain = $o{plain_port} // 8080;
    my $timeout = $o{timeout} // '1s';
    my $prefix = $o{prefix} // 'test:vpc:';
    my $allow = $o{allow} // "$APP{a} $APP{c}";
    my $pid = $o{pid} // 'nginx.pid';
    my $extra_http = $o{http} // '';
    my $extra_server = $o{server} // '';
    my $reuseport = $workers > 1 ? ' reuseport' : '';

    my $globals = $self->{t}->expand('%%TEST_GLOBALS%%');
    $globals =~ s/worker_processes 1;/worker_processes $workers;/
        or die "no worker_processes in the test globals\n";
    $globals =~ s{^pid \S+;}{pid %%TESTDIR%%/$pid;}m
        or die "no pid in the test globals\n";

    my $conf = <<"EOF";
$globals

events {
    worker_connections 1024;
}

http {
    %%TEST_GLOBALS_HTTP%%

    log_format api '\$pid \$status \$request_time "\$request"';
    access_log %%TESTDIR%%/logs/api-$port.log api;

    $redis
    dstack_vpc_redis_timeout $timeout;
    dstack_vpc_redis_prefix $prefix;

$extra_http

    server {
        listen 127.0.0.1:%%PORT_$port%% ssl http2$reuseport;
$tls
        large_client_header_buffers 4 32k;
        keepalive_requests 100000;

        dstack_vpc_api_allow $allow;
        dstack_vpc_api_server_gateway $APP{server} gw.test 8080;

        location / {
            dstack_auth on;
            dstack_auth_allow any;
            dstack_vpc_api;
        }

        location = /health {
            dstack_vpc_api;
        }

        location = /static {
            return 200 "static\\n";
        }

$extra_server
    }

    server {
        listen 127.0.0.1:%%PORT_$plain%%;

        dstack_vpc_api_allow any;
        dstack_vpc_api_server_url https://vpc.test;

        location / {
            dstack_vpc_api;
        }

        location = /static {
            return 200 "static\\n";
        }
    }
}
EOF

    return $conf;
}

# request(METHOD, URI, as => 'a' | undef, port => N, plain => 1,
#         body => STR, headers => STR, start => 1)
# -> parse_response() hash plus json and time (seconds)
sub request {
    my ($self, $method, $uri, %o) = @_;
    my $t = $self->{t};

    my $port = $o{port} // $t->port($o{plain} ? 8080 : 8443);
    my %ssl;

    unless ($o{plain}) {
        %ssl = (ssl => 1);
        if (my $who = $o{as}) {
            $ssl{cert} = $self->{certs}{$who}{chain};
            $ssl{key} = $self->{certs}{$who}{key};
        }
    }

    my $body = $o{body};
    my $req = !defined $method ? ''
        : "$method $uri HTTP/1.0\r\nHost: localhost\r\n"
        . ($o{headers} // '')
        . (defined $body ? "Content-Length: " . length($body) . "\r\n" : '')
        . "\r\n" . ($body // '');

    my $t0 = time;
    my $raw = http($req, port => $port, timeout => $o{timeout} // 10,
        start => $o{start}, %ssl);
    return $raw if $o{start};

    my $res = parse_response($raw);
    $res->{time} = time - $t0;
    $res->{json} = eval { $JSON->decode($res->{body}) };
    $res->{shape} = shape($res->{json}) if $res->{json};
    return $res;
}

sub get { my ($self, $uri, %o) = @_; $self->request('GET', $uri, %o) }

sub post {
    my ($self, $uri, $body, %o) = @_;
    $self->request('POST', $uri, body => $body // '', %o);
}

# $request_time of the request whose line matches $re in the access log
# of the server on $port (server-side, so client load does not count)
sub request_time {
    my ($self, $re, %o) = @_;
    my $port = $o{port} // 8443;
    my ($time) = $self->{t}->read_file("logs/api-$port.log")
        =~ /^\d+ \d+ ([\d.]+) "[^"]*$re/m;
    return $time;
}

# an open connection (TLS handshake done) for a request sent later
sub connect {
    my ($self, %o) = @_;
    return $self->request(undef, undef, %o, start => 1);
}

# finish a request started with start => 1
sub finish {
    my ($self, $s) = @_;
    my $raw = http('', socket => $s, timeout => 10);
    my $res = parse_response($raw);
    $res->{json} = eval { $JSON->decode($res->{body}) };
    return $res;
}

# The JSON structure without the values, e.g. {a => 'string',
# b => ['number']}; call it on a freshly decoded value (using a number as
# a string makes it look like one)
sub shape {
    my ($v) = @_;
    return 'null' unless defined $v;
    return { map { $_ => shape($v->{$_}) } keys %$v } if ref $v eq 'HASH';
    return [ map { shape($_) } @$v ] if ref $v eq 'ARRAY';
    return 'bool' if JSON::PP::is_bool($v);
    return (B::svref_2object(\$v)->FLAGS & B::SVp_POK()) ? 'string'
        : 'number';
}

# curl with a client certificate, many requests in parallel; returns a
# list of [status, body], one per URL, in the order of the URLs
sub parallel {
    my ($self, $as, $urls, %o) = @_;
    my $t = $self->{t};
    my $c = $self->{certs}{$as};
    my $d = $t->testdir;
    mkdir "$d/parallel";

    my $i = 0;
    my $cfg = join '', map {
        $i++;
        "url = \"$_\"\noutput = \"$d/parallel/$i\"\n"
            . ($o{method} ? "request = \"$o{method}\"\n" : '')
            . "write-out = \"%{http_code} %{filename_effective}\\n\"\n"
    } @$urls;
    $t->write_file('parallel.cfg', $cfg);

    my $n = $o{max} // 200;
    my $out = `curl -sk --no-progress-meter --cert $c->{chain} \\
        --key $c->{key} -Z --parallel-max $n --parallel-immediate \\
        -K $d/parallel.cfg 2>/dev/null`;

    my %code = reverse $out =~ m{(\d{3}) \Q$d\E/parallel/(\d+)\n}g;

    return map { [$code{$_} // 0, $t->read_file("parallel/$_")] }
        1 .. scalar @$urls;
}

# redis-server from conf/redis.conf as shipped, but for the test's port
# and directory (Redis changes into "dir" while it reads the file, so the
# path is replaced in a copy rather than overridden)
sub run_redis_conf {
    my ($self, %o) = @_;
    my $t = $self->{t};
    my $n = $o{name} // 'shipped';
    my $dir = $t->testdir . "/redis-$n";
    mkdir $dir;
    my $port = $t->port($o{port_key} // 6390);

    my $conf = $t->read_file($t->repo . '/conf/redis.conf');
    $conf =~ s/^dir .*$/dir $dir/m or die "no dir in redis.conf\n";
    $conf =~ s/^unixsocket .*$/unixsocket $dir\/redis.sock/m
        or die "no unixsocket in redis.conf\n";
    $conf =~ s/^port .*$/port $port/m or die "no port in redis.conf\n";
    $t->write_file("redis-$n.conf", $conf);

    my $r = {
        port => $port, socket => "$dir/redis.sock", dir => $dir,
        args => [$t->testdir . "/redis-$n.conf",
            '--logfile', "$dir/redis.log", @{$o{args} || []}],
    };

    return $t->start_redis($r);
}

sub kill_redis {
    my ($self, $r, $sig) = @_;
    $self->{t}->stop_daemon($r->{pid}, $sig // 'KILL');
}

1;
