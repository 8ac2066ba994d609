package Test::Dstack::Auth;

# What the auth module's tests (t/auth.t, t/auth-forgery.t) configure
# alike: the auth_request set-ups of README "Seed compatibility:
# auth_request", as nginx.conf text for write_file_expand(), to put inside
# a server {} (the locations) or http {} (the endpoint).  Requests go to
# the upstream "echo" (the echo backend).
#
#   server { ... @{[ Test::Dstack::Auth::front('seed') ]} }
#   @{[ Test::Dstack::Auth::endpoint($root) ]}
#
# And their client: get($port, $uri, $cert, %o).

use strict;
use warnings;

use Test::Dstack qw(http parse_response);

# GET $uri on $port over TLS, with $cert's chain and key when given, as
# parse_response(); host (default localhost), sni, headers (raw lines),
# plain => 1 (no TLS)
sub get {
    my ($port, $uri, $cert, %o) = @_;
    my %c = $cert ? (cert => $cert->{chain}, key => $cert->{key}) : ();
    $c{sni} = $o{sni} if $o{sni};
    return parse_response(http("GET $uri HTTP/1.1\r\n"
        . "Host: " . ($o{host} // 'localhost') . "\r\n"
        . "Connection: close\r\n" . ($o{headers} // '') . "\r\n",
        port => $port, ssl => !$o{plain}, %c));
}

# the seed's pattern: /NAME/ asks the standalone endpoint (endpoint(), on
# %%PORT_8092%%) through /NAME-auth, passing the leaf and its App CA,
# which the endpoint verifies
sub front {
    my ($name) = @_;
    return <<"EOF";
        location /$name/ {
            auth_request /$name-auth;
            auth_request_set \$app_id \$upstream_http_x_dstack_app_id;
            proxy_set_header x-dstack-app-id \$app_id;
            proxy_pass http://echo;
        }

        location = /$name-auth {
            internal;
            proxy_pass http://127.0.0.1:%%PORT_8092%%;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header x-client-cert \$dstack_client_cert_chain;
            proxy_set_header x-client-verify \$ssl_client_verify;
        }
EOF
}

# the same, answered in-process from the connection's certificate:
# /inproc/ through /inproc-auth
sub inproc {
    return <<"EOF";
        location /inproc/ {
            auth_request /inproc-auth;
            auth_request_set \$app_id \$sent_http_x_dstack_app_id;
            proxy_set_header x-dstack-app-id \$app_id;
            proxy_pass http://echo;
        }

        location = /inproc-auth {
            internal;
            dstack_auth_request;
            dstack_auth_allow any;
        }
EOF
}

# the seed's standalone auth service, inside nginx: a server on
# %%PORT_8092%% that verifies the passed chain to $root
sub endpoint {
    my ($root) = @_;
    return <<"EOF";
    server {
        listen 127.0.0.1:%%PORT_8092%%;

        location / {
            dstack_auth_request;
            dstack_auth_allow any;
            dstack_auth_request_root $root;
        }
    }
EOF
}

1;
