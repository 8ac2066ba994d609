#!/usr/bin/perl

# ngx_dstack_auth_module registers its access-phase handlers only when some
# location turns dstack_auth or attestation on (a mesh node loads the
# module for its log variables alone).  Here no location has dstack_auth
# on: attestation alone must still be enforced where it is asked for, and
# a location with neither passes requests through untouched.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(http parse_response json_body);
use Test::Dstack::Attest;

my $t = Test::Dstack->new()->has(qw(auth sim curl fixtures));
my $at = Test::Dstack::Attest->new($t);
$t->plan(5);

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

    server {
        listen 127.0.0.1:%%PORT_8443%% ssl;

        ssl_certificate $server->{chain};
        ssl_certificate_key $server->{key};
        ssl_client_certificate $cas;
        ssl_verify_client optional;
        ssl_verify_depth 3;

        proxy_set_header x-att \$dstack_attestation;

        location /only/ {
            dstack_auth_attestation bind;
            proxy_pass http://127.0.0.1:%%PORT_8000%%;
        }

        location /neither/ {
            dstack_auth_attestation off;
            proxy_pass http://127.0.0.1:%%PORT_8000%%;
        }
    }
}

EOF

$t->echo_backend(port => $t->port(8000));
$t->run();

my $port = $t->port(8443);

sub hdr {
    my ($r, $name) = @_;
    my $j = json_body($r) || {};
    return ($j->{headers}{$name} || [])->[0];
}

sub get {
    my ($c, $uri, $extra) = @_;
    $extra //= '';
    my $raw = http("GET $uri HTTP/1.0\r\nHost: localhost\r\n$extra\r\n",
        port => $port, ssl => 1, cert => $c->{chain}, key => $c->{key});
    return parse_response($raw);
}

my $r = get($plain, '/only/x');
is($r->{status}, 401, 'attestation alone: a leaf without attestation refused');

$r = get($ra, '/only/x');
is($r->{status}, 200, 'attestation alone: an attested leaf passes');
is(hdr($r, 'x-att'), 'bind', 'attestation alone: $dstack_attestation');

$r = get($plain, '/neither/x', "X-Dstack-App-Id: $B\r\n");
is($r->{status}, 200, 'neither on: the request passes');
is(hdr($r, 'x-dstack-app-id'), $B,
    'neither on: nothing is stripped where dstack_auth is off');
