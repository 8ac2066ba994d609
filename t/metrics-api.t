#!/usr/bin/perl

# ngx_http_dstack_metrics_module with the VPC API and dstack_auth in front
# of it: requests by endpoint and status class, pre-auth keys issued, the
# Redis round-trip histogram, a Redis reconnect, auth decisions by reason;
# promtool accepts the text.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(http_get parse_response wait_for);
use Test::Dstack::Api;

my $t = Test::Dstack->new()
    ->has(qw(auth api metrics sim redis promtool))->plan(14);

my $api = Test::Dstack::Api->new($t);
my $r = $t->run_redis();

$t->write_file_expand('nginx.conf', $api->conf(redis => $r,
    http => <<"EOF"));
    server {
        listen 127.0.0.1:%%PORT_9145%%;
        location = /metrics { dstack_metrics; }
    }
EOF

$t->run();

sub scrape {
    return parse_response(http_get('/metrics', port => $t->port(9145)))
        ->{body};
}

sub value {
    my ($text, $series) = @_;
    for (split /\n/, $text) {
        return $1 if /^\Q$series\E (\S+)$/;
    }
    return undef;
}

# known traffic: 2 health, 3 registrations of app a, 1 of a forbidden
# app b, 1 without a certificate, 1 unknown endpoint

$api->get('/health') for 1 .. 2;

my $n = 0;
for my $i (1 .. 3) {
    $n++ if $api->get("/api/register?instance_id=ab0$i", as => 'a')
        ->{status} == 200;
}
is($n, 3, 'three registrations');

is($api->get('/api/register?instance_id=ab09', as => 'b')->{status}, 403,
    'app b is not allowed');
is($api->get('/api/register?instance_id=ab09')->{status}, 401,
    'no certificate');
is($api->get('/api/nothing', as => 'a')->{status}, 404, 'unknown endpoint');

my $x;
wait_for(sub {
    $x = scrape();
    (value($x, 'dstack_api_requests_total{endpoint="unknown",'
        . 'class="4xx"}') // 0) >= 1
}, 5);

is(value($x, 'dstack_api_requests_total{endpoint="health",class="2xx"}'),
    2, 'api: 2 health');
is(value($x, 'dstack_api_requests_total{endpoint="register",'
    . 'class="2xx"}'), 3, 'api: 3 registered');
is(value($x, 'dstack_api_requests_total{endpoint="register",'
    . 'class="4xx"}'), 2, 'api: 2 refused');
is(value($x, 'dstack_cp_preauth_keys_total{event="issued"}'), 3,
    'api: 3 pre-auth keys issued');
ok(value($x, 'dstack_redis_roundtrip_seconds_count') >= 5,
    'redis: round trips timed ('
    . value($x, 'dstack_redis_roundtrip_seconds_count') . ')');
is(value($x, 'dstack_auth_requests_total{result="denied",'
    . 'reason="no_identity"}'), 1, 'auth: 1 without an identity');
ok(value($x, 'dstack_auth_requests_total{result="accepted",reason="ok"}')
    >= 5, 'auth: the rest accepted');

# Redis goes away and comes back: a reconnect

$api->kill_redis($r);
$api->get('/api/register?instance_id=ab0a', as => 'a');
$t->start_redis($r);

wait_for(sub {
    $api->get('/api/register?instance_id=ab0b', as => 'a')->{status} == 200
}, 15);

$x = scrape();
ok(value($x, 'dstack_redis_reconnects_total') >= 1,
    'redis: reconnects counted (' . value($x, 'dstack_redis_reconnects_total')
    . ')');
ok(value($x, 'dstack_api_requests_total{endpoint="register",'
    . 'class="5xx"}') >= 1, 'api: 503 while Redis was away');

my $f = $t->testdir . '/api.prom';
$t->write_file('api.prom', $x);
my $out = `promtool check metrics < $f 2>&1`;
is($?, 0, 'promtool accepts it') or diag($out);
