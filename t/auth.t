#!/usr/bin/perl

# ngx_dstack_auth_module: identity from the verified RA-TLS client
# certificate, allowlists, forged headers, malformed app_id extensions.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(http http_get parse_response json_body);
use Test::Dstack::Auth;

my $t = Test::Dstack->new()->has(qw(auth sim curl))->plan(51);

my $A = '5bb4ff9a3837357f19dc176407a5709c62eb6c56';
my $B = '00112233445566778899aabbccddeeff00112233';

my $server = $t->sim_cert('server', app_id => $B, usage => 'server');
my $a = $t->sim_cert('a', app_id => $A, usage => 'client');
my $b = $t->sim_cert('b', app_id => $B, usage => 'client');

my %bad = (
    other_root => $t->sim_cert('other', app_id => $A, state => 'kms2'),
    expired => $t->sim_cert('expired', app_id => $A,
        variant => ['--expired']),
    no_app_id => $t->sim_cert('noid', app_id => $A,
        variant => ['--no-app-id']),
    len19 => $t->sim_cert('len19', app_id => $A,
        variant => ['--app-id-len', 19]),
    len21 => $t->sim_cert('len21', app_id => $A,
        variant => ['--app-id-len', 21]),
    single => $t->sim_cert('single', app_id => $A,
        variant => ['--app-id-wrap', 'single']),
    dup => $t->sim_cert('dup', app_id => $A, variant => ['--app-id-dup']),
    trailing => $t->sim_cert('trailing', app_id => $A,
        variant => ['--app-id-trailing']),
    utf8 => $t->sim_cert('utf8', app_id => $A,
        variant => ['--app-id-type-utf8']),
);

my $nokms = $t->sim_cert('nokms', app_id => $A, profile => 'no-kms',
    state => 'nokms');

# a leaf claiming app B, signed by app A's CA: an App CA vouches only for
# its own app
my $cross = cross_app_cert('cross', $A, $B);

my $UA = uc $A;

$t->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    log_format dstack '\$dstack_app_id \$dstack_cert_usage \$request_uri';

    upstream echo {
        server 127.0.0.1:%%PORT_8000%%;
        keepalive 4;
    }

    server {
        listen 127.0.0.1:%%PORT_8443%% ssl http2;

        ssl_certificate $server->{chain};
        ssl_certificate_key $server->{key};
        ssl_client_certificate $server->{root};
        ssl_verify_client optional;
        ssl_verify_depth 3;

        # nginx answers a presented but unverifiable certificate itself
        # (495) before any module runs: make that the same JSON 401
        error_page 495 496 =401 \@dstack_unverified;

        location \@dstack_unverified {
            default_type application/json;
            return 401 '{"error":"client certificate not verified"}\n';
        }

        access_log %%TESTDIR%%/logs/dstack.log dstack;

        dstack_auth_allow any;

        location / {
            dstack_auth on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://echo;
        }

        location /only-a/ {
            dstack_auth on;
            dstack_auth_allow $UA;
            proxy_pass http://echo;
        }

        location /only-b/ {
            dstack_auth on;
            dstack_auth_allow 0000000000000000000000000000000000000000
                              $B;
            proxy_pass http://echo;
        }

        location /deny/ {
            dstack_auth on;
            dstack_auth_allow 0000000000000000000000000000000000000000;
            proxy_pass http://echo;
        }

        location /open/ {
            proxy_pass http://echo;
        }

        # internal redirects after the access phase added the header
        location /redir/ {
            dstack_auth on;
            root %%TESTDIR%%/none;
            try_files \$uri \@dstack_echo;
        }

        location /redir-open/ {
            dstack_auth on;
            root %%TESTDIR%%/none;
            try_files \$uri \@open_echo;
        }

        location \@dstack_echo {
            dstack_auth on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://echo;
        }

        location \@open_echo {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://echo;
        }

        location = /var {
            return 200 "app=\$dstack_app_id usage=\$dstack_cert_usage\\n";
        }

        # seed style: auth_request against a separate auth service (the
        # seed's auth service on :8092, now inside nginx), and the same
        # answered in-process
@{[ Test::Dstack::Auth::front('seed') . "\n" . Test::Dstack::Auth::inproc() ]}
    }

@{[ Test::Dstack::Auth::endpoint($server->{root}) ]}
}

EOF

$t->echo_backend(port => $t->port(8000));
$t->run();

my $port = $t->port(8443);

