#!/usr/bin/perl

# ngx_dstack_mesh_module: the peer server's attestation, checked inside
# the handshake (dstack_mesh_attestation).  A peer whose certificate has
# no attestation, or another key's, is refused with 526 and never sees a
# request byte; "bind" passes a simulator leaf, "full" refuses it (no
# Intel signature).

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(json_body);
use Test::Dstack::Mesh;
use Test::Dstack::Attest;

my $t = Test::Dstack->new()->has(qw(auth mesh stream sim fixtures));
my $at = Test::Dstack::Attest->new($t);
$t->plan(24);

my $A = 'aa' x 20;
my $G = '0a' x 20;      # attested
my $N = '0b' x 20;      # no .8
my $S = '0c' x 20;      # another key's .8

my $quote = $at->quote;
my $m = Test::Dstack::Mesh->new($t);
$m->peer('g', app => $G, variant => ['--quote-template', $quote]);
$m->peer('n', app => $N);
my $s = $m->peer('s', app => $S);

# S presents G's attestation under its own key and app_id; its chain is
# from a test CA that node A trusts too
my $g_ext = $at->attestation_ext($m->{peers}{g}{cert});
my $kms = $m->{peers}{g}{cert}{root};
$s->{cert} = $at->custom_cert('peer-s-stolen', app_id => $S,
    attestation => $g_ext);
$s->{cert}{root} = $kms;
my $bundle = $at->ca_bundle($kms);

my $d = $t->testdir;
my $full_port = $t->port('node-full');
my $gw = $t->port('gateway');
my $root = $at->root;
my $col = $at->collateral;

$m->start(a => $A, node => {
    edit => sub {
        s{(dstack_mesh_trusted_certificate\s+)\S+;}{$1$bundle;}
            or die "no dstack_mesh_trusted_certificate to edit\n";
        s{(dstack_mesh_keepalive\s+64;)}{$1\n    dstack_mesh_attestation bind;}
            or die "no dstack_mesh_keepalive 64 to edit\n";
    },
    extra => <<"EOF",
    upstream mesh_full {
        dstack_mesh_gateway mesh.test:443 address=127.0.0.1:$gw;
        dstack_mesh_certificate $d/node-a.crt;
        dstack_mesh_certificate_key $d/node-a.key;
        dstack_mesh_trusted_certificate $bundle;
        dstack_mesh_attestation full root=$root collateral=$col
                                tcb=UpToDate,SWHardeningNeeded
                                time=2025-07-01T00:00:00Z;
    }

    server {
        listen 127.0.0.1:$full_port;

        location / {
            dstack_mesh_target;
            proxy_pass https://mesh_full;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
EOF
});

sub error_of {
    my ($r) = @_;
    my $j = json_body($r);
    return ref $j eq 'HASH' ? ($j->{error} // '') : "not JSON: $r->{body}";
}

my $node_log = sub { $t->read_file('logs/node-a-error.log') };

# bind: the simulated attestation binds the peer's key

my $r = $m->request('GET', '/hello', app => $G);
is($r->{status}, 200, 'bind: attested peer reachable');
is((json_body($r) || {})->{backend}, 'g', 'bind: reached its backend');
$r = $m->request('GET', '/again', app => $G);
is($r->{status}, 200, 'bind: again (pooled or resumed)');

# no attestation: 526 before any request byte

$r = $m->request('POST', '/secret', app => $N, body => 'do not leak');
is($r->{status}, 526, 'no .8: 526');
like(error_of($r), qr/^PEER_REJECTED: attestation of $N-443s\.mesh\.test (?#
    )failed: parse: certificate carries no attestation/,
    'no .8: JSON names the check');
is($m->echo_log('n'), '', 'no .8: backend saw nothing');
is(join("\n", $m->peer_log('n')), '', 'no .8: peer nginx logged no request');
like($node_log->(), qr/\[error\].*peer rejected: attestation of $N-443s/,
    'no .8: logged at node A');

# another key's attestation: binding

$r = $m->request('POST', '/secret', app => $S, body => 'do not leak');
is($r->{status}, 526, 'stolen .8: 526');
like(error_of($r), qr/failed: binding: /, 'stolen .8: binding named');
is($m->echo_log('s'), '', 'stolen .8: backend saw nothing');
is(join("\n", $m->peer_log('s')), '', 'stolen .8: no request logged');

# full: the Intel signature cannot verify for a simulated quote

$r = Test::Dstack::parse_response(Test::Dstack::http(
    $m->raw_request('POST', '/full', app => $G, body => 'do not leak'),
    port => $full_port));
is($r->{status}, 526, 'full: 526');
like(error_of($r), qr/failed: quote_signature: bad quote signature/,
    'full: quote_signature named');
is($m->peer_count('g', qr{/full}, 0), 0, 'full: peer saw no /full request');
unlike($m->echo_log('g'), qr{/full}, 'full: backend saw nothing');

is($m->request('GET', '/after', app => $G)->{status}, 200,
    'bind still reachable after refusals');

# configuration

my %bad = (
    'full without root' => 'dstack_mesh_attestation full;',
    'bad mode' => 'dstack_mesh_attestation strict;',
    'bad TCB level' => "dstack_mesh_attestation bind tcb=UpToDate,Fine;",
    'unknown parameter' => "dstack_mesh_attestation bind colateral=$col;",
    'collateral without root' =>
        "dstack_mesh_attestation bind collateral=$col;",
    'bad time' => "dstack_mesh_attestation full root=$root time=never;",
    'duplicate' => "dstack_mesh_attestation bind;\n"
        . "        dstack_mesh_attestation off;",
);

for my $name (sort keys %bad) {
    $t->write_file_expand('bad.conf', <<"EOF");
%%TEST_GLOBALS%%
events {
}
http {
    upstream u {
        dstack_mesh_gateway mesh.test:443 address=127.0.0.1:1;
        dstack_mesh_certificate $d/node-a.crt;
        dstack_mesh_certificate_key $d/node-a.key;
        dstack_mesh_trusted_certificate $kms;
        $bad{$name}
    }
}
EOF
    my ($ok, $out) = $t->test_config('bad.conf');
    ok(!$ok, "nginx -t refuses: $name");
    diag($out) if $ENV{TEST_VERBOSE_CONF};
}
