package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`
listeners:
  - name: pop3
    address: 127.0.0.1:1110
upstream:
  address: legacy.example.com:110
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Timeouts.Login != 60*time.Second || cfg.Timeouts.Idle != 10*time.Minute || cfg.Audit.Output != "stdout" {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	if l := cfg.Listeners[0]; l.TLS != TLSNone || *l.RequireTLS {
		t.Errorf("listener defaults: %+v", l)
	}
	if cfg.Upstream.Login != "user" || cfg.Limits.MaxBadCommands != 10 {
		t.Errorf("upstream/limits defaults: %+v %+v", cfg.Upstream, cfg.Limits)
	}
}

func TestParseFull(t *testing.T) {
	cfg, err := Parse([]byte(`
listeners:
  - name: pop3
    address: "[::1]:1110"
upstream:
  address: 10.0.0.5:110
  login: plain
timeouts:
  login: 30s
  idle: 15m
  upstream_dial: 5s
  upstream_response: 2m
  shutdown_grace: 1m
limits:
  max_bad_commands: 5
commands:
  allow:
    - verb: xtnd
      max_args: 2
      multiline: true
audit:
  output: /var/log/popproxy/audit.log
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Timeouts.Idle != 15*time.Minute || cfg.Timeouts.UpstreamResponse != 2*time.Minute || cfg.Commands.Allow[0].Verb != "xtnd" {
		t.Errorf("parsed %+v", cfg)
	}
}

// TestValidationMessages checks that each mistake is reported with its field.
func TestValidationMessages(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"upstream: {address: a:1}", "listeners: at least one listener is required"},
		{"listeners: [{address: a:1}]\nupstream: {address: a:1}", "listeners[0].name: is required"},
		{"listeners: [{name: a, address: a:1}, {name: a, address: b:2}]\nupstream: {address: a:1}", `listeners[1].name: "a" is used by another listener`},
		{"listeners: [{name: a, address: nohost}]\nupstream: {address: a:1}", `listeners[0].address: "nohost" is not host:port`},
		{"listeners: [{name: a, address: a:1}]", "upstream.address: is required (host:port)"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1, login: apop}", `upstream.login: "apop" is not one of user, plain`},
		{"listeners: [{name: a, address: a:1}]\nupstream: {addresses: [a:1, ':995'], tls: implicit}", `upstream.address: ":995" has no host to check the server's certificate against; set upstream.server_name`},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\ntimeouts: {idle: 5m}", "timeouts.idle: 5m0s is below RFC 1939's minimum of 10m after login"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\ntimeouts: {login: 0s}", "timeouts.login: must be positive, not 0s"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\nlimits: {max_bad_commands: 0}", "limits.max_bad_commands: must be at least 1, not 0"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\ncommands: {allow: [{verb: RETR}]}", "commands.allow[0].verb: RETR is handled by the proxy itself"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\ncommands: {allow: [{verb: 'X Y'}]}", `commands.allow[0].verb: "X Y" is not a command keyword`},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\naudit: {output: ''}", "audit.output: is required"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1, adress: x}", "field adress not found"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\ntimeouts: {idle: soon}", "parse:"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) error = %v, want it to contain %q", tt.yaml, err, tt.want)
		}
	}
}

// TestUpstreamHostOrServerName: without server_name each address's
// certificate is checked against its own host, so an address without one
// needs server_name, or no verification at all.
func TestUpstreamHostOrServerName(t *testing.T) {
	for _, up := range []string{
		"{address: ':995', tls: implicit, server_name: pop.example.test}",
		"{address: ':995', tls: implicit, insecure_skip_verify: true}",
		"{address: ':110'}",
	} {
		if _, err := Parse([]byte("listeners: [{name: a, address: a:1}]\nupstream: " + up)); err != nil {
			t.Errorf("upstream %s: %v", up, err)
		}
	}
}

func TestValidationReportsEveryProblem(t *testing.T) {
	_, err := Parse([]byte("listeners: [{name: a}]\ntimeouts: {idle: 1m}"))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"listeners[0].address", "upstream.address", "timeouts.idle"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestLimitsValidation(t *testing.T) {
	base := "listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\n"
	for yaml, want := range map[string]string{
		"limits: {trusted_networks: [10.0.0.0/8, nonsense]}":             `limits.trusted_networks[1]: "nonsense" is not an address or CIDR prefix`,
		"limits: {ipv6_prefix: 129}":                                     "limits.ipv6_prefix: must be between 1 and 128",
		"limits: {per_ip: {max_sessions: -1}}":                           "limits.per_ip.max_sessions: must not be negative",
		"limits: {failed_logins: {per_user: {block: -1s}}}":              "limits.failed_logins.per_user.block: must not be negative",
		"limits: {per_user: {login_delay: 1500ms}}":                      "limits.per_user.login_delay: must be whole seconds",
		"limits: {per_session: {command_rate: -5}}":                      "limits.per_session.command_rate: must not be negative",
		"limits: {per_session: {max_retrievals: 3}, per_user: {max: 1}}": "field max not found",
	} {
		_, err := Parse([]byte(base + yaml))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", yaml, err, want)
		}
	}
	cfg, err := Parse([]byte(base + "limits: {per_ip: {max_sessions: 0}, per_user: {login_delay: 30s}}"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Limits.PerIP.MaxSessions != 0 || cfg.Limits.PerIP.ConnectionRate != 10 || cfg.Limits.PerUser.LoginDelay != 30*time.Second {
		t.Errorf("limits %+v", cfg.Limits)
	}
}
