package Test::Dstack::Vpn;

# VPN tests: node agents ("wgctl up") in network namespaces, and what to
# look at on each node: the agent's status file and log, "wg show", the
# namespace's hosts file, commands run there.
#
#   my $net = Test::DstackNetns->new() or plan skip_all => ...;
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

my $JSON = JSON::PP->new->canonical->allow_nonref;
my @ALL;

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
