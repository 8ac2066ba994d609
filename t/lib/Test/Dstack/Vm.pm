package Test::Dstack::Vm;

# QEMU guests for tests, through scripts/vm/vm.sh: Debian's own kernels
# under TCG, a script run as the guest's root, its output read back in
# sections.
#
#   use Test::Dstack::Vm;
#   my $vm = Test::Dstack::Vm->new(kernel => 'cloud')    # before any plan
#       or plan skip_all => $Test::Dstack::Vm::WHY;   # fails under CI=true
#   my $r = $vm->run($script, files => { '/tmp/x.conf' => $local },
#                    net => 'user', timeout => 300);
#   # $r->{rc}, $r->{out}, $r->{seconds}, $r->{sections}{name}{rc|out}
#
# In the guest script, print sections with the shell helpers of GUEST_LIB
# (prepended to every script): step NAME cmd..., timed NAME cmd...,
# sec/end.  Background guests (CVM-shaped nodes): start() / wait_for() /
# stop().

use strict;
use warnings;

use File::Temp qw(tempdir);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);

use Test::Dstack;

our $WHY = '';
our $VM_SH = "$Test::Dstack::REPO/scripts/vm/vm.sh";

# shell functions every guest script starts with
our $GUEST_LIB = <<'EOF';
sec() { echo "@@BEGIN $1 $(now)"; }
end() { echo "@@END $1 $2"; }
now() { cut -d' ' -f1 /proc/uptime; }
step() {
    _n=$1; shift
    sec "$_n"; "$@" 2>&1; _rc=$?; end "$_n" $_rc
    return $_rc
}
timed() {
    _n=$1; shift
    sec "$_n"; _t0=$(now); "$@" 2>&1; _rc=$?; _t1=$(now)
    echo "@@TIME $_n $_t0 $_t1"; end "$_n" $_rc
    return $_rc
}
echo "@@UPTIME $(now)"
EOF

my @GUESTS;

