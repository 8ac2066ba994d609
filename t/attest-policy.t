#!/usr/bin/perl

# Runs the C unit tests of the attestation requirements that the nginx
# modules apply (ratls/dstack_attest_policy.c): verdicts on made-up
# summaries, then a simulator leaf and a leaf without attestation.

use strict;
use warnings;

use lib 't/lib';
use Test::Dstack;

my $t = Test::Dstack->new()->has(qw(sim fixtures));
my $bin = $t->bin('attest-policy-unit');
$t->skip_all("attest-policy-unit not built ($bin); run make bins")
    unless -x $bin;

my $quote = $t->fixtures . '/tdx/quote-v4.bin';
$t->skip_all("no $quote") unless -f $quote;

my $A = '5bb4ff9a3837357f19dc176407a5709c62eb6c56';
my $ra = $t->sim_cert('ra', app_id => $A,
    variant => ['--quote-template', $quote]);
my $plain = $t->sim_cert('plain', app_id => $A);

my @args = ($ra->{chain}, $plain->{chain},
    $t->fixtures . '/intel/sgx-root-ca.pem',
    $t->fixtures . '/tdx/quote-v4.collateral.json');

# the binary prints the plan; the harness adds no test of its own here
system($bin, @args);
exit($? >> 8);
