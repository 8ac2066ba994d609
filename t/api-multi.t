#!/usr/bin/perl

# ngx_dstack_vpc_api_module with several workers and two nginx instances
# on one Redis (TCP and Unix socket, password, database): a storm of
# first registrations, update through one instance and discover through
# the other; a wrong password.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(wait_for);
use Test::Dstack::Api;

my $t = Test::Dstack->new()->has(qw(auth api sim redis curl))->plan(22);

my $api = Test::Dstack::Api->new($t);
my $PW = 'not-in-any-log-3141';
my $r = $t->run_redis(password => $PW);

sub rcli {
    my @q = map { my $a = $_; $a =~ s/'/'\\''/g; "'$a'" } @_;
    my $out = `redis-cli -p $r->{port} -a '$PW' --no-auth-warning -n 2 @q`;
    chomp $out;
    return $out;
}

$t->write_file_expand('nginx.conf', $api->conf(redis => $r, workers => 2,
    params => ["password=$PW", 'db=2']));

$t->write_file_expand('nginx2.conf', $api->conf(redis => $r, workers => 2,
    unix => 1, params => ["password=$PW", 'db=2'],
    port => 9443, plain_port => 9080, pid => 'nginx2.pid'));

$t->write_file_expand('nginx3.conf', $api->conf(redis => $r,
    params => ['password=wrong-password-2718'],
    port => 7443, plain_port => 7080, pid => 'nginx3.pid'));

$t->run('nginx.conf');
$t->run('nginx2.conf');
$t->run('nginx3.conf');

my $p1 = $t->port(8443);
my $p2 = $t->port(9443);

###############################################################################
# 200 first registrations at once, through both instances

my @urls = map {
    my $port = $_ % 2 ? $p1 : $p2;
    sprintf "https://127.0.0.1:%d/api/register?instance_id=%04x"
        . "&node_name=storm-%d", $port, $_, $_
} 1 .. 200;

my @res = $api->parallel('a', \@urls, max => 200);

is(scalar(grep { $_->[0] == 200 } @res), 200, '200 registrations');

my (%keys, %shared);
for (@res) {
    my $j = eval { JSON::PP->new->decode($_->[1]) } or next;
    $keys{$j->{pre_auth_key}}++;
    $shared{$j->{shared_key}}++;
}

is(scalar keys %keys, 200, 'all keys distinct');
is(scalar keys %shared, 1, 'one shared key');
is(rcli('GET', 'test:vpc:shared_key'), (keys %shared)[0],
    'the one in redis');
is(rcli('ZCARD', 'test:vpc:nodes'), 200, '200 nodes recorded');
is(rcli('ZCARD', 'test:vpc:preauthkeys'), 200, '200 keys recorded');
is(`redis-cli -p $r->{port} -a '$PW' --no-auth-warning -n 0 DBSIZE` + 0, 0,
    'nothing in database 0');

my %pids;
for my $line (split /\n/, $t->read_file('logs/api-8443.log')) {
    $pids{$1}++ if $line =~ /^(\d+) 200 /;
}
is(scalar keys %pids, 2, 'both workers served');

###############################################################################
# update through one instance, discover through the other

my $res = $api->post('/api/nodes/update?uuid=0001&node_type=mongodb'
    . '&tailscale_ip=100.64.0.1&hostname=mongo-1', '', as => 'a',
    port => $p1);
is($res->{json}{status}, 'updated', 'update through the first');

$res = $api->get('/api/discover/mongodb', as => 'a', port => $p2);
is($res->{status}, 200, 'discover through the second');
is_deeply($res->{json}{nodes}, [{ uuid => '0001', hostname => 'mongo-1',
    tailscale_ip => '100.64.0.1' }], 'sees the update');

$res = $api->post('/api/nodes/update?uuid=0002&node_type=mongodb'
    . '&hostname=mongo-2', '', as => 'a', port => $p2);
$res = $api->get('/api/discover/mongodb', as => 'a', port => $p1);
is($res->{json}{count}, 2, 'and the other way round');

# every worker of both instances sees the same, request after request
my %counts;
for (1 .. 10) {
    for my $port ($p1, $p2) {
        my $j = $api->get('/api/discover/mongodb', as => 'a',
            port => $port)->{json};
        $counts{$j->{count} // 'none'}++;
    }
}
is_deeply(\%counts, { 2 => 20 }, 'consistent everywhere');

@res = $api->parallel('a', [ map {
    "https://127.0.0.1:" . ($_ % 2 ? $p1 : $p2) . "/api/discover/mongodb"
} 1 .. 100 ], max => 50);
is(scalar(grep { $_->[0] == 200 && $_->[1] =~ /"count":2/ } @res), 100,
    '100 concurrent discovers');

###############################################################################
# wrong password: 503, health tells, password not logged

$res = $api->get('/api/nodes', as => 'a', port => $t->port(7443));
is($res->{status}, 503, 'wrong password: 503');

$res = $api->get('/health', port => $t->port(7443));
is($res->{json}{redis}, 'unavailable', 'health: unavailable');
like($res->{json}{error} // '', qr/WRONGPASS|invalid password|handshake/i,
    'health: why');

$res = $api->get('/health', port => $p2);
is_deeply($res->{json}, { status => 'ok', redis => 'ok' },
    'unix socket with password: healthy');

###############################################################################

$t->stop();

my $log = $t->error_log();
like($log, qr/handshake refused/, 'refused handshake logged');
unlike($log, qr/\Q$PW\E/, 'password not logged');
unlike($log, qr/wrong-password-2718/, 'wrong password not logged');
unlike($log, qr/open socket .* left/, 'no socket left on exit');
