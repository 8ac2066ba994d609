#!/usr/bin/perl

# Tests for dstack-verify (wgctl verify): offline verification of the
# fixture quote with its collateral, the V0 attestation blob, a simulated
# RA-TLS certificate, hex input, JSON output, exit codes and bad input.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Dstack;
use File::Temp qw(tempdir);
use JSON::PP;

my $root_dir = "$FindBin::Bin/..";
my $build = $ENV{DSTACK_BUILD} // "$root_dir/build";
my $bin = "$build/bin/dstack-verify";
my $unit = "$build/bin/attest-unit";
my $fx = $ENV{DSTACK_FIXTURES} // "$root_dir/t/fixtures";

Test::Dstack->skip_all("dstack-verify not built ($bin); run make bins")
    unless -x $bin && -x $unit;
Test::Dstack->skip_all("fixtures not found in $fx")
    unless -f "$fx/tdx/quote-v4.bin" && -f "$fx/intel/sgx-root-ca.pem";

plan(tests => 34);

$ENV{DSTACK_FIXTURES} = $fx;

my $dir = tempdir('dstack-verify-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $quote = "$fx/tdx/quote-v4.bin";
my $blob = "$fx/tdx/attestation-v0.bin";
my $coll = "$fx/tdx/quote-v4.collateral.json";
my @root = ('--root', "$fx/intel/sgx-root-ca.pem");
my $APP = '5bb4ff9a3837357f19dc176407a5709c62eb6c56';
my $SIM_APP = '00112233445566778899aabbccddeeff00112233';

sub run {
    my (@args) = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";

    if ($pid == 0) {
        open(STDERR, '>', "$dir/stderr") or die;
        exec($bin, @args) or exit 127;
    }

    local $/;
    my $out = <$fh> // '';
    close($fh);

    open(my $e, '<', "$dir/stderr") or die;
    my $err = <$e> // '';

    return ($? >> 8, $out, $err);
}

sub json_of {
    my ($out) = @_;
    my $j = eval { decode_json($out) };
    return $j // {};
}

###############################################################################

# the real quote with its collateral, inside the collateral's validity

my ($rc, $out) = run($quote, @root, '--collateral', $coll,
    '--now', '2025-07-01T00:00:00Z');
is($rc, 0, 'quote with collateral: exit 0');
like($out, qr/^quote_signature\s+pass/m, 'quote signature passes');
like($out, qr/^qe_report\s+pass/m, 'QE report passes');
like($out, qr/^pck_chain\s+pass/m, 'PCK chain passes');
like($out, qr/^tcb\s+pass\s+TCB status UpToDate/m, 'TCB UpToDate');
like($out, qr/^binding\s+skipped/m, 'bare quote: binding skipped');
like($out, qr/^mrtd\s+91eb2b44d141d4ec/m, 'mrtd shown');

($rc, $out) = run($quote, @root, '--collateral', $coll,
    '--now', '2025-07-01T00:00:00Z', '--json');
my $j = json_of($out);
is($rc, 0, 'json: exit 0');
ok($j->{ok}, 'json: ok is true');
is($j->{measurements}{tcb_status}, 'UpToDate', 'json: tcb_status');
is($j->{checks}{quote_signature}{status}, 'pass', 'json: check status');
is(length($j->{measurements}{rtmr0} // ''), 96, 'json: rtmr0 is hex');

# the collateral has expired by today

($rc, $out) = run($quote, @root, '--collateral', $coll);
is($rc, 1, 'expired collateral: exit 1');
like($out, qr/^tcb\s+fail\s+collateral has expired/m, 'expired reason');

($rc, $out) = run($quote, @root, '--collateral', $coll,
    '--now', '2025-07-01T00:00:00Z', '--tcb-accept', 'OutOfDate');
is($rc, 1, 'UpToDate not in --tcb-accept: exit 1');

# the V0 attestation blob

($rc, $out) = run($blob, @root, '--json');
$j = json_of($out);
is($rc, 0, 'V0 blob: exit 0');
is($j->{format}, 'attestation-v0', 'V0 format');
is($j->{checks}{rtmr3}{status}, 'pass', 'RTMR3 replays');
is($j->{measurements}{app_id}, $APP, 'app-id from the event log');
is(scalar @{$j->{events} // []}, 9, '9 runtime events listed');

# hex input

open(my $fh, '<:raw', $quote) or die;
my $raw = do { local $/; <$fh> };
close($fh);
open($fh, '>', "$dir/quote.hex") or die;
print $fh unpack('H*', $raw), "\n";
close($fh);

($rc, $out) = run("$dir/quote.hex", @root);
is($rc, 0, 'hex quote: exit 0');
like($out, qr/\(quote\)/, 'hex quote recognised');

# with a 0x prefix, upper case and line breaks
open($fh, '>', "$dir/quote-0x.hex") or die;
print $fh '0X', join("\n  ", unpack('(A64)*', uc unpack('H*', $raw))), "\n";
close($fh);

($rc, $out) = run("$dir/quote-0x.hex", @root);
ok($rc == 0 && $out =~ /\(quote\)/, 'hex quote with 0x and line breaks');

# the text form lists the runtime events with their payloads in hex
($rc, $out) = run($blob, @root);
like($out, qr/^  app-id\s+$APP$/m, 'text: app-id event payload in hex');

# a certificate with a simulated attestation: binding passes, Intel fails

system($unit, '--sim-cert', "$dir/sim.pem") == 0 or die 'sim cert';

($rc, $out) = run("$dir/sim.pem", @root, '--json');
$j = json_of($out);
is($rc, 1, 'simulated cert, full: exit 1');
is($j->{checks}{binding}{status}, 'pass', 'simulated cert: binding');
is($j->{checks}{rtmr3}{status}, 'pass', 'simulated cert: replay');
is($j->{checks}{quote_signature}{status}, 'fail', 'simulated cert: sig');
is($j->{measurements}{app_id}, $SIM_APP, 'simulated cert: app-id');

($rc) = run("$dir/sim.pem", @root, '--require', 'bind');
is($rc, 0, 'simulated cert, --require bind: exit 0');

# another root

($rc, $out) = run($quote, '--root', "$dir/sim.pem");
like($out, qr/^pck_chain\s+fail/m, 'another root: PCK chain fails');

# bad input

open($fh, '>', "$dir/junk") or die;
print $fh "\x04\x00\x02\x00\x81\x00\x00\x00", "\x00" x 100;
close($fh);

my $err;
($rc, $out, $err) = run("$dir/junk", @root);
is($rc, 1, 'truncated quote: exit 1');
like($err, qr/truncated/, 'truncated quote: reason');

($rc, $out, $err) = run($quote, '--require', 'most');
like($err, qr/invalid --require "most"/, 'bad option value quoted');
