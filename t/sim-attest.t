#!/usr/bin/perl

# dstack-sim --quote-template: leaves carry a simulated .8 attestation
# whose binding and RTMR3 replay verify and whose Intel signature cannot.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use JSON::PP;
use Test::Dstack;

my $t = Test::Dstack->new()->has(qw(sim fixtures));
my $verify = $t->bin('dstack-verify');
$t->skip_all('dstack-verify not built') unless -x $verify;
my $quote = $t->fixtures . '/tdx/quote-v4.bin';
my $root = $t->fixtures . '/intel/sgx-root-ca.pem';
$t->skip_all("no $quote") unless -f $quote;
$t->plan(12);

my $app = '5bb4ff9a3837357f19dc176407a5709c62eb6c56';
my $c = $t->sim_cert('ra', app_id => $app,
    variant => ['--quote-template', $quote]);

sub verify {
    my (@args) = @_;
    my $out = `$verify --json --root $root @args 2>/dev/null`;
    return ($? >> 8, eval { decode_json($out) } || {});
}

my ($rc, $j) = verify($c->{chain});
is($j->{checks}{binding}{status}, 'pass', 'binding passes');
is($j->{checks}{rtmr3}{status}, 'pass', 'rtmr3 replay passes');
is($j->{checks}{quote_signature}{status}, 'fail',
    'no Intel signature for a simulated key');
is($j->{measurements}{app_id} // $j->{app_id}, $app, 'app id event');
isnt($rc, 0, 'full verification fails');

($rc, $j) = verify('--require', 'bind', $c->{chain});
is($rc, 0, 'bind mode passes');

# the binding is to this leaf's key: another leaf's attestation fails
my $other = $t->sim_cert('ra2', app_id => $app,
    variant => ['--quote-template', $quote]);
my @a = $t->read_file($c->{chain}) =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n)/sg;
ok(@a >= 2, 'chain parsed');
($rc, $j) = verify('--require', 'bind', $other->{chain});
is($rc, 0, 'second leaf binds to its own key');

# the simulator's server adds it for usage_ra_tls
my $sock = $t->run_sim(app_id => $app, args => ['--quote-template', $quote]);
my $resp = `curl -s --unix-socket $sock -H 'Content-Type: application/json' -d '{"subject":"localhost","usage_ra_tls":true,"usage_server_auth":true}' http://localhost/GetTlsKey`;
my $k = eval { decode_json($resp) } || {};
ok(@{$k->{certificate_chain} || []} == 3, 'GetTlsKey chain');
$t->write_file('served.crt', join '', @{$k->{certificate_chain} || []});
($rc, $j) = verify('--require', 'bind', $t->testdir . '/served.crt');
is($rc, 0, 'served leaf binds');

$resp = `curl -s --unix-socket $sock -H 'Content-Type: application/json' -d '{"subject":"localhost","usage_ra_tls":false}' http://localhost/GetTlsKey`;
$k = eval { decode_json($resp) } || {};
$t->write_file('plain.crt', join '', @{$k->{certificate_chain} || []});
($rc, $j) = verify('--require', 'bind', $t->testdir . '/plain.crt');
isnt($rc, 0, 'no attestation without usage_ra_tls');
ok(!$j->{ok}, 'nothing verified without .8');
