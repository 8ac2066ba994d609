#!/usr/bin/perl

# Runs the C unit tests of the attestation library (ratls/dstack_attest*.c),
# which print TAP themselves, against the fixtures in t/fixtures (or
# $DSTACK_FIXTURES).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Dstack;

my $root_dir = "$FindBin::Bin/..";
my $bin = ($ENV{DSTACK_BUILD} // "$root_dir/build") . '/bin/attest-unit';

$ENV{DSTACK_FIXTURES} //= "$root_dir/t/fixtures";

Test::Dstack->skip_all("attest-unit not built ($bin); run make bins")
    if !-x $bin;

Test::Dstack->skip_all("fixtures not found in $ENV{DSTACK_FIXTURES}")
    if !-d $ENV{DSTACK_FIXTURES};

exec($bin) or die "exec $bin: $!";
