#!/usr/bin/perl

# ngx_dstack_auth_module: attestation of inbound callers end to end.
# Simulator leaves carry a .8 whose binding and RTMR3 replay verify and
# whose Intel signature cannot: "bind" passes with the measurements in
# variables, "full" fails at quote_signature.  Leaves without .8, with
# another key's .8 or with garbage .8 fail; the cache verifies a
# certificate once across connections and both workers.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(http parse_response json_body wait_for);
use Test::Dstack::Attest;

my $t = Test::Dstack->new()->has(qw(auth sim curl fixtures));
my $at = Test::Dstack::Attest->new($t);
$t->plan(65);

my $A = '5bb4ff9a3837357f19dc176407a5709c62eb6c56';
my $B = '00112233445566778899aabbccddeeff00112233';

my $server = $t->sim_cert('server', app_id => $B, usage => 'server');
my $ra = $at->ra_cert('ra', app_id => $A, usage => 'client');
my $ra_b = $at->ra_cert('rab', app_id => $B, usage => 'client');
my $ra_c = $at->ra_cert('rac', app_id => $A, usage => 'client');
my $ra_d = $at->ra_cert('rad', app_id => $A, usage => 'client');
my $ra_e = $at->ra_cert('rae', app_id => $A, usage => 'client');
my $plain = $t->sim_cert('plain', app_id => $A, usage => 'client');

my $v = $at->verify_json($ra, '--require', 'bind');
my $m = $v->{measurements} || {};
my $vb = $at->verify_json($ra_b, '--require', 'bind');
my $hash_a = $m->{compose_hash} // 'none';
my $hash_b = $vb->{measurements}{compose_hash} // 'none';

# another key's attestation, with the right app_id
my $ext8 = $at->attestation_ext($ra);
my $stolen = $at->custom_cert('stolen', app_id => $A, attestation => $ext8);
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

    log_format attest '\$pid \$dstack_attestation \$dstack_attestation_cache '
                      '\$ssl_client_fingerprint \$request_uri';

    # compose hashes are 64 characters
    map_hash_bucket_size 128;

    map \$dstack_compose_hash \$compose_allowed {
        default     0;
        $hash_a     1;
    }

    upstream echo {
        server 127.0.0.1:%%PORT_8000%%;
        keepalive 4;
    }

    server {
        listen 127.0.0.1:%%PORT_8443%% ssl http2 reuseport;

        ssl_certificate $server->{chain};
        ssl_certificate_key $server->{key};
        ssl_client_certificate $cas;
        ssl_verify_client optional;
        ssl_verify_depth 3;

        error_page 495 496 =401 \@unverified;

        location \@unverified {
            default_type application/json;
            return 401 '{"error":"client certificate not verified"}\\n';
        }

        access_log %%TESTDIR%%/logs/attest.log attest;

        dstack_auth_allow any;

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header x-att \$dstack_attestation;
        proxy_set_header x-att-error \$dstack_attestation_error;
        proxy_set_header x-att-cache \$dstack_attestation_cache;
        proxy_set_header x-mrtd \$dstack_mrtd;
        proxy_set_header x-rtmr0 \$dstack_rtmr0;
        proxy_set_header x-rtmr1 \$dstack_rtmr1;
        proxy_set_header x-rtmr2 \$dstack_rtmr2;
        proxy_set_header x-rtmr3 \$dstack_rtmr3;
        proxy_set_header x-compose \$dstack_compose_hash;
        proxy_set_header x-instance \$dstack_instance_id;
        proxy_set_header x-tcb \$dstack_tcb_status;

        location /bind/ {
            dstack_auth on;
            dstack_auth_attestation bind;
            proxy_pass http://echo;
        }

        location /full/ {
            dstack_auth on;
            dstack_auth_attestation full;
            proxy_pass http://echo;
        }

        location /full-uptodate/ {
            dstack_auth on;
            dstack_auth_attestation full;
            dstack_auth_tcb_accept UpToDate;
            proxy_pass http://echo;
        }

        # attestation alone, no app_id requirement
        location /only/ {
            dstack_auth_attestation bind;
            proxy_pass http://echo;
        }

        # operators pin measurements in configuration
        location /pinned/ {
            dstack_auth on;
            dstack_auth_attestation bind;

            if (\$compose_allowed = 0) {
                return 403 '{"error":"compose hash not allowed"}\\n';
            }

            proxy_pass http://echo;
        }

        location /off/ {
            dstack_auth on;
            proxy_pass http://echo;
        }

        # seed style: auth_request to a separate auth endpoint, which
        # gets the certificate in headers
        location /seed/ {
            auth_request /seed-auth;
            proxy_pass http://echo;
        }

        location = /seed-auth {
            internal;
            proxy_pass http://127.0.0.1:%%PORT_8092%%/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header x-client-cert \$dstack_client_cert_chain;
            proxy_set_header x-client-verify \$ssl_client_verify;
        }

        # the same, answered in-process from the connection
        location /inproc/ {
            auth_request /inproc-auth;
            proxy_pass http://echo;
        }

        location = /inproc-auth {
            internal;
            dstack_auth_request;
            dstack_auth_attestation bind;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_8092%%;

        # x-client-cert carries the whole chain, attestation included
        large_client_header_buffers 4 32k;

        location = /auth {
            dstack_auth_request;
            dstack_auth_request_root $cas;
            dstack_auth_allow any;
            dstack_auth_attestation bind;
        }
    }
}

