#!/usr/bin/perl

# The suite's own guarantees: a test file whose requirement is missing
# skips with the reason (recorded for make test's summary) but fails when
# CI is set, inside SKIP blocks too; and a bare `make` in a clean tree
# builds everything (`all`), not the first rule of an included build.mk.
# And the harness's one chunked-body reader (Test::Dstack::dechunk).

use strict;
use warnings;

use lib 't/lib';
use File::Temp qw(tempdir);
use Test::More;
use Test::Dstack;

my $repo = $Test::Dstack::REPO;

Test::Dstack->skip_all('make not installed')
    unless Test::Dstack::_which('make');

plan(tests => 18);

my $d = tempdir('dstack-harness-XXXXXXXX', TMPDIR => 1, CLEANUP => 1);
mkdir "$d/build";

open my $fh, '>', "$d/t-skip.t" or die;
print $fh <<"EOT";
use lib '$repo/t/lib';
use Test::Dstack;
Test::Dstack->skip_all('needs the frobnicator');
EOT
close $fh;

open $fh, '>', "$d/t-block.t" or die;
print $fh <<"EOT";
use lib '$repo/t/lib';
use Test::More tests => 2;
use Test::Dstack;
ok(1, 'runs');
SKIP: {
    Test::Dstack::skip_missing('no frobnicator here', 1);
    ok(1, 'needs the frobnicator');
}
EOT
close $fh;

# (exit code, output) of one file under perl with CI as given
sub run_file {
    my ($file, $ci) = @_;
    local $ENV{DSTACK_BUILD} = "$d/build";
    local $ENV{CI} = $ci;
    delete $ENV{CI} unless defined $ci;
    my $out = `$^X $d/$file 2>&1`;
    return ($? >> 8, $out);
}

my ($rc, $out) = run_file('t-skip.t', undef);
is($rc, 0, 'no CI: a missing requirement skips');
like($out, qr/^1\.\.0 # SKIP needs the frobnicator/m, 'no CI: says why');
like(slurp("$d/build/test-skips.log"), qr/t-skip\.t: needs the frobnicator/,
    'no CI: the reason is recorded for the summary');

for my $ci (qw(true 1)) {
    ($rc, $out) = run_file('t-skip.t', $ci);
    isnt($rc, 0, "CI=$ci: a missing requirement fails the file");
}
like($out, qr/^not ok 1 - .*needs the frobnicator/m,
    'CI: the failure says why');

($rc, $out) = run_file('t-skip.t', 'false');
is($rc, 0, 'CI=false: skips');

($rc, $out) = run_file('t-block.t', undef);
is($rc, 0, 'no CI: SKIP block skipped');
like($out, qr/^ok 2 # skip no frobnicator here/m, 'no CI: skip says why');

($rc, $out) = run_file('t-block.t', 'true');
like($out, qr/^not ok 2 - .*no frobnicator here/m,
    'CI: a missing requirement in a SKIP block fails');

# a bare make in a clean tree (the repository's files, no build/)
my $tree = "$d/tree";
mkdir $tree;
system("cd $repo && git ls-files -z | xargs -0 tar -cf - "
    . "| tar -C $tree -xf -") == 0 or die "copy the tree\n";
my $dry = `make -C $tree -n 2>&1`;
like($dry, qr{cp -r /usr/share/nginx/src }, 'bare make: builds the modules');
unlike($dry, qr/-fsanitize=fuzzer/, 'bare make: not the fuzzer');

# the chunked reader: whole, byte by byte, cut short

my $wire = "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-T: v\r\n\r\nNEXT";
my $raw = $wire;
my ($data, $end) = Test::Dstack::dechunk(\$raw);
ok($data eq 'abcdefg' && $end, 'dechunk: data and the end, trailers read');
is($raw, 'NEXT', 'dechunk: what follows the body stays');

my ($got, $ends, $buf) = ('', '', '');
for my $i (0 .. length($wire) - 5) {
    $buf .= substr($wire, $i, 1);
    ($data, $end) = Test::Dstack::dechunk(\$buf);
    $got .= $data;
    $ends .= $end ? $i : '';
}
ok($got eq 'abcdefg' && $ends eq length($wire) - 5,
    'dechunk: byte by byte, the same data, the end at the last byte');

$raw = "5\r\nab";
($data, $end) = Test::Dstack::dechunk(\$raw);
ok($data eq '' && !$end && $raw eq "5\r\nab",
    'dechunk: a chunk not yet whole waits');
is(Test::Dstack::dechunk(\$raw, 1), 'ab', 'dechunk: cut short, what it holds');

is(Test::Dstack::parse_response("HTTP/1.1 200 OK\r\n"
    . "Transfer-Encoding: chunked\r\n\r\n$wire")->{body}, 'abcdefg',
    'parse_response decodes chunked bodies');

sub slurp {
    my ($f) = @_;
    open my $h, '<', $f or return '';
    local $/;
    return <$h>;
}
