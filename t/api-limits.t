#!/usr/bin/perl

# Per-app limits of the VPC API and the control plane (issue 11, item 6):
# outstanding pre-auth keys, node records, live VPN nodes, and map streams
# per node key and per app; each a 429 JSON naming its directive, and the
# counts shown by "wgctl nodes apps".

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use JSON::PP;
use Test::Dstack qw(wait_for);
use Test::Dstack::Api;
use Test::Dstack::Control;

my $t = Test::Dstack->new()->has(qw(auth api sim redis wgctl))->plan(31);

my $api = Test::Dstack::Api->new($t);
my $r = $t->run_redis();

$t->write_file_expand('nginx.conf', $api->conf(redis => $r, allow => 'any',
    http => <<'EOF'));
    dstack_vpc_control_keepalive 1s;
    dstack_vpc_control_inactivity_timeout 30s;

    dstack_vpc_api_max_keys_per_app 3;
    dstack_vpc_api_max_records_per_app 4;
    dstack_vpc_control_max_nodes_per_app 2;
    dstack_vpc_control_max_streams_per_node 1;
    dstack_vpc_control_max_streams_per_app 1;
EOF

$t->run();

my $cp = Test::Dstack::Control->new($t, $api);
my $A = $api->app('a');
my $C = $api->app('c');
my $wgctl = $t->bin('wgctl');

sub inst { Test::Dstack::Control::instance_id() }

sub register_rest {
    my ($as, $inst) = @_;
    return $api->get("/api/register?instance_id=$inst&node_name=n",
        as => $as);
}

sub apps {
    my $out = `$wgctl nodes apps --json --redis 127.0.0.1:$r->{port} \\
        --prefix test:vpc: 2>&1`;
    my $j = eval { decode_json($out) } or return {};
    return { map { $_->{app_id} => $_ } @$j };
}

# outstanding pre-auth keys: 3 per app

my @i = map { inst() } 1 .. 5;
my @k;

for my $n (0 .. 2) {
    my $res = register_rest('a', $i[$n]);
    push @k, $res->{json}{pre_auth_key};
}
ok(@k == 3 && !grep({ !defined } @k), 'three keys');

my $res = register_rest('a', $i[3]);
is($res->{status}, 429, 'a fourth outstanding key: 429');
is($res->{headers}{'content-type'}, 'application/json', '429 is JSON');
is($res->{json}{error},
    'limit reached: dstack_vpc_api_max_keys_per_app 3 per app',
    '429 names the limit');

is(register_rest('c', inst())->{status}, 200, 'another app is not counted');

# a used single-use key is no longer outstanding

my ($k1, $k2, $k3) = (Test::Dstack::Control::node_key(),
    Test::Dstack::Control::node_key(), Test::Dstack::Control::node_key());

$res = $cp->register('a', $k1, auth => $k[0], instance => $i[0]);
is($res->{status}, 200, 'node 1 registers');
is(register_rest('a', $i[3])->{status}, 200, 'a used key frees its place');

# live nodes: 2 per app

is($cp->register('a', $k2, auth => $k[1], instance => $i[1])->{status}, 200,
    'node 2 registers');

$res = $cp->register('a', $k3, auth => $k[2], instance => $i[2]);
is($res->{status}, 429, 'a third live node: 429');
is($res->{json}{Error},
    'limit reached: dstack_vpc_control_max_nodes_per_app 2 per app',
    '429 names the limit');
is($cp->register('a', $k1)->{status}, 200,
    'a registered node key still answers');

my $apps = apps();
is($apps->{$A}{nodes}, 2, 'wgctl nodes apps: live nodes');
is($apps->{$A}{pre_auth_keys}, 2, 'wgctl nodes apps: outstanding keys');
is($apps->{$A}{records}, 4, 'wgctl nodes apps: records');

my $out = `$wgctl nodes delete 1 --redis 127.0.0.1:$r->{port} \\
    --prefix test:vpc: 2>&1`;
is($?, 0, 'wgctl nodes delete') or diag($out);

is($cp->register('a', $k3, auth => $k[2], instance => $i[2])->{status}, 200,
    'a deleted node frees its place; the refused key was not used');
is(apps()->{$A}{nodes}, 2, 'counted again');

# node records: 4 per app (c has one from its registration)

for my $n (1 .. 3) {
    $res = $api->post("/api/nodes/update?uuid=r$n&node_type=x&hostname=h$n",
        '', as => 'c');
    is($res->{json}{status}, 'created', "record r$n");
}

$res = $api->post('/api/nodes/update?uuid=r4&node_type=x&hostname=h4', '',
    as => 'c');
is($res->{status}, 429, 'a fifth record: 429');
is($res->{json}{error},
    'limit reached: dstack_vpc_api_max_records_per_app 4 per app',
    '429 names the limit');
is($api->post('/api/nodes/update?uuid=r1&hostname=h9', '',
    as => 'c')->{json}{status}, 'updated', 'existing records still update');
is(register_rest('c', inst())->{status}, 429,
    'registering a new instance is a record too');
is(apps()->{$C}{records}, 4, 'wgctl nodes apps: records of c');

# map streams: 1 per node key, 1 per app (per worker)

my $s1 = $cp->stream('a', $k2);
is($s1->status, 200, 'a stream');

# a reconnect before the old stream is noticed dead: the oldest gives way
my $s2 = $cp->stream('a', $k2);
is($s2->status, 200, 'a second stream of the node key starts');
ok($s1->wait_end(10), 'and the node key\'s oldest stream ends');

my $s3 = $cp->stream('a', $k3);
is($s3->status, 429, 'another node of the app over its streams: 429');
is(($s3->error_body // {})->{Error} // '',
    'limit reached: dstack_vpc_control_max_streams_per_app 1 per worker',
    '429 names the limit');

$s2->close;
$s1->close;
my $s4;
wait_for(sub {
    $s4 = $cp->stream('a', $k3);
    $s4->status == 200;
}, 10);
is($s4->status, 200, 'a closed stream frees its place');
$s4->close;
