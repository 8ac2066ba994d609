#!/usr/bin/perl

# The shipped access log formats (conf/node-mesh.conf): "dstack_mesh" and
# its JSON twin "dstack_mesh_json" record the target app, the mesh's error
# code, whether the peer was attested, the upstream time and, where this
# nginx verified a client certificate, the caller's app id and attestation.

use strict;
use warnings;

use lib 't/lib';
use JSON::PP;
use Test::More;
use Test::Dstack qw(http wait_for);
use Test::Dstack::Mesh;

my $t = Test::Dstack->new()->has(qw(auth mesh stream sim))->plan(14);

my $A = 'aa' x 20;
my $B = '0b' x 20;
my $C = '0c' x 20;

my $d = $t->testdir;
my $in = $t->port('inbound');

my $m = Test::Dstack::Mesh->new($t);
$m->peer('b', app => $B);
my $c = $m->peer('c', app => $C);
$m->route("$B-444s", $c);          # misrouted: C answers for B
$m->route("$A-443s", $in);         # node A's own :443, below

$m->start(a => $A, node => {
    edit => sub {
        s{(access_log(\s+)\S+/mesh-node-a\.log dstack_mesh;)}
         {$1\n    access_log$2$d/logs/json-node-a.log dstack_mesh_json;};
    },
    extra => <<"EOF",
    # node A's :443 for peers, as conf/backend.conf.template has it
    server {
        listen 127.0.0.1:$in ssl;

        ssl_certificate $d/node-a.crt;
        ssl_certificate_key $d/node-a.key;
        ssl_client_certificate $d/kms/root.crt;
        ssl_verify_client on;
        ssl_verify_depth 3;

        access_log $d/logs/inbound-node-a.log dstack_mesh;

        location / {
            dstack_auth on;
            dstack_auth_allow any;
            return 200 "in\\n";
        }
    }
EOF
});

sub lines {
    my ($file, $re) = @_;
    my @l;
    wait_for(sub {
        @l = grep { /$re/ } split /\n/, $t->read_file($file);
        @l > 0;
    }, 5);
    return @l;
}

is($m->request('GET', '/ok', app => $B)->{status}, 200, 'request to B');
is($m->request('GET', '/mis', app => $B, port => 444)->{status}, 526,
    'request misrouted to C');
is($m->request('GET', '/self', app => $A)->{status}, 200,
    'request to A itself, through its :443');

my ($ok) = lines('logs/mesh-node-a.log', qr{"GET /ok });
like($ok, qr{ 200 \d+ target=$B-443s\.mesh\.test attested=1 app=$B (?#
    )error=- caller=- attestation=off upstream=127\.0\.0\.1:\d+ (?#
    )urt=\d+\.\d{3} rt=\d+\.\d{3}$}, 'answered: app, no error, attested, upstream time')
    or diag($ok);

my ($mis) = lines('logs/mesh-node-a.log', qr{"GET /mis });
like($mis, qr{ 526 \d+ \S+ attested=1 app=$B error=PEER_REJECTED },
    'rejected: the error code') or diag($mis);

# the caller's side: node A's :443 saw app A's certificate

my ($self) = lines('logs/inbound-node-a.log', qr{"GET /self });
like($self, qr{ 200 \d+ target=- attested=- app=- error=- caller=$A },
    'inbound: the caller\'s app id') or diag($self);
like($self, qr{ attestation=off }, 'inbound: no attestation asked')
    or diag($self);

# JSON: one object a line, the same fields

my @json = map { eval { decode_json($_) } }
    lines('logs/json-node-a.log', qr{"GET /mis });
is(scalar @json, 1, 'json: the line parses');
my $j = $json[0] // {};
is($j->{status}, 526, 'json: status');
is($j->{app}, $B, 'json: app');
is($j->{error}, 'PEER_REJECTED', 'json: error');
is($j->{attested}, '1', 'json: attested');

my ($jok) = map { eval { decode_json($_) } }
    lines('logs/json-node-a.log', qr{"GET /ok });
like($jok->{upstream_response_time} // '', qr/^\d+\.\d{3}$/,
    'json: upstream time');
like($jok->{request_time} // '', qr/^\d+(\.\d+)?$/, 'json: request time');

$m->stop();
