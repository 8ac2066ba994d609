package Test::DstackNetns;

# Network namespaces for VPN tests: namespaces named after the test's pid,
# veth pairs with addresses only inside them, wireguard-go processes, and
# cleanup of all of it in END and on signals.
#
#   use lib 't/lib';
#   use Test::DstackNetns;
#   my $net = Test::DstackNetns->new() or plan skip_all => $Test::DstackNetns::WHY;
#   my $a = $net->netns('a');                    # "dwa<pid>"
#   $net->veth('a', '10.200.0.1/24', 'b', '10.200.0.2/24');
#   my ($rc, $out) = $net->run('a', 'ping', '-c1', '10.200.0.2');
#   my $pid = $net->wireguard_go('a', $ifname);  # foreground, tracked
#   my %ip = $net->lan('10.201.0', qw(srv a b)); # one bridge, 10.201.0.1..
#   my $hosts = $net->hosts_file('a');           # /etc/hosts inside 'a'
#   $net->firewall('a', tcp_out => ['10.201.0.2:443'], udp => 0,
#       only => 1);                              # nftables on a's lan0
#   $net->block_udp('a'); $net->unblock_udp('a'); $net->udp_dropped('a');

use strict;
use warnings;

use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);

our $WHY = '';
my @ALL;

sub _which {
    my ($prog) = @_;

    for my $dir (split /:/, $ENV{PATH} // '/usr/sbin:/usr/bin:/sbin:/bin') {
        return "$dir/$prog" if -x "$dir/$prog";
    }

    return undef;
}

# undef with $WHY set when this machine cannot run namespace tests
sub new {
    my ($class) = @_;

    if ($> != 0) {
        $WHY = 'network namespaces need root';
        return undef;
    }

    for my $prog (qw(ip wireguard-go)) {
        if (!_which($prog)) {
            $WHY = "$prog not found";
            return undef;
        }
    }

    my $self = bless {
        tag   => $$ % 1000000,
        ns    => {},
        pids  => [],
        links => [],
    }, $class;

    my $probe = "dwp$self->{tag}";

    if (system("ip netns add $probe >/dev/null 2>&1") != 0) {
        $WHY = 'cannot create network namespaces here';
        return undef;
    }

    system("ip netns del $probe >/dev/null 2>&1");
    push @ALL, $self;

    return $self;
}

sub tag { $_[0]{tag} }

# the namespace's full name, created on first use, loopback up
sub netns {
    my ($self, $name) = @_;

    return $self->{ns}{$name} if $self->{ns}{$name};

    my $ns = "dw$name$self->{tag}";

    system('ip', 'netns', 'add', $ns) == 0 or die "ip netns add $ns failed";
    $self->{ns}{$name} = $ns;
    system('ip', '-n', $ns, 'link', 'set', 'lo', 'up');

    return $ns;
}

# a veth pair between two namespaces, addressed and up
sub veth {
    my ($self, $a, $addr_a, $b, $addr_b) = @_;

    my ($na, $nb) = ($self->netns($a), $self->netns($b));
    my ($la, $lb) = ("v$a$b$self->{tag}", "v$b$a$self->{tag}");

    system('ip', 'link', 'add', $la, 'netns', $na, 'type', 'veth',
        'peer', 'name', $lb, 'netns', $nb) == 0
        or die "ip link add $la failed";

    system('ip', '-n', $na, 'addr', 'add', $addr_a, 'dev', $la);
    system('ip', '-n', $nb, 'addr', 'add', $addr_b, 'dev', $lb);
    system('ip', '-n', $na, 'link', 'set', $la, 'up');
    system('ip', '-n', $nb, 'link', 'set', $lb, 'up');

    return ($la, $lb);
}