EOF

# two workers: the cache zone is shared between them
$t->write_file('nginx.conf', $t->read_file('nginx.conf')
    =~ s/worker_processes 1;/worker_processes 2;/r);

$t->echo_backend(port => $t->port(8000));
$t->run();

my $port = $t->port(8443);

sub get {
    my ($c, $uri) = @_;
    my $raw = http("GET $uri HTTP/1.0\r\nHost: localhost\r\n\r\n",
        port => $port, ssl => 1, $c ? (cert => $c->{chain}, key => $c->{key})
        : ());
    return parse_response($raw);
}

sub hdr {
    my ($r, $name) = @_;
    my $j = json_body($r) || {};
    return ($j->{headers}{$name} || [])->[0];
}

sub error_of { (json_body($_[0]) || {})->{error} // '' }

# bind: the measurements reach variables, the same dstack-verify reports

my $r = get($ra, '/bind/x');
is($r->{status}, 200, 'bind: simulated attestation passes');
is(hdr($r, 'x-att'), 'bind', 'bind: $dstack_attestation');
is(hdr($r, 'x-rtmr3'), $m->{rtmr3}, 'bind: $dstack_rtmr3 as dstack-verify');
is(hdr($r, 'x-compose'), $m->{compose_hash},
    'bind: $dstack_compose_hash as dstack-verify');
is(hdr($r, 'x-mrtd'), $m->{mrtd}, 'bind: $dstack_mrtd');
is(join(',', map { hdr($r, "x-rtmr$_") } 0 .. 2),
    join(',', map { $m->{"rtmr$_"} } 0 .. 2), 'bind: $dstack_rtmr0..2');
is(hdr($r, 'x-instance'), $m->{instance_id}, 'bind: $dstack_instance_id');
ok(!defined hdr($r, 'x-tcb'), 'bind: no TCB status (nothing signed)');
ok(!defined hdr($r, 'x-att-error'), 'bind: no error');
like($m->{rtmr3} // '', qr/^[0-9a-f]{96}$/, 'dstack-verify reports rtmr3');

$r = get($ra, '/only/x');
is($r->{status}, 200, 'attestation without dstack_auth');
is(hdr($r, 'x-att'), 'bind', 'attestation without dstack_auth: variable');

# full: the Intel signature cannot verify

$r = get($ra, '/full/x');
is($r->{status}, 401, 'full: 401');
is(error_of($r), 'attestation failed: quote_signature',
    'full: check named in the body');
is($r->{headers}{'content-type'}, 'application/json', 'full: JSON');
ok($t->grep_error_log(qr/\[info\].*dstack auth: attestation failed: /
    . qr/quote_signature: bad quote signature/), 'full: check in the log');

$r = get($ra, '/full-uptodate/x');
is(error_of($r), 'attestation failed: quote_signature',
    'full with TCB levels: signature first');

# no attestation, or another key's

$r = get($plain, '/bind/x');
is($r->{status}, 401, 'no .8: 401');
is(error_of($r), 'attestation failed: parse', 'no .8: body');
ok($t->grep_error_log(qr/attestation failed: parse: certificate carries no /
    . qr/attestation/), 'no .8: log');

$r = get($stolen, '/bind/x');
is($r->{status}, 401, 'another key\'s .8: 401');
is(error_of($r), 'attestation failed: binding', 'another key\'s .8: binding');
ok($t->grep_error_log(qr/attestation failed: binding: /),
    'another key\'s .8: log');

$r = get($stolen, '/full/x');
is(error_of($r), 'attestation failed: binding', 'full names binding first');

$r = get(undef, '/only/x');
is($r->{status}, 401, 'no certificate: 401');
is(error_of($r), 'attestation failed: certificate', 'no certificate: body');

$r = get($ra, '/off/x');
is($r->{status}, 200, 'off: passes');
is(hdr($r, 'x-att'), 'off', 'off: $dstack_attestation');
ok(!defined hdr($r, 'x-mrtd'), 'off: no measurements');

# auth_request endpoints apply the attestation requirement too

is(get($ra, '/seed/x')->{status}, 200, 'auth_request (headers): attested');
is(get($plain, '/seed/x')->{status}, 401, 'auth_request (headers): no .8');
is(get($ra, '/inproc/x')->{status}, 200, 'auth_request (in-process)');
is(get($stolen, '/inproc/x')->{status}, 401,
    'auth_request (in-process): another key\'s .8');

# pinning the compose hash with map

isnt($hash_a, $hash_b, 'two apps, two compose hashes');
$r = get($ra, '/pinned/x');
is($r->{status}, 200, 'pinned compose hash: allowed');
$r = get($ra_b, '/pinned/x');
is($r->{status}, 403, 'other compose hash: denied');
is(error_of($r), 'compose hash not allowed', 'other compose hash: body');
$r = get($plain, '/pinned/x');
is($r->{status}, 403, 'no attestation: no compose hash, denied');

# the cache: one verification per certificate, across connections and
# both workers; keep-alive requests use the connection's result

sub verifications {
    my ($c) = @_;
    my $fp = substr(fingerprint($c, 'sha256'), 0, 16);
    return scalar $t->grep_error_log(
        qr/verified the attestation of certificate $fp /);
}

sub fingerprint {
    my ($c, $alg) = @_;
    my $out = `openssl x509 -in $c->{chain} -noout -fingerprint -$alg`;
    $out =~ s/.*=//s;
    $out =~ s/[:\s]//g;
    return lc $out;
}

# $ssl_client_fingerprint is SHA-1
sub cache_log {
    my ($c) = @_;
    my $fp = fingerprint($c, 'sha1');
    my @l = grep { /\Q$fp\E/ } split /\n/, $t->read_file('logs/attest.log');
    return map { [split ' '] } @l;
}

my @codes = map { get($ra_c, "/bind/$_")->{status} } 1 .. 8;
is(join(',', @codes), join(',', (200) x 8), 'cache: 8 connections pass');
is(verifications($ra_c), 1, 'cache: 8 connections, 1 verification');
my @log = cache_log($ra_c);
is(join(',', map { $_->[2] } @log), join(',', 'miss', ('hit') x 7),
    'cache: miss, then hits');

# With reuseport each worker has its own listening socket and the kernel
# spreads new connections over them by their source port: connect until
# both workers have served this certificate (bounded), so that "one
# verification" below means the zone was shared, not that one worker took
# every connection.
sub served_by {
    my %pids = map { $_->[0] => 1 } cache_log($ra_d);
    return scalar keys %pids;
}
for my $i (1 .. 200) {
    get($ra_d, "/bind/$i");
    last if wait_for(sub { served_by() >= 2 }, $i % 10 ? 0 : 2);
}
wait_for(sub { served_by() >= 2 }, 5);
is(served_by(), 2, 'two workers served the certificate');
is(verifications($ra_d), 1, 'two workers: 1 verification');
my @miss = grep { $_->[2] eq 'miss' } cache_log($ra_d);
is(scalar @miss, 1, 'two workers: one miss in the access log');

# three requests on one connection
my $raw = http(join('', map {
        "GET /bind/k$_ HTTP/1.1\r\nHost: localhost\r\n"
        . ($_ == 3 ? "Connection: close\r\n" : '') . "\r\n" } 1 .. 3),
    port => $port, ssl => 1, cert => $ra_e->{chain}, key => $ra_e->{key});
my @caches = $raw =~ /"x-att-cache":\["(\w+)"\]/g;
is(join(',', @caches), 'miss,connection,connection',
    'keep-alive: verified once, then the connection\'s result');
is(verifications($ra_e), 1, 'keep-alive: 1 verification');

# HTTP/2: streams share the connection's result
my $h2 = `curl -sk --http2 --cert $ra_e->{chain} --key $ra_e->{key} -w '\\n%{http_version}\\n' https://127.0.0.1:$port/bind/h1 https://127.0.0.1:$port/bind/h2 2>&1`;
my @h2c = $h2 =~ /"x-att-cache":\["(\w+)"\]/g;
is(join(',', @h2c), 'hit,connection', 'HTTP/2: hit, then the connection');
like($h2, qr/^2$/m, 'HTTP/2 was used');

# the zone survives a reload with the same settings

$t->reload();
get($ra_c, '/bind/reloaded');
@log = cache_log($ra_c);
is($log[-1][2], 'hit', 'reload: the zone still answers');

# garbage .8 payloads never crash a worker

my @workers = sort $t->worker_pids();
my $blob = $ext8;
my @garbage = (
    '', "\x00", "\x01", "\x00\x00", "\x00\x00\xff",
    substr($blob, 0, 1), substr($blob, 0, 3), substr($blob, 0, 50),
    substr($blob, 0, 700), substr($blob, 0, length($blob) / 2),
    substr($blob, 0, length($blob) - 1), $blob . "\x00", $blob . 'x',
    "\x81\xa7version\x01", "\x85" . ("\xa1a\x01" x 5),
    "\x00\x00" . "\xff" x 64, join('', map { chr int rand 256 } 1 .. 300),
);

# a few single-byte flips in the blob, and a singly wrapped .8
for my $i (1 .. 6) {
    my $b = $blob;
    my $pos = int rand length $b;
    substr($b, $pos, 1) = chr(ord(substr($b, $pos, 1)) ^ (1 << ($i % 8)));
    push @garbage, $b;
}

my ($ok, $n) = (1, 0);
for my $g (@garbage) {
    my $c = $at->custom_cert('garbage' . $n++, app_id => $A,
        attestation => $g);
    my $s = get($c, '/bind/g')->{status};
    $ok = 0, diag("garbage $n: status $s") unless $s == 401 || $s == 200;
}
my $single = $at->custom_cert('single8', app_id => $A,
    raw8 => substr($blob, 0, 400));
my $s1 = get($single, '/bind/g')->{status};
ok($ok, 'garbage .8 payloads: 401 (or 200 for a flip bind ignores)');
is($s1, 401, 'singly wrapped .8: 401');
is(join(',', sort $t->worker_pids()), join(',', @workers),
    'garbage .8 payloads: workers alive');
ok(!$t->grep_error_log(qr/exited on signal|\[alert\]|\[crit\]/),
    'garbage .8 payloads: no crash, no alert');
is(get($ra, '/bind/after')->{status}, 200, 'still serving');

# configuration errors

my %bad = (
    'full without root' => "dstack_auth_attestation full;",
    'bad mode' => "dstack_auth_attestation strict;",
    'bad TCB level' => "dstack_auth_tcb_accept UpToDate Fine;",
    'bad time' => "dstack_auth_attestation_root %%FIXTURES%%/intel/sgx-root-ca.pem;\n"
        . "dstack_auth_attestation_time yesterday;",
    'missing root file' => "dstack_auth_attestation_root /nonexistent.pem;",
    'collateral without root' => "dstack_auth_attestation_collateral "
        . "%%FIXTURES%%/tdx/quote-v4.collateral.json;",
    'bad collateral' => "dstack_auth_attestation_root "
        . "%%FIXTURES%%/intel/sgx-root-ca.pem;\n"
        . "dstack_auth_attestation_collateral $server->{chain};",
    'zone without size' => "dstack_auth_attestation_cache zone=a;",
    'bad valid' => "dstack_auth_attestation_cache zone=a:1m valid=never;",
    'tiny zone' => "dstack_auth_attestation_cache zone=a:1k;",
);

for my $name (sort keys %bad) {
    $t->write_file_expand('bad.conf', <<"EOF");
%%TEST_GLOBALS%%
events {
}
http {
    $bad{$name}
    server {
        listen 127.0.0.1:%%PORT_8999%%;
    }
}
EOF
    my ($ok, $out) = $t->test_config('bad.conf');
    ok(!$ok, "nginx -t refuses: $name");
    diag($out) if $ENV{TEST_VERBOSE_CONF};
}

$t->write_file_expand('good.conf', <<"EOF");
%%TEST_GLOBALS%%
events {
}
http {
    dstack_auth_attestation bind;
    dstack_auth_tcb_accept uptodate SWHardeningNeeded;
    dstack_auth_attestation_cache off;
    server {
        listen 127.0.0.1:%%PORT_8999%%;
    }
}
EOF
my ($good, $out) = $t->test_config('good.conf');
ok($good, 'nginx -t accepts bind without root, levels, cache off')
    or diag($out);
