#!/usr/bin/perl

# ngx_dstack_auth_module against identity forgery (issue 11, items 1-5):
# "satisfy any" never lets a client's X-Dstack-App-Id through; header-name
# aliases (underscores, invalid characters) are removed or refused; a
# dstack_auth_request subrequest never reads certificate headers, and the
# standalone endpoint verifies their chain to its root; a verify result
# made with another server's CA (no SNI, Host of another server) is not an
# identity; nginx's own "verify:" debug lines stay.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(http parse_response json_body);
use Test::Dstack::Auth;

my $t = Test::Dstack->new()->has(qw(auth sim))->plan(30);

my $A = '5bb4ff9a3837357f19dc176407a5709c62eb6c56';
my $B = '00112233445566778899aabbccddeeff00112233';
my $O = '0f' x 20;

my $server = $t->sim_cert('server', app_id => $B, usage => 'server');
my $a = $t->sim_cert('a', app_id => $A, usage => 'client');
my $other = $t->sim_cert('other', app_id => $O, usage => 'client',
    state => 'kms2');
my $d = $t->testdir;
my $selfsigned = self_signed('forged', $A);

$t->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    upstream echo {
        server 127.0.0.1:%%PORT_8000%%;
    }

    server {
        listen 127.0.0.1:%%PORT_8443%% ssl default_server;
        server_name default.test;

        # the settings that let header-name aliases in
        underscores_in_headers on;
        ignore_invalid_headers off;

        ssl_certificate $server->{chain};
        ssl_certificate_key $server->{key};
        ssl_client_certificate $a->{root};
        ssl_verify_client optional;
        ssl_verify_depth 3;

        error_log %%TESTDIR%%/logs/debug.log debug;

        dstack_auth_allow any;

        location / {
            dstack_auth on;
            proxy_pass http://echo;
        }

        location /any/ {
            satisfy any;
            allow 127.0.0.1;
            deny all;
            dstack_auth on;
            proxy_pass http://echo;
        }

        location /any-deny/ {
            satisfy any;
            deny all;
            dstack_auth on;
            proxy_pass http://echo;
        }

        # the front of a standalone auth endpoint, passing the chain
@{[ Test::Dstack::Auth::front('front') ]}
    }

    # the same port, another server and another CA
    server {
        listen 127.0.0.1:%%PORT_8443%% ssl;
        server_name other.test;

        ssl_certificate $server->{chain};
        ssl_certificate_key $server->{key};
        ssl_client_certificate $other->{root};
        ssl_verify_client optional;
        ssl_verify_depth 3;

        dstack_auth_allow any;

        location / {
            dstack_auth on;
            proxy_pass http://echo;
        }
    }

    # the same port and the same CA file: its own SSL_CTX, same trust
    server {
        listen 127.0.0.1:%%PORT_8443%% ssl;
        server_name same.test;

        ssl_certificate $server->{chain};
        ssl_certificate_key $server->{key};
        ssl_client_certificate $a->{root};
        ssl_verify_client optional;
        ssl_verify_depth 3;

        dstack_auth_allow any;

        location / {
            dstack_auth on;
            proxy_pass http://echo;
        }
    }

    # a plain listener with the in-process auth_request
    server {
        listen 127.0.0.1:%%PORT_8080%%;

@{[ Test::Dstack::Auth::inproc() ]}
    }

    # the seed's standalone auth service
@{[ Test::Dstack::Auth::endpoint($a->{root}) ]}
}

EOF

$t->echo_backend(port => $t->port(8000));
$t->run();

my $port = $t->port(8443);

sub get {
    my ($uri, $cert, %o) = @_;
    return Test::Dstack::Auth::get($o{port} // $port, $uri, $cert,
        host => 'default.test', %o);
}

# every value the backend saw for a name that means x-dstack-app-id to it
sub seen_ids {
    my ($r) = @_;
    my $j = json_body($r) or return 'no json';
    my @ids;
    for my $k (sort keys %{$j->{headers}}) {
        (my $f = $k) =~ tr/_/-/;
        push @ids, @{$j->{headers}{$k}} if $f =~ /^x-dstack-app-id/;
    }
    return join ',', @ids;
}

# 1. satisfy any

my $r = get('/any/x', undef, headers => "X-Dstack-App-Id: $B\r\n");
is($r->{status}, 200, 'satisfy any: allowed by address');
is(seen_ids($r), '', 'satisfy any: forged header removed without a cert');

$r = get('/any/x', $a, headers => "X-Dstack-App-Id: $B\r\n");
is(seen_ids($r), $A, 'satisfy any: certificate identity only');

$r = get('/any-deny/x', undef, headers => "X-Dstack-App-Id: $B\r\n");
is($r->{status}, 401, 'satisfy any, deny all: 401 without a cert');
is(seen_ids(get('/any-deny/x', $a)), $A, 'satisfy any, deny all: cert');

