package Test::Dstack;

# Our Test::Nginx-style harness: a temp dir per test file, random ports,
# the stock Debian nginx with our dynamic modules, forked Perl backends,
# redis-server, the guest-agent simulator, TLS clients with client
# certificates, and a "no [alert]/[emerg] in error.log" check per file.
#
#   use lib 't/lib';
#   use Test::Dstack qw(http_get);
#   my $t = Test::Dstack->new()->has(qw(auth))->plan(3);
#   $t->write_file_expand('nginx.conf', <<'EOF');
#   %%TEST_GLOBALS%%
#   events {}
#   http { %%TEST_GLOBALS_HTTP%%  server { listen 127.0.0.1:%%PORT_8080%%; ... } }
#   EOF
#   $t->run();
#   like(http_get('/', port => $t->port(8080)), qr/200 OK/, 'works');

use strict;
use warnings;

use Exporter 'import';
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(rmtree);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Scalar::Util ();
use Socket qw(SOMAXCONN);
use Test::More ();
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(http http_get http_post parse_response json_body
    dechunk wait_for);

our %MODULE_SO = (
    auth => 'ngx_http_dstack_auth_module.so',
    mesh => 'ngx_http_dstack_mesh_module.so',
    api  => 'ngx_http_dstack_vpc_api_module.so',
    metrics => 'ngx_http_dstack_metrics_module.so',
);

our $NGINX = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
our $REPO = abs_path(dirname(__FILE__) . '/../../..');
our $BUILD = $ENV{DSTACK_BUILD} || "$REPO/build";
our $FIXTURES = $ENV{DSTACK_FIXTURES} || "$REPO/t/fixtures";
our $STREAM_SO = '/usr/lib/nginx/modules/ngx_stream_module.so';

my $JSON = JSON::PP->new->canonical->allow_nonref;
my @INSTANCES;

sub new {
    my ($class) = @_;

    my $self = bless {
        modules => [],
        ports   => {},
        daemons => [],
        redis   => [],
        errors_checked => 0,
    }, $class;

    $self->{testdir} = tempdir('dstack-test-XXXXXXXX', TMPDIR => 1,
        CLEANUP => !$ENV{TEST_KEEP});
    chmod 0755, $self->{testdir};
    mkdir "$self->{testdir}/logs";
    $self->{owner} = $$;

    push @INSTANCES, $self;
    Scalar::Util::weaken($INSTANCES[-1]);

    return $self;
}

sub testdir { $_[0]{testdir} }
sub build { $BUILD }
sub repo { $REPO }
sub fixtures { $FIXTURES }
sub bin { "$BUILD/bin/$_[1]" }

# --- requirements ----------------------------------------------------------
#
# A file that cannot run here skips with the reason, which is also appended
# to $DSTACK_BUILD/test-skips.log for the summary `make test` prints.  When
# CI is set (and not 0/false/no) a missing requirement fails the file
# instead: a green CI run means that every test ran.

sub ci {
    my $ci = $ENV{CI};
    return defined $ci && $ci ne '' && $ci !~ /^(?:0|false|no)$/i;
}

sub _record_skip {
    my ($why) = @_;
    return unless -d $BUILD;
    my $file = $0 =~ m{(t/[^/]+\.t)$} ? $1 : $0;
    open my $fh, '>>', "$BUILD/test-skips.log" or return;
    print $fh "$file: $why\n";
    close $fh;
}

# $t->skip_all($why) or Test::Dstack->skip_all($why), before any plan
sub skip_all {
    my ($self, $why) = @_;
    if (ci()) {
        Test::More::plan(tests => 1);
        Test::More::fail("CI is set, so this does not skip: $why");
        exit 1;
    }
    _record_skip($why);
    Test::More::plan(skip_all => $why);
    exit 0;
}

