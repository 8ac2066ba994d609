#!/usr/bin/perl

# wgctl's command line without devices: usage and exit codes, keys against
# wg(8), the hosts block, and the errors that name the bad value.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp qw(tempdir);
use POSIX ();
use Test::More;
use Test::Dstack;

my $root = "$FindBin::Bin/..";
my $wgctl = ($ENV{DSTACK_BUILD} // "$root/build") . '/bin/wgctl';

Test::Dstack->skip_all("wgctl not built ($wgctl); run make bins")
    unless -x $wgctl;

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
is($rc, 0, '--help: exit 0');
like($out, qr/^Usage: wgctl/, '--help: usage on stdout');
like($out, qr/syncconf/, '--help: usage lists syncconf');
is($err, '', '--help: nothing on stderr');

($rc, $out, $err) = run();
is($rc, 1, 'no subcommand: exit 1');
is($out, '', 'no subcommand: nothing on stdout');
like($err, qr/^Usage: wgctl/, 'no subcommand: usage on stderr');

($rc, $out, $err) = run('frobnicate');
is($rc, 1, 'unknown subcommand quoted: exit 1');
like($err, qr/invalid subcommand "frobnicate"/,
    'unknown subcommand quoted: stderr');

($rc, $out, $err) = run('syncconf', '--help');
is($rc, 0, 'subcommand --help on stdout: exit 0');
like($out, qr/^Usage: wgctl syncconf <interface>/,
    'subcommand --help on stdout: stdout');

($rc, $out, $err) = run('setconf', 'wg0');
is($rc, 1, 'setconf misuse: exit 1');
like($err, qr/^Usage: wgctl setconf/, 'setconf misuse: stderr');

($rc, $out, $err) = run('show', 'wg0/../x');
is($rc, 1, 'bad interface name quoted: exit 1');
like($err, qr/invalid interface name "wg0\/\.\.\/x"/,
    'bad interface name quoted: stderr');

($rc, $out, $err) = run('--backend', 'bogus', 'show');
is($rc, 1, 'bad backend quoted: exit 1');
like($err, qr/invalid backend "bogus"/, 'bad backend quoted: stderr');

($rc, $out, $err) = run('addr', 'wg0', '100.64.0.300');
is($rc, 1, 'bad address quoted: exit 1');
like($err, qr/invalid address "100\.64\.0\.300"/, 'bad address quoted: stderr');

($rc, $out, $err) = run('addr', 'wg0', '100.64.0.1', '--mtu', '10');
is($rc, 1, 'bad MTU quoted: exit 1');
like($err, qr/invalid MTU "10"/, 'bad MTU quoted: stderr');

($rc, $out, $err) = run('addr', 'wg0', '100.64.0.1', '--route', 'x/8');
is($rc, 1, 'bad route quoted: exit 1');
like($err, qr/invalid route prefix "x\/8"/, 'bad route quoted: stderr');

SKIP: {
    skip 'the kernel has WireGuard', 2
        if system('ip link add dwprobe0 type wireguard >/dev/null 2>&1') == 0
            && system('ip link del dwprobe0') == 0;

    ($rc, $out, $err) = run('--backend', 'netlink', 'show', "dwnone$$");
    is($rc, 1, 'netlink backend without the module says so: exit 1');
    like($err, qr/WireGuard kernel module not loaded/,
        'netlink backend without the module says so: stderr');
}

($rc, $out, $err) = run('show', "dwnone$$", '--backend', 'uapi');
is($rc, 1, 'missing device named: exit 1');
like($err, qr/unable to access interface "dwnone$$"/,
    'missing device named: stderr');

# keys

($rc, $out, $err) = run('genkey');
my $key = $out =~ s/\n//r;
is($rc, 0, 'genkey: exit 0');
like($key, qr{^[A-Za-z0-9+/]{43}=$}, 'genkey: key');

($rc, $out, $err) = run(\"$key\n", 'pubkey');
my $pub = $out =~ s/\n//r;
is($rc, 0, 'pubkey: exit 0');
like($pub, qr{^[A-Za-z0-9+/]{43}=$}, 'pubkey: pub');
isnt($pub, $key, 'pubkey: pub differs from key');

SKIP: {
    Test::Dstack::skip_missing('wg not installed', 2)
        if system('command -v wg >/dev/null') != 0;

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
is($rc, 1, 'pubkey refuses garbage: exit 1');
is($out, '', 'pubkey refuses garbage: nothing on stdout');
like($err, qr/not the correct length or format/,
    'pubkey refuses garbage: stderr');

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
is($rc, 1, 'bad name quoted: exit 1');
like($err, qr/invalid host name "Bad_Name"/, 'bad name quoted: stderr');

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
is($rc, 1, 'config error with line and value: exit 1');
like($err, qr/line 2: invalid ListenPort "99999"/,
    'config error with line and value: stderr');

done_testing();
