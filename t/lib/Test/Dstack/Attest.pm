package Test::Dstack::Attest;

# Certificates for the attestation tests: the simulator's RA-TLS leaves
# (a .8 attestation with a correct binding and RTMR3 replay), and leaves
# signed by a plain test CA carrying any .3/.8 bytes (another key's
# attestation, truncated or random payloads).
#
#   my $a = Test::Dstack::Attest->new($t);          # skips without fixtures
#   my $c = $a->ra_cert('a', app_id => $A);         # sim_cert + quote template
#   my $v = $a->verify_json($c);                    # dstack-verify --json
#   my $x = $a->attestation_ext($c);                # .8 payload of its leaf
#   my $g = $a->custom_cert('g', app_id => $A, attestation => $bytes);
#   $a->ca_bundle($c->{root})                       # KMS root + the test CA

use strict;
use warnings;

use JSON::PP;

sub new {
    my ($class, $t) = @_;

    my $quote = $t->fixtures . '/tdx/quote-v4.bin';
    $t->skip_all("fixtures not found at " . $t->fixtures) unless -f $quote;
    $t->skip_all('dstack-sim not built') unless -x $t->bin('dstack-sim');
    $t->skip_all('dstack-verify not built')
        unless -x $t->bin('dstack-verify');

    return bless { t => $t, quote => $quote, n => 0 }, $class;
}

sub quote { $_[0]{quote} }
sub root { $_[0]{t}->fixtures . '/intel/sgx-root-ca.pem' }
sub collateral { $_[0]{t}->fixtures . '/tdx/quote-v4.collateral.json' }

# a simulator leaf whose .8 verifies but for Intel's signature
sub ra_cert {
    my ($self, $name, %o) = @_;
    return $self->{t}->sim_cert($name, %o,
        variant => ['--quote-template', $self->{quote},
            @{$o{variant} || []}]);
}

sub verify_json {
    my ($self, $c, @args) = @_;
    my $bin = $self->{t}->bin('dstack-verify');
    my $root = $self->root;
    my $out = `$bin --json --root $root @args $c->{chain} 2>/dev/null`;
    return eval { decode_json($out) } || {};
}

# the leaf (first certificate) of a chain file, DER
sub leaf_der {
    my ($self, $c) = @_;
    my $pem = $self->{t}->read_file($c->{chain});
    my ($leaf) = $pem =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----)/s;
    my $d = $self->{t}->testdir;
    $self->{t}->write_file('leaf.tmp.pem', "$leaf\n");
    my $der = `openssl x509 -in $d/leaf.tmp.pem -outform DER`;
    die "openssl x509 failed\n" if $?;
    return $der;
}

# reads a DER length at $$pos, returns it and advances
sub _der_len {
    my ($der, $pos) = @_;
    my $b = ord substr($der, $$pos++, 1);
    return $b if $b < 0x80;
    my $n = $b & 0x7f;
    my $len = 0;
    $len = ($len << 8) | ord substr($der, $$pos++, 1) for 1 .. $n;
    return $len;
}

sub der_len {
    my ($n) = @_;
    return chr($n) if $n < 0x80;
    my $b = '';
    while ($n) { $b = chr($n & 0xff) . $b; $n >>= 8; }
    return chr(0x80 | length $b) . $b;
}

sub der_octets { "\x04" . der_len(length $_[0]) . $_[0] }

# the .8 payload of a chain's leaf (inside both OCTET STRINGs)
sub attestation_ext {
    my ($self, $c) = @_;
    my $der = $self->leaf_der($c);
    my $oid = "\x06\x0a\x2b\x06\x01\x04\x01\x83\xe7\x3d\x01\x08";
    my $at = index($der, $oid);
    die "no .8 in $c->{chain}\n" if $at < 0;
    my $pos = $at + length $oid;
    $pos += 3 if substr($der, $pos, 1) eq "\x01";     # critical flag
    die "unexpected .8 encoding\n" unless substr($der, $pos++, 1) eq "\x04";
    my $outer = _der_len($der, \$pos);
    die "unexpected .8 wrapping\n" unless substr($der, $pos++, 1) eq "\x04";
    my $inner = _der_len($der, \$pos);
    return substr($der, $pos, $inner);
}

sub test_ca {
    my ($self) = @_;
    return $self->{ca} //= $self->{t}->openssl_ca('attest-ca');
}

# a leaf signed by the test CA: app_id => HEX (.3), attestation => the .8
# payload (wrapped twice), raw8 => .8's extnValue content as is
sub custom_cert {
    my ($self, $name, %o) = @_;
    my $ext = '';
    $ext .= '1.3.6.1.4.1.62397.1.3=DER:' . unpack('H*',
        der_octets(pack('H*', $o{app_id}))) . "\n" if $o{app_id};
    $ext .= '1.3.6.1.4.1.62397.1.8=DER:' . unpack('H*',
        der_octets($o{attestation})) . "\n" if defined $o{attestation};
    $ext .= '1.3.6.1.4.1.62397.1.8=DER:' . unpack('H*', $o{raw8}) . "\n"
        if defined $o{raw8};
    return $self->{t}->openssl_cert($name, $self->test_ca, ext => $ext);
}

# one CA file with the KMS root and the test CA
sub ca_bundle {
    my ($self, $kms_root) = @_;
    my $t = $self->{t};
    return $t->write_file('attest-clients.pem', $t->read_file($kms_root)
        . $t->read_file($self->test_ca->{chain}));
}

1;
