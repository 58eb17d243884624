package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/proxy"
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

// TestCapabilities: an absent capabilities key leaves popproxy to learn them;
// an empty list says the server has none.
func TestCapabilities(t *testing.T) {
	for _, tc := range []struct {
		upstream string
		want     []string // nil: absent
	}{
		{"{address: a:1}", nil},
		{"{address: a:1, capabilities: []}", []string{}},
		{"{address: a:1, capabilities: [UIDL, top]}", []string{"UIDL", "top"}},
		{"{address: a:1, capabilities: [pipelining]}", []string{"pipelining"}},
	} {
		cfg, err := Parse([]byte("listeners: [{name: a, address: a:1}]\nupstream: " + tc.upstream))
		if err != nil {
			t.Fatal(err)
		}
		got := cfg.Upstreams[0].Capabilities
		if (got == nil) != (tc.want == nil) || got != nil && !slices.Equal(*got, tc.want) {
			t.Errorf("%s: capabilities %v, want %v", tc.upstream, got, tc.want)
		}
	}
}

// TestValidationMessages checks that each mistake is reported with its field.
func TestValidationMessages(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"upstream: {address: a:1}", "listeners: at least one listener is required"},
		{"listeners: [{address: a:1}]\nupstream: {address: a:1}", "listeners[0].name (line 1): is required"},
		{"listeners: [{name: a, address: a:1}, {name: a, address: b:2}]\nupstream: {address: a:1}", `listeners[1].name (line 1): "a" is used by another listener`},
		{"listeners: [{name: a, address: nohost}]\nupstream: {address: a:1}", `listeners[0].address (line 1): "nohost" is not host:port`},
		{"listeners: [{name: a, address: a:1}]", "upstream.address: is required (host:port)"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1, login: apop}", `upstream.login (line 2): "apop" is not one of user, plain`},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1, capabilities: [top, SASL]}", `upstream.capabilities[1] (line 2): "SASL" is not one popproxy takes from the server: TOP, UIDL, PIPELINING (the others it provides itself)`},
		{"listeners: [{name: a, address: a:1}]\nupstream: {addresses: [a:1, ':995'], tls: implicit}", `upstream.address (line 2): ":995" has no host to check the server's certificate against; set upstream.server_name`},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\ntimeouts: {idle: 5m}", "timeouts.idle (line 3): 5m0s is below RFC 1939's minimum of 10m after login"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\ntimeouts: {login: 0s}", "timeouts.login (line 3): must be positive, not 0s"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\nlimits: {max_bad_commands: 0}", "limits.max_bad_commands (line 3): must be at least 1, not 0"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\ncommands: {allow: [{verb: RETR}]}", "commands.allow[0].verb (line 3): RETR is handled by the proxy itself"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\ncommands: {allow: [{verb: xclient}]}", "commands.allow[0].verb (line 3): XCLIENT is handled by the proxy itself"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\ncommands: {allow: [{verb: XPOPPROXY}]}", "commands.allow[0].verb (line 3): XPOPPROXY is handled by the proxy itself"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\ncommands: {allow: [{verb: 'X Y'}]}", `commands.allow[0].verb (line 3): "X Y" is not a command keyword`},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\naudit: {output: ''}", "audit.output (line 3): is required"},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1, adress: x}", `upstream.adress (line 2): unknown key; did you mean "address"?`},
		{"listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\ntimeouts: {idle: soon}", `timeouts.idle (line 3): "soon" is not a duration; write 60s or 10m`},
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