# Inside a SKIP: { } block, for tests whose requirement is missing:
#   SKIP: { Test::Dstack::skip_missing('wg not installed', 2) unless ...; }
sub skip_missing {
    my ($why, $n) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    if (ci()) {
        Test::More::fail("CI is set, so this does not skip: $why")
            for 1 .. $n;
    } else {
        _record_skip("$n test(s) skipped: $why");
        Test::More::skip($why, $n);
    }
    no warnings 'exiting';
    last SKIP;
}

# has(qw(auth mesh api stream sim redis wgctl root netns))
sub has {
    my ($self, @what) = @_;

    for my $w (@what) {
        if ($MODULE_SO{$w}) {
            my $so = "$BUILD/modules/$MODULE_SO{$w}";
            $self->skip_all("module $w not built ($so)") unless -f $so;
            push @{$self->{modules}}, $so;

        } elsif ($w eq 'stream') {
            $self->skip_all("no nginx stream module ($STREAM_SO)")
                unless -f $STREAM_SO;
            $self->{stream} = 1;

        } elsif ($w eq 'sim') {
            $self->skip_all('dstack-sim not built')
                unless -x $self->bin('dstack-sim');

        } elsif ($w eq 'wgctl') {
            $self->skip_all('wgctl not built') unless -x $self->bin('wgctl');

        } elsif ($w eq 'redis') {
            $self->skip_all('redis-server not installed')
                unless _which('redis-server');

        } elsif ($w eq 'entrypoint') {
            # nothing left to check: scripts/entrypoint.sh preloads the
            # ASan runtime into nginx through entry_env() (make test-asan)
            next;

        } elsif ($w eq 'root') {
            $self->skip_all('needs root') unless $> == 0;

        } elsif ($w eq 'fixtures') {
            $self->skip_all("fixtures not found at $FIXTURES")
                unless -d $FIXTURES;

        } else {
            $self->skip_all("needs $w") unless _which($w);
        }
    }

    $self->skip_all("nginx binary $NGINX not found") unless -x $NGINX;

    return $self;
}

sub _which {
    my ($cmd) = @_;
    for my $d (split /:/, $ENV{PATH} . ':/usr/sbin:/sbin') {
        return "$d/$cmd" if -x "$d/$cmd";
    }
    return undef;
}

# one more test than asked: the error.log check at the end
sub plan {
    my ($self, $n) = @_;
    Test::More::plan(tests => $n + 1);
    $self->{planned} = 1;
    return $self;
}

# --- files and ports -------------------------------------------------------

sub port {
    my ($self, $n) = @_;

    return $self->{ports}{$n} if $self->{ports}{$n};

    for (1 .. 100) {
        # below the kernel's ephemeral range (32768+), where outgoing
        # connections could take the port between our check and the listen
        my $port = 10000 + int(rand(22000));
        next if grep { $_ == $port } values %{$self->{ports}};

        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
            LocalPort => $port, Proto => 'tcp', ReuseAddr => 1) or next;
        my $u = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
            LocalPort => $port, Proto => 'udp') or next;
        close $s;
        close $u;

        return $self->{ports}{$n} = $port;
    }

    die "no free port for $n\n";
}

sub write_file {
    my ($self, $name, $content, $mode) = @_;
    my $path = $name =~ m{^/} ? $name : "$self->{testdir}/$name";
    open my $fh, '>', $path or die "write $path: $!\n";
    binmode $fh;
    print $fh $content;
    close $fh;
    chmod $mode, $path if defined $mode;
    return $path;
}

sub read_file {
    my ($self, $name) = @_;
    my $path = $name =~ m{^/} ? $name : "$self->{testdir}/$name";
    open my $fh, '<', $path or return '';
    binmode $fh;
    local $/;
    my $c = <$fh>;
    close $fh;
    return $c;
}