# 2. header-name aliases

$r = get('/x', $a, headers => "x_dstack_app_id: $B\r\n");
is($r->{status}, 200, 'underscore alias: 200');
is(seen_ids($r), $A, 'underscore alias removed');

$r = get('/any/x', undef, headers => "X_Dstack_App_Id: $B\r\n"
    . "x-dstack_app-id: $B\r\n");
is(seen_ids($r), '', 'mixed aliases removed under satisfy any');

for my $name ('X-Dstack-App-Id.', 'X-Dstack-App-Id!', 'x.dstack.app.id') {
    $r = get('/x', $a, headers => "$name: $B\r\n");
    is($r->{status}, 400, "unclassifiable name refused: $name");
}
like(json_body($r)->{error} // '', qr/resembles X-Dstack-App-Id/,
    'refusal says why');

$r = get('/x', $a, headers => "X-Custom.Name: kept\r\n");
is($r->{status}, 200, 'other odd names pass');

# 3. no certificate headers in a subrequest; chain check when standalone

my $forged = escape(first_pem($selfsigned->{chain}));
my $leaf = escape(first_pem($a->{chain}));
my $chain = escape($t->read_file($a->{chain}));

$r = get('/inproc/x', undef, plain => 1, port => $t->port(8080),
    headers => "X-Client-Cert: $forged\r\nX-Client-Verify: SUCCESS\r\n");
is($r->{status}, 401, 'plain subrequest ignores certificate headers');
is($t->echo_log($t->port(8000)) =~ m{^GET /inproc/}m ? 'reached' : '', '',
    'plain subrequest: backend not reached');

sub standalone {
    my ($cert) = @_;
    return parse_response(http("GET / HTTP/1.0\r\nHost: x\r\n"
        . "X-Client-Cert: $cert\r\nX-Client-Verify: SUCCESS\r\n\r\n",
        port => $t->port(8092)));
}

$r = standalone($forged);
is($r->{status}, 401, 'standalone: self-signed certificate refused');
is(standalone(escape($t->read_file($other->{chain})))->{status}, 401,
    'standalone: chain to another root refused');
is(standalone($leaf)->{status}, 401, 'standalone: leaf without its CA');

$r = standalone($chain);
is($r->{status}, 200, 'standalone: chain to the root');
is($r->{headers}{'x-dstack-app-id'}, $A, 'standalone: app id');

$r = get('/front/x', $a, headers => "X-Dstack-App-Id: $B\r\n");
is($r->{status}, 200, 'front with $dstack_client_cert_chain: 200');
is(seen_ids($r), $A, 'front with $dstack_client_cert_chain: app id');

# 4. another server's CA

$r = get('/x', $a, host => 'other.test');
is($r->{status}, 421, 'no SNI, Host of a server with another CA: 421');
is(json_body($r)->{error} // '',
    'client certificate was verified for another server', '421 says why');

is(seen_ids(get('/x', $a, sni => 'default.test')), $A,
    'SNI and Host of the same server');
is(seen_ids(get('/x', $a, host => 'same.test')), $A,
    'no SNI, Host of a server with the same CA settings');
is(seen_ids(get('/x', $other, sni => 'other.test', host => 'other.test')),
    $O, 'the other server with its own CA');
is(get('/x', $other)->{status}, 400,
    'no SNI: nginx refuses the other CA on the default server');

# 5. nginx's verify callback still runs

Test::Dstack::wait_for(sub { $t->read_file('logs/debug.log')
    =~ /verify:1, error:0, depth:0/ }, 3);
like($t->read_file('logs/debug.log'), qr/verify:1, error:0, depth:0, /,
    'nginx "verify:" debug line for the leaf');
like($t->read_file('logs/debug.log'), qr/verify:1, error:0, depth:2, /,
    'nginx "verify:" debug line for the root');

###############################################################################

sub first_pem {
    my ($file) = @_;
    my ($pem) = $t->read_file($file)
        =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n)/s;
    return $pem;
}

sub escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9\-_.~])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

# a self-signed client certificate that claims app $id
sub self_signed {
    my ($name, $id) = @_;
    system("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
        . "-nodes -keyout $d/$name.key -out $d/$name.crt -days 3 "
        . "-subj /CN=forged "
        . "-addext basicConstraints=CA:FALSE "
        . "-addext extendedKeyUsage=clientAuth "
        . "-addext 1.3.6.1.4.1.62397.1.3=DER:04:14:"
        . join(':', unpack('(A2)*', $id)) . " >/dev/null 2>&1") == 0
        or die "self-signed\n";
    return { key => "$d/$name.key", chain => "$d/$name.crt" };
}
