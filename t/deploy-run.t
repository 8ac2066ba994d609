#!/usr/bin/perl

# The entry script running a server role under supervisord, in a network
# namespace of its own (it binds :80 and :443): the container's
# HEALTHCHECK passes, children log to its stdout/stderr, a crashed child
# is started again, and SIGTERM stops every child before it exits.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(wait_for);
use Test::DstackNetns;

my $t = Test::Dstack->new()
    ->has(qw(auth mesh api sim root redis supervisord jq envsubst curl));
my $net = Test::DstackNetns->new()
    or $t->skip_all($Test::DstackNetns::WHY);
$t->plan(10);

my $d = $t->testdir;
my $ns = $net->netns('run');
my $sock = $t->run_sim(socket => "$d/dstack.sock", app_id => '5e' x 20);

my %env = (
    PATH => $ENV{PATH},
    DSTACK_SOCKET => $sock,
    DSTACK_VPC_CONF_DIR => "$d/conf",
    DSTACK_VPC_TLS_DIR => "$d/tls",
    DSTACK_VPC_RUN_DIR => "$d/run",
    DSTACK_VPC_DATA_DIR => "$d/data",
    DSTACK_VPC_MODULES => "$Test::Dstack::BUILD/modules",
    DSTACK_GATEWAY_DOMAIN => 'gw.test:443',
    DSTACK_RESOLVER => '127.0.0.1',
    VPC_SERVER_ENABLED => 'true',
    VPC_ALLOWED_APPS => 'any',
    Test::Dstack::entry_env(),
);

# checked for [alert]/[emerg] by the harness with the other logs
my $log = "$d/logs/entrypoint.log";
my $pid = fork() // die "fork: $!";
if ($pid == 0) {
    open STDOUT, '>>', $log or POSIX::_exit(126);
    open STDERR, '>&', \*STDOUT;
    %ENV = %env;
    exec('ip', 'netns', 'exec', $ns, $t->repo . '/scripts/entrypoint.sh',
        'run') or POSIX::_exit(127);
}

sub in_ns {
    my (@cmd) = @_;
    my $e = join ' ', map { "$_='$env{$_}'" } sort keys %env;
    my $q = join ' ', map { "'$_'" } @cmd;
    my $out = `ip netns exec $ns env -i $e $q 2>&1`;
    return ($? >> 8, $out);
}

sub health {
    my ($rc) = in_ns($t->repo . '/scripts/entrypoint.sh', 'health');
    return $rc == 0;
}

sub program_pid {
    my ($name) = @_;
    my (undef, $out) = in_ns('supervisorctl', '-c', "$d/conf/supervisord.conf",
        'pid', $name);
    return $out =~ /^(\d+)$/m ? $1 : 0;
}

ok(wait_for(\&health, 30), 'HEALTHCHECK passes once up')
    or diag($t->read_file($log));

my $redis = program_pid('redis');
ok($redis, "redis-server supervised (pid $redis)");

my $out = $t->read_file($log);
like($out, qr/Ready to accept connections/, 'redis logs to stdout');
like($out, qr/nginx\/1\.\d+/, 'nginx logs to stderr');

kill 'KILL', $redis;
my $again = 0;
wait_for(sub { $again = program_pid('redis'); $again && $again != $redis },
    15);
ok($again && $again != $redis, "crashed redis-server started again ($again)");
ok(wait_for(\&health, 20), 'healthy again');

my $nginx = program_pid('nginx');
kill 'TERM', $pid;
my $t0 = time;
waitpid($pid, 0);
my $status = $? >> 8;
ok(time - $t0 < 30, 'SIGTERM: supervisord exits');
is($status, 0, 'clean exit status');
ok(!kill(0, $nginx) && !kill(0, $again), 'nginx and redis stopped with it');

unlike($t->read_file($log), qr/PRIVATE KEY/, 'no key material in the log');
