#!/usr/bin/perl

# Every nginx and compose example in README.md and docs/*.md, run as far as
# it runs here:
#   - each ```nginx block is completed (placeholders and paths filled with
#     this run's certificates, the fixtures, the built modules; location
#     snippets put in a server, server and upstream blocks in http) and
#     passes `nginx -t` with our modules;
#   - each ```yaml block parses (python3-yaml, as docker compose's YAML
#     does) and holds as a compose file: services with an image,
#     environment as VAR=value, named volumes declared, every variable of
#     the image documented in README's table, `$` escaped as `$$`, and
#     mongod's --bind_ip given addresses, not a CIDR;
#   - the MongoDB node's wrapper itself runs (bash, compose's `$$` undone)
#     against a mesh stand-in serving /vpc/0/vpn_ip on 127.0.0.1:80 in a
#     network namespace, and starts mongod bound to loopback and that
#     address.
# A block that is a syntax summary, not configuration (`a | b` choices),
# is named and left out.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack;
use Test::DstackNetns;
use Time::HiRes qw(sleep time);

my $t = Test::Dstack->new()
    ->has(qw(auth mesh api metrics sim python3 fixtures));
$t->skip_all('python3-yaml not installed (make deps)')
    if system(q{python3 -c 'import yaml' 2>/dev/null}) != 0;

my $repo = $t->repo;
my $d = $t->testdir;
my $build = $t->build;
my $fixtures = $t->fixtures;

# --- the examples ----------------------------------------------------------------

my @blocks;    # [file, line, lang, text]
for my $f ('README.md', map { s{^\Q$repo\E/}{}r } glob "$repo/docs/*.md") {
    my ($lang, $start, $indent, $text);
    my $n = 0;
    for my $line (split /\n/, $t->read_file("$repo/$f")) {
        $n++;
        if (!defined $lang) {
            if ($line =~ /^(\s*)```(\w+)\s*$/) {
                ($indent, $lang, $start, $text) = ($1, $2, $n, '');
            }
        } elsif ($line =~ /^\s*```\s*$/) {
            push @blocks, [$f, $start, $lang, $text]
                if $lang eq 'nginx' || $lang eq 'yaml' || $lang eq 'yml';
            undef $lang;
        } else {
            $text .= ($line =~ s/^\Q$indent\E//r) . "\n";
        }
    }
}

my @nginx = grep { $_->[2] eq 'nginx' } @blocks;
my @yaml = grep { $_->[2] ne 'nginx' } @blocks;

# at least what README and docs held when this test was written
cmp_ok(scalar @nginx, '>=', 8, scalar(@nginx) . ' nginx examples');
cmp_ok(scalar @yaml, '>=', 2, scalar(@yaml) . ' compose examples');

# --- nginx: complete each block, nginx -t ----------------------------------------

my $c = $t->sim_cert('server', app_id => 'ab' x 20);
my %file = (
    'cert.pem'        => $c->{chain},
    'key.pem'         => $c->{key},
    'kms-root.pem'    => $c->{root},
    'ca.pem'          => $c->{root},
    'sgx-root-ca.pem' => "$fixtures/intel/sgx-root-ca.pem",
    'collateral.json' => "$fixtures/tdx/quote-v4.collateral.json",
);
my %so = map { $_ => "$build/modules/ngx_http_dstack_${_}_module.so" }
    qw(auth mesh metrics vpc_api);

# conf/vpc-api.conf, placeholders filled as the entry script does
my $api = $t->read_file("$repo/conf/vpc-api.conf");
$api =~ s/\$\{VPC_ALLOWED_APPS\}/any/g;
$api =~ s/\$\{VPC_SERVER_APP_ID\}/'ab' x 20/ge;
$api =~ s/\$\{DSTACK_GATEWAY_DOMAIN\}/example.dstack:443/g;
$api =~ s{/etc/dstack/mesh/(\w+\.pem)}{$file{$1}}g;
$api =~ s{/run/dstack-vpc/}{$d/}g;
$t->write_file('vpc-api.conf', $api);

# top-level statements of a snippet: (text, kind) with kind the block name
sub statements {
    my ($text) = @_;
    my (@out, $cur, $depth);
    ($cur, $depth) = ('', 0);
    for my $line (split /\n/, $text) {
        $cur .= "$line\n";
        my $code = $line =~ s/#.*//r;
        $code =~ s/'[^']*'//g;
        $depth += () = $code =~ /\{/g;
        $depth -= () = $code =~ /\}/g;
        if ($depth == 0 && $code =~ /[;}]\s*$/) {
            push @out, $cur;
            $cur = '';
        }
    }
    push @out, $cur if $cur =~ /\S/;
    return grep { /\S/ } @out;
}