sub expand {
    my ($self, $content) = @_;

    my $d = $self->{testdir};
    my $load = join '', map { "load_module $_;\n" } @{$self->{modules}};
    $load = "load_module $STREAM_SO;\n$load" if $self->{stream};

    my $globals = $load
        . "pid $d/nginx.pid;\n"
        . "error_log $d/logs/error.log "
        . ($ENV{TEST_NGINX_DEBUG} ? 'debug' : 'info') . ";\n"
        . ($> == 0 ? "user root;\n" : '')
        . "worker_processes 1;\n";

    my $http = "access_log $d/logs/access.log;\n"
        . "client_body_temp_path $d/client_body_temp;\n"
        . "proxy_temp_path $d/proxy_temp;\n"
        . "fastcgi_temp_path $d/fastcgi_temp;\n"
        . "uwsgi_temp_path $d/uwsgi_temp;\n"
        . "scgi_temp_path $d/scgi_temp;\n";

    $content =~ s/%%TEST_GLOBALS%%/$globals/g;
    $content =~ s/%%TEST_GLOBALS_HTTP%%/$http/g;
    $content =~ s/%%TESTDIR%%/$d/g;
    $content =~ s/%%BUILD%%/$BUILD/g;
    $content =~ s/%%REPO%%/$REPO/g;
    $content =~ s/%%FIXTURES%%/$FIXTURES/g;
    $content =~ s/%%PORT_(\d+)%%/$self->port($1)/ge;

    return $content;
}

sub write_file_expand {
    my ($self, $name, $content) = @_;
    return $self->write_file($name, $self->expand($content));
}

# --- nginx -----------------------------------------------------------------

sub _nginx_env {
    my %env;
    if ($ENV{DSTACK_ASAN}) {
        my $rt = `gcc -print-file-name=libasan.so`;
        chomp $rt;
        $env{LD_PRELOAD} = $rt;
        # every dynamic module carries its own ngx_module_order (nginx's
        # generated *_modules.c): two loaded modules are no ODR violation
        $env{ASAN_OPTIONS} = $ENV{ASAN_OPTIONS}
            || 'detect_leaks=0:abort_on_error=0:log_path=stderr'
            . ':detect_odr_violation=0';
    }
    return %env;
}

# The environment for scripts/entrypoint.sh (and scripts/demo.sh, which
# passes it on): under make test-asan the ASan runtime goes into
# DSTACK_NGINX_PRELOAD, which the entry script preloads into nginx alone.
sub entry_env {
    my %env = _nginx_env();
    $env{DSTACK_NGINX_PRELOAD} = delete $env{LD_PRELOAD}
        if exists $env{LD_PRELOAD};
    return %env;
}

sub nginx_cmd {
    my ($self, $conf, @args) = @_;
    $conf //= 'nginx.conf';
    my $d = $self->{testdir};
    my %env = _nginx_env();
    local @ENV{keys %env} = values %env;
    # nginx -t on purpose-made bad configs must not trip the alert check
    my $err = (grep { $_ eq '-t' } @args) ? "$d/config-test.err"
        : "$d/logs/error.log";
    my $out = `$NGINX -p $d/ -c $d/$conf -e $err @args 2>&1`;
    return ($? >> 8, $out);
}

# nginx -t: returns (ok, output)
sub test_config {
    my ($self, $conf) = @_;
    my ($rc, $out) = $self->nginx_cmd($conf, '-t');
    return ($rc == 0, $out);
}

sub run {
    my ($self, $conf) = @_;
    $conf //= 'nginx.conf';
    my $d = $self->{testdir};

    my ($rc, $out) = $self->nginx_cmd($conf);
    if ($rc != 0) {
        Test::More::BAIL_OUT("nginx failed to start: $out")
            if $ENV{TEST_BAIL};
        die "nginx failed to start: $out\n";
    }

    $self->{running}{$conf} = 1;
    $self->{conf} = $conf;

    my $pidfile = $self->_pidfile($conf);
    wait_for(sub { -s $pidfile }, 10) or die "nginx: no pid file\n";

    for my $listen ($self->_listens($conf)) {
        wait_for(sub { _can_connect($listen) }, 10)
            or die "nginx: $listen not listening\n";
    }

    return $self;
}

sub _pidfile {
    my ($self, $conf) = @_;
    my $c = $self->read_file($conf);
    return $c =~ /^\s*pid\s+(\S+);/m ? $1 : "$self->{testdir}/nginx.pid";
}

