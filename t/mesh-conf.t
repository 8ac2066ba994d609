#!/usr/bin/perl

# ngx_dstack_mesh_module: configurations that would route without the
# mesh's checks, or cannot work, are refused at startup with a clear
# message.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack;

my $t = Test::Dstack->new()->has(qw(mesh sim))->plan(56);

my $a = $t->sim_cert('a', app_id => 'aa' x 20);
my $B = '0b' x 20;

my $upstream = <<"EOF";
    upstream mesh {
        dstack_mesh_gateway mesh.test:443 address=127.0.0.1:9;
        dstack_mesh_certificate $a->{chain};
        dstack_mesh_certificate_key $a->{key};
        dstack_mesh_trusted_certificate $a->{root};
    }
EOF

my $location = <<'EOF';
        location / {
            dstack_mesh_target;
            proxy_pass https://mesh;
        }
EOF

# (name, http{} content, expected error or undef for a good one)
my @cases = (
    ['good', "$upstream server { listen 127.0.0.1:%%PORT_1%%;
        $location }", undef],

    ['good with agent and fixed target', "$upstream
     server {
        listen 127.0.0.1:%%PORT_1%%;
        location / {
            dstack_mesh_target app=$B port=8443;
            dstack_mesh_agent \@agent;
            proxy_pass https://mesh;
        }
        location \@agent { proxy_pass http://unix:/nowhere.sock; }
     }", undef],

    ['good with resolver', "$upstream
     upstream dns { dstack_mesh_gateway mesh.test;
        dstack_mesh_certificate $a->{chain};
        dstack_mesh_certificate_key $a->{key};
        dstack_mesh_trusted_certificate $a->{root}; }
     server { listen 127.0.0.1:%%PORT_1%%; resolver 127.0.0.1:53;
        location / { dstack_mesh_target; proxy_pass https://dns; } }",
     undef],

    ['no proxy_pass', "$upstream server { listen 127.0.0.1:%%PORT_1%%;
        location / { dstack_mesh_target; } }",
     qr/"dstack_mesh_target" needs "proxy_pass https/],

    ['plain http', "$upstream server { listen 127.0.0.1:%%PORT_1%%;
        location / { dstack_mesh_target; proxy_pass http://mesh; } }",
     qr/not http/],

    ['not a mesh upstream', "$upstream upstream other { server 127.0.0.1:9; }
     server { listen 127.0.0.1:%%PORT_1%%;
        location / { dstack_mesh_target; proxy_pass https://other; } }",
     qr/needs an upstream with "dstack_mesh_gateway"/],

    ['variables in proxy_pass', "$upstream server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { dstack_mesh_target; proxy_pass https://\$host; } }",
     qr/needs "proxy_pass https:\/\/<upstream>"/],

    ['session reuse off', "$upstream server { listen 127.0.0.1:%%PORT_1%%;
        location / { dstack_mesh_target; proxy_pass https://mesh;
            proxy_ssl_session_reuse off; } }",
     qr/proxy_ssl_session_reuse on/],

    ['proxy_ssl_verify', "$upstream server { listen 127.0.0.1:%%PORT_1%%;
        location / { dstack_mesh_target; proxy_pass https://mesh;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $a->{root}; } }",
     qr/"proxy_ssl_verify" must be off/],

    ['proxy_ssl_certificate', "$upstream server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { dstack_mesh_target; proxy_pass https://mesh;
            proxy_ssl_certificate $a->{chain};
            proxy_ssl_certificate_key $a->{key}; } }",
     qr/from "dstack_mesh_certificate"/],

    ['no resolver', "upstream mesh { dstack_mesh_gateway mesh.test;
        dstack_mesh_certificate $a->{chain};
        dstack_mesh_certificate_key $a->{key};
        dstack_mesh_trusted_certificate $a->{root}; }
     server { listen 127.0.0.1:%%PORT_1%%; $location }",
     qr/needs a "resolver" or a gateway "address="/],

    ['no certificate', "upstream mesh { dstack_mesh_gateway mesh.test;
        dstack_mesh_trusted_certificate $a->{root}; }
     server { listen 127.0.0.1:%%PORT_1%%; resolver 127.0.0.1; $location }",
     qr/needs "dstack_mesh_certificate", "dstack_mesh_certificate_key"/],

    ['keepalive after gateway', "upstream mesh {
        dstack_mesh_gateway mesh.test:443 address=127.0.0.1:9;
        keepalive 8;
        dstack_mesh_certificate $a->{chain};
        dstack_mesh_certificate_key $a->{key};
        dstack_mesh_trusted_certificate $a->{root}; }
     server { listen 127.0.0.1:%%PORT_1%%; $location }",
     qr/takes no "server" or balancer directives/],

    ['balancer before gateway', "upstream mesh { least_conn;
        dstack_mesh_gateway mesh.test:443 address=127.0.0.1:9; }",
     qr/cannot be combined with another balancer/],

    ['server line', "upstream mesh { server 127.0.0.1:9;
        dstack_mesh_gateway mesh.test:443 address=127.0.0.1:9;
        dstack_mesh_certificate $a->{chain};
        dstack_mesh_certificate_key $a->{key};
        dstack_mesh_trusted_certificate $a->{root}; }
     server { listen 127.0.0.1:%%PORT_1%%; $location }",
     qr/takes no "server" or balancer directives/],

    ['bad domain', "upstream mesh { dstack_mesh_gateway mesh_test; }",
     qr/invalid gateway domain "mesh_test"/],

    ['bad gateway port', "upstream mesh { dstack_mesh_gateway mesh.test:0; }",
     qr/invalid gateway domain "mesh.test:0"/],

    ['bad gateway parameter', "upstream mesh {
        dstack_mesh_gateway mesh.test addr=1.2.3.4; }",
     qr/invalid parameter "addr=1.2.3.4"/],

    ['fixed app not hex', "$upstream server { listen 127.0.0.1:%%PORT_1%%;
        location / { dstack_mesh_target app=zz; proxy_pass https://mesh; } }",
     qr/invalid value in "app=zz": 40 hex characters expected/],

    ['fixed port out of range', "$upstream server {
        listen 127.0.0.1:%%PORT_1%%; location / {
        dstack_mesh_target app=$B port=70000; proxy_pass https://mesh; } }",
     qr/invalid value in "port=70000": a port from 1 to 65535 expected/],

    ['unknown target parameter', "$upstream server {
        listen 127.0.0.1:%%PORT_1%%; location / {
        dstack_mesh_target host=x; proxy_pass https://mesh; } }",
     qr/invalid parameter "host=x"/],

    ['unattested allowed, web roots loaded', "upstream mesh {
        dstack_mesh_gateway mesh.test:443 address=127.0.0.1:9;
        dstack_mesh_certificate $a->{chain};
        dstack_mesh_certificate_key $a->{key};
        dstack_mesh_trusted_certificate $a->{root};
        dstack_mesh_gateway_trusted_certificate $a->{root}; }
     server { listen 127.0.0.1:%%PORT_1%%; location / {
        dstack_mesh_target; dstack_mesh_allow_unattested on;
        proxy_pass https://mesh; } }", undef],

    ['unattested allowed, default web roots (ca-certificates)',
     "$upstream server { listen 127.0.0.1:%%PORT_1%%; location / {
        dstack_mesh_target; dstack_mesh_allow_unattested on;
        proxy_pass https://mesh; } }", undef],

    ['unattested off: the web roots are not read', "upstream mesh {
        dstack_mesh_gateway mesh.test:443 address=127.0.0.1:9;
        dstack_mesh_certificate $a->{chain};
        dstack_mesh_certificate_key $a->{key};
        dstack_mesh_trusted_certificate $a->{root};
        dstack_mesh_gateway_trusted_certificate /nonexistent/roots.pem; }
     server { listen 127.0.0.1:%%PORT_1%%; dstack_mesh_allow_unattested off;
        $location }", undef],

    ['unattested allowed, web roots missing', "upstream mesh {
        dstack_mesh_gateway mesh.test:443 address=127.0.0.1:9;
        dstack_mesh_certificate $a->{chain};
        dstack_mesh_certificate_key $a->{key};
        dstack_mesh_trusted_certificate $a->{root};
        dstack_mesh_gateway_trusted_certificate /nonexistent/roots.pem; }
     server { listen 127.0.0.1:%%PORT_1%%; dstack_mesh_allow_unattested on;
        $location }",
     qr/"dstack_mesh_allow_unattested" needs the gateway's trusted certificates: none loaded from "\/nonexistent\/roots.pem"/],

    ['unattested allowed, web roots not PEM', "upstream mesh {
        dstack_mesh_gateway mesh.test:443 address=127.0.0.1:9;
        dstack_mesh_certificate $a->{chain};
        dstack_mesh_certificate_key $a->{key};
        dstack_mesh_trusted_certificate $a->{root};
        dstack_mesh_gateway_trusted_certificate $a->{key}; }
     server { listen 127.0.0.1:%%PORT_1%%; location / {
        dstack_mesh_target; dstack_mesh_allow_unattested on;
        proxy_pass https://mesh; } }",
     qr/none loaded from/],

    ['allow_unattested takes on or off', "$upstream server {
        listen 127.0.0.1:%%PORT_1%%; location / { dstack_mesh_target;
        dstack_mesh_allow_unattested yes; proxy_pass https://mesh; } }",
     qr/invalid value "yes" in "dstack_mesh_allow_unattested"/],

    ['agent location missing', "$upstream server {
        listen 127.0.0.1:%%PORT_1%%; location / { dstack_mesh_target;
        dstack_mesh_agent \@nowhere; proxy_pass https://mesh; } }",
     qr/"dstack_mesh_agent" names no location "\@nowhere"/],
);

for my $case (@cases) {
    my ($name, $http, $err) = @$case;
    (my $file = "conf-$name.conf") =~ s/\W+/-/g;

    $t->write_file_expand($file, <<"EOF");
%%TEST_GLOBALS%%
events {
}
http {
    %%TEST_GLOBALS_HTTP%%
    $http
}
EOF

    my ($ok, $out) = $t->test_config($file);

    if (defined $err) {
        ok(!$ok, "refused: $name");
        like($out, $err, "message: $name");
    } else {
        ok($ok, "accepted: $name") or diag($out);
        unlike($out, qr/\[(emerg|alert)\]/, "no complaint: $name");
    }
}

# the emergs above were expected, not failures of a running nginx
$t->write_file('logs/error.log', '');

###############################################################################
