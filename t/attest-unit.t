#!/usr/bin/perl

# Runs the C unit tests of the attestation library (ratls/dstack_attest*.c),
# which print TAP themselves, against the fixtures in ../shared/fixtures
# (or $DSTACK_FIXTURES).

use strict;
use warnings;

use FindBin;

my $root_dir = "$FindBin::Bin/..";
my $bin = ($ENV{DSTACK_BUILD} // "$root_dir/build") . '/bin/attest-unit';

$ENV{DSTACK_FIXTURES} //= "$root_dir/../shared/fixtures";

if (!-x $bin) {
    print "1..0 # SKIP attest-unit not built ($bin); run make bins\n";
    exit 0;
}

if (!-d $ENV{DSTACK_FIXTURES}) {
    print "1..0 # SKIP fixtures not found in $ENV{DSTACK_FIXTURES}\n";
    exit 0;
}

exec($bin) or die "exec $bin: $!";