sub _listens {
    my ($self, $conf) = @_;
    my $c = $self->read_file($conf);
    my %seen;
    return grep { !$seen{$_}++ }
        map { m{^unix:} ? $_ : ($_ =~ /:/ ? $_ : "127.0.0.1:$_") }
        ($c =~ /^\s*listen\s+([^\s;]+)/mg);
}

sub _can_connect {
    my ($addr) = @_;
    my $s;
    if ($addr =~ m{^unix:(.*)}) {
        $s = IO::Socket::UNIX->new(Peer => $1);
    } else {
        $s = IO::Socket::INET->new(PeerAddr => $addr, Timeout => 1);
    }
    return 0 unless $s;
    close $s;
    return 1;
}

sub master_pid {
    my ($self, $conf) = @_;
    my $pid = $self->read_file($self->_pidfile($conf // $self->{conf}));
    chomp $pid;
    return $pid;
}

sub worker_pids {
    my ($self, $conf) = @_;
    my $m = $self->master_pid($conf);
    return () unless $m;
    my @w = split ' ', `pgrep -P $m 2>/dev/null`;
    return @w;
}

sub reload {
    my ($self, $conf) = @_;
    $conf //= $self->{conf};
    my %old = map { $_ => 1 } $self->worker_pids($conf);
    kill 'HUP', $self->master_pid($conf);
    wait_for(sub {
        my @w = $self->worker_pids($conf);
        @w && !grep { $old{$_} } @w;
    }, 15) or die "nginx reload did not replace workers\n";
    return $self;
}

sub stop {
    my ($self, $conf) = @_;
    my @confs = defined $conf ? ($conf) : keys %{$self->{running} || {}};

    for my $c (@confs) {
        my $pid = $self->master_pid($c);
        delete $self->{running}{$c};
        next unless $pid && kill 0, $pid;
        kill 'QUIT', $pid;
        wait_for(sub { !kill 0, $pid }, 10) or kill 'KILL', $pid;
    }
    return $self;
}

# --- daemons ---------------------------------------------------------------

# run_daemon(\&code, @args) or run_daemon('/path/prog', @args)
sub run_daemon {
    my ($self, $code, @args) = @_;

    my $pid = fork();
    die "fork: $!\n" unless defined $pid;

    if ($pid == 0) {
        $self->{owner} = 0;
        if (ref $code) {
            $code->(@args);
            POSIX::_exit(0);
        }
        my %env = ref $args[-1] eq 'HASH' ? %{pop @args} : ();
        @ENV{keys %env} = values %env;
        exec $code, @args or POSIX::_exit(127);
    }

    push @{$self->{daemons}}, $pid;
    return $pid;
}

sub stop_daemon {
    my ($self, $pid, $sig) = @_;
    kill $sig // 'TERM', $pid;
    my $t0 = time;
    while (time - $t0 < 5) {
        return if waitpid($pid, WNOHANG) != 0;
        sleep 0.05;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
}

sub stop_daemons {
    my ($self) = @_;
    $self->stop_daemon($_) for reverse @{$self->{daemons}};
    $self->{daemons} = [];
}

# --- echo backend ----------------------------------------------------------
#
# An HTTP/1.1 server (keep-alive, chunked request bodies) answering with a
# JSON echo of the request: {"method","uri","headers":{lc name: [values]},
# "body_length","body"}.  Paths with special meaning:
#   /status/NNN       answer with that status
#   /stream?chunks=N&delay=S   N chunks of "chunk i\n", S seconds apart
#   /big?size=N       N bytes of 'x'
#   /sleep?s=S        wait S seconds before answering
# Every request is appended to the log file as "METHOD URI".

sub echo_backend {
    my ($self, %o) = @_;
    my $port = $o{port} or die "echo_backend: port\n";
    my $log = $o{log} // "$self->{testdir}/echo-$port.log";
    my $name = $o{name} // "echo:$port";

    my $listen = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
        Listen => SOMAXCONN, ReuseAddr => 1) or die "echo $port: $!\n";

    my $pid = $self->run_daemon(sub {
        $SIG{CHLD} = 'IGNORE';
        while (1) {
            my $c = $listen->accept() or next;
            my $p = fork();
            if (defined $p && $p == 0) {
                close $listen;
                _echo_serve($c, $log, $name);
                POSIX::_exit(0);
            }
            close $c;
        }
    });

    close $listen;
    $self->{echo_log}{$port} = $log;
    return $pid;
}

sub echo_log {
    my ($self, $port) = @_;
    return $self->read_file($self->{echo_log}{$port} // "echo-$port.log");
}

sub _read_line {
    my ($c, $buf) = @_;
    while ($$buf !~ /\r?\n/) {
        my $n = sysread($c, $$buf, 65536, length $$buf);
        return undef unless $n;
    }
    $$buf =~ s/^(.*?)\r?\n//;
    return $1;
}

sub _read_n {
    my ($c, $buf, $n) = @_;
    while (length $$buf < $n) {
        my $r = sysread($c, $$buf, 65536, length $$buf);
        return undef unless $r;
    }
    return substr($$buf, 0, $n, '');
}

sub _echo_serve {
    my ($c, $log, $name) = @_;
    my $buf = '';
    $c->autoflush(1);

    while (1) {
        my $line = _read_line($c, \$buf);
        return unless defined $line;
        next if $line eq '';
        my ($method, $uri, $proto) = split ' ', $line;

        my (%h, @order);
        while (defined(my $l = _read_line($c, \$buf))) {
            last if $l eq '';
            my ($k, $v) = $l =~ /^([^:]+):\s*(.*)$/ or next;
            push @{$h{lc $k}}, $v;
        }

        my $body = '';
        if (($h{'transfer-encoding'}[0] // '') =~ /chunked/i) {
            while (1) {
                my ($data, $end) = dechunk(\$buf);
                $body .= $data;
                last if $end;
                sysread($c, $buf, 65536, length $buf) or return;
            }
        } elsif (my $len = $h{'content-length'}[0]) {
            $body = _read_n($c, \$buf, $len) // return;
        }

        if (open my $lf, '>>', $log) {
            print $lf "$method $uri\n";
            close $lf;
        }

        my $close = ($h{connection}[0] // '') =~ /close/i
            || ($proto // '') eq 'HTTP/1.0';
        my %q = $uri =~ /[?&]([^=&]+)=([^&]*)/g;
        my $status = 200;
        my $conn = $close ? "Connection: close\r\n" : '';

        if ($uri =~ m{^/sleep}) {
            sleep($q{s} // 1);
        }

        if ($uri =~ m{^/stream}) {
            my $n = $q{chunks} // 3;
            print $c "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                . "Transfer-Encoding: chunked\r\n$conn\r\n";
            for my $i (1 .. $n) {
                my $chunk = "chunk $i\n";
                printf $c "%x\r\n%s\r\n", length $chunk, $chunk;
                sleep($q{delay} // 0.5) if $i < $n;
            }
            print $c "0\r\n\r\n";
            return if $close;
            next;
        }

        my $out;
        if ($uri =~ m{^/big}) {
            $out = 'x' x ($q{size} // 100000);
        } else {
            $status = $1 if $uri =~ m{^/status/(\d{3})};
            $out = $JSON->encode({
                backend => $name,
                method => $method,
                uri => $uri,
                headers => \%h,
                body_length => length $body,
                body => length $body <= 65536 ? $body : '',
            });
        }

        print $c "HTTP/1.1 $status X\r\nContent-Type: application/json\r\n"
            . "Content-Length: " . length($out) . "\r\n$conn\r\n"
            . ($method eq 'HEAD' ? '' : $out);
        return if $close;
    }
}

# --- redis -----------------------------------------------------------------

# $t->run_redis(port => N, aof => 1, password => P, args => [...]): a
# redis-server of this test's own, {pid, port, socket, dir, args}
sub run_redis {
    my ($self, %o) = @_;
    my $n = @{$self->{redis}};
    my $dir = "$self->{testdir}/redis$n";
    mkdir $dir;
    my $port = $o{port} // $self->port(6300 + $n);
    my $sock = "$dir/redis.sock";

    my @args = ('--protected-mode', 'no', '--port', $port,
        '--bind', '127.0.0.1',
        '--unixsocket', $sock, '--unixsocketperm', '700',
        '--dir', $dir, '--daemonize', 'no', '--save', '',
        '--appendonly', $o{aof} ? 'yes' : 'no',
        '--logfile', "$dir/redis.log", @{$o{args} || []});
    push @args, '--requirepass', $o{password} if $o{password};

    my $r = { port => $port, socket => $sock, dir => $dir, args => \@args };
    push @{$self->{redis}}, $r;
    return $self->start_redis($r);
}

# $t->start_redis($r): the one Redis starter, for run_redis() and
# Test::Dstack::Api's shipped configuration, and to start a stopped one
# again: redis-server with $r->{args} (a configuration file first, or
# options), ready once it answers PING (PONG, or NOAUTH with a password;
# not while it loads its AOF)
sub start_redis {
    my ($self, $r) = @_;
    $r->{pid} = $self->run_daemon('redis-server', @{$r->{args}});
    wait_for(sub { _redis_ready($r->{port}) }, 10)
        or die "redis-server did not start\n";
    return $r;
}

sub restart_redis {
    my ($self, $r) = @_;
    $self->stop_daemon($r->{pid});
    return $self->start_redis($r);
}

sub _redis_ready {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
        Timeout => 1) or return 0;
    $s->syswrite("PING\r\n");
    return 0 unless IO::Select->new($s)->can_read(2);
    my $n = $s->sysread(my $l, 256);
    return $n && $l =~ /^(?:\+PONG|-NOAUTH)/;
}

sub redis_cli {
    my ($self, $r, @cmd) = @_;
    my @q = map { my $a = $_; $a =~ s/'/'\\''/g; "'$a'" } @cmd;
    my $out = `redis-cli -p $r->{port} @q 2>&1`;
    chomp $out;
    return $out;
}

# --- guest-agent simulator and certificates --------------------------------

# $t->sim_cert('a', app_id => HEX, state => 'kms', usage => 'both',
#              variant => ['--app-id-len', 19]) -> {key, chain, root}
sub sim_cert {
    my ($self, $name, %o) = @_;
    my $d = $self->{testdir};
    my $state = "$d/" . ($o{state} // 'kms');
    mkdir $state;

    my @cmd = ($self->bin('dstack-sim'), 'mkcert', '--state-dir', $state,
        '--app-id', $o{app_id} // ('ab' x 20),
        '--key-out', "$d/$name.key", '--chain-out', "$d/$name.crt",
        '--profile', $o{profile} // 'kms',
        '--usage', $o{usage} // 'both');
    push @cmd, '--subject', $o{subject} if $o{subject};
    push @cmd, @{$o{variant} || []};

    system(@cmd) == 0 or die "dstack-sim mkcert @cmd failed\n";

    my $root = `$cmd[0] root --state-dir $state`;
    chomp $root;

    return { key => "$d/$name.key", chain => "$d/$name.crt",
        root => $root };
}

# $t->run_sim(socket => path, app_id => HEX, instance_id => HEX,
#             state => 'kms', profile => 'kms')
sub run_sim {
    my ($self, %o) = @_;
    my $d = $self->{testdir};
    my $state = "$d/" . ($o{state} // 'kms');
    mkdir $state;
    my $sock = $o{socket} // "$d/dstack.sock";

    my @args = ('serve', '--socket', $sock, '--state-dir', $state,
        '--app-id', $o{app_id} // ('ab' x 20),
        '--instance-id', $o{instance_id} // ('cd' x 20),
        '--profile', $o{profile} // 'kms', @{$o{args} || []});

    open my $olderr, '>&', \*STDERR;
    open STDERR, '>>', "$d/logs/sim.log";
    my $pid = $self->run_daemon($self->bin('dstack-sim'), @args);
    open STDERR, '>&', $olderr;

    wait_for(sub { _can_connect("unix:$sock") }, 10)
        or die "dstack-sim did not start\n";
    return $sock;
}

# plain openssl CA and certificates, for non-dstack cases
sub openssl_ca {
    my ($self, $name, %o) = @_;
    my $d = $self->{testdir};
    _sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
        . "-nodes -keyout $d/$name.key -out $d/$name.crt -days 30 "
        . "-subj /CN=$name -addext basicConstraints=critical,CA:TRUE");
    return { key => "$d/$name.key", chain => "$d/$name.crt",
        root => "$d/$name.crt" };
}

sub openssl_cert {
    my ($self, $name, $ca, %o) = @_;
    my $d = $self->{testdir};
    my $ext = "$d/$name.ext";
    $self->write_file("$name.ext", "basicConstraints=CA:FALSE\n"
        . "extendedKeyUsage=serverAuth,clientAuth\n"
        . ($o{ext} // ''));
    _sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        . "-keyout $d/$name.key -out $d/$name.csr -subj /CN=$name");
    _sh("openssl x509 -req -in $d/$name.csr -CA $ca->{chain} "
        . "-CAkey $ca->{key} -CAcreateserial -days " . ($o{days} // 30)
        . " -extfile $ext -out $d/$name.crt");
    return { key => "$d/$name.key", chain => "$d/$name.crt",
        root => $ca->{root} };
}

sub _sh {
    my ($cmd) = @_;
    my $out = `$cmd 2>&1`;
    die "failed: $cmd\n$out" if $?;
    return $out;
}

# --- clients ---------------------------------------------------------------

# http($raw_request, port => N, ssl => 1, cert => F, key => F, ca => F,
#      sni => NAME, timeout => S, socket => $existing, start => 1)
sub http {
    my ($request, %o) = @_;
    my $s = $o{socket} || _connect(%o) or return undef;

    my $reply = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm($o{timeout} // 10);
        $s->syswrite($request) if length $request;
        return if $o{start};
        while (1) {
            my $n = $s->sysread(my $chunk, 65536);
            last unless $n;
            $reply .= $chunk;
        }
        alarm(0);
    };
    alarm(0);
    return $s if $o{start};
    return $reply;
}

sub _connect {
    my (%o) = @_;
    my $addr = $o{addr} // '127.0.0.1:' . ($o{port} // 8080);

    if ($o{ssl}) {
        require IO::Socket::SSL;
        my %ssl = (
            PeerAddr => $addr,
            Timeout => $o{timeout} // 10,
            SSL_verify_mode => $o{ca} ? 1 : 0,
            SSL_hostname => $o{sni} // '',
            SSL_verifycn_scheme => 'none',
        );
        $ssl{SSL_ca_file} = $o{ca} if $o{ca};
        $ssl{SSL_cert_file} = $o{cert} if $o{cert};
        $ssl{SSL_key_file} = $o{key} if $o{key};
        my $s = IO::Socket::SSL->new(%ssl);
        return $s;
    }

    return IO::Socket::INET->new(PeerAddr => $addr,
        Timeout => $o{timeout} // 10);
}

sub http_get {
    my ($uri, %o) = @_;
    my $host = $o{host} // 'localhost';
    my $extra = $o{headers} // '';
    return http("GET $uri HTTP/1.0\r\nHost: $host\r\n$extra\r\n", %o);
}

sub http_post {
    my ($uri, $body, %o) = @_;
    my $host = $o{host} // 'localhost';
    my $extra = $o{headers} // '';
    return http("POST $uri HTTP/1.0\r\nHost: $host\r\n$extra"
        . "Content-Length: " . length($body) . "\r\n\r\n$body", %o);
}

# parse_response($raw) -> {status, headers => {lc => value}, body}
sub parse_response {
    my ($raw) = @_;
    return { status => 0, headers => {}, body => '' } unless defined $raw;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    my ($status_line, @lines) = split /\r\n/, $head // '';
    my ($status) = ($status_line // '') =~ m{^HTTP/\S+\s+(\d+)};
    my %h;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $h{lc $k} = exists $h{lc $k} ? "$h{lc $k}, $v" : $v;
    }
    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        $body = dechunk(\$body, 1);
    }
    return { status => $status // 0, headers => \%h, body => $body // '' };
}

# dechunk(\$raw [, $cut]): the one reader of chunked bodies, for answers
# read whole, streams read as they come and the servers here.  Takes the
# complete chunks off the front of $raw and returns their data and, in
# list context, whether the last chunk and its trailers were among them;
# what follows the body stays in $raw.  With $cut, $raw is all there will
# be: a chunk cut short gives what it holds.
sub dechunk {
    my ($raw, $cut) = @_;
    my $out = '';

    while ($$raw =~ /^([0-9a-fA-F]+)[^\r\n]*\r\n/) {
        my ($n, $hl) = (hex $1, $+[0]);

        if ($n == 0) {
            my $e = index($$raw, "\r\n\r\n", $hl - 2);
            if ($e >= 0) {
                substr($$raw, 0, $e + 4, '');
                return wantarray ? ($out, 1) : $out;
            }
            $$raw = '' if $cut;
            last;
        }

        if (length($$raw) < $hl + $n + 2) {
            if ($cut) {
                $out .= substr($$raw, $hl, $n);
                $$raw = '';
            }
            last;
        }

        $out .= substr($$raw, $hl, $n);
        substr($$raw, 0, $hl + $n + 2, '');
    }

    return wantarray ? ($out, 0) : $out;
}

sub json_body {
    my ($raw) = @_;
    my $r = ref $raw ? $raw : parse_response($raw);
    my $j = eval { $JSON->decode($r->{body}) };
    return $j;
}

# curl with our flags; returns (status, body)
sub curl {
    my ($self, @args) = @_;
    my @q = map { my $a = $_; $a =~ s/'/'\\''/g; "'$a'" } @args;
    my $out = `curl -sS -m 10 -w '\\n%{http_code}' @q 2>&1`;
    my ($body, $code) = $out =~ /^(.*)\n(\d+)$/s;
    return ($code // 0, $body // $out);
}

# --- waiting and logs ------------------------------------------------------

sub wait_for {
    my ($cond, $timeout) = @_;
    my $t0 = time;
    while (time - $t0 < ($timeout // 10)) {
        return 1 if $cond->();
        sleep 0.05;
    }
    return $cond->() ? 1 : 0;
}

sub error_log {
    my ($self) = @_;
    return $self->read_file('logs/error.log');
}

sub grep_error_log {
    my ($self, $re) = @_;
    return grep { /$re/ } split /\n/, $self->error_log();
}

# The per-file check: any [alert]/[emerg] or sanitizer report in a log
# under logs/ fails the file (there is no way to allow one).
sub check_errors {
    my ($self) = @_;
    return if $self->{errors_checked}++;
    my @bad;
    for my $f (glob "$self->{testdir}/logs/*.log") {
        next if $f =~ /access|sim\.log/;
        open my $fh, '<', $f or next;
        while (<$fh>) {
            push @bad, $_ if /\[(alert|emerg)\]|AddressSanitizer|runtime error:/;
        }
    }
    Test::More::is(join('', @bad), '', 'no alerts in error logs');
}

# Stop everything and check the logs before Test::More's own END block
# (ours is registered later, so it runs first), whether or not the object
# is still referenced from closures.



sub _finish {
    my ($self) = @_;
    local $?;
    return unless $self->{owner} && $self->{owner} == $$;
    return if $self->{finished}++;
    $self->stop();
    $self->stop_daemons();
    $self->check_errors() if $self->{planned};
}

sub DESTROY { $_[0]->_finish() }

END { $_ && $_->_finish() for @INSTANCES; }

1;
