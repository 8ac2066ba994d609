#!/usr/bin/perl

# The Dockerfile, without a Docker engine: its stages and steps are the
# Makefile targets the tests use (checked here by running them: make -n
# over what .dockerignore lets in, make install into a temp root, the
# installed entry script rendering a server that passes nginx -t), its RUN
# steps pass shellcheck, and the runtime stage gets only runtime packages.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Test::Dstack;

my $t = Test::Dstack->new()->has(qw(auth mesh api sim jq envsubst))
    ->plan(23);

my $repo = $t->repo;
my $d = $t->testdir;
my $df = $t->read_file("$repo/Dockerfile");

# instructions, continuation lines joined
my @ins;
for my $line (split /\n/, $df =~ s/\\\n/ /gr) {
    next if $line =~ /^\s*(#|$)/;
    my ($op, $arg) = $line =~ /^\s*(\w+)\s+(.*)$/ or next;
    push @ins, [uc $op, $arg];
}

my @from = grep { $_->[0] eq 'FROM' } @ins;
is(scalar @from, 2, 'two stages');
like($from[0][1], qr/^debian:bookworm\S* AS build$/i, 'build stage on Debian 12');
like($from[1][1], qr/^debian:bookworm\S* AS runtime$/i,
    'runtime stage on Debian 12, last');

# instructions per stage
my (%stage, $cur);
for (@ins) {
    ($cur) = $_->[1] =~ /AS (\w+)$/i if $_->[0] eq 'FROM';
    push @{$stage{$cur}}, $_ if $cur;
}
my $runs = sub { join "\n", map { $_->[1] } grep { $_->[0] eq 'RUN' }
    @{$stage{$_[0]}} };

like($runs->('build'), qr{scripts/deps\.sh build}, 'build: deps.sh build');
like($runs->('build'), qr{\bmake all\b}, 'build: make all (as make test)');
like($runs->('build'), qr{\bmake install DESTDIR=/out\b}, 'build: make install');
like($runs->('runtime'), qr{deps\.sh runtime}, 'runtime: deps.sh runtime');
ok((grep { $_->[0] eq 'COPY' && $_->[1] =~ m{^--from=build /out/ /$} }
    @{$stage{runtime}}), 'runtime: the installed tree from the build stage');

my %last = map { $_->[0] => $_->[1] } @{$stage{runtime}};
like($last{HEALTHCHECK} // '', qr{CMD \["\S+/entrypoint\.sh", "health"\]},
    'HEALTHCHECK runs the entry script');
my ($entry) = ($last{ENTRYPOINT} // '') =~ /^\["([^"]+)"\]$/;
ok($entry, "ENTRYPOINT $entry");
like($last{ENV} // '', qr/DSTACK_VPC_USER=(?!root)\w/,
    'workers and redis not as root');

# the runtime package group has no compilers or headers
my $deps = `sh -c '. /dev/null; sed -n "/^runtime=/,/\\"\$/p" $repo/scripts/deps.sh'`;
like($deps, qr/supervisor/, 'runtime packages: supervisor');
unlike($deps, qr/\bgcc\b|-dev\b|clang/, 'runtime packages: no build tools');

# RUN steps are shell: shellcheck them
SKIP: {
    Test::Dstack::skip_missing('shellcheck not installed', 1)
        unless Test::Dstack::_which('shellcheck');
    my $sh = "#!/bin/sh\n" . join("\n", map { $_->[1] }
        grep { $_->[0] eq 'RUN' } @ins) . "\n";
    $t->write_file('run-steps.sh', $sh);
    my $out = `shellcheck -s sh $d/run-steps.sh 2>&1`;
    is($?, 0, 'RUN steps pass shellcheck') or diag($out);
}

# .dockerignore: what the build context keeps is enough for the targets
my @ignore = grep { length && !/^#/ }
    split /\n/, $t->read_file("$repo/.dockerignore");
ok((grep { $_ eq 'build' } @ignore) && (grep { $_ eq '.git' } @ignore),
    '.dockerignore drops build output and .git');

my $ctx = "$d/context";
my $excl = join ' ', map { "--exclude='$_'" } @ignore;
system("mkdir -p $ctx && tar -C $repo $excl -cf - . | tar -C $ctx -xf -") == 0
    or die "copy context";
# (the modules' recursive make cannot dry-run: their inputs are checked)
my $dry = `make -C $ctx -n bins 2>&1`;
is($?, 0, 'make bins resolves in the Docker build context') or diag($dry);
my @mod = grep { !-f "$ctx/$_" } 'config', 'Makefile', 'scripts/deps.sh',
    'scripts/entrypoint.sh', 'conf/node-mesh.conf', 'conf/vpc-api.conf',
    map { "ngx_dstack_${_}_module/config.module" } qw(auth mesh vpc_api);
is("@mod", '', 'module and install inputs in the context');

# make install: the layout the Dockerfile points at
my $out = `make -C $repo -s install DESTDIR=$d/root PREFIX=/usr/local 2>&1`;
is($?, 0, 'make install') or diag($out);
ok(-x "$d/root$entry", 'ENTRYPOINT installed');
ok(-x "$d/root/usr/local/bin/wgctl", 'wgctl installed');
ok(-f "$d/root/usr/local/lib/dstack-vpc/modules/ngx_http_dstack_vpc_api_module.so",
    'modules installed');

# the installed entry script finds its templates and modules by itself
my $sock = $t->run_sim(socket => "$d/dstack.sock", app_id => '5e' x 20);
my $envs = "DSTACK_SOCKET=$d/dstack.sock DSTACK_VPC_CONF_DIR=$d/i/conf "
    . "DSTACK_VPC_TLS_DIR=$d/i/tls DSTACK_VPC_RUN_DIR=$d/i/run "
    . "DSTACK_VPC_DATA_DIR=$d/i/data DSTACK_GATEWAY_DOMAIN=gw.test:443 "
    . "DSTACK_RESOLVER=127.0.0.1 VPC_SERVER_ENABLED=true VPC_ALLOWED_APPS=any";
$out = `env -i PATH=$ENV{PATH} $envs $d/root$entry render 2>&1`;
is($?, 0, 'installed entry script renders a server') or diag($out);
like($t->read_file("$d/i/conf/nginx.conf"),
    qr{load_module $d/root/usr/local/lib/dstack-vpc/modules/},
    'installed modules loaded');
