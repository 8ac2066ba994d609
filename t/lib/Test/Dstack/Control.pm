package Test::Dstack::Control;

# Control-plane tests (docs/control-plane.md) against the real server:
# node keys, pre-auth keys from the REST API, register / map / logout
# requests as one of Test::Dstack::Api's client apps, and map streams read
# frame by frame.
#
#   my $cp = Test::Dstack::Control->new($t, $api);
#   my $key = $cp->node_key();
#   my $auth = $cp->auth_key('a', instance => 'aa01');
#   my $res = $cp->register('a', $key, auth => $auth, hostname => 'n1');
#   my $s = $cp->stream('a', $key);          # first frame read
#   my $f = $s->wait(sub { $_[0]{PeersChanged} }, 5);
#   $s->close();

use strict;
use warnings;

use IO::Select;
use IO::Socket::SSL;
use JSON::PP;
use Time::HiRes qw(time sleep);

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

sub new {
    my ($class, $t, $api, %o) = @_;
    return bless { t => $t, api => $api, port => $o{port} // 8443 }, $class;
}

# from /dev/urandom: rand() repeats itself in forked processes
sub random_hex {
    my ($bytes) = @_;
    open my $fh, '<:raw', '/dev/urandom' or die "/dev/urandom: $!\n";
    read($fh, my $buf, $bytes) == $bytes or die "/dev/urandom: short read\n";
    close $fh;
    return unpack('H*', $buf);
}

sub node_key { 'nodekey:' . random_hex(32) }

sub instance_id { random_hex(20) }

# a pre-auth key from GET /api/register, as the app
sub auth_key {
    my ($self, $as, %o) = @_;
    my $inst = $o{instance} // instance_id();
    my $name = $o{name} // 'node';
    my $res = $self->{api}->get("/api/register?instance_id=$inst"
        . "&node_name=$name", as => $as, port => $self->port());
    return $res->{json} ? $res->{json}{pre_auth_key} : undef;
}

sub port { $_[0]{t}->port($_[0]{port}) }

sub post {
    my ($self, $as, $path, $body, %o) = @_;
    $body = $JSON->encode($body) if ref $body;
    return $self->{api}->post($path, $body, as => $as,
        port => $o{port} // $self->port(), %o);
}

# register('a', $key, auth => ..., hostname => ..., instance => ...,
#          type => ..., ephemeral => 1, expiry => '...', extra => {...})
sub register {
    my ($self, $as, $key, %o) = @_;

    my %req = (Version => 1, NodeKey => $key,
        Hostinfo => { Hostname => $o{hostname} // 'node' });
    $req{Auth} = { AuthKey => $o{auth} } if defined $o{auth};
    $req{InstanceID} = $o{instance} if defined $o{instance};
    $req{NodeType} = $o{type} if defined $o{type};
    $req{Ephemeral} = $o{ephemeral} ? JSON::PP::true : JSON::PP::false
        if defined $o{ephemeral};
    $req{Expiry} = $o{expiry} if defined $o{expiry};
    %req = (%req, %{$o{extra} || {}});

    return $self->post($as, '/machine/register', \%req);
}

# a plain map (Stream:false)
sub poll {
    my ($self, $as, $key, %o) = @_;
    my %req = (Version => 1, NodeKey => $key, Stream => JSON::PP::false);
    $req{Endpoints} = $o{endpoints} if $o{endpoints};
    return $self->post($as, '/machine/map', \%req);
}

sub logout {
    my ($self, $as, $key) = @_;
    return $self->post($as, '/machine/logout', { NodeKey => $key });
}

# register a fresh node with a fresh key; returns (node key, response)
sub join_node {
    my ($self, $as, %o) = @_;
    my $key = $o{key} // node_key();
    my $inst = $o{instance} // instance_id();
    my $auth = $o{auth} // $self->auth_key($as, instance => $inst,
        name => $o{name} // 'node');
    delete $o{name};
    my $res = $self->register($as, $key, auth => $auth, instance => $inst,
        %o);
    return ($key, $res);
}

# a map stream: the response headers read, and the first frame unless
# first => 0 (raw => 1: frames are returned as JSON text); undef when the
# connection fails
sub stream {
    my ($self, $as, $key, %o) = @_;
    my $api = $self->{api};

    my %req = (Version => 1, NodeKey => $key, Stream => JSON::PP::true,
        Hostinfo => { Hostname => 'node' });
    $req{Endpoints} = $o{endpoints} if $o{endpoints};
    my $body = $JSON->encode(\%req);

    my $c = $as ? $api->cert($as) : undef;
    my $s = IO::Socket::SSL->new(
        PeerAddr => '127.0.0.1:' . ($o{port} // $self->port()),
        Timeout => 10,
        SSL_verify_mode => 0,
        $c ? (SSL_cert_file => $c->{chain}, SSL_key_file => $c->{key}) : (),
    ) or return undef;

    $s->syswrite("POST /machine/map HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body");

    my $st = bless { sock => $s, raw => '', body => '', frames => [],
        chunked => 0, eof => 0, bytes => 0, undecoded => $o{raw} },
        'Test::Dstack::Control::Stream';

    $st->_read_headers($o{timeout} // 10) or return $st;

    if ($st->{status} == 200 && ($o{first} // 1)) {
        $st->{first} = $st->next($o{timeout} // 10);
    }

    return $st;
}


package Test::Dstack::Control::Stream;

use IO::Select;
use JSON::PP;
use Time::HiRes qw(time);

my $JSON2 = JSON::PP->new->canonical->allow_nonref;

sub status { $_[0]{status} }
sub headers { $_[0]{headers} }
sub first { $_[0]{first} }
sub eof { $_[0]{eof} }

# reads what arrives within $timeout seconds (at least one read attempt)
sub _fill {
    my ($self, $timeout) = @_;
    my $s = $self->{sock};
    return 0 if $self->{eof};

    my $sel = IO::Select->new($s);
    if (!$s->pending() && !$sel->can_read($timeout)) {
        return 0;
    }

    my $n = $s->sysread(my $buf, 65536);

    if (!defined $n) {
        return 0 if $!{EAGAIN} || $!{EWOULDBLOCK};
        $self->{eof} = 1;
        return 0;
    }

    if ($n == 0) {
        $self->{eof} = 1;
        return 0;
    }

    $self->{raw} .= $buf;
    $self->{bytes} += $n;
    return $n;
}

sub _read_headers {
    my ($self, $timeout) = @_;
    my $end = time + $timeout;

    while ((my $i = index($self->{raw}, "\r\n\r\n")) < 0) {
        return 0 if time > $end || $self->{eof};
        $self->_fill($end - time);
    }

    my $i = index($self->{raw}, "\r\n\r\n");
    my $head = substr($self->{raw}, 0, $i + 4, '');
    my ($line, @h) = split /\r\n/, $head;
    ($self->{status}) = $line =~ m{^HTTP/\S+ (\d+)};
    $self->{headers} = { map { /^([^:]+):\s*(.*)$/ ? (lc $1 => $2) : () }
        @h };
    $self->{chunked} = ($self->{headers}{'transfer-encoding'} // '')
        =~ /chunked/i;

    return 1;
}

# moves whole chunks (or everything, unchunked) from raw to body
sub _dechunk {
    my ($self) = @_;

    if (!$self->{chunked}) {
        $self->{body} .= $self->{raw};
        $self->{raw} = '';
        return;
    }

    my ($data, $end) = Test::Dstack::dechunk(\$self->{raw});
    $self->{body} .= $data;

    if ($end) {
        $self->{ended} = 1;
        $self->{raw} = '';
        return;
    }

    if (length($self->{raw}) == 0) {
        undef $self->{raw};
        $self->{raw} = '';
    }
}

# the body of an error answer (not a stream)
sub error_body {
    my ($self, $timeout) = @_;
    my $end = time + ($timeout // 5);
    my $len = $self->{headers}{'content-length'} // 0;
    while (length($self->{raw}) < $len && time < $end && !$self->{eof}) {
        $self->_fill($end - time);
    }
    return eval { $JSON2->decode($self->{raw}) };
}

# the next frame as a hash, or undef after $timeout seconds or at the end
sub next {
    my ($self, $timeout) = @_;
    my $end = time + ($timeout // 5);

    while (1) {
        $self->_dechunk();

        if (length($self->{body}) >= 4) {
            my $len = unpack('V', substr($self->{body}, 0, 4));

            if (length($self->{body}) >= 4 + $len) {
                my $json = substr($self->{body}, 4, $len);
                substr($self->{body}, 0, 4 + $len, '');
                $self->{last_size} = $len;

                if (length($self->{body}) == 0) {
                    # give back the room a large frame took
                    undef $self->{body};
                    $self->{body} = '';
                }

                # raw => 1 (benchmarks): the JSON text, not kept
                return $json if $self->{undecoded};

                my $f = eval { $JSON2->decode($json) }
                    // { _invalid => $json };
                push @{$self->{frames}}, $f;
                return $f;
            }
        }

        return undef if $self->{eof} || $self->{ended};
        my $left = $end - time;
        return undef if $left <= 0;
        $self->_fill($left);
    }
}

# the first frame for which $cond is true, skipping others (KeepAlive)
sub wait {
    my ($self, $cond, $timeout) = @_;
    my $end = time + ($timeout // 5);

    while ((my $left = $end - time) > 0) {
        my $f = $self->next($left) // return undef;
        return $f if $cond->($f);
    }

    return undef;
}

# true once the server ended the stream (last chunk or close)
sub wait_end {
    my ($self, $timeout) = @_;
    my $end = time + ($timeout // 5);
    while (time < $end) {
        $self->_dechunk();
        return 1 if $self->{eof} || $self->{ended};
        $self->_fill($end - time);
    }
    return 0;
}

sub frames { @{$_[0]{frames}} }
sub last_size { $_[0]{last_size} }

sub close {
    my ($self) = @_;
    $self->{sock}->close(SSL_fast_shutdown => 1) if $self->{sock};
    delete $self->{sock};
}

1;
