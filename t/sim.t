#!/usr/bin/perl

# Tests for dstack-sim, the guest-agent simulator: the HTTP API on a Unix
# socket, the exact DER of dstack's certificate extensions, the shared KMS
# root, the no-kms profile, and every mkcert variant.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Dstack;
use File::Temp qw(tempdir);
use IO::Socket::UNIX;
use JSON::PP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep);

my $root_dir = "$FindBin::Bin/..";
my $bin = ($ENV{DSTACK_BUILD} // "$root_dir/build") . '/bin/dstack-sim';

Test::Dstack->skip_all("dstack-sim not built ($bin); run make bins") unless -x $bin;
Test::Dstack->skip_all('openssl command line tool not found')
    unless system('openssl version >/dev/null 2>&1') == 0;

plan(tests => 108);

my $APP = '5bb4ff9a3837357f19dc176407a5709c62eb6c56';
my $APP2 = 'aa' x 20;
my $INST = '00112233445566778899aabbccddeeff00112233';
my $OID_APP_ID = '060a2b0601040183e73d0103';
my $OID_USAGE = '060a2b0601040183e73d0104';

my $dir = tempdir('dstack-sim-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my @pids;

END {
    kill 'TERM', @pids if @pids;
    waitpid($_, 0) for @pids;
}

$SIG{PIPE} = 'IGNORE';

###############################################################################

my $sock = "$dir/a.sock";
my $state = "$dir/state";
my $pid = start_sim($sock, "$dir/a.log", '--state-dir', $state,
    '--app-id', $APP, '--instance-id', $INST, '--pidfile', "$dir/a.pid");

ok(-f "$dir/a.pid", 'pidfile written');

# GetTlsKey by POST

my $r = req($sock, 'POST', '/GetTlsKey', encode_json({
    subject => 'node-a', alt_names => ['a.example', '127.0.0.1'],
    usage_ra_tls => JSON::PP::true, usage_server_auth => JSON::PP::true }));

is($r->{status}, 200, 'GetTlsKey POST');
is($r->{headers}{'content-type'}, 'application/json', 'content type');

my @chain = @{$r->{json}{certificate_chain} // []};
is(scalar @chain, 3, 'kms chain has 3 certificates');
like($r->{json}{key}, qr/^-----BEGIN PRIVATE KEY-----\n/, 'PKCS#8 key');

my $leaf = put("$dir/leaf.pem", $chain[0]);
my $appca = put("$dir/appca.pem", $chain[1]);
my $kms = put("$dir/kms.pem", $chain[2]);
my $key = put("$dir/leaf.key", $r->{json}{key});

is($chain[2], slurp("$state/root.crt"), 'chain ends with the stored root');
like(ossl("verify -CAfile $state/root.crt -untrusted $appca $leaf"),
    qr/: OK$/m, 'chain verifies to the root');
is(ossl("pkey -in $key -pubout"), ossl("x509 -in $leaf -noout -pubkey"),
    'key matches the leaf');

my $text = ossl("x509 -in $leaf -noout -text");
like($text, qr/Subject: CN = node-a$/m, 'leaf subject');
like($text, qr/DNS:a\.example, IP Address:127\.0\.0\.1/, 'leaf alt names');
like($text, qr/Extended Key Usage: \n\s+TLS Web Server Authentication\n/,
    'server auth only');
like($text, qr/CA:FALSE/, 'leaf is not a CA');
like($text, qr/ASN1 OID: prime256v1/, 'P-256 key');
like($text, qr/Signature Algorithm: ecdsa-with-SHA256/, 'ECDSA SHA-256');

my $der = der_hex($leaf);
is(count($der, app_id_ext($APP)), 1, 'app_id extension is the 38-byte form');
is(count($der, $OID_APP_ID), 1, 'one app_id extension');
is(length(app_id_ext($APP)) / 2, 38, 'expected extension is 38 bytes');
is(count($der, ext($OID_USAGE, '040a' . unpack('H*', 'app:custom'))), 1,
    'leaf usage app:custom');

# the nested OCTET STRINGs as asn1parse shows them

my @asn = split /\n/, ossl("asn1parse -in $leaf");
my ($i) = grep { $asn[$_] =~ /:1\.3\.6\.1\.4\.1\.62397\.1\.3\s*$/ } 0 .. $#asn;
ok(defined $i, 'asn1parse shows the app_id OID');
my ($off) = ($asn[$i + 1] // '') =~ /^\s*(\d+):.*OCTET STRING/;
ok(defined $off, 'extnValue is an OCTET STRING');
my $inner = ossl("asn1parse -in $leaf -strparse $off");
my $hex = uc $APP;
like($inner,
    qr/^\s*0:d=0\s+hl=2 l=\s*20 prim: OCTET STRING\s+\[HEX DUMP\]:$hex\n\z/,
    'extnValue holds one OCTET STRING with the 20-byte app id');

$der = der_hex($appca);
is(count($der, app_id_ext($APP)), 1, 'App CA carries the app id');
is(count($der, ext($OID_USAGE, '0406' . unpack('H*', 'app:ca'))), 1,
    'App CA usage app:ca');
like(ossl("x509 -in $appca -noout -text"), qr/CA:TRUE, pathlen:0/,
    'App CA pathlen 0');
like(ossl("x509 -in $kms -noout -text"), qr/CA:TRUE/, 'root is a CA');

$r = req($sock, 'POST', '/GetTlsKey', '{}');
isnt($r->{json}{key}, slurp($key), 'a fresh key each call');
put("$dir/leaf2.pem", $r->{json}{certificate_chain}[0]);
$text = ossl("x509 -in $dir/leaf2.pem -noout -text");
like($text, qr/Subject: CN = localhost$/m, 'default subject');
like($text, qr/TLS Web Server Authentication, TLS Web Client Authentication/,
    'both usages when none asked');
unlike($text, qr/Subject Alternative Name/, 'no alt names when none asked');

# GetTlsKey by GET with query arguments

$r = req($sock, 'GET', '/GetTlsKey?subject=q%20x&usage_client_auth=true'
    . '&alt_names=a.test,b.test&alt_names=c.test');
is($r->{status}, 200, 'GetTlsKey GET');
put("$dir/leaf3.pem", $r->{json}{certificate_chain}[0]);
$text = ossl("x509 -in $dir/leaf3.pem -noout -text");
like($text, qr/Subject: CN = q x$/m, 'GET subject');
like($text, qr/DNS:a\.test, DNS:b\.test, DNS:c\.test/, 'GET alt names');
like($text, qr/Extended Key Usage: \n\s+TLS Web Client Authentication\n/,
    'GET client auth only');

# Info, GetQuote

for my $m ('POST', 'GET') {
    $r = req($sock, $m, '/Info', $m eq 'POST' ? '{}' : undef);
    is($r->{status}, 200, "Info $m");
    is($r->{json}{app_id}, $APP, "Info $m app_id");
    is($r->{json}{instance_id}, $INST, "Info $m instance_id");
}

like($r->{json}{compose_hash}, qr/^[0-9a-f]{64}$/, 'compose_hash hex');
like($r->{json}{device_id}, qr/^[0-9a-f]{64}$/, 'device_id hex');
like($r->{json}{os_image_hash}, qr/^[0-9a-f]{64}$/, 'os_image_hash hex');
ok(defined $r->{json}{app_name}, 'app_name');
like($r->{json}{key_provider_info}, qr/"name":"kms"/, 'key provider kms');

$r = req($sock, 'POST', '/GetQuote',
    encode_json({ report_data => 'ab' x 64 }));
is($r->{status}, 200, 'GetQuote');
my $q = pack('H*', $r->{json}{quote} // '');
ok(length($q) >= 632, 'quote length');
is(unpack('v', $q), 4, 'quote version 4');
is(unpack('H*', substr($q, 568, 64)), 'ab' x 64, 'report_data at 568');
ok($r->{json}{simulated}, 'quote marked simulated');

$r = req($sock, 'GET', '/GetQuote?report_data=0102');
is(unpack('H*', substr(pack('H*', $r->{json}{quote}), 568, 3)), '010200',
    'GET report_data, zero padded');

# errors

my @errors = (
    [ 'bad JSON', 'POST', '/GetTlsKey', '{"subject":', 400 ],
    [ 'not an object', 'POST', '/GetTlsKey', '[1]', 400 ],
    [ 'wrong type', 'POST', '/GetTlsKey', '{"subject":5}', 400 ],
    [ 'wrong flag type', 'POST', '/GetTlsKey',
      '{"usage_server_auth":"yes"}', 400 ],
    [ 'long subject', 'POST', '/GetTlsKey',
      encode_json({ subject => 'x' x 256 }), 400 ],
    [ 'many alt names', 'POST', '/GetTlsKey',
      encode_json({ alt_names => [ map { "n$_" } 1 .. 33 ] }), 400 ],
    [ 'bad report_data', 'POST', '/GetQuote', '{"report_data":"zz"}', 400 ],
    [ 'long report_data', 'POST', '/GetQuote',
      encode_json({ report_data => '00' x 65 }), 400 ],
    [ 'unknown path', 'POST', '/Nope', '{}', 404 ],
    [ 'wrong method', 'DELETE', '/Info', undef, 405 ],
    [ 'body too large', 'POST', '/GetTlsKey', 'x' x 70000, 413 ],
);

for my $e (@errors) {
    my ($name, $m, $path, $body, $status) = @$e;
    $r = req($sock, $m, $path, $body);
    ok(($r->{status} // 0) == $status
       && ($r->{headers}{'content-type'} // '') eq 'application/json'
       && defined $r->{json}{error}, "$name: $status with JSON error");
}

ok(req($sock, 'POST', '/GetTlsKey',
    encode_json({ subject => 'x' x 255 }))->{status} == 200,
    'subject of 255 bytes');

$r = raw($sock, "GARBAGE\r\n\r\n");
like($r, qr{^HTTP/1\.1 400 }, 'bad request line');
$r = raw($sock, "GET /Info HTTP/1.1\r\nX: " . ('a' x 9000) . "\r\n\r\n");
like($r, qr{^HTTP/1\.1 431 }, 'header too large');

# keep-alive, pipelining, chunked bodies

$r = raw($sock, "POST /Info HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
    . "GET /Info HTTP/1.1\r\nConnection: close\r\n\r\n");
is(() = $r =~ m{HTTP/1\.1 200 }g, 2, 'two pipelined requests answered');

$r = raw($sock, "POST /GetQuote HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
    . "Connection: close\r\n\r\n5\r\n{\"rep\r\n"
    . "13\r\nort_data\":\"0a0b0c\"}\r\n0\r\n\r\n");
like($r, qr/"report_data":"0a0b0c0{122}"/, 'chunked body');

$r = raw($sock, "POST /Info HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    . "8000\r\n" . (' ' x 32768) . "\r\n8001\r\n" . (' ' x 32769)
    . "\r\n0\r\n\r\n");
like($r, qr{^HTTP/1\.1 413 }, 'chunked body too large');

{
    my $s = IO::Socket::UNIX->new(Peer => $sock) or die "connect: $!";
    print $s "GET /Info HTTP/1.1\r\n\r\n";
    my $a = read_response($s);
    print $s "GET /Info HTTP/1.1\r\n\r\n";
    my $b = read_response($s);
    ok($a->{status} == 200 && $b->{status} == 200
       && $a->{headers}{connection} eq 'keep-alive',
       'keep-alive connection reused');
}

{
    my @idle = map { IO::Socket::UNIX->new(Peer => $sock) } 1 .. 50;
    print { $idle[$_] } "GET /In" for 0 .. 9;
    is(req($sock, 'GET', '/Info')->{status}, 200,
        'serves while many connections idle');
}

# the log: one line per request, no key material

my $log = slurp("$dir/a.log");
like($log, qr{POST /GetTlsKey 200}, 'request logged');
like($log, qr{DELETE /Info 405}, 'error logged');
unlike($log, qr/PRIVATE KEY|MIG[A-Za-z0-9+\/]{20}/, 'no key in the log');

kill 'TERM', $pid;
waitpid($pid, 0);
@pids = grep { $_ != $pid } @pids;
is($? >> 8, 0, 'clean exit on SIGTERM');
ok(!-e $sock && !-e "$dir/a.pid", 'socket and pidfile removed');

###############################################################################

# simulators and mkcert started together on one state dir share one root

my $shared = "$dir/shared";
my @socks = map { "$dir/s$_.sock" } 1 .. 2;
my @spids;

for my $n (0 .. 1) {
    push @spids, spawn("$dir/s$n.log", 'serve', '--socket', $socks[$n],
        '--state-dir', $shared, '--app-id', $n ? $APP2 : $APP,
        '--instance-id', $INST);
}

my @mpids = map { spawn("$dir/m$_.log", 'mkcert', '--state-dir', $shared,
    '--app-id', $APP, '--key-out', "$dir/m$_.key",
    '--chain-out', "$dir/m$_.pem") } 1 .. 3;

waitpid($_, 0) for @mpids;
wait_socket($_) for @socks;

my @roots = map {
    req($_, 'POST', '/GetTlsKey', '{}')->{json}{certificate_chain}[2] // ''
} @socks;
push @roots, map { (pem_list(slurp("$dir/m$_.pem")))[2] // '' } 1 .. 3;

ok(length $roots[0], 'shared root issued');
is((grep { $_ eq $roots[0] } @roots), 5, 'five issuers, one root');
is($roots[0], slurp("$shared/root.crt"), 'the root on disk');

$r = req($socks[1], 'POST', '/GetTlsKey', '{}');
put("$dir/b.pem", $r->{json}{certificate_chain}[0]);
put("$dir/bca.pem", $r->{json}{certificate_chain}[1]);
like(ossl("verify -CAfile $shared/root.crt -untrusted $dir/bca.pem "
    . "$dir/b.pem"), qr/: OK$/m, 'second app verifies to the shared root');
is(count(der_hex("$dir/b.pem"), app_id_ext($APP2)), 1, 'second app id');

like(`$bin root --state-dir $shared`, qr{^\Q$shared\E/root\.crt$},
    'root command prints the root path');

###############################################################################

# the no-kms profile

my $nsock = "$dir/n.sock";
start_sim($nsock, "$dir/n.log", '--state-dir', "$dir/nokms",
    '--app-id', $APP, '--instance-id', $INST, '--profile', 'no-kms');

$r = req($nsock, 'POST', '/GetTlsKey', '{}');
@chain = @{$r->{json}{certificate_chain} // []};
is(scalar @chain, 2, 'no-kms chain has 2 certificates');
put("$dir/nleaf.pem", $chain[0]);
put("$dir/nca.pem", $chain[1]);
like(ossl("verify -CAfile $dir/nca.pem $dir/nleaf.pem"), qr/: OK$/m,
    'no-kms leaf verifies to the local CA');
$der = der_hex("$dir/nleaf.pem");
is(count($der, $OID_APP_ID), 0, 'no-kms leaf has no app_id');
is(count($der, ext($OID_USAGE, '040a' . unpack('H*', 'app:custom'))), 1,
    'no-kms leaf usage');
ok(!-e "$dir/nokms/root.crt", 'no-kms makes no KMS root');

###############################################################################

# mkcert and its variants: the exact extnValue contents

my $id = $APP;
my @variants = (
    [ 'normal', [], [ app_id_ext($id) ], 1 ],
    [ 'len 19', [ '--app-id-len', 19 ],
      [ ext($OID_APP_ID, '0413' . substr($id, 0, 38)) ], 1 ],
    [ 'len 21', [ '--app-id-len', 21 ],
      [ ext($OID_APP_ID, '0415' . $id . '00') ], 1 ],
    [ 'wrap single', [ '--app-id-wrap', 'single' ],
      [ ext($OID_APP_ID, $id) ], 1 ],
    [ 'dup', [ '--app-id-dup' ], [ app_id_ext($id) ], 2 ],
    [ 'trailing', [ '--app-id-trailing' ],
      [ ext($OID_APP_ID, '0414' . $id . '0500') ], 1 ],
    [ 'utf8', [ '--app-id-type-utf8' ],
      [ ext($OID_APP_ID, '0c14' . $id) ], 1 ],
    [ 'no app id', [ '--no-app-id' ], [], 0 ],
    [ 'raw', [ '--app-id-raw', '0403AABBCC' ],
      [ ext($OID_APP_ID, '0403aabbcc') ], 1 ],
);

for my $v (@variants) {
    my ($name, $args, $exts, $oids) = @$v;
    my $ok = mkcert("$dir/v", @$args);
    my $d = $ok ? der_hex("$dir/v.pem") : '';
    my $chain_n = $ok ? scalar(pem_list(slurp("$dir/v.pem"))) : 0;
    ok($ok && count($d, $OID_APP_ID) == $oids
       && (grep { count($d, $_) == $oids } @$exts) == @$exts
       && count($d, ext($OID_USAGE, '040a' . unpack('H*', 'app:custom')))
          == 1
       && $chain_n == 3, "mkcert $name");
}

ok(mkcert("$dir/v"), 'mkcert');
is((stat "$dir/v.key")[2] & 07777, 0600, 'key file 0600');
like(ossl("verify -CAfile $state/root.crt -untrusted $appca $dir/v.pem"),
    qr/: OK$/m, 'mkcert leaf verifies');
is(ossl("pkey -in $dir/v.key -pubout"),
    ossl("x509 -in $dir/v.pem -noout -pubkey"), 'mkcert key matches');

mkcert("$dir/v", '--expired');
like(ossl("verify -CAfile $state/root.crt -untrusted $appca $dir/v.pem"),
    qr/certificate has expired/, 'expired');
mkcert("$dir/v", '--not-yet-valid');
like(ossl("verify -CAfile $state/root.crt -untrusted $appca $dir/v.pem"),
    qr/certificate is not yet valid/, 'not yet valid');

mkcert("$dir/v", '--usage', 'client', '--subject', 'c1');
$text = ossl("x509 -in $dir/v.pem -noout -text");
ok($text =~ /Subject: CN = c1$/m
   && $text =~ /Extended Key Usage: \n\s+TLS Web Client Authentication\n/,
   'mkcert client usage and subject');

ok(mkcert("$dir/v", '--profile', 'no-kms'), 'mkcert no-kms');
is(scalar(pem_list(slurp("$dir/v.pem"))), 2, 'mkcert no-kms chain');
is(count(der_hex("$dir/v.pem"), $OID_APP_ID), 0, 'mkcert no-kms no app_id');

{
    open my $saved, '>&', \*STDERR or die "dup: $!";
    open STDERR, '>', '/dev/null';
    my @refused = (mkcert("$dir/v", '--app-id-dup', '--app-id-trailing'),
        mkcert("$dir/v", '--app-id-len', 'x'));
    open STDERR, '>&', $saved;
    ok(!$refused[0], 'two variants refused');
    ok(!$refused[1], 'bad length refused');
}

# every simulator stops cleanly and no sanitizer complained

kill 'TERM', @pids;
my $clean = 1;
for my $p (@pids) {
    waitpid($p, 0);
    $clean = 0 if $? != 0;
}
@pids = ();
ok($clean, 'all simulators exit 0');

my @bad = grep { slurp($_) =~ /Sanitizer|runtime error/ } glob("$dir/*.log");
is("@bad", '', 'no sanitizer reports');

###############################################################################

sub start_sim {
    my ($path, $log, @args) = @_;
    my $p = spawn($log, 'serve', '--socket', $path, @args);
    wait_socket($path);
    return $p;
}

sub spawn {
    my ($log, @args) = @_;
    my $p = fork() // die "fork: $!";
    if ($p == 0) {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', $log;
        exec $bin, @args;
        exit 127;
    }
    push @pids, $p if $args[0] eq 'serve';
    return $p;
}

sub wait_socket {
    my ($path) = @_;
    for (1 .. 100) {
        my $s = IO::Socket::UNIX->new(Peer => $path);
        return 1 if $s;
        sleep 0.05;
    }
    die "dstack-sim did not start on $path\n";
}

sub req {
    my ($path, $method, $uri, $body) = @_;
    my $s = IO::Socket::UNIX->new(Peer => $path) or die "connect: $!";
    my $head = "$method $uri HTTP/1.1\r\nHost: localhost\r\n"
        . "Connection: close\r\n";
    $head .= "Content-Type: application/json\r\nContent-Length: "
        . length($body) . "\r\n" if defined $body;
    print $s $head, "\r\n";
    print $s $body if defined $body;
    return read_response($s);
}

sub read_response {
    my ($s) = @_;
    my ($buf, %h, $len) = ('');
    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm 10;
    while ($buf !~ /\r\n\r\n/) {
        sysread($s, $buf, 65536, length $buf) or last;
    }
    my ($head, $rest) = split /\r\n\r\n/, $buf, 2;
    $rest //= '';
    my ($status) = ($head // '') =~ m{^HTTP/1\.1 (\d{3}) };
    for (split /\r\n/, $head // '') {
        $h{lc $1} = $2 if /^([^:]+):\s*(.*)$/;
    }
    $len = $h{'content-length'} // 0;
    while (length($rest) < $len) {
        sysread($s, $rest, 65536, length $rest) or last;
    }
    alarm 0;
    my $b = substr($rest, 0, $len);
    return { status => $status, headers => \%h, body => $b,
        json => eval { decode_json($b) } // {} };
}

sub raw {
    my ($path, $data) = @_;
    my $s = IO::Socket::UNIX->new(Peer => $path) or die "connect: $!";
    print $s $data;
    my $buf = '';
    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm 10;
    1 while sysread($s, $buf, 65536, length $buf);
    alarm 0;
    return $buf;
}

sub mkcert {
    my ($out, @args) = @_;
    return system($bin, 'mkcert', '--state-dir', $state, '--app-id', $APP,
        '--key-out', "$out.key", '--chain-out', "$out.pem", @args) == 0;
}

sub ossl {
    my ($args) = @_;
    return `openssl $args 2>&1`;
}

# the leaf (first certificate) of a PEM file, as hex DER
sub der_hex {
    my ($file) = @_;
    my $first = (pem_list(slurp($file)))[0] // '';
    my $tmp = "$dir/first.pem";
    put($tmp, $first);
    return unpack('H*', `openssl x509 -in $tmp -outform DER`);
}

sub pem_list {
    my ($text) = @_;
    my @certs = $text
        =~ /(-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----\n)/sg;
    return @certs;
}

# a non-critical extension: SEQUENCE { OID, OCTET STRING { content } }
sub ext {
    my ($oid, $content) = @_;
    my $os = '04' . sprintf('%02x', length($content) / 2) . $content;
    return '30' . sprintf('%02x', (length($oid) + length($os)) / 2)
        . $oid . $os;
}

sub app_id_ext {
    my ($app) = @_;
    return '3024060a2b0601040183e73d01030416' . '0414' . $app;
}

sub count {
    my ($hay, $needle) = @_;
    my $n = 0;
    for (my $i = 0; ($i = index($hay, $needle, $i)) >= 0; $i += 2) {
        $n++ if $i % 2 == 0;
    }
    return $n;
}

sub put {
    my ($file, $data) = @_;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $data // '';
    close $fh;
    return $file;
}

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    return <$fh>;
}

###############################################################################
