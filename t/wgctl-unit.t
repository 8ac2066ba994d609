#!/usr/bin/perl

# Runs the C unit tests of wgctl's device layer (wgctl/test_*.c), which
# print TAP themselves: keys, configuration files, diffing, the hosts
# block, the UAPI text protocol and netlink message splitting.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Dstack;

my $root_dir = "$FindBin::Bin/..";
my $bin = ($ENV{DSTACK_BUILD} // "$root_dir/build") . '/bin/wgctl-unit';

Test::Dstack->skip_all("wgctl-unit not built ($bin); run make bins")
    if !-x $bin;

exec($bin) or die "exec $bin: $!";