// TestAPOPPassthrough: apop passthrough is accepted with a default route,
// from routes.default or the single upstream form, and refused without one.
func TestAPOPPassthrough(t *testing.T) {
	const upstreams = "upstreams: [{name: legacy, address: 'legacy.example:110'}]\n"
	for _, tc := range []struct{ config, problem string }{
		{"upstream: {address: 'legacy.example:110'}", ""},
		{upstreams + "routes: {default: legacy}", ""},
		{upstreams + "routes: {domains: {example.com: legacy}}", "listeners[0].apop (line 1): passthrough needs a default route"},
	} {
		_, err := Parse([]byte("listeners: [{name: a, address: 'a:1', apop: passthrough}]\n" + tc.config))
		switch {
		case tc.problem == "" && err != nil:
			t.Errorf("%s: %v", tc.config, err)
		case tc.problem != "" && (err == nil || !strings.Contains(err.Error(), tc.problem)):
			t.Errorf("%s: error %v, want %q", tc.config, err, tc.problem)
		}
	}
	_, err := Parse([]byte("listeners: [{name: a, address: 'a:1', apop: on}]\nupstream: {address: 'b:1'}"))
	if err == nil || !strings.Contains(err.Error(), `listeners[0].apop (line 1): "on" is not one of off, passthrough`) {
		t.Errorf("apop: on: %v", err)
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
		"limits: {trusted_networks: [10.0.0.0/8, nonsense]}":             `limits.trusted_networks[1] (line 3): "nonsense" is not an address or CIDR prefix`,
		"limits: {ipv6_prefix: 129}":                                     "limits.ipv6_prefix (line 3): must be between 1 and 128",
		"limits: {per_ip: {max_sessions: -1}}":                           "limits.per_ip.max_sessions (line 3): must not be negative",
		"limits: {failed_logins: {per_user: {block: -1s}}}":              "limits.failed_logins.per_user.block (line 3): must not be negative",
		"limits: {per_user: {login_delay: 1500ms}}":                      "limits.per_user.login_delay (line 3): must be whole seconds",
		"limits: {per_session: {command_rate: -5}}":                      "limits.per_session.command_rate (line 3): must not be negative",
		"limits: {username_case: lower}":                                 `limits.username_case (line 3): "lower" is not one of fold, keep`,
		"limits: {per_session: {max_retrievals: 3}, per_user: {max: 1}}": "limits.per_user.max (line 3): unknown key; expected one of max_sessions, login_delay, download_rate",
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
	if cfg.Limits.PerIP.MaxSessions != 0 || cfg.Limits.PerIP.ConnectionRate != 10 || cfg.Limits.PerUser.LoginDelay != 30*time.Second || cfg.Limits.UsernameCase != "fold" {
		t.Errorf("limits %+v", cfg.Limits)
	}
}

// valid is a minimal configuration the tests below add to.
const valid = "listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\n"

// TestProblemsNameFieldAndLine checks that each mistake a person can make in
// the file is reported with its path, its line and what to write instead.
func TestProblemsNameFieldAndLine(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"misspelt key", valid + "timeouts:\n  idel: 20m\n", `timeouts.idel (line 4): unknown key; did you mean "idle"?`},
		{"misspelt top-level key", valid + "limit: {}\n", `limit (line 3): unknown key; did you mean "limits"?`},
		{"key with no near match", valid + "timeouts:\n  forever: 1h\n", "timeouts.forever (line 4): unknown key; expected one of login, idle, upstream_dial, upstream_response, shutdown_grace"},
		{"bare-number duration", valid + "timeouts:\n  idle: 60\n", `timeouts.idle (line 4): "60" is not a duration; write 60s or 10m`},
		{"word for a duration", valid + "audit: {checkpoint: often}\n", `audit.checkpoint (line 3): "often" is not a duration; write 60s or 10m`},
		{"fraction for a whole number", valid + "limits: {max_sessions: 2.5}\n", `limits.max_sessions (line 3): "2.5" is not a whole number`},
		{"word for a number", valid + "limits: {per_ip: {connection_rate: fast}}\n", `limits.per_ip.connection_rate (line 3): "fast" is not a number`},
		{"word for a boolean", "listeners: [{name: a, address: a:1, require_tls: maybe}]\nupstream: {address: a:1}\n", `listeners[0].require_tls (line 1): "maybe" is not true or false`},
		{"list for text", "listeners: [{name: a, address: [a:1]}]\nupstream: {address: a:1}\n", "listeners[0].address (line 1): expected text, not a list"},
		{"text for a list", valid + "limits: {trusted_networks: 10.0.0.0/8}\n", `limits.trusted_networks (line 3): expected a list, not "10.0.0.0/8"`},
		{"text for a section", valid + "timeouts: 30s\n", `timeouts (line 3): expected keys and values, not "30s"`},
		{"text for a list item", "listeners:\n  - pop3\nupstream: {address: a:1}\n", `listeners[0] (line 2): expected keys and values, not "pop3"`},
		{"key set twice", valid + "audit:\n  chain: true\n  chain: false\n", "audit.chain (line 5): set twice (first at line 4)"},
		{"map entry of the wrong type", "listeners: [{name: a, address: a:1}]\nupstreams: [{name: u, address: a:1}]\nroutes:\n  users: {alice: [u]}\n", `routes.users["alice"] (line 4): expected text, not a list`},
		{"not YAML", valid + "audit: [\n", "line 3: not valid YAML: did not find expected node content"},
		{"not a mapping", "just words\n", `line 1: expected keys and values, not "just words"`},
		{"semantic problem in a list item", "listeners:\n  - name: a\n    address: nohost\nupstream: {address: a:1}\n", `listeners[0].address (line 3): "nohost" is not host:port`},
		{"missing key: the line of its section", "listeners:\n  - name: a\nupstream: {address: a:1}\n", "listeners[0].address (line 2): is required (host:port)"},
		{"missing section: no line", "upstream: {address: a:1}\n", "listeners: at least one listener is required"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error\n%v\nwant it to contain\n%s", tt.name, err, tt.want)
		}
	}
}

