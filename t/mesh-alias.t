#!/usr/bin/perl

# ngx_dstack_mesh_module: header-name aliases (issue 11, item 2).  With
# underscores_in_headers on, x_dstack_target_app and x_dstack_app_id are
# what CGI-style backends and $http_* take for the real names: the mesh
# treats them as those names (routes, counts duplicates, strips).  With
# ignore_invalid_headers off, a name that spells x-dstack-... around other
# characters is refused with 400.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack qw(json_body);
use Test::Dstack::Mesh;

my $t = Test::Dstack->new()->has(qw(auth mesh stream sim))->plan(13);

my $A = 'aa' x 20;
my $B = '0b' x 20;
my $C = '0c' x 20;

my $m = Test::Dstack::Mesh->new($t);
$m->peer('b', app => $B);

# the guest agent's place taken by an echo backend that shows headers
my $agent = $t->port('agent-echo');
$t->echo_backend(port => $agent, name => 'agent');

$m->start(a => $A, node => {
    edit => sub {
        s{(server_name\s+_;)}
         {$1\n    underscores_in_headers on;\n    ignore_invalid_headers off;};
        s{proxy_pass(\s+)http://unix:[^;]+;}
         {proxy_pass${1}http://127.0.0.1:$agent;};
    },
});

sub headers_of {
    my ($r) = @_;
    my $j = json_body($r) or return {};
    return $j->{headers} // {};
}

# names a CGI backend would read as one of ours
sub ours {
    my ($r) = @_;
    return join ',', sort grep { (my $f = $_) =~ tr/_/-/;
        $f =~ /^x-dstack-(target-|app-id)/ } keys %{headers_of($r)};
}

# without a target: to the agent, every alias stripped

my $r = $m->request('GET', '/info', headers => "x_dstack_app_id: $C\r\n"
    . "X-Dstack-App-Id: $C\r\nx_dstack_target_extra: y\r\n");
is(json_body($r)->{backend} // '', 'agent', 'no target: to the agent');
is(ours($r), '', 'no target: aliases stripped');

# an underscore alias is the target header

$r = $m->request('GET', '/x', headers => "x_dstack_target_app: $B\r\n"
    . "X_DSTACK_APP_ID: $C\r\n");
is(json_body($r)->{backend} // '', 'b', 'x_dstack_target_app routes');
is(ours($r), 'x-dstack-app-id', 'routed: only the real identity header');
is_deeply(headers_of($r)->{'x-dstack-app-id'}, [$A], 'routed: A\'s id');

$r = $m->request('GET', '/x', headers => "x-dstack-target_app: $B\r\n"
    . "x_dstack_target_port: 443\r\n");
is(json_body($r)->{backend} // '', 'b', 'mixed spelling routes too');

# two spellings of one field: ambiguous

$r = $m->request('GET', '/x', app => $B,
    headers => "x_dstack_target_app: $C\r\n");
is($r->{status}, 400, 'target-app twice in two spellings: 400');
like(json_body($r)->{error} // '', qr/^BAD_TARGET: more than one/,
    '400 says why');

$r = $m->request('GET', '/x', app => $B, port => 443,
    headers => "X_Dstack_Target_Port: 444\r\n");
is($r->{status}, 400, 'target-port twice in two spellings: 400');

# names that cannot be classified

for my $name ('X-Dstack-Target-App.', 'X-Dstack-App-Id.',
    'x.dstack.target.app')
{
    $r = $m->request('GET', '/x', app => $B, headers => "$name: $C\r\n");
    is($r->{status}, 400, "refused: '$name'");
}

like((json_body($r) // {})->{error} // '',
    qr/^BAD_TARGET: a header name resembles/, 'refusal says why');
