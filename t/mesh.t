#!/usr/bin/perl

# ngx_dstack_mesh_module: routing through the gateway to the target node,
# the headers each side sees, status and body pass-through, streaming both
# ways, targeting an instance, and the guest-agent fallback.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(http json_body parse_response);
use Test::Dstack::Mesh;
use IO::Socket::INET;

my $t = Test::Dstack->new()->has(qw(auth mesh stream sim))->plan(65);

my $A = 'aa' x 20;
my $B = '0b' x 20;
my $BI = 'b1' x 20;
my $C = '0c' x 20;
my $AI = 'a1' x 20;

my $m = Test::Dstack::Mesh->new($t);
$m->peer('b', app => $B, instance => $BI, ws => 1);
$m->peer('c', app => $C, protocols => 'TLSv1.2');

my $sock = $t->run_sim(app_id => $A, instance_id => $AI);

my $fixed = $t->port('node-fixed');

$m->start(a => $A, node => {
    # short enough for the streaming test to prove it is not cut
    edit => sub {
        s/proxy_read_timeout(\s+)300s/proxy_read_timeout${1}3s/
            or die "no proxy_read_timeout 300s to edit\n";
    },
    extra => <<"EOF",
    server {
        listen 127.0.0.1:$fixed;

        # always C, whatever the headers say
        location / {
            dstack_mesh_target app=$C;
            proxy_pass https://dstack_mesh;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

        # the target from variables
        location /var/ {
            set \$vpc_app $B;
            dstack_mesh_target app=\$vpc_app port=\$arg_port;
            proxy_pass https://dstack_mesh;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

        # the mesh upstream without dstack_mesh_target: refused
        location /bypass/ {
            proxy_pass https://dstack_mesh;
        }
    }
EOF
});

# routed GET: the backend sees A's identity, none of the routing headers

my $r = $m->request('GET', '/path/x?q=1&r=2', app => $B,
    headers => "X-Custom: kept\r\nX-Dstack-Target-Extra: gone\r\n"
        . "X-Dstack-App-Id: $C\r\n");
my $j = json_body($r);

is($r->{status}, 200, 'get: 200');
is($j->{backend}, 'b', 'get: reached B');
is($j->{method}, 'GET', 'get: method');
is($j->{uri}, '/path/x?q=1&r=2', 'get: path and query');
is_deeply($j->{headers}{'x-dstack-app-id'}, [$A],
    'get: backend sees x-dstack-app-id of A only');
is(join(',', grep { /^x-dstack-target/ } keys %{$j->{headers}}), '',
    'get: no x-dstack-target-* forwarded');
is_deeply($j->{headers}{'x-custom'}, ['kept'], 'get: other headers kept');
is_deeply($j->{headers}{host}, ["$B-443s.mesh.test"],
    'get: Host is the target host');

# the routing headers last, as clients add them: cut off the end of the
# list, the headers before them kept

$r = $m->request('GET', '/last', headers => "X-Custom: kept\r\n"
    . "X-Dstack-Target-App: $B\r\nX-Dstack-Target-Extra: gone\r\n"
    . "X-Dstack-App-Id: $C\r\n");
$j = json_body($r);
is($j->{backend}, 'b', 'last: reached B');
is_deeply($j->{headers}{'x-dstack-app-id'}, [$A],
    'last: backend sees x-dstack-app-id of A only');
is(join(',', grep { /^x-dstack-target/ } keys %{$j->{headers}}), '',
    'last: no x-dstack-target-* forwarded');
is_deeply($j->{headers}{'x-custom'}, ['kept'], 'last: other headers kept');

is($m->peer_count('b', qr/ $A "GET \/path\/x\?q=1&r=2 /), 1,
    'get: B authenticated A');
is($m->peer_count('b', qr/"GET \/path\/x\S* HTTP\/1\.1" TLSv1\.3$/), 1,
    'get: over TLS 1.3');

# the caller's own Host goes through, as the seed forwarded it; a Host
# that only names this listener becomes the target's

$r = http($m->raw_request('GET', '/h', app => $B)
    =~ s/Host: localhost/Host: vpc-server/r, port => $m->node_port);
is_deeply(json_body($r)->{headers}{host}, ['vpc-server'],
    'Host: a caller\'s own name is kept');

$r = http($m->raw_request('GET', '/h', app => $B)
    =~ s/Host: localhost/Host: 127.0.0.1:80/r, port => $m->node_port);
is_deeply(json_body($r)->{headers}{host}, ["$B-443s.mesh.test"],
    'Host: 127.0.0.1:80 becomes the target host');

# uppercase hex and an explicit default port route the same

$r = $m->request('GET', '/upper', app => uc $B, port => 443);
is(json_body($r)->{backend}, 'b', 'uppercase app id, port 443');

$r = $m->request('GET', '/zeros', app => $B, port => '0443');
is(json_body($r)->{backend}, 'b', 'port 0443 is port 443');
like($t->read_file('logs/access-node-a.log'),
    qr/ $B-443s\.mesh\.test \S+ "GET \/zeros /, 'port 0443: host says 443');

# POST with a body

my $body = join '', map { chr(33 + ($_ * 7) % 90) } 1 .. 60000;
$r = $m->request('POST', '/post', app => $B, body => $body,
    headers => "Content-Type: application/octet-stream\r\n");
$j = json_body($r);

is($r->{status}, 200, 'post: 200');
is($j->{method}, 'POST', 'post: method');
is($j->{body_length}, length $body, 'post: body length');
is($j->{body}, $body, 'post: body intact');

# chunked upload, streamed on as chunked

$r = $m->request('PUT', '/chunked', app => $B,
    chunked => ['first,', 'second,', 'x' x 30000]);
$j = json_body($r);

is($j->{method}, 'PUT', 'chunked: method');
is($j->{body}, 'first,second,' . ('x' x 30000), 'chunked: body');
is_deeply($j->{headers}{'transfer-encoding'}, ['chunked'],
    'chunked: streamed to the peer as chunked');

# other methods

$r = $m->request('DELETE', '/thing/1', app => $B);
is(json_body($r)->{method}, 'DELETE', 'delete');

$r = $m->request('PATCH', '/thing/1', app => $B, body => '{"a":1}');
is(json_body($r)->{body}, '{"a":1}', 'patch with body');

# status codes pass through

for my $s (201, 404, 500, 503) {
    $r = $m->request('GET', "/status/$s", app => $B);
    is($r->{status}, $s, "status $s passes through");
}

like($m->request('GET', '/status/500', app => $B)->{body}, qr/"backend"/,
    'the peer\'s 500 body passes through, not a mesh error');

# large download

$r = $m->request('GET', '/big?size=3000000', app => $B);
is(length $r->{body}, 3000000, 'large response body');

# a slow stream arrives piece by piece and outlives proxy_read_timeout

my ($sr, $parts) = $m->request_timed('GET', '/stream?chunks=5&delay=1',
    app => $B);

is($sr->{status}, 200, 'stream: 200');
is($sr->{body}, join('', map { "chunk $_\n" } 1 .. 5), 'stream: all chunks');
my @with_chunk = grep { $_->[1] =~ /chunk/ } @$parts;
ok(@with_chunk >= 4, 'stream: arrived in pieces (' . @with_chunk . ')');
ok(@with_chunk && $with_chunk[0][0] < 1.5,
    'stream: first chunk before the stream ends');
ok($parts->[-1][0] > 3.5, 'stream: lasted longer than the read timeout');

# an upgraded connection (WebSocket) through the mesh

my $ws = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $m->node_port,
    Timeout => 5);
$ws->autoflush(1);
print $ws "GET /ws/chat HTTP/1.1\r\nHost: localhost\r\n"
    . "X-Dstack-Target-App: $B\r\nUpgrade: websocket\r\n"
    . "Connection: Upgrade\r\n\r\n";

my $head = '';
eval {
    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm 5;
    while (defined(my $line = <$ws>)) {
        $head .= $line;
        last if $line =~ /^\r?\n$/;
    }
    print $ws "hello through the mesh\n";
    $head .= <$ws> // '';
    alarm 0;
};
close $ws;

like($head, qr{^HTTP/1\.1 101 }, 'upgrade: 101 from the peer');
like($head, qr/HELLO THROUGH THE MESH\n$/, 'upgrade: bytes both ways');

# routing by instance

$r = $m->request('GET', '/inst', app => $B, instance => $BI);
is(json_body($r)->{backend}, 'b', 'instance: routed to B');

is($m->peer_count('b', qr/"GET \/inst /), 1, 'instance: B served it');
like($t->read_file('logs/access-node-a.log'), qr/ $BI-443s\.mesh\.test /,
    'instance: host named the instance');

# C is a separate target

$r = $m->request('GET', '/to-c', app => $C);
is(json_body($r)->{backend}, 'c', 'C reached');
is_deeply(json_body($r)->{headers}{'x-dstack-app-id'}, [$A], 'C sees A');
is($m->peer_count('c', qr/"GET \/to-c HTTP\/1\.1" TLSv1\.2$/), 1,
    'C: over TLS 1.2');

# no target app: the guest agent (dstack-sim on its socket)

$r = $m->request('GET', '/info');
$j = json_body($r);
is($r->{status}, 200, 'agent: /info answered');
is($j->{app_id}, $A, 'agent: /info -> Info of the simulator');
is($j->{instance_id}, $AI, 'agent: instance id');

$r = $m->request('POST', '/info', body => '{}',
    headers => "Content-Type: application/json\r\n");
is(json_body($r)->{app_id}, $A, 'agent: POST kept');

$r = $m->request('POST', '/get_tls_key', body => '{"subject":"x",'
    . '"usage_ra_tls":true,"usage_server_auth":true,'
    . '"usage_client_auth":false}',
    headers => "Content-Type: application/json\r\n");
$j = json_body($r);
like($j->{key} // '', qr/PRIVATE KEY/, 'agent: /get_tls_key -> GetTlsKey');
ok(ref $j->{certificate_chain} && @{$j->{certificate_chain}} >= 2,
    'agent: certificate chain');

$r = $m->request('GET', '/prefix/a/get_quote?report_data=' . ('00' x 64));
is($r->{status}, 404, 'agent: /prefix/a/get_quote -> /prefix/a/GetQuote');

like($t->read_file('logs/sim.log'), qr{GET /prefix/a/GetQuote},
    'agent: the simulator saw the PascalCase path');

$r = $m->request('GET', '/gateway');
is($r->{status}, 200, 'gateway: 200');
is_deeply(json_body($r), { gateway_domain => 'mesh.test:443' },
    'gateway: domain answered locally');

$r = $m->request('GET', '/info', headers => "X-Dstack-Target-Port: 8080\r\n");
is($r->{status}, 400, 'a target port without app is not the agent');

# a target fixed in the configuration wins over the headers

$r = parse_response(http($m->raw_request('GET', '/fixed', app => $B),
    port => $fixed));
$j = json_body($r);
is($j->{backend}, 'c', 'fixed: configured app C, not the header\'s B');
is(join(',', grep { /^x-dstack-target/ } keys %{$j->{headers}}), '',
    'fixed: target headers still stripped');

# fields not fixed still come from the headers, and the fixed app is
# still what the peer must prove: B's instance is not app C

$r = parse_response(http($m->raw_request('GET', '/fixed', instance => $BI),
    port => $fixed));
is($r->{status}, 526, 'fixed: an instance of another app is refused');

$r = parse_response(http($m->raw_request('GET', '/var/x?port=443'),
    port => $fixed));
is(json_body($r)->{backend}, 'b', 'variables: app and port from variables');

$r = parse_response(http($m->raw_request('GET', '/var/x?port=0'),
    port => $fixed));
is($r->{status}, 400, 'variables: a bad value is a 400');

$r = parse_response(http($m->raw_request('GET', '/bypass/x', app => $B),
    port => $fixed));
is($r->{status}, 500, 'mesh upstream outside dstack_mesh_target: 500');
is($m->peer_count('b', qr{/bypass/}, 0), 0, 'bypass: nothing reached B');

$m->stop();

###############################################################################
