package config

import (
	"strings"
	"testing"
)

// TestEveryRule gives each validation rule a configuration that breaks it
// and nothing else, with the exact message expected: field, line and text.
// A rule added to validation gets a row here.
func TestEveryRule(t *testing.T) {
	const (
		listener = "listeners: [{name: a, address: a:1}]\n"
		up       = "upstream: {address: a:1}\n"
		// withTLS has a TLS listener, a certificate and a plaintext upstream
		// allowed: valid as it is.
		withTLS = "listeners: [{name: a, address: a:1, tls: implicit}]\ntls: {self_signed: [pop.example.com]}\n"
		twoUps  = listener + "upstreams: [{name: u, address: a:1}, {name: v, address: b:2}]\n"
		acme    = listener + up + "tls:\n  acme:\n"
	)
	tests := []struct{ name, yaml, want string }{
		// listeners
		{"no listener", up, "listeners: at least one listener is required"},
		{"listener without name", "listeners: [{address: a:1}]\n" + up, "listeners[0].name (line 1): is required"},
		{"listener name twice", "listeners: [{name: a, address: a:1}, {name: a, address: b:2}]\n" + up, `listeners[1].name (line 1): "a" is used by another listener`},
		{"listener without address", "listeners: [{name: a}]\n" + up, "listeners[0].address (line 1): is required (host:port)"},
		{"listener address not host:port", "listeners: [{name: a, address: nohost}]\n" + up, `listeners[0].address (line 1): "nohost" is not host:port`},
		{"listener tls mode", "listeners: [{name: a, address: a:1, tls: ssl}]\ntls: {self_signed: [pop.example.com]}\nupstream: {address: a:1, allow_plaintext_upstream: true}\n", `listeners[0].tls (line 1): "ssl" is not one of none, starttls, implicit`},
		{"require_tls without TLS", "listeners: [{name: a, address: a:1, require_tls: true}]\n" + up, "listeners[0].require_tls (line 1): is true but the listener has no TLS"},
		{"apop mode", "listeners: [{name: a, address: a:1, apop: on}]\n" + up, `listeners[0].apop (line 1): "on" is not one of off, passthrough`},
		{"apop without default route", "listeners: [{name: a, address: a:1, apop: passthrough}]\nupstreams: [{name: u, address: a:1}]\nroutes: {domains: {example.com: u}}\n",
			"listeners[0].apop (line 1): passthrough needs a default route: set routes.default, or use the single upstream form"},
		{"proxy_protocol network", "listeners: [{name: a, address: a:1, proxy_protocol: [10.0.0.0/8, lb]}]\n" + up, `listeners[0].proxy_protocol[1] (line 1): "lb" is not an address or CIDR prefix`},
		// tls
		{"TLS without certificate", "listeners: [{name: a, address: a:1, tls: implicit}]\nupstream: {address: a:1, allow_plaintext_upstream: true}\n",
			"tls: a listener uses TLS but there is no certificate: set tls.certificates, tls.acme or tls.self_signed"},
		{"certificate without cert_file", listener + up + "tls: {certificates: [{key_file: k.pem}]}\n", "tls.certificates[0].cert_file (line 3): is required"},
		{"certificate without key_file", listener + up + "tls: {certificates: [{cert_file: c.pem}]}\n", "tls.certificates[0].key_file (line 3): is required"},
		{"tls min_version", listener + up + "tls: {min_version: '1.1'}\n", `tls.min_version (line 3): "1.1" is not one of 1.2, 1.3`},
		{"acme without domains", acme + "    email: a@example.com\n    storage: /var/lib/popproxy\n    http_port: 80\n",
			"tls.acme.domains (line 4): is empty and so is tls.acme.on_demand: nothing to obtain"},
		{"acme without email", acme + "    domains: [pop.example.com]\n    storage: /var/lib/popproxy\n    http_port: 80\n",
			"tls.acme.email (line 4): is required (the CA's account contact)"},
		{"acme without storage", acme + "    domains: [pop.example.com]\n    email: a@example.com\n    http_port: 80\n",
			"tls.acme.storage (line 4): is required (a folder for keys and certificates)"},
		{"acme without challenge", acme + "    domains: [pop.example.com]\n    email: a@example.com\n    storage: /var/lib/popproxy\n",
			"tls.acme (line 4): no challenge enabled: set http_port (HTTP-01) or tls_alpn: true"},
		{"acme port", acme + "    domains: [pop.example.com]\n    email: a@example.com\n    storage: /var/lib/popproxy\n    http_port: 70000\n",
			"tls.acme.http_port (line 8): 70000 is not a port"},
		// admin
		{"admin address", listener + up + "admin: {address: localhost}\n", `admin.address (line 3): "localhost" is not host:port`},
		// upstreams
		{"upstream without address", listener, "upstream.address: is required (host:port)"},
		{"upstream address not host:port", listener + "upstream: {address: nohost}\n", `upstream.address (line 2): "nohost" is not host:port`},
		{"upstream name twice", listener + "upstreams: [{name: u, address: a:1}, {name: u, address: b:2}]\nroutes: {default: u}\n", `upstreams[1].name (line 2): "u" is empty or used twice`},
		{"upstream without name", listener + "upstreams: [{address: a:1}]\n", `upstreams[0].name (line 2): "" is empty or used twice`},
		{"upstream tls mode", listener + "upstream: {address: a:1, tls: ssl}\n", `upstream.tls (line 2): "ssl" is not one of none, starttls, implicit`},
		{"upstream address without host", listener + "upstream: {addresses: [a:1, ':995'], tls: implicit}\n", `upstream.address (line 2): ":995" has no host to check the server's certificate against; set upstream.server_name`},
		{"upstream min_version", listener + "upstream: {address: a:1, tls: implicit, min_version: '1.4'}\n", `upstream.min_version (line 2): "1.4" is not one of 1.0, 1.1, 1.2, 1.3`},
		{"plaintext upstream behind TLS", withTLS + up,
			"upstream.tls (line 3): is none while clients log in over TLS: their credentials would travel on in clear; set upstream.tls, or upstream.allow_plaintext_upstream: true if the network to the server is trusted"},
		{"upstream TLS options without TLS", listener + "upstream: {address: a:1, ca_file: ca.pem}\n", "upstream.tls (line 2): is none, but upstream TLS options are set"},
		{"upstream login", listener + "upstream: {address: a:1, login: apop}\n", `upstream.login (line 2): "apop" is not one of user, plain`},
		{"upstream capabilities", listener + "upstream: {address: a:1, capabilities: [top, SASL]}\n", `upstream.capabilities[1] (line 2): "SASL" is not one popproxy takes from the server: TOP, UIDL, PIPELINING (the others it provides itself)`},
		{"upstream send_client", listener + "upstream: {address: a:1, send_client: xforward}\n", `upstream.send_client (line 2): "xforward" is not one of ` + strings.Join(sendClientModes, ", ")},
		{"upstream and upstreams", twoUps + "routes: {default: u}\n" + up, "upstream (line 4): is set together with upstreams: use one or the other"},
		{"route to an undefined user's upstream", twoUps + "routes: {default: u, users: {alice: w}}\n", `routes.users["alice"] (line 3): upstream "w" is not defined in upstreams`},
		{"route to an undefined domain's upstream", twoUps + "routes: {default: u, domains: {example.com: w}}\n", `routes.domains["example.com"] (line 3): upstream "w" is not defined in upstreams`},
		{"default route undefined", listener + "upstreams: [{name: u, address: a:1}]\nroutes: {default: w}\n", `routes.default (line 3): upstream "w" is not defined in upstreams`},
		// timeouts
		{"login timeout", listener + up + "timeouts: {login: 0s}\n", "timeouts.login (line 3): must be positive, not 0s"},
		{"dial timeout", listener + up + "timeouts: {upstream_dial: -1s}\n", "timeouts.upstream_dial (line 3): must be positive, not -1s"},
		{"response timeout", listener + up + "timeouts: {upstream_response: 0s}\n", "timeouts.upstream_response (line 3): must be positive, not 0s"},
		{"idle timeout", listener + up + "timeouts: {idle: 5m}\n", "timeouts.idle (line 3): 5m0s is below RFC 1939's minimum of 10m after login"},
		{"shutdown grace", listener + up + "timeouts: {shutdown_grace: -1s}\n", "timeouts.shutdown_grace (line 3): must not be negative"},
		// limits
		{"max_bad_commands", listener + up + "limits: {max_bad_commands: 0}\n", "limits.max_bad_commands (line 3): must be at least 1, not 0"},
		{"ipv6_prefix", listener + up + "limits: {ipv6_prefix: 129}\n", "limits.ipv6_prefix (line 3): must be between 1 and 128, not 129"},
		{"trusted_networks", listener + up + "limits: {trusted_networks: [10.0.0.0/8, nonsense]}\n", `limits.trusted_networks[1] (line 3): "nonsense" is not an address or CIDR prefix`},
		{"login_delay in whole seconds", listener + up + "limits: {per_user: {login_delay: 1500ms}}\n", "limits.per_user.login_delay (line 3): must be whole seconds (RFC 2449 LOGIN-DELAY), not 1.5s"},
		{"username_case", listener + up + "limits: {username_case: lower}\n", `limits.username_case (line 3): "lower" is not one of fold, keep`},
		{"shared without address", listener + up + "limits:\n  shared: {tls: none}\n", "limits.shared.address (line 4): is required (host:port of Redis or Valkey)"},
		{"shared address not host:port", listener + up + "limits:\n  shared: {address: redis}\n", `limits.shared.address (line 4): "redis" is not host:port`},
		{"shared tls mode", listener + up + "limits:\n  shared: {address: r:1, tls: starttls}\n", `limits.shared.tls (line 4): "starttls" is not one of none, implicit`},
		{"shared ca_file without TLS", listener + up + "limits:\n  shared: {address: r:1, ca_file: ca.pem}\n", "limits.shared.ca_file (line 4): is set but limits.shared.tls is none"},
		{"shared timeout", listener + up + "limits:\n  shared: {address: r:1, timeout: -1s}\n", "limits.shared.timeout (line 4): must be positive, not -1s"},
		{"shared session_lease", listener + up + "limits:\n  shared: {address: r:1, session_lease: 1s}\n", "limits.shared.session_lease (line 4): must be at least 3s, not 1s"},
		{"shared on_unavailable", listener + up + "limits:\n  shared: {address: r:1, on_unavailable: open}\n", `limits.shared.on_unavailable (line 4): "open" is not one of local, closed`},
		// auth
		{"no mechanism", listener + up + "auth: {mechanisms: []}\n", "auth.mechanisms (line 3): lists none: name at least one of " + strings.Join(Mechanisms, ", ")},
		{"unknown mechanism", listener + up + "auth: {mechanisms: [PLAIN, CRAM-MD5]}\n", `auth.mechanisms[1] (line 3): "CRAM-MD5" is not one of ` + strings.Join(Mechanisms, ", ")},
		{"mechanism twice", listener + up + "auth: {mechanisms: [PLAIN, plain]}\n", "auth.mechanisms[1] (line 3): PLAIN is listed twice"},
		{"OAuth without TLS", listener + up + "auth: {mechanisms: [XOAUTH2]}\n", "auth.mechanisms[0] (line 3): XOAUTH2 is offered only over TLS, and no listener has TLS"},
		// commands
		{"allow: not a keyword", listener + up + "commands: {allow: [{verb: 'X Y'}]}\n", `commands.allow[0].verb (line 3): "X Y" is not a command keyword (letters and digits, 1 to 16)`},
		{"allow: built in", listener + up + "commands: {allow: [{verb: retr}]}\n", "commands.allow[0].verb (line 3): RETR is handled by the proxy itself"},
		{"allow: twice", listener + up + "commands: {allow: [{verb: XFOO}, {verb: xfoo}]}\n", "commands.allow[1].verb (line 3): XFOO is listed twice"},
		{"allow: max_args", listener + up + "commands: {allow: [{verb: XFOO, max_args: 9}]}\n", "commands.allow[0].max_args (line 3): must be between 0 and 8, not 9"},
		// audit
		{"audit output", listener + up + "audit: {output: ''}\n", `audit.output (line 3): is required: "stdout", "syslog" or a file path`},
		{"audit on_failure", listener + up + "audit: {on_failure: ignore}\n", `audit.on_failure (line 3): "ignore" is not one of close, continue`},
		{"audit checkpoint", listener + up + "audit: {checkpoint: -1s}\n", "audit.checkpoint (line 3): must not be negative"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s:\n%s\ngot  %v\nwant %s", tt.name, tt.yaml, err, tt.want)
		}
	}
}

