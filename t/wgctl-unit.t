#!/usr/bin/perl

# Runs the C unit tests of wgctl's device layer (wgctl/test_*.c), which
# print TAP themselves: keys, configuration files, diffing, the hosts
# block, the UAPI text protocol and netlink message splitting.

use strict;
use warnings;

use FindBin;

my $root_dir = "$FindBin::Bin/..";
my $bin = ($ENV{DSTACK_BUILD} // "$root_dir/build") . '/bin/wgctl-unit';

if (!-x $bin) {
    print "1..0 # SKIP wgctl-unit not built ($bin); run make bins\n";
    exit 0;
}

exec($bin) or die "exec $bin: $!";