# A switch: a bridge in its own namespace, one veth "lan0" into each named
# namespace, addressed <net>.1, <net>.2, ... in the order given (more can
# join later with the same <net>).  Returns (name => address).
sub lan {
    my ($self, $net, @names) = @_;

    my $hub = $self->netns('hub');
    my $br = "br$self->{tag}";

    if (!$self->{bridge}) {
        system('ip', '-n', $hub, 'link', 'add', $br, 'type', 'bridge') == 0
            or die "ip link add $br failed";
        system('ip', '-n', $hub, 'link', 'set', $br, 'up');
        $self->{bridge} = $br;
        $self->{lan} = {};
    }

    my %ip;

    for my $name (@names) {
        my $ns = $self->netns($name);
        my $n = 1 + keys %{$self->{lan}};
        my $port = "vh$n" . "x$self->{tag}";

        system('ip', 'link', 'add', $port, 'netns', $hub, 'type', 'veth',
            'peer', 'name', 'lan0', 'netns', $ns) == 0
            or die "ip link add $port failed";
        system('ip', '-n', $hub, 'link', 'set', $port, 'master', $br);
        system('ip', '-n', $hub, 'link', 'set', $port, 'up');
        system('ip', '-n', $ns, 'addr', 'add', "$net.$n/24", 'dev', 'lan0');
        system('ip', '-n', $ns, 'link', 'set', 'lan0', 'up');

        $self->{lan}{$name} = "$net.$n";
        $ip{$name} = "$net.$n";
    }

    return %ip;
}

# /etc/netns/<ns>/hosts: "ip netns exec" mounts it over /etc/hosts, so
# that names resolve per namespace; removed at the end
sub hosts_file {
    my ($self, $name) = @_;

    my $ns = $self->netns($name);
    my $dir = "/etc/netns/$ns";

    if (!-d $dir) {
        # another test's cleanup may remove an empty /etc/netns meanwhile
        for (1 .. 5) {
            mkdir '/etc/netns';
            last if mkdir $dir;
        }
        -d $dir or die "mkdir $dir: $!";
        open my $fh, '>', "$dir/hosts" or die "$dir/hosts: $!";
        print $fh "127.0.0.1\tlocalhost\n::1\tlocalhost\n";
        close $fh;
        push @{$self->{etc}}, $dir;
    }

    return "$dir/hosts";
}

# runs a command in a namespace; returns (exit code, stdout and stderr)
sub run {
    my ($self, $name, @cmd) = @_;

    my $ns = $self->netns($name);

    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork() // die "fork: $!";

    if ($pid == 0) {
        close $r;
        open STDOUT, '>&', $w or POSIX::_exit(126);
        open STDERR, '>&', $w or POSIX::_exit(126);
        open STDIN, '<', '/dev/null';
        exec('ip', 'netns', 'exec', $ns, @cmd) or POSIX::_exit(127);
    }

    close $w;
    local $/;
    my $out = <$r> // '';
    close $r;
    waitpid($pid, 0);

    return ($? >> 8, $out);
}

# nftables in a namespace, on its "lan0" only (loopback and VPN devices
# are never filtered); the namespace's own table, replaced at each call:
#   udp     => 0|1        drop UDP both ways, established flows included;
#                         or let it through (with only)
#   only    => 1          drop everything else but what is listed here and
#                         the replies of allowed connections
#   tcp_out => ['<ip>:<port>', ...]   connections it may open (with only)
#   tcp_in  => ['<ip>:<port>', ...]   from <ip> to its own <port>
# Needs nft (Debian's nftables); dies when the rules do not load.
sub firewall {
    my ($self, $name, %o) = @_;

    my $fw = $self->{fw}{$name} = { %{$self->{fw}{$name} || {}}, %o };
    my $ns = $self->netns($name);
    my (@in, @out);

    push @in, 'iifname != "lan0" accept';
    push @out, 'oifname != "lan0" accept';

    if (defined $fw->{udp} && !$fw->{udp}) {
        push @in, 'meta l4proto udp counter name udp_dropped drop';
        push @out, 'meta l4proto udp counter name udp_dropped drop';
    }

    if ($fw->{only}) {
        push @in, 'ct state established,related accept';
        push @out, 'ct state established,related accept';

        for (@{$fw->{tcp_out} || []}) {
            my ($ip, $port) = /^([\d.]+):(\d+)$/ or die "tcp_out: $_\n";
            push @out, "ip daddr $ip tcp dport $port accept";
        }

        for (@{$fw->{tcp_in} || []}) {
            my ($ip, $port) = /^([\d.]+):(\d+)$/ or die "tcp_in: $_\n";
            push @in, "ip saddr $ip tcp dport $port accept";
        }

        if ($fw->{udp}) {
            push @in, 'meta l4proto udp accept';
            push @out, 'meta l4proto udp accept';
        }

        push @in, 'counter name other_dropped drop';
        push @out, 'counter name other_dropped drop';
    }

    my $rules = "table inet dstack_fw\ndelete table inet dstack_fw\n"
        . "table inet dstack_fw {\n"
        . "    counter udp_dropped {\n    }\n"
        . "    counter other_dropped {\n    }\n"
        . "    chain in {\n"
        . "        type filter hook input priority 0; policy accept;\n"
        . join('', map { "        $_\n" } @in) . "    }\n"
        . "    chain out {\n"
        . "        type filter hook output priority 0; policy accept;\n"
        . join('', map { "        $_\n" } @out) . "    }\n"
        . "}\n";

    my $pid = open(my $fh, '|-') // die "fork: $!";

    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        exec('ip', 'netns', 'exec', $ns, 'nft', '-f', '-')
            or POSIX::_exit(127);
    }

    print $fh $rules;
    close $fh or die "nft in $ns failed ($?):\n$rules";

    return $self;
}

