#!/usr/bin/perl

# wgctl's command line without devices: usage and exit codes, keys against
# wg(8), the hosts block, and the errors that name the bad value.

use strict;
use warnings;

use FindBin;

use File::Temp qw(tempdir);
use POSIX ();
use Test::More;

my $root = "$FindBin::Bin/..";
my $wgctl = ($ENV{DSTACK_BUILD} // "$root/build") . '/bin/wgctl';

plan skip_all => "wgctl not built ($wgctl); run make bins" unless -x $wgctl;

my $dir = tempdir(CLEANUP => 1);

# (exit code, stdout, stderr)
sub run {
    my (@args) = @_;

    my $input = '';
    $input = ${ shift @args } if ref $args[0];

    open my $in, '>', "$dir/in" or die;
    print $in $input;
    close $in;

    my $pid = fork() // die;

    if ($pid == 0) {
        open STDIN, '<', "$dir/in";
        open STDOUT, '>', "$dir/out";
        open STDERR, '>', "$dir/err";
        exec($wgctl, @args) or POSIX::_exit(127);
    }

    waitpid($pid, 0);
    my $rc = $? >> 8;

    return ($rc, map { local (@ARGV, $/) = ("$dir/$_"); <> // '' } qw(out err));
}

my ($rc, $out, $err) = run('--help');
ok($rc == 0 && $out =~ /^Usage: wgctl/ && $out =~ /syncconf/ && $err eq '',
    '--help: usage on stdout, exit 0');

($rc, $out, $err) = run();
ok($rc == 1 && $out eq '' && $err =~ /^Usage: wgctl/,
    'no subcommand: usage on stderr, exit 1');

($rc, $out, $err) = run('frobnicate');
ok($rc == 1 && $err =~ /invalid subcommand "frobnicate"/,
    'unknown subcommand quoted');

($rc, $out, $err) = run('syncconf', '--help');
ok($rc == 0 && $out =~ /^Usage: wgctl syncconf <interface>/,
    'subcommand --help on stdout');

($rc, $out, $err) = run('setconf', 'wg0');
ok($rc == 1 && $err =~ /^Usage: wgctl setconf/, 'setconf misuse');

($rc, $out, $err) = run('show', 'wg0/../x');
ok($rc == 1 && $err =~ /invalid interface name "wg0\/\.\.\/x"/,
    'bad interface name quoted');

($rc, $out, $err) = run('--backend', 'bogus', 'show');
ok($rc == 1 && $err =~ /invalid backend "bogus"/, 'bad backend quoted');

($rc, $out, $err) = run('addr', 'wg0', '100.64.0.300');
ok($rc == 1 && $err =~ /invalid address "100\.64\.0\.300"/,
    'bad address quoted');

($rc, $out, $err) = run('addr', 'wg0', '100.64.0.1', '--mtu', '10');
ok($rc == 1 && $err =~ /invalid MTU "10"/, 'bad MTU quoted');

($rc, $out, $err) = run('addr', 'wg0', '100.64.0.1', '--route', 'x/8');
ok($rc == 1 && $err =~ /invalid route prefix "x\/8"/, 'bad route quoted');

SKIP: {
    skip 'the kernel has WireGuard', 1
        if system('ip link add dwprobe0 type wireguard >/dev/null 2>&1') == 0
            && system('ip link del dwprobe0') == 0;

    ($rc, $out, $err) = run('--backend', 'netlink', 'show', "dwnone$$");
    ok($rc == 1 && $err =~ /WireGuard kernel module not loaded/,
        'netlink backend without the module says so');
}

($rc, $out, $err) = run('show', "dwnone$$", '--backend', 'uapi');
ok($rc == 1 && $err =~ /unable to access interface "dwnone$$"/,
    'missing device named');

# keys

($rc, $out, $err) = run('genkey');
my $key = $out =~ s/\n//r;
ok($rc == 0 && $key =~ m{^[A-Za-z0-9+/]{43}=$}, 'genkey');

($rc, $out, $err) = run(\"$key\n", 'pubkey');
my $pub = $out =~ s/\n//r;
ok($rc == 0 && $pub =~ m{^[A-Za-z0-9+/]{43}=$} && $pub ne $key, 'pubkey');

SKIP: {
    skip 'wg not installed', 2 if system('command -v wg >/dev/null') != 0;

    my $ok = 1;

    for (1 .. 20) {
        my $k = `wg genkey`;
        chomp $k;
        my (undef, $mine) = run(\"$k\n", 'pubkey');
        my $theirs = `echo '$k' | wg pubkey`;
        $ok = 0 if $mine ne $theirs;
    }

    ok($ok, 'pubkey equals wg pubkey for 20 keys from wg genkey');
    is(`echo '$key' | wg pubkey`, "$pub\n", 'wg pubkey accepts wgctl genkey');
}

($rc, $out, $err) = run(\"not a key\n", 'pubkey');
ok($rc == 1 && $out eq '' && $err =~ /not the correct length or format/,
    'pubkey refuses garbage');

# hosts block

my $hosts = "$dir/hosts";
open my $fh, '>', $hosts or die;
print $fh "127.0.0.1 localhost\n# keep me\n";
close $fh;
chmod 0640, $hosts;

($rc, $out, $err) = run('hosts', $hosts, 'db-1=100.64.0.2', 'web=100.64.0.3');
my $text = do { local (@ARGV, $/) = ($hosts); <> };
is($text, "127.0.0.1 localhost\n# keep me\n# BEGIN dstack-vpc\n"
    . "100.64.0.2 db-1.dstack.internal db-1\n"
    . "100.64.0.3 web.dstack.internal web\n# END dstack-vpc\n",
    'hosts block written');
is((stat $hosts)[2] & 07777, 0640, 'mode kept');

($rc, $out, $err) = run('hosts', $hosts, 'Bad_Name=100.64.0.2');
ok($rc == 1 && $err =~ /invalid host name "Bad_Name"/, 'bad name quoted');

($rc, $out, $err) = run('-v', 'hosts', $hosts, 'db-1=100.64.0.2',
    'web=100.64.0.3');
like($err, qr/unchanged/, 'same block: file not rewritten');

($rc, $out, $err) = run('hosts', $hosts);
$text = do { local (@ARGV, $/) = ($hosts); <> };
is($text, "127.0.0.1 localhost\n# keep me\n", 'no entries: block removed');

# configuration errors name the line

open $fh, '>', "$dir/bad.conf" or die;
print $fh "[Interface]\nListenPort = 99999\n";
close $fh;

($rc, $out, $err) = run('setconf', 'wg0', "$dir/bad.conf");
ok($rc == 1 && $err =~ /line 2: invalid ListenPort "99999"/,
    'config error with line and value');

done_testing();