sub complete {
    my ($text) = @_;

    # placeholders and paths of this machine
    $text =~ s{^\s*\.\.\.\s*\n}{    ssl_certificate $file{'cert.pem'};\n    ssl_certificate_key $file{'key.pem'};\n    ssl_client_certificate $file{'kms-root.pem'};\n}mg;
    $text =~ s{<base_domain>\[:<port>\] \[address=<host>\[:<port>\]\]}{example.dstack:443 address=127.0.0.1:443}g;
    my @seq = @file{qw(cert.pem key.pem kms-root.pem)};
    $text =~ s{<file>}{shift(@seq) // $file{'cert.pem'}}ge;
    $text =~ s{(?:/path/to/|(?<![/\w])modules/)(ngx_http_dstack_\w+\.so)}{$build/modules/$1}g;
    $text =~ s{/etc/dstack/(?:mesh/)?([\w.-]+\.(?:pem|json))}{$file{$1} // "$d/missing-$1"}ge;
    $text =~ s{include /etc/nginx/vpc-api\.conf;}{include $d/vpc-api.conf;}g;
    $text =~ s{listen (443|80)\b}{'listen 127.0.0.1:' . $t->port("l$1")}ge;
    $text =~ s{listen 127\.0\.0\.1:8092\b}{'listen 127.0.0.1:' . $t->port('auth')}ge;

    my (@main, @http, @server, $has_http);
    for my $s (statements($text)) {
        if ($s =~ /^\s*(load_module|events|user|worker_processes)\b/) {
            push @main, $s;
        } elsif ($s =~ /^\s*http\s*\{/) {
            $has_http = 1;
            push @main, $s;
        } elsif ($s =~ /^\s*(server|upstream|map|log_format)\b/) {
            push @http, $s;
        } else {
            push @server, $s;
        }
    }

    my $loaded = join '', @main;
    my $conf = join '', map { "load_module $so{$_};\n" }
        grep { index($loaded, $so{$_}) < 0 } sort keys %so;
    # load_module before anything else
    @main = ((grep { /^\s*load_module\b/ } @main),
        (grep { !/^\s*load_module\b/ } @main));
    $conf = join('', grep { /^\s*load_module\b/ } @main) . $conf;
    @main = grep { !/^\s*load_module\b/ } @main;
    $conf .= "pid $d/nginx.pid;\nerror_log $d/example-error.log;\n";
    $conf .= "events {}\n" unless $loaded =~ /^\s*events\b/m;
    $conf .= join '', @main;
    if (!$has_http) {
        $conf .= "http {\n    access_log off;\n";
        $conf .= "    upstream backend { server 127.0.0.1:1; }\n"
            if $text =~ m{http://backend\b};
        $conf .= join '', @http;
        if (@server) {
            $conf .= "    server {\n        listen 127.0.0.1:"
                . $t->port('wrap') . " ssl;\n"
                . "        ssl_certificate $file{'cert.pem'};\n"
                . "        ssl_certificate_key $file{'key.pem'};\n"
                . join('', @server) . "    }\n";
        }
        $conf .= "}\n";
    } elsif ($text =~ m{http://backend\b}) {
        $conf =~ s/^(http\s*\{\n)/$1    upstream backend { server 127.0.0.1:1; }\n/m;
    }
    return $conf;
}

my $i = 0;
for my $b (@nginx) {
    my ($f, $line, undef, $text) = @$b;
    $i++;
    if ($text =~ / \| /) {
        note("$f:$line: a syntax summary, not configuration");
        next;
    }
    my $conf = complete($text);
    $t->write_file("example-$i.conf", $conf);
    my ($ok, $out) = $t->test_config("example-$i.conf");
    ok($ok, "$f:$line: nginx -t") or diag("$out\n$conf");
}

# --- compose --------------------------------------------------------------------

# the variables README documents (its table) and the image's own ENV
my $readme = $t->read_file("$repo/README.md");
my %documented = map { $_ => 1 } $readme =~ /^\| `([A-Z][A-Z0-9_]+)`/mg;

sub yaml_load {
    my ($text) = @_;
    my $path = $t->write_file('example.yaml', $text);
    my $json = `python3 -c 'import sys, yaml, json; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)' '$path' 2>&1`;
    return ($? == 0 ? JSON::PP->new->decode($json) : undef, $json);
}

require JSON::PP;

# every string of a tree
sub strings {
    my ($v) = @_;
    return ref $v eq 'HASH' ? map { strings($_) } values %$v
        : ref $v eq 'ARRAY' ? map { strings($_) } @$v
        : defined $v ? ($v) : ();
}

my $wrapper;
for my $b (@yaml) {
    my ($f, $line, undef, $text) = @$b;
    my ($y, $err) = yaml_load($text);
    ok(ref $y eq 'HASH', "$f:$line: YAML parses") or diag($err);
    next unless ref $y eq 'HASH';

    my $sv = $y->{services};
    ok(ref $sv eq 'HASH' && %$sv, "$f:$line: services");
    my @bad;
    my %named = %{$y->{volumes} || {}};
    for my $name (sort keys %{$sv || {}}) {
        my $s = $sv->{$name};
        push @bad, "$name: no image" unless $s->{image};
        for my $e (@{$s->{environment} || []}) {
            my ($k) = $e =~ /^([A-Z_][A-Z0-9_]*)=/
                or push(@bad, "$name: environment \"$e\""), next;
            push @bad, "$name: $k is not in README's variable table"
                if $s->{image} =~ /dstack-vpc/ && !$documented{$k};
        }
        for my $v (@{$s->{volumes} || []}) {
            my ($src) = split /:/, $v;
            push @bad, "$name: volume $src not declared"
                if $src !~ m{^[/.]} && !exists $named{$src};
        }
        # compose interpolates $name and ${name}; a shell's $ is $$
        for my $str (strings([$s->{command}, $s->{entrypoint}])) {
            push @bad, "$name: unescaped \$ in \"$str\""
                if ($str =~ s/\$\$//gr) =~ /\$/;
        }
        my @argv = strings([$s->{entrypoint}, $s->{command}]);
        my $cmd = join ' ', @argv;
        while ($cmd =~ /--bind_ip[= ]+"?([^"\s]+)/g) {
            for my $a (split /,/, $1) {
                push @bad, "$name: --bind_ip $a is not an address"
                    unless $a =~ /^(\d{1,3}(\.\d{1,3}){3}|[0-9a-f:]+|\$\$\w+|localhost)$/i;
            }
        }
        $wrapper = { argv => \@argv, where => "$f:$line" }
            if $name eq 'mongodb';
    }
    is_deeply(\@bad, [], "$f:$line: compose file holds");
}

# --- the MongoDB wrapper, run --------------------------------------------------------

ok($wrapper, 'a MongoDB example') or diag('none found');
my $net = $> == 0 ? Test::DstackNetns->new() : undef;
SKIP: {
    Test::Dstack::skip_missing('the wrapper runs in a network namespace: '
        . ($Test::DstackNetns::WHY || 'needs root'), 2) unless $net;
    skip('no MongoDB example', 2) unless $wrapper;

    # compose's $$ is the shell's $
    my @argv = map { s/\$\$/\$/gr } @{$wrapper->{argv}};
    my ($vpn) = '100.128.0.42';
    my $w = "$d/wrap";
    mkdir $w;
    mkdir "$w/bin";
    mkdir "$w/vpc";
    $t->write_file("$w/vpc/vpn_ip", "$vpn\n");
    for my $prog ('mongod', 'docker-entrypoint.sh') {
        $t->write_file("$w/bin/$prog",
            "#!/bin/sh\nprintf '%s\\n' \"\$0\" \"\$@\" >$w/started\n", 0755);
    }
    # the node's mesh: 404 until the VPN is up, then the address
    $t->write_file("$w/nginx.conf", <<"EOF");
pid $w/nginx.pid;
error_log $w/error.log;
user root;
worker_processes 1;
events {}
http {
    access_log off;
    server {
        listen 127.0.0.1:80;
        location = /vpc/0/vpn_ip { alias $w/vpc/vpn_ip; }
    }
}
EOF
    my $ns = $net->netns('m');
    my $pid = fork() // die;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', "$w/out.log";
        open STDERR, '>&', \*STDOUT;
        $ENV{PATH} = "$w/bin:$ENV{PATH}";
        exec('ip', 'netns', 'exec', $ns, @argv) or POSIX::_exit(127);
    }
    # the wrapper waits while nothing answers on :80
    sleep 3;
    ok(!-e "$w/started", 'wrapper waits for the VPN address');
    system('ip', 'netns', 'exec', $ns, '/usr/sbin/nginx', '-p', "$w/",
        '-c', "$w/nginx.conf") == 0 or diag('nginx stand-in failed');
    my $until = time() + 30;
    sleep 0.2 while !-s "$w/started" && time() < $until;
    my $args = $t->read_file("$w/started");
    like($args, qr/^mongod\n--bind_ip\n127\.0\.0\.1,\Q$vpn\E\n/m,
        "$wrapper->{where}: mongod --bind_ip 127.0.0.1,$vpn")
        or diag($args . $t->read_file("$w/out.log"));
    kill 'TERM', $pid;
    waitpid($pid, 0);
    system("kill \$(cat $w/nginx.pid) 2>/dev/null");
    $net->cleanup();
}

done_testing();