// TestEveryProblemAtOnce checks that type errors do not hide each other or
// the semantic problems, that they come in file order, and that a value
// refused for its type is not reported a second time by validation.
func TestEveryProblemAtOnce(t *testing.T) {
	_, err := Parse([]byte(`listeners:
  - name: pop3
    adress: 127.0.0.1:110
upstream:
  address: a:1
timeouts:
  idle: 60
  login: 0s
limits:
  max_bad_commands: lots
`))
	want := `5 problems:
  listeners[0].address (line 2): is required (host:port)
  listeners[0].adress (line 3): unknown key; did you mean "address"?
  timeouts.idle (line 7): "60" is not a duration; write 60s or 10m
  timeouts.login (line 8): must be positive, not 0s
  limits.max_bad_commands (line 10): "lots" is not a whole number`
	if err == nil || err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}
}

func TestLoadEmptyFile(t *testing.T) {
	for _, text := range []string{"", "\n\n", "# nothing yet\n", "---\n"} {
		path := filepath.Join(t.TempDir(), "popproxy.yaml")
		os.WriteFile(path, []byte(text), 0o644)
		_, err := Load(path)
		if err == nil || err.Error() != path+" is empty" {
			t.Errorf("%q: %v", text, err)
		}
	}
	path := filepath.Join(t.TempDir(), "popproxy.yaml")
	os.WriteFile(path, []byte(valid+"timeouts: {idel: 1m}\n"), 0o644)
	if _, err := Load(path); err == nil || err.Error() != path+`: timeouts.idel (line 3): unknown key; did you mean "idle"?` {
		t.Errorf("one problem: %v", err)
	}
}

