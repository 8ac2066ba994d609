#!/usr/bin/perl

# wgctl nodes list|delete|expire and wgctl preauthkeys create|list|expire
# on the Redis of a running VPC server: keys they make work at
# /machine/register (reusable, single-use, ephemeral, expiring), revoked
# keys are refused, deletes and expiries reach the peers' map streams at
# once, output in text and JSON, errors.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep);
use Test::Dstack qw(wait_for);
use Test::Dstack::Api;
use Test::Dstack::Control;

my $t = Test::Dstack->new()->has(qw(auth api sim redis wgctl))->plan(40);

my $api = Test::Dstack::Api->new($t);
my $r = $t->run_redis();

$t->write_file_expand('nginx.conf', $api->conf(redis => $r, allow => 'any',
    http => "    dstack_vpc_control_keepalive 1s;\n"));
$t->run();

my $cp = Test::Dstack::Control->new($t, $api);
my $wgctl = $t->bin('wgctl');

# (exit code, stdout, stderr)
sub admin {
    my (@args) = @_;
    my $d = $t->testdir();
    my @q = map { my $a = $_; $a =~ s/'/'\\''/g; "'$a'" } @args;
    my $out = `$wgctl @q --redis 127.0.0.1:$r->{port} --prefix test:vpc: \\
        2>$d/admin.err`;
    return ($? >> 8, $out, $t->read_file('admin.err'));
}

sub admin_json {
    my ($rc, $out) = admin(@_, '--json');
    return eval { decode_json($out) };
}

###############################################################################
# pre-auth keys

my $k = admin_json('preauthkeys', 'create');
like($k->{key} // '', qr/^hskey-auth-[0-9A-Za-z]{12}-[0-9A-Za-z]{64}$/,
    'create: a key');
is($k->{reusable}, JSON::PP::false, 'single-use by default');

my ($rc, $out) = admin('preauthkeys', 'create', '--reusable',
    '--expiration', '10m');
chomp $out;
is($rc, 0, 'create --reusable: exit 0');
like($out, qr/^hskey-auth-\S+$/, 'text output is the key alone');
my $reusable = $out;

my ($n1, $res) = $cp->join_node('a', auth => $k->{key}, hostname => 'adm1');
is($res->{status}, 200, 'an admin key registers a node (any app)');
(undef, $res) = $cp->join_node('c', auth => $k->{key});
is($res->{json}{Error}, 'auth key already used', 'single-use');

my ($n2, $res2) = $cp->join_node('c', auth => $reusable, hostname => 'adm2');
my ($n3, $res3) = $cp->join_node('a', auth => $reusable, hostname => 'adm3');
ok($res2->{status} == 200 && $res3->{status} == 200, 'reusable: twice');

my $eph = admin_json('preauthkeys', 'create', '--ephemeral');
my ($n4, $res4) = $cp->join_node('a', auth => $eph->{key}, hostname => 'adm4');
is($res4->{status}, 200, 'an ephemeral key');

my $short = admin_json('preauthkeys', 'create', '--expiration', '1s');
sleep(2.2);
(undef, $res) = $cp->join_node('a', auth => $short->{key});
is($res->{json}{Error}, 'auth key expired', '--expiration 1s: expired');

my $rev = admin_json('preauthkeys', 'create');
($rc, $out) = admin('preauthkeys', 'expire', $rev->{id});
is($rc, 0, 'expire by id: exit 0');
(undef, $res) = $cp->join_node('a', auth => $rev->{key});
is($res->{json}{Error}, 'auth key revoked', 'a revoked key is refused');

my $rev2 = admin_json('preauthkeys', 'create');
($rc) = admin('preauthkeys', 'expire', $rev2->{key});
is($rc, 0, 'expire by the whole key');

($rc, $out, my $err) = admin('preauthkeys', 'expire', 'AAAAAAAAAAAA');
is($rc, 1, 'expire an unknown key: exit 1');
like($err, qr/no key "AAAAAAAAAAAA"/, 'and says so');

my $api_key = $cp->auth_key('a', name => 'rest');
my $list = admin_json('preauthkeys', 'list') // [];
my %by = map { $_->{id} => $_ } @$list;
is($by{$k->{id}}{state}, 'used', 'list: used');
is($by{$rev->{id}}{state}, 'revoked', 'list: revoked');
is($by{$short->{id}}{state}, 'expired', 'list: expired');
is($by{$eph->{id}}{ephemeral}, JSON::PP::true, 'list: ephemeral');
my ($rest) = grep { $_->{node_name} eq 'rest' } @$list;
ok($rest && $rest->{creator} eq 'api' && $rest->{app_id} eq $api->app('a'),
    'list: keys from /api/register, with their app');
is($by{substr($reusable, 11, 12)}{uses}, 2, 'list: uses');

($rc, $out) = admin('preauthkeys', 'list');
like($out, qr/^ID\s+REUSABLE\s+EPHEMERAL/, 'text list');
unlike($out . encode_json($list), qr/\Q@{[ substr $reusable, 24 ]}\E|hash/,
    'never the secret or its hash');

###############################################################################
# nodes

my $watch = $cp->stream('a', $n1);
ok($watch && $watch->first, 'a watcher streams');

my $nodes = admin_json('nodes', 'list') // [];
is(scalar(@$nodes), 4, 'nodes list: four');
my %node = map { $_->{name} => $_ } @$nodes;
is($node{adm4}{ephemeral}, JSON::PP::true, 'ephemeral flag');
like($node{adm1}{address}, qr/^100\.128\.0\.\d+$/, 'addresses');
is($node{adm1}{app_id}, $api->app('a'), 'app ids');
is($node{adm1}{online}, JSON::PP::true, 'the streaming node is online');
is($node{adm2}{node_key}, $n2, 'node keys');

($rc, $out) = admin('nodes', 'list');
like($out, qr/^ID\s+NAME\s+ADDRESS/m, 'text list');
like($out, qr/^\d+\s+adm3\s+100\.128\.\d+\.\d+/m, 'a node line');

($rc, $out) = admin('nodes', 'delete', 'adm2.dstack.internal');
is($rc, 0, 'delete by name');
my $f = $watch->wait(sub { $_[0]{PeersRemoved} }, 5);
is_deeply($f && $f->{PeersRemoved}, [$node{adm2}{id}],
    'the peers hear of it at once');
is($t->redis_cli($r, 'HGET', 'test:vpc:vpn:ips', $node{adm2}{address}), '',
    'its address is free');

($rc) = admin('nodes', 'expire', $node{adm3}{id});
is($rc, 0, 'expire by id');
$f = $watch->wait(sub { $_[0]{PeersRemoved} }, 5);
is_deeply($f && $f->{PeersRemoved}, [$node{adm3}{id}],
    'an expired node leaves the maps');
is($cp->poll('a', $n3)->{status}, 403, 'and may not map');

($rc) = admin('nodes', 'delete', $n4);
is($rc, 0, 'delete by node key');

($rc, $out, $err) = admin('nodes', 'delete', 'nothing-here');
ok($rc == 1 && $err =~ /no node "nothing-here"/, 'delete an unknown node');

$err = `$wgctl nodes list --redis 127.0.0.1:1 2>&1`;
ok($? >> 8 == 1 && $err =~ /cannot connect to Redis at "127.0.0.1:1"/,
    'Redis unreachable');

$watch->close();