sub block_udp { $_[0]->firewall($_[1], udp => 0) }
sub unblock_udp { $_[0]->firewall($_[1], udp => 1) }

# packets the firewall dropped: ('udp' or 'other'), or undef without one
sub dropped {
    my ($self, $name, $what) = @_;

    return undef unless $self->{fw}{$name};

    my ($rc, $out) = $self->run($name, 'nft', 'list', 'counter', 'inet',
        'dstack_fw', ($what // 'udp') . '_dropped');
    my ($n) = $out =~ /packets (\d+)/;

    return $rc == 0 ? $n : undef;
}

sub udp_dropped { $_[0]->dropped($_[1], 'udp') }

# wireguard-go in the foreground, in the background; killed at the end
sub wireguard_go {
    my ($self, $name, $ifname) = @_;

    my $ns = $self->netns($name);
    my $pid = fork() // die "fork: $!";

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        $ENV{WG_PROCESS_FOREGROUND} = 1;
        exec('ip', 'netns', 'exec', $ns, 'wireguard-go', $ifname)
            or POSIX::_exit(127);
    }

    push @{$self->{pids}}, $pid;
    push @{$self->{links}}, $ifname;

    my $deadline = time() + 10;

    while (time() < $deadline) {
        return $pid if -S "/var/run/wireguard/$ifname.sock";
        last if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }

    return undef;
}

# a userspace device that something else started: removed at the end
sub track_link {
    my ($self, $ifname) = @_;

    push @{$self->{links}}, $ifname;
}

sub cleanup {
    my ($self) = @_;

    for my $pid (@{$self->{pids}}) {
        kill 'TERM', $pid;
    }

    for my $pid (@{$self->{pids}}) {
        my $deadline = time() + 3;
        while (waitpid($pid, WNOHANG) == 0 && time() < $deadline) {
            sleep 0.05;
        }
        kill 'KILL', $pid if waitpid($pid, WNOHANG) == 0;
        waitpid($pid, 0);
    }

    $self->{pids} = [];

    # deleting a namespace deletes its tun devices: wireguard-go exits
    for my $ns (values %{$self->{ns}}) {
        system("ip netns del $ns >/dev/null 2>&1");
    }

    $self->{ns} = {};

    for my $ifname (@{$self->{links}}) {
        my $sock = "/var/run/wireguard/$ifname.sock";
        my $deadline = time() + 3;
        sleep 0.05 while -S $sock && time() < $deadline;
        unlink $sock if -S $sock;
    }

    $self->{links} = [];

    for my $dir (@{$self->{etc} || []}) {
        unlink "$dir/hosts";
        rmdir $dir;
    }

    rmdir '/etc/netns';
    $self->{etc} = [];
    delete $self->{bridge};
}

END {
    my $status = $?;
    $_->cleanup() for @ALL;
    @ALL = ();
    $? = $status;
}

$SIG{$_} = sub { exit 1 } for qw(INT TERM HUP);

1;