// TestYAMLFeaturesStillWork checks that the checking walk accepts what
// go-yaml decodes: anchors, merge keys, quoted strings, YAML 1.1 booleans.
func TestYAMLFeaturesStillWork(t *testing.T) {
	cfg, err := Parse([]byte(`
penalty: &strict {max: 3, window: 1h}
listeners: [{name: a, address: "a:1", require_tls: no}]
upstream: {address: a:1}
limits:
  failed_logins:
    per_user: {<<: *strict, block: 2h}
`))
	if err == nil || !strings.Contains(err.Error(), "penalty (line 2): unknown key") {
		t.Fatalf("an unknown key holding an anchor: %v", err)
	}
	cfg, err = Parse([]byte(`
listeners: [{name: a, address: "a:1", require_tls: no}]
upstream: {address: a:1}
limits:
  failed_logins:
    per_ip: &strict {max: 3, window: 1h}
    per_user: {<<: *strict, block: 2h}
`))
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Limits.FailedLogins.PerUser; p.Max != 3 || p.Window != time.Hour || p.Block != 2*time.Hour || *cfg.Listeners[0].RequireTLS {
		t.Errorf("decoded %+v", cfg)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"idle", "idle", 0}, {"idel", "idle", 1}, {"adress", "address", 1}, {"idl", "idle", 1},
		{"chian", "chain", 1}, {"login", "logon", 1}, {"max", "max_sessions", 9}, {"", "abc", 3},
	} {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestAuthMechanisms(t *testing.T) {
	plain := "listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\n"
	tls := "listeners: [{name: a, address: a:1, tls: implicit}]\ntls: {self_signed: [pop.example.com]}\nupstream: {address: a:1, allow_plaintext_upstream: true}\n"
	cfg, err := Parse([]byte(plain))
	if err != nil || !slices.Equal(cfg.Auth.Mechanisms, []string{"PLAIN", "LOGIN"}) {
		t.Fatalf("default mechanisms: %v, %v", cfg, err)
	}
	cfg, err = Parse([]byte(tls + "auth:\n  mechanisms: [oauthbearer, XOAUTH2, PLAIN]\n"))
	if err != nil || !slices.Equal(cfg.Auth.Mechanisms, []string{"OAUTHBEARER", "XOAUTH2", "PLAIN"}) {
		t.Fatalf("mechanisms: %v, %v", cfg, err)
	}
	for yaml, want := range map[string]string{
		plain + "auth: {mechanisms: []}":                  "auth.mechanisms (line 3): lists none",
		plain + "auth: {mechanisms: [PLAIN, CRAM-MD5]}":   `auth.mechanisms[1] (line 3): "CRAM-MD5" is not one of PLAIN, LOGIN, OAUTHBEARER, XOAUTH2`,
		plain + "auth: {mechanisms: [PLAIN, plain]}":      "auth.mechanisms[1] (line 3): PLAIN is listed twice",
		plain + "auth:\n  mechanisms:\n    - XOAUTH2\n":   "auth.mechanisms[0] (line 5): XOAUTH2 is offered only over TLS, and no listener has TLS",
		tls + "auth: {mechanisms: [OAUTHBEARER, GSSAPI]}": `auth.mechanisms[1] (line 4): "GSSAPI" is not one of`,
	} {
		_, err := Parse([]byte(yaml))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", yaml, err, want)
		}
	}
}

func TestSharedLimits(t *testing.T) {
	cfg, err := Parse([]byte(valid + "limits:\n  shared: {address: redis.example:6379}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Shared{Address: "redis.example:6379", TLS: TLSNone, Prefix: "popproxy:", Timeout: 50 * time.Millisecond,
		SessionLease: 30 * time.Second, OnUnavailable: "local"}
	if sh := cfg.Limits.Shared; sh == nil || *sh != want {
		t.Errorf("defaults: %+v, want %+v", sh, want)
	}
	if cfg, _ := Parse([]byte(valid)); cfg.Limits.Shared != nil {
		t.Errorf("without limits.shared: %+v, want nil (each instance its own limits)", cfg.Limits.Shared)
	}
	tests := []struct{ yaml, want string }{
		{"limits:\n  shared: {tls: none}\n", "limits.shared.address (line 4): is required"},
		{"limits:\n  shared:\n    address: r:1\n    on_unavailable: open\n", `limits.shared.on_unavailable (line 6): "open" is not one of local, closed`},
		{"limits:\n  shared:\n    address: r:1\n    tls: starttls\n", `limits.shared.tls (line 6): "starttls" is not one of none, implicit`},
		{"limits:\n  shared:\n    address: r:1\n    ca_file: ca.pem\n", "limits.shared.ca_file (line 6): is set but limits.shared.tls is none"},
		{"limits:\n  shared:\n    address: r:1\n    session_lease: 1s\n", "limits.shared.session_lease (line 6): must be at least 3s"},
		{"limits:\n  shared:\n    address: r:1\n    timeout: -1s\n", "limits.shared.timeout (line 6): must be positive"},
		{"limits:\n  shared:\n    adress: r:1\n", `limits.shared.adress (line 5): unknown key; did you mean "address"?`},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(valid + tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error\n%v\nwant it to contain\n%s", tt.yaml, err, tt.want)
		}
	}
}

// TestReservedVerbs checks that every verb in the proxy's verb table, and
// only those, cannot be allowed as an extension.
func TestReservedVerbs(t *testing.T) {
	for _, v := range append(proxy.ReservedVerbs(), "XFOO") {
		_, err := Parse([]byte("listeners: [{name: a, address: a:1}]\nupstream: {address: a:1}\ncommands: {allow: [{verb: " + v + "}]}"))
		reserved := err != nil && strings.Contains(err.Error(), v+" is handled by the proxy itself")
		if want := v != "XFOO"; reserved != want {
			t.Errorf("commands.allow %s: err %v, want reserved %v", v, err, want)
		}
	}
}
