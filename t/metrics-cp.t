#!/usr/bin/perl

# ngx_http_dstack_metrics_module with the VPN control plane: pre-auth keys
# issued and used, open map streams (up and down again), change frames
# and their propagation time, /machine requests, a node the sweep marks
# offline; promtool accepts it.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(http_get parse_response wait_for);
use Test::Dstack::Api;
use Test::Dstack::Control;

my $t = Test::Dstack->new()
    ->has(qw(auth api metrics sim redis promtool))->plan(13);

my $api = Test::Dstack::Api->new($t);
my $r = $t->run_redis();

$t->write_file_expand('nginx.conf', $api->conf(redis => $r, allow => 'any',
    http => <<'EOF'));
    dstack_vpc_control_keepalive 1s;
    dstack_vpc_control_inactivity_timeout 3s;

    server {
        listen 127.0.0.1:%%PORT_9145%%;
        location = /metrics { dstack_metrics; }
    }
EOF

$t->run();

my $cp = Test::Dstack::Control->new($t, $api);

sub scrape {
    return parse_response(http_get('/metrics', port => $t->port(9145)))
        ->{body};
}

sub value {
    my ($series) = @_;
    for (split /\n/, scrape()) {
        return $1 if /^\Q$series\E (\S+)$/;
    }
    return undef;
}

my ($k1, $res) = $cp->join_node('a', name => 'n1');
is($res->{status}, 200, 'node 1 registered');

my $s1 = $cp->stream('a', $k1);
ok($s1 && $s1->first, 'node 1: map stream, full map');
is(value('dstack_cp_map_streams'), 1, 'one open stream');

my ($k2, $res2) = $cp->join_node('b', name => 'n2');
is($res2->{status}, 200, 'node 2 registered');

ok($s1->wait(sub { $_[0]{PeersChanged} }, 10), 'node 1 told of node 2');

my $s2 = $cp->stream('b', $k2);
ok($s2 && $s2->first, 'node 2: map stream');
is(value('dstack_cp_map_streams'), 2, 'two open streams');

is(value('dstack_cp_preauth_keys_total{event="issued"}') . '/'
    . value('dstack_cp_preauth_keys_total{event="used"}'), '2/2',
    'pre-auth keys: 2 issued, 2 used');
ok(value('dstack_cp_change_frames_total') >= 1
    && value('dstack_cp_propagation_seconds_count')
        == value('dstack_cp_change_frames_total'),
    'change frames and their propagation times ('
    . value('dstack_cp_change_frames_total') . ')');

$s1->close();
wait_for(sub { (value('dstack_cp_map_streams') // -1) == 1 }, 10);
is(value('dstack_cp_map_streams'), 1, 'a stream closed: one left');

ok(value('dstack_api_requests_total{endpoint="machine",class="2xx"}') >= 2,
    'the /machine requests counted');

# node 1, its stream closed, goes offline after the inactivity timeout

wait_for(sub { (value('dstack_cp_sweep_total{event="offline"}') // 0) >= 1 },
    15);
is(value('dstack_cp_sweep_total{event="offline"}'), 1,
    'the sweep marked node 1 offline');

my $f = $t->testdir . '/cp.prom';
$t->write_file('cp.prom', scrape());
my $out = `promtool check metrics < $f 2>&1`;
is($?, 0, 'promtool accepts it') or diag($out);

$s2->close();