// TestNonNegativeLimits: every limit where 0 switches it off refuses a
// negative value, with the same message.
func TestNonNegativeLimits(t *testing.T) {
	for _, field := range []string{
		"max_sessions", "per_ip.max_sessions", "per_ip.connection_rate", "per_ip.connection_burst",
		"per_user.max_sessions", "per_user.login_delay", "per_user.download_rate",
		"per_session.command_rate", "per_session.command_burst", "per_session.download_rate", "per_session.max_retrievals",
		"failed_logins.per_ip.max", "failed_logins.per_ip.window", "failed_logins.per_ip.delay", "failed_logins.per_ip.max_delay", "failed_logins.per_ip.block",
		"failed_logins.per_user.max", "failed_logins.per_user.window", "failed_logins.per_user.delay", "failed_logins.per_user.max_delay", "failed_logins.per_user.block",
	} {
		value := "-1"
		if strings.Contains(field, "delay") || strings.HasSuffix(field, "window") || strings.HasSuffix(field, "block") {
			value = "-1s"
		}
		// "a.b.c" becomes "{a: {b: {c: -1}}}".
		parts := strings.Split(field, ".")
		yaml := strings.Join(parts, ": {") + ": " + value + strings.Repeat("}", len(parts)-1)
		_, err := Parse([]byte(valid + "limits: {" + yaml + "}\n"))
		want := "limits." + field + " (line 3): must not be negative (0 switches it off)"
		if err == nil || err.Error() != want {
			t.Errorf("%s: %s\ngot  %v\nwant %s", field, yaml, err, want)
		}
	}
}
