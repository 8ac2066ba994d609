#!/usr/bin/perl

# ngx_dstack_vpc_api_module: the answers' fields against the table in
# docs/api.md ("Response fields"), etcd's hostname_with_port (issue 11,
# item 8), and instance squatting through updates (item 7).

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack;
use Test::Dstack::Api;

my $t = Test::Dstack->new()->has(qw(auth api sim redis))->plan(18);

my $api = Test::Dstack::Api->new($t);
my $r = $t->run_redis();

$t->write_file_expand('nginx.conf', $api->conf(redis => $r));
$t->run();

# the documented fields: answer => {path => 1}
my %doc;
my $docs = $t->read_file(Test::Dstack->repo . '/docs/api.md');
for my $line (split /\n/, $docs) {
    my ($answer, $field) = $line
        =~ /^\| ([a-z ]+) \| `([^`]+)` \| (?:yes|no) \|$/ or next;
    $doc{$answer}{$field} = 1;
}

# every path of a JSON value, arrays as []
sub paths {
    my ($v, $prefix, $out) = @_;
    $out //= {};
    if (ref $v eq 'HASH') {
        for my $k (keys %$v) {
            my $p = defined $prefix ? "$prefix.$k" : $k;
            if (ref $v->{$k}) {
                paths($v->{$k}, $p, $out);
            } else {
                $out->{$p} = 1;
            }
        }
    } elsif (ref $v eq 'ARRAY') {
        paths($_, "${prefix}[]", $out) for @$v;
        $out->{"${prefix}[]"} = 1 unless @$v;
    }
    return $out;
}

sub same_fields {
    my ($res, $answer) = @_;
    is(join(' ', sort keys %{paths($res->{json})}),
        join(' ', sort keys %{$doc{$answer} || {}}),
        "fields of $answer as documented");
}

my $IA = 'a1' x 20;
my $IB = 'b2' x 20;

# 7. instance squatting: an update does not create an instance's record

my $res = $api->post("/api/nodes/update?uuid=$IB&node_type=etcd"
    . "&hostname=squat", '', as => 'a');
is($res->{status}, 403, 'update may not create a record named by an '
    . 'instance id');
is($res->{json}{error}, 'an instance id names a node only after '
    . '/api/register', '403 says why');

$res = $api->post('/api/nodes/update?uuid=' . uc($IB) . '&node_type=etcd',
    '', as => 'a');
is($res->{status}, 403, 'upper case instance id as well');

$res = $api->get("/api/register?instance_id=$IB&node_name=b", as => 'c');
is($res->{status}, 200, 'the instance\'s app registers it');
same_fields($res, 'register');

$res = $api->post("/api/nodes/update?uuid=$IB&node_type=etcd"
    . "&hostname=etcd-1&tailscale_ip=100.64.0.7", '', as => 'c');
is($res->{status}, 200, 'its owner updates it');
same_fields($res, 'update');

$res = $api->post("/api/nodes/update?uuid=$IB&hostname=squat", '',
    as => 'a');
is($res->{status}, 403, 'another app still may not');

$res = $api->post('/api/nodes/update?uuid=m1&node_type=mongodb'
    . '&hostname=mongo-1', '', as => 'a');
is($res->{json}{status}, 'created', 'other uuids are created by updates');

$res = $api->post("/api/nodes/update?uuid=${IA}0&node_type=mongodb"
    . '&hostname=mongo-2', '', as => 'a');
is($res->{json}{status}, 'created', '41 hex digits are not an instance id');

# 8. discover: etcd's hostname_with_port, and every answer's fields

$res = $api->get('/api/discover/etcd', as => 'a');
is($res->{json}{nodes}[0]{hostname_with_port}, 'etcd-1:2379',
    'etcd: hostname_with_port');
same_fields($res, 'discover etcd');

$res = $api->get('/api/discover/mongodb', as => 'a');
same_fields($res, 'discover');
ok(!exists $res->{json}{nodes}[0]{hostname_with_port},
    'not for other types');

same_fields($api->get('/api/nodes', as => 'a'), 'nodes');
same_fields($api->get('/health'), 'health');
same_fields($api->get('/api/discover/none', as => 'a'), 'error');

ok(keys %doc >= 7, 'docs/api.md lists the answers');