sub get {
    my ($uri, $cert, %o) = @_;
    return Test::Dstack::Auth::get($port, $uri, $cert,
        headers => $o{headers});
}

sub seen_id {
    my ($r) = @_;
    my $j = json_body($r) or return 'no json';
    return join ',', @{$j->{headers}{'x-dstack-app-id'} || []};
}

# good chains

my $r = get('/x', $a);
is($r->{status}, 200, 'good chain allowed');
is(seen_id($r), $A, 'backend sees the certificate app id');

$r = get('/x', $b);
is(seen_id($r), $B, 'second app id');

$r = get('/var', $a);
like($r->{body}, qr/app=$A usage=app:custom/, 'variables');

# no or bad certificates

$r = get('/x', undef);
is($r->{status}, 401, 'no certificate 401');
like($r->{headers}{'content-type'}, qr{application/json}, 'json error');
like($r->{body}, qr/^\{"error":"[^"]+"\}/, 'error body shape');

for my $case (sort keys %bad) {
    $r = get('/x', $bad{$case});
    is($r->{status}, 401, "$case 401");
}

$r = get('/x', $nokms);
is($r->{status}, 401, 'no-kms chain (another root) 401');

$r = get('/x', $cross);
is($r->{status}, 401, 'leaf app id differs from its App CA 401');

$r = get('/var', $bad{no_app_id});
like($r->{body}, qr/^app= /, 'no variable without an app id');

# allowlists

is(get('/only-a/x', $a)->{status}, 200, 'allowlist upper case id allows');
is(get('/only-a/x', $b)->{status}, 403, 'allowlist denies other');
is(get('/only-b/x', $b)->{status}, 200, 'allowlist second id');
is(get('/only-b/x', $a)->{status}, 403, 'allowlist second denies');
$r = get('/deny/x', $a);
is($r->{status}, 403, 'deny');
is(json_body($r)->{error}, 'app not allowed', 'deny reason');

# forged identity headers

$r = get('/x', $a, headers => "X-Dstack-App-Id: $B\r\nx-dstack-app-id: "
    . "ffffffffffffffffffffffffffffffffffffffff\r\n");
is(seen_id($r), $A, 'forged header replaced by the certificate id');

$r = get('/x', undef, headers => "X-Dstack-App-Id: $A\r\n");
is($r->{status}, 401, 'forged header without certificate 401');

$r = get('/open/x', $a, headers => "X-Dstack-App-Id: $B\r\n");
is(seen_id($r), $B, 'without dstack_auth headers pass untouched');

# an internal redirect after the access phase: the next dstack_auth
# location replaces the header the first one added, another keeps it

$r = get('/redir/x', $a);
is(seen_id($r), $A, 'redirect: one certificate app id');

$r = get('/redir/x', $a, headers => "X-Dstack-App-Id: $B\r\n");
is(seen_id($r), $A, 'redirect: forged header replaced once');

$r = get('/redir/x', $a,
    headers => "X-Dstack-App-Id: $B\r\nX-Custom: 1\r\n");
is(seen_id($r), $A, 'redirect: forged header before another replaced');

$r = get('/redir-open/x', $a, headers => "X-Dstack-App-Id: $B\r\n");
is(seen_id($r), $A, 'redirect to a location without dstack_auth');

# keep-alive: several requests on one connection keep the identity

my $s = http('', port => $port, ssl => 1, cert => $a->{chain},
    key => $a->{key}, start => 1);
my @ids;
for my $i (1 .. 3) {
    print $s "GET /k$i HTTP/1.1\r\nHost: localhost\r\n"
        . "X-Dstack-App-Id: $B\r\n\r\n";
    my $head = '';
    while ($head !~ /\r\n\r\n/) {
        $s->sysread(my $buf, 1, 0) or last;
        $head .= $buf;
    }
    my ($len) = $head =~ /Content-Length: (\d+)/i;
    my $body = '';
    while (length $body < ($len // 0)) {
        $s->sysread(my $buf, $len - length $body) or last;
        $body .= $buf;
    }
    push @ids, seen_id({ body => $body });
}
close $s;
is("@ids", "$A $A $A", 'keep-alive requests keep the identity');

# HTTP/2

my ($code, $body) = $t->curl('--http2', '-k', '--cert', $a->{chain},
    '--key', $a->{key}, '-H', "x-dstack-app-id: $B",
    "https://127.0.0.1:$port/h2");
is($code, 200, 'http2 status');
like($body, qr/"x-dstack-app-id":\["$A"\]/, 'http2 identity');

my (undef, $proto) = $t->curl('--http2', '-k', '-o', '/dev/null',
    '-w', '%{http_version}', '--cert', $a->{chain}, '--key', $a->{key},
    "https://127.0.0.1:$port/h2");
like($proto, qr/^2/, 'http2 negotiated');

($code) = $t->curl('--http2', '-k', "https://127.0.0.1:$port/h2");
is($code, 401, 'http2 without certificate');

# log_format

Test::Dstack::wait_for(sub { $t->read_file('logs/dstack.log') =~ /var/ }, 3);
like($t->read_file('logs/dstack.log'), qr/^$A app:custom \/var$/m,
    '$dstack_app_id in log_format');

# seed-compatible auth_request

$r = get('/seed/x', $a, headers => "X-Dstack-App-Id: $B\r\n");
is($r->{status}, 200, 'seed auth_request allows');
is(seen_id($r), $A, 'seed auth_request app id');
is(get('/seed/x', undef)->{status}, 401, 'seed auth_request no cert');

$r = get('/inproc/x', $b);
is(seen_id($r), $B, 'in-process auth_request app id');
is(get('/inproc/x', $bad{dup})->{status}, 401, 'in-process bad cert');

# the standalone endpoint believes certificate headers from loopback only
# when they say SUCCESS

# (the leaf and its App CA, which the endpoint verifies to its root)

my $pem = $t->read_file($a->{chain});
(my $esc = $pem) =~ s/([^A-Za-z0-9\-_.~])/sprintf('%%%02X', ord $1)/ge;

$r = parse_response(http_get('/', port => $t->port(8092),
    headers => "X-Client-Cert: $esc\r\nX-Client-Verify: SUCCESS\r\n"));
is($r->{status}, 200, 'auth endpoint 200');
is($r->{headers}{'x-dstack-app-id'}, $A, 'auth endpoint app id header');

$r = parse_response(http_get('/', port => $t->port(8092),
    headers => "X-Client-Cert: $esc\r\nX-Client-Verify: FAILED:x\r\n"));
is($r->{status}, 401, 'auth endpoint refuses unverified');

$r = parse_response(http_get('/', port => $t->port(8092),
    headers => "X-Client-Cert: garbage\r\nX-Client-Verify: SUCCESS\r\n"));
is($r->{status}, 401, 'auth endpoint refuses garbage');

# nginx -t rejects bad directives

for my $bad ('dstack_auth_allow 5bb4ff9a;',
    'dstack_auth_allow any ' . $A . ';',
    'dstack_auth_allow ' . ('g' x 40) . ';',
    'dstack_auth maybe;')
{
    $t->write_file_expand('bad.conf', <<"EOF");
%%TEST_GLOBALS%%
events {}
http { server { listen 127.0.0.1:%%PORT_8999%%; $bad } }
EOF
    my ($ok, $out) = $t->test_config('bad.conf');
    ok(!$ok && $out =~ /emerg/, "nginx -t rejects: $bad");
}

###############################################################################

# Signs a leaf carrying app_id $claim with the App CA of app $issuer_app.
sub cross_app_cert {
    my ($name, $issuer_app, $claim) = @_;
    my $d = $t->testdir;
    my $ca = $t->sim_cert("$name-ca", app_id => $issuer_app);

    my @pems = $t->read_file($ca->{chain})
        =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?)/sg;
    $t->write_file("$name-appca.crt", $pems[1]);

    # the simulator keeps each app's CA key in its state dir
    my ($cakey) = grep { -f } glob("$d/kms/*$issuer_app*.key");
    $t->write_file("$name.ext", "basicConstraints=CA:FALSE\n"
        . "extendedKeyUsage=clientAuth\n"
        . "1.3.6.1.4.1.62397.1.3=DER:04:14:"
        . join(':', unpack('(A2)*', $claim)) . "\n");

    system("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        . "-keyout $d/$name.key -out $d/$name.csr -subj /CN=localhost "
        . ">/dev/null 2>&1") == 0 or die "csr\n";
    system("openssl x509 -req -in $d/$name.csr -CA $d/$name-appca.crt "
        . "-CAkey $cakey -CAcreateserial -days 3 -extfile $d/$name.ext "
        . "-out $d/$name.leaf >/dev/null 2>&1") == 0 or die "sign\n";

    $t->write_file("$name.crt", $t->read_file("$name.leaf") . $pems[1]);
    return { key => "$d/$name.key", chain => "$d/$name.crt" };
}