sub _which {
    my ($prog) = @_;

    for my $dir (split(/:/, $ENV{PATH} // ''), qw(/usr/sbin /sbin)) {
        return "$dir/$prog" if -x "$dir/$prog";
    }

    return undef;
}

# undef (and $WHY) when this machine cannot run the guests; under CI=true
# a missing piece is a failure, never a skip
sub new {
    my ($class, %opt) = @_;

    my $self = bless {
        kernel => $opt{kernel} // 'cloud',
        build  => $Test::Dstack::BUILD,
        dir    => tempdir(CLEANUP => 1),
    }, $class;

    my @missing;

    push @missing, 'root' if $> != 0;
    push @missing, "$self->{build}/bin/wgctl (make all)"
        unless -x "$self->{build}/bin/wgctl";

    for my $prog (qw(qemu-system-x86_64 cpio modprobe depmod busybox
                     wg ip wireguard-go))
    {
        push @missing, $prog unless _which($prog);
    }

    if (!@missing) {
        my $t0 = time;
        my $log = "$self->{dir}/prepare.log";

        if (system("$VM_SH prepare $self->{kernel} >$log 2>&1") != 0) {
            push @missing, "vm.sh prepare $self->{kernel}: "
                . _slurp($log);
        }

        $self->{prepare_seconds} = time - $t0;
    }

    if (@missing) {
        $WHY = 'the test VM needs: ' . join(', ', @missing)
            . ' (scripts/deps.sh installs the packages)';

        # a failure of this file, not of the whole run (BAIL_OUT would
        # stop every other test file too); call new() before any plan
        if (($ENV{CI} // '') eq 'true') {
            Test::More::plan(tests => 1);
            Test::More::fail("CI=true: $WHY");
            exit 1;
        }

        return undef;
    }

    return $self;
}

sub prepare_seconds { $_[0]{prepare_seconds} }
sub dir { $_[0]{dir} }

sub _slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return scalar <$fh>;
}

sub _args {
    my ($self, $name, %opt) = @_;

    my $script = "$self->{dir}/$name.sh";
    open my $fh, '>', $script or die "$script: $!";
    print $fh $GUEST_LIB, $opt{script};
    close $fh;

    my @args = ('--kernel', $opt{kernel} // $self->{kernel},
        '--mem', $opt{mem} // '512M',
        '--timeout', $opt{timeout} // 300,
        '--console', "$self->{dir}/$name.console",
        '--out', "$self->{dir}/$name.out");

    push @args, '--net', $opt{net} if $opt{net};

    for my $dst (sort keys %{$opt{files} // {}}) {
        push @args, '--file', "$opt{files}{$dst}:$dst";
    }

    for my $k (sort keys %{$opt{env} // {}}) {
        push @args, '--env', "$k=$opt{env}{$k}";
    }

    return (@args, $script);
}

# boot, run the script, wait for the power-off
sub run {
    my ($self, $script, %opt) = @_;

    my $name = $opt{name} // 'guest';
    my @args = $self->_args($name, %opt, script => $script);

    my $t0 = time;
    my $pid = fork() // die "fork: $!";

    if ($pid == 0) {
        open STDOUT, '>', "$self->{dir}/$name.vmsh" or die;
        open STDERR, '>&', \*STDOUT or die;
        exec $VM_SH, 'run', @args or die "exec $VM_SH: $!";
    }

    waitpid($pid, 0);
    my $rc = $? >> 8;

    my $r = {
        rc       => $rc,
        seconds  => time - $t0,
        out      => _slurp("$self->{dir}/$name.out"),
        console  => _slurp("$self->{dir}/$name.console"),
        vmsh     => _slurp("$self->{dir}/$name.vmsh"),
    };

    $r->{sections} = sections($r->{out});

    return $r;
}

# "@@BEGIN n" ... "@@END n rc", "@@TIME n t0 t1", "@@UPTIME t"
sub sections {
    my ($out) = @_;

    my (%s, $cur);

    for my $line (split /\n/, $out) {
        $line =~ s/\r$//;

        if ($line =~ /^\@\@BEGIN (\S+)(?: ([\d.]+))?$/) {
            $cur = $s{$1} = { out => '', rc => undef, at => $2 };

        } elsif ($line =~ /^\@\@END (\S+) (\d+)$/) {
            $s{$1}{rc} = $2 if $s{$1};
            $cur = undef;

        } elsif ($line =~ /^\@\@TIME (\S+) ([\d.]+) ([\d.]+)$/) {
            $s{$1}{seconds} = $3 - $2 if $s{$1};

        } elsif ($line =~ /^\@\@UPTIME ([\d.]+)$/) {
            $s{_uptime} = $1;

        } elsif ($cur) {
            $cur->{out} .= "$line\n";
        }
    }

    return \%s;
}

# a guest that keeps running (a node): its output file grows meanwhile
sub start {
    my ($self, $name, $script, %opt) = @_;

    my @args = $self->_args($name, %opt, script => $script);
    my $pid = fork() // die "fork: $!";

    if ($pid == 0) {
        setpgrp(0, 0);
        open STDOUT, '>', "$self->{dir}/$name.vmsh" or die;
        open STDERR, '>&', \*STDOUT or die;
        # QEMU's user-mode NAT lives where QEMU runs: in a namespace, the
        # guest's 10.0.2.2 is that namespace's loopback
        my @ns = $opt{netns} ? ('ip', 'netns', 'exec', $opt{netns}) : ();
        exec @ns, $VM_SH, 'run', @args or die "exec $VM_SH: $!";
    }

    my $g = { vm => $self, name => $name, pid => $pid, t0 => time };
    push @GUESTS, $g;

    return $g;
}

sub output {
    my ($self, $g) = @_;
    return _slurp("$self->{dir}/$g->{name}.out");
}

sub console {
    my ($self, $g) = @_;
    return _slurp("$self->{dir}/$g->{name}.console")
        . _slurp("$self->{dir}/$g->{name}.vmsh");
}

# wait until the guest's output matches; undef on timeout or guest exit
sub wait_for {
    my ($self, $g, $re, $timeout) = @_;

    my $end = time + ($timeout // 120);

    while (time < $end) {
        my $out = $self->output($g);
        return $out if $out =~ $re;

        if (waitpid($g->{pid}, WNOHANG) == $g->{pid}) {
            $g->{rc} = $? >> 8;
            $g->{pid} = 0;
            $out = $self->output($g);
            return $out =~ $re ? $out : undef;
        }

        sleep 0.25;
    }

    return undef;
}

sub stop {
    my ($self, $g) = @_;

    return unless $g->{pid};

    kill 'TERM', -$g->{pid};
    kill 'TERM', $g->{pid};

    for (1 .. 40) {
        last if waitpid($g->{pid}, WNOHANG) == $g->{pid};
        sleep 0.25;
    }

    kill 'KILL', -$g->{pid};
    waitpid($g->{pid}, 0);
    $g->{pid} = 0;
}

END {
    local $?;

    for my $g (@GUESTS) {
        next unless $g->{pid};
        kill 'KILL', -$g->{pid};
        kill 'KILL', $g->{pid};
        waitpid($g->{pid}, 0);
    }
}

1;
