#!/usr/bin/perl

# ngx_http_dstack_metrics_module: Prometheus text from the one shared zone
# the mesh and auth modules count into.  After known traffic through a
# node (requests, misroutes, malformed targets, unknown apps) the series
# hold exactly those numbers, on the node and on the peer that answered;
# the text passes promtool; counters survive a reload and add up across
# two workers; app labels stay bounded (64, then "_other").

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(http http_get parse_response wait_for);
use Test::Dstack::Mesh;

my $t = Test::Dstack->new()
    ->has(qw(auth mesh metrics stream sim promtool))->plan(28);

my $A = 'aa' x 20;
my $B = '0b' x 20;
my $C = '0c' x 20;
my $N = '99' x 20;

my $am = $t->port('metrics-a');
my $bm = $t->port('metrics-b');

my $metrics = sub {
    "server { listen 127.0.0.1:$_[0]; "
    . "location = /metrics { dstack_metrics; } }\n"
};

my $m = Test::Dstack::Mesh->new($t);
$m->peer('b', app => $B, extra => $metrics->($bm));
my $c = $m->peer('c', app => $C);
$m->route("$B-444s", $c);          # the gateway misroutes B:444 to C

$m->start(a => $A, node => { extra => $metrics->($am) });

sub scrape {
    my ($port) = @_;
    return parse_response(http_get('/metrics', port => $port));
}

# the value of one series, by its exact name and labels
sub value {
    my ($text, $series) = @_;
    for (split /\n/, $text) {
        return $1 if /^\Q$series\E (\S+)$/;
    }
    return undef;
}

sub promtool {
    my ($text, $name) = @_;
    my $f = $t->testdir . "/$name.prom";
    $t->write_file("$name.prom", $text);
    my $out = `promtool check metrics < $f 2>&1`;
    return ($? == 0, $out);
}

# before any traffic

my $r = scrape($am);
is($r->{status}, 200, 'scrape: 200');
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4},
    'scrape: the text format\'s content type');
my ($ok, $out) = promtool($r->{body}, 'empty');
ok($ok, 'promtool: no traffic yet') or diag($out);
like($r->{body}, qr/^# TYPE dstack_mesh_upstream_response_seconds histogram$/m,
    'histogram declared');

$r = parse_response(http("POST /metrics HTTP/1.0\r\nHost: x\r\n"
    . "Content-Length: 0\r\n\r\n", port => $am));
is($r->{status}, 405, 'POST: 405');
$r = parse_response(http("HEAD /metrics HTTP/1.0\r\nHost: x\r\n\r\n",
    port => $am));
ok($r->{status} == 200 && $r->{headers}{'content-length'} > 0
    && $r->{body} eq '', 'HEAD: the length, no body');

# known traffic: 10 answered by B, 3 misrouted to C (wrong app),
# 2 malformed targets, 1 app without a route

my $ok200 = 0;
for my $i (1 .. 10) {
    $ok200++ if $m->request('GET', "/ok/$i", app => $B)->{status} == 200;
}
is($ok200, 10, 'traffic: 10 answered');

my $n526 = 0;
for my $i (1 .. 3) {
    $n526++
        if $m->request('GET', "/mis/$i", app => $B, port => 444)->{status}
            == 526;
}
is($n526, 3, 'traffic: 3 peers rejected');

is($m->request('GET', '/bad', app => 'zz' x 20)->{status}, 400,
    'traffic: malformed target');
is($m->request('GET', '/bad', app => 'z')->{status}, 400,
    'traffic: malformed target again');
is($m->request('GET', '/none', app => $N)->{status}, 502,
    'traffic: no route');

# the log line is written after the response: wait for the last one
wait_for(sub {
    defined value(scrape($am)->{body},
        "dstack_mesh_requests_total{app=\"$N\",class=\"5xx\","
        . "error=\"CONNECT_FAILED\"}")
}, 5);

$r = scrape($am);
my $x = $r->{body};

is(value($x, "dstack_mesh_requests_total{app=\"$B\",class=\"2xx\","
    . "error=\"none\"}"), 10, 'mesh: 10 answered requests for B');
