#!/usr/bin/perl

# ngx_http_dstack_metrics_module with dstack_auth attestation and its
# cache zone: a certificate verified once (a miss, timed) then taken from
# the cache on later connections (hits), a caller without an attestation
# denied for it, one whose attestation passes accepted.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(http http_get parse_response wait_for);
use Test::Dstack::Attest;

my $t = Test::Dstack->new()
    ->has(qw(auth metrics sim fixtures promtool));
my $at = Test::Dstack::Attest->new($t);
$t->plan(9);

my $A = '5bb4ff9a3837357f19dc176407a5709c62eb6c56';
my $B = '00112233445566778899aabbccddeeff00112233';

my $server = $t->sim_cert('server', app_id => $B, usage => 'server');
my $ra = $at->ra_cert('ra', app_id => $A, usage => 'client');
my $plain = $t->sim_cert('plain', app_id => $A, usage => 'client');
my $cas = $at->ca_bundle($server->{root});

$t->write_file_expand('nginx.conf', <<"EOF");
%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    dstack_auth_attestation_root %%FIXTURES%%/intel/sgx-root-ca.pem;
    dstack_auth_attestation_collateral
        %%FIXTURES%%/tdx/quote-v4.collateral.json;
    dstack_auth_attestation_time 2025-07-01T00:00:00Z;
    dstack_auth_attestation_cache zone=attest:1m valid=10m;

    server {
        listen 127.0.0.1:%%PORT_8443%% ssl;

        ssl_certificate $server->{chain};
        ssl_certificate_key $server->{key};
        ssl_client_certificate $cas;
        ssl_verify_client optional;
        ssl_verify_depth 3;

        location /bind/ {
            dstack_auth on;
            dstack_auth_allow any;
            dstack_auth_attestation bind;
            root %%TESTDIR%%;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_9145%%;
        location = /metrics { dstack_metrics; }
    }
}
EOF

mkdir $t->testdir . '/bind';
$t->write_file("bind/$_", "ok\n") for 1 .. 3, 'x';

$t->run();

sub get {
    my ($c, $uri) = @_;
    return parse_response(http("GET $uri HTTP/1.0\r\nHost: localhost\r\n\r\n",
        port => $t->port(8443), ssl => 1, cert => $c->{chain},
        key => $c->{key}));
}

sub value {
    my ($text, $series) = @_;
    for (split /\n/, $text) {
        return $1 if /^\Q$series\E (\S+)$/;
    }
    return undef;
}

# three connections with the attested certificate, one without .8

my $ok = 0;
$ok++ for grep { get($ra, "/bind/$_")->{status} == 200 } 1 .. 3;
is($ok, 3, 'three attested callers');
is(get($plain, '/bind/x')->{status}, 401, 'no attestation: 401');

my $x = parse_response(http_get('/metrics', port => $t->port(9145)))->{body};

is(value($x, 'dstack_auth_attestation_cache_total{result="miss"}'), 2,
    'cache: 2 misses (the attested certificate, the plain one)');
is(value($x, 'dstack_auth_attestation_cache_total{result="hit"}'), 2,
    'cache: 2 hits');
is(value($x, 'dstack_auth_attestation_verify_seconds_count'), 2,
    'verify time: 2 observations');
ok(value($x, 'dstack_auth_attestation_verify_seconds_sum') > 0,
    'verify time: more than nothing');
is(value($x, 'dstack_auth_requests_total{result="accepted",reason="ok"}'),
    3, 'auth: 3 accepted');
is(value($x, 'dstack_auth_requests_total{result="denied",'
    . 'reason="attestation"}'), 1, 'auth: 1 denied for its attestation');

my $f = $t->testdir . '/a.prom';
$t->write_file('a.prom', $x);
my $out = `promtool check metrics < $f 2>&1`;
is($?, 0, 'promtool accepts it') or diag($out);