is(value($x, "dstack_mesh_requests_total{app=\"$B\",class=\"5xx\","
    . "error=\"PEER_REJECTED\"}"), 3, 'mesh: 3 PEER_REJECTED for B');
is(value($x, 'dstack_mesh_requests_total{app="",class="4xx",'
    . 'error="BAD_TARGET"}'), 2, 'mesh: 2 BAD_TARGET without an app');
is(value($x, "dstack_mesh_requests_total{app=\"$N\",class=\"5xx\","
    . "error=\"CONNECT_FAILED\"}"), 1, 'mesh: 1 CONNECT_FAILED');
is(value($x, 'dstack_mesh_peer_rejections_total{reason="wrong_app_id"}'),
    3, 'mesh: 3 rejections, wrong app id');
is(value($x, 'dstack_mesh_upstream_response_seconds_count'), 10,
    'mesh: 10 upstream response times');

my $hs = value($x, 'dstack_mesh_upstream_connections_total'
    . '{kind="handshake"}');
my $reused = value($x, 'dstack_mesh_upstream_connections_total'
    . '{kind="reused"}');
ok($reused >= 8 && $hs >= 2, "mesh: $hs handshakes, $reused reused");

($ok, $out) = promtool($x, 'traffic');
ok($ok, 'promtool: after traffic') or diag($out);

# the peer that answered counted its callers

$m->peer_count('b', qr{/ok/10 }, 1);
my $y = scrape($bm)->{body};
is(value($y, 'dstack_auth_requests_total{result="accepted",reason="ok"}'),
    10, 'auth: the peer accepted 10 callers');
is(value($y, 'dstack_mesh_requests_total{app="",class="2xx",error="none"}'),
    undef, 'the peer\'s own mesh counted nothing');

# a reload keeps the counters; two workers add to the same ones

my $conf = $t->read_file('node-a.conf');
$conf =~ s/worker_processes 1;/worker_processes 2;/ or die "no workers\n";
$t->write_file('node-a.conf', $conf);
$t->reload('node-a.conf');

is(scalar(my @w = $t->worker_pids('node-a.conf')), 2, 'reload: 2 workers');

$x = scrape($am)->{body};
is(value($x, "dstack_mesh_requests_total{app=\"$B\",class=\"2xx\","
    . "error=\"none\"}"), 10, 'reload: the counts stayed');
is(value($x, 'dstack_metrics_reloads_total'), 1, 'reload: counted');

for my $i (1 .. 20) {
    $m->request('GET', "/two/$i", app => $B);
}

wait_for(sub {
    (value(scrape($am)->{body}, "dstack_mesh_requests_total{app=\"$B\","
        . "class=\"2xx\",error=\"none\"}") // 0) >= 30
}, 5);

is(value(scrape($am)->{body}, "dstack_mesh_requests_total{app=\"$B\","
    . "class=\"2xx\",error=\"none\"}"), 30, 'two workers: 30 in all');

# at most 64 app labels; the rest under "_other"

for my $i (1 .. 70) {
    $m->request('GET', '/many', app => sprintf('%040x', 0x1000 + $i));
}

wait_for(sub {
    (value(scrape($am)->{body}, 'dstack_mesh_requests_total{app="_other",'
        . 'class="5xx",error="CONNECT_FAILED"}') // 0) >= 8
}, 5);

$x = scrape($am)->{body};
my %apps = map { $_ => 1 } grep { $_ ne '' && $_ ne '_other' }
    ($x =~ /^dstack_mesh_requests_total\{app="([^"]*)"/mg);

is(scalar keys %apps, 64, 'bounded: 64 apps by name');

# B and N took two slots, 62 of the 70 got one
is(value($x, 'dstack_mesh_requests_total{app="_other",class="5xx",'
    . 'error="CONNECT_FAILED"}'), 8, 'bounded: 8 under _other');

($ok, $out) = promtool($x, 'bounded');
ok($ok, 'promtool: with every app slot taken') or diag($out);

$m->stop();
