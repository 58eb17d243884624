// Package config is popproxy's configuration file: its shape, its defaults and
// its validation. Errors name the field and its line, and say what is wrong
// with it; one run reports every problem.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/popproxy/popproxy/internal/pop3"
	"github.com/popproxy/popproxy/internal/ratelimit"
	"github.com/popproxy/popproxy/proxy"
)

// TLS modes of a listener or of the upstream.
const (
	TLSNone     = "none"
	TLSStartTLS = "starttls"
	TLSImplicit = "implicit"
)

// Config is the whole file. See README.md for every field.
type Config struct {
	Listeners []Listener `yaml:"listeners"`
	TLS       TLS        `yaml:"tls"`
	// Upstream is the one server behind the proxy; Upstreams and Routes
	// are for several. Parse turns the first form into the second.
	Upstream  Upstream   `yaml:"upstream"`
	Upstreams []Upstream `yaml:"upstreams"`
	Routes    Routes     `yaml:"routes"`
	Timeouts  Timeouts   `yaml:"timeouts"`
	Limits    Limits     `yaml:"limits"`
	Commands  Commands   `yaml:"commands"`
	Auth      Auth       `yaml:"auth"`
	Audit     Audit      `yaml:"audit"`
	Admin     Admin      `yaml:"admin"`

	singleUpstream bool // the file used `upstream`, not `upstreams`
}

// Admin is the HTTP listener for Prometheus metrics and health checks.
type Admin struct {
	// Address is host:port; empty means off. Keep it on loopback or a
	// management network: it has no authentication.
	Address string `yaml:"address"`
}

// Listener is one address where clients connect.
type Listener struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`
	TLS     string `yaml:"tls"`
	// RequireTLS refuses logins before STLS. A pointer so that an absent key
	// can default to true.
	RequireTLS *bool `yaml:"require_tls"`
	// ProxyProtocol requires a PROXY v1/v2 header from these networks (a
	// load balancer) and refuses every other peer; empty means off.
	ProxyProtocol []string `yaml:"proxy_protocol"`
	// APOP is "off" or "passthrough": connect to the default route's
	// upstream before greeting, and relay APOP with its timestamp.
	APOP string `yaml:"apop"`
}

// APOP modes of a listener.
const (
	APOPOff         = "off"
	APOPPassthrough = "passthrough"
)

// TLS configures the listeners' side of TLS: certificates and protocol.
type TLS struct {
	Certificates []Certificate `yaml:"certificates"`
	// SelfSigned generates a certificate for these names at start (tests, demos).
	SelfSigned []string `yaml:"self_signed"`
	ACME       *ACME    `yaml:"acme"`
	MinVersion string   `yaml:"min_version"`
	// SessionTickets allows TLS session resumption; a pointer so that an
	// absent key can default to true.
	SessionTickets *bool `yaml:"session_tickets"`
}

// ACME obtains certificates automatically (certmagic).
type ACME struct {
	Domains          []string `yaml:"domains"`
	Email            string   `yaml:"email"`
	CA               string   `yaml:"ca"`
	Storage          string   `yaml:"storage"`
	HTTPPort         int      `yaml:"http_port"`
	ListenHost       string   `yaml:"listen_host"`
	TLSALPN          bool     `yaml:"tls_alpn"`
	TLSALPNPort      int      `yaml:"tls_alpn_port"`
	OnDemand         []string `yaml:"on_demand"`
	TrustedRootsFile string   `yaml:"trusted_roots_file"`
}

// Certificate is a PEM certificate chain and its key.
type Certificate struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Routes choose an upstream per user.
type Routes struct {
	Users       map[string]string `yaml:"users"`
	Domains     map[string]string `yaml:"domains"`
	Default     string            `yaml:"default"`
	MapFile     string            `yaml:"map_file"`
	StripDomain bool              `yaml:"strip_domain"`
	AddDomain   string            `yaml:"add_domain"`
}

// Send-client modes of an upstream.
var sendClientModes = []string{"none", "proxy-v1", "proxy-v2", "xclient"}

// UpstreamCapabilities are the capabilities (RFC 2449 §6) popproxy takes
// from the upstream server: TOP and UIDL, which it announces only if the
// server has them, and PIPELINING, with which it sends USER and PASS
// together; the rest it provides itself.
var UpstreamCapabilities = []string{"TOP", "UIDL", "PIPELINING"}

// Upstream is a POP3 server behind the proxy.
type Upstream struct {
	Name string `yaml:"name"`
	// Address is a single host:port; Addresses several, tried in order.
	Address   string   `yaml:"address"`
	Addresses []string `yaml:"addresses"`
	// SendClient tells the server the client's address: none, proxy-v1,
	// proxy-v2 or xclient.
	SendClient string `yaml:"send_client"`
	TLS        string `yaml:"tls"`
	// Login is how the proxy logs in upstream: "user" (USER/PASS) or "plain"
	// (AUTH PLAIN, needed to pass an authorization identity through).
	Login string `yaml:"login"`
	// Capabilities, if set, are the server's among UpstreamCapabilities,
	// instead of what popproxy learns from it; an empty list says it has
	// none. A pointer so that an absent key differs from an empty list.
	Capabilities       *[]string    `yaml:"capabilities"`
	ServerName         string       `yaml:"server_name"`
	CAFile             string       `yaml:"ca_file"`
	InsecureSkipVerify bool         `yaml:"insecure_skip_verify"`
	ClientCert         *Certificate `yaml:"client_cert"`
	MinVersion         string       `yaml:"min_version"`
	// AllowPlaintextUpstream permits upstream.tls none behind TLS listeners,
	// which forwards credentials that arrived encrypted in clear.
	AllowPlaintextUpstream bool `yaml:"allow_plaintext_upstream"`
}

// Timeouts bound every wait.
type Timeouts struct {
	Login            time.Duration `yaml:"login"`
	Idle             time.Duration `yaml:"idle"`
	UpstreamDial     time.Duration `yaml:"upstream_dial"`
	UpstreamResponse time.Duration `yaml:"upstream_response"`
	ShutdownGrace    time.Duration `yaml:"shutdown_grace"`
}

// Limits bound sessions, logins, commands and bandwidth. Zero switches a
// limit off.
type Limits struct {
	MaxBadCommands  int          `yaml:"max_bad_commands"`
	MaxSessions     int          `yaml:"max_sessions"`
	TrustedNetworks []string     `yaml:"trusted_networks"`
	IPv6Prefix      int          `yaml:"ipv6_prefix"`
	PerIP           PerIP        `yaml:"per_ip"`
	FailedLogins    FailedLogins `yaml:"failed_logins"`
	PerUser         PerUser      `yaml:"per_user"`
	PerSession      PerSession   `yaml:"per_session"`
	// UsernameCase is how the per-user limits treat the case of the login
	// sent upstream: "fold" (ASCII, for servers that ignore case) or "keep".
	UsernameCase string `yaml:"username_case"`
	// Shared, if set, keeps the failed logins, the per-user sessions,
	// LOGIN-DELAY and the per-address connection rate in Redis or Valkey,
	// so that a fleet of instances applies them as one. Nil: each instance
	// keeps its own, as without it.
	Shared *Shared `yaml:"shared"`
}

// Shared is the store of the fleet-wide limits.
type Shared struct {
	// Address is the store's host:port.
	Address string `yaml:"address"`
	// PasswordFile holds the store's password (AUTH), on its first line.
	PasswordFile string `yaml:"password_file"`
	// TLS is none or implicit (the store's tls-port); CAFile, the CAs that
	// sign its certificate, else the system's.
	TLS    string `yaml:"tls"`
	CAFile string `yaml:"ca_file"`
	// Prefix starts every key. Default "popproxy:".
	Prefix string `yaml:"prefix"`
	// Timeout bounds each round trip to the store. Default 50ms.
	Timeout time.Duration `yaml:"timeout"`
	// SessionLease is how long a session of a crashed instance keeps its
	// per-user slot. Default 30s.
	SessionLease time.Duration `yaml:"session_lease"`
	// OnUnavailable is what a slow or unreachable store means: "local"
	// (each instance applies its own limits until the store answers) or
	// "closed" (logins are refused with [SYS/TEMP]).
	OnUnavailable string `yaml:"on_unavailable"`
}

// PerIP limits each client address (IPv6: each prefix).
type PerIP struct {
	MaxSessions     int     `yaml:"max_sessions"`
	ConnectionRate  float64 `yaml:"connection_rate"`
	ConnectionBurst int     `yaml:"connection_burst"`
}

// FailedLogins configures the penalties for failed logins, per address and
// per user, counted apart.
type FailedLogins struct {
	PerIP   Penalty `yaml:"per_ip"`
	PerUser Penalty `yaml:"per_user"`
}

// Penalty is a progressive delay and then a temporary block.
type Penalty struct {
	Max      int           `yaml:"max"`
	Window   time.Duration `yaml:"window"`
	Delay    time.Duration `yaml:"delay"`
	MaxDelay time.Duration `yaml:"max_delay"`
	Block    time.Duration `yaml:"block"`
}

// PerUser limits each user, across sessions.
type PerUser struct {
	MaxSessions  int           `yaml:"max_sessions"`
	LoginDelay   time.Duration `yaml:"login_delay"`
	DownloadRate int           `yaml:"download_rate"`
}

// PerSession limits each session after login.
type PerSession struct {
	CommandRate   float64 `yaml:"command_rate"`
	CommandBurst  int     `yaml:"command_burst"`
	DownloadRate  int     `yaml:"download_rate"`
	MaxRetrievals int     `yaml:"max_retrievals"`
}

// Commands configures which commands beyond RFC 1939's are relayed.
type Commands struct {
	Allow []Extension `yaml:"allow"`
}

// Extension is a command relayed after login without knowing its syntax.
type Extension struct {
	Verb      string `yaml:"verb"`
	MaxArgs   int    `yaml:"max_args"`
	Multiline bool   `yaml:"multiline"`
}

// Auth configures how clients log in.
type Auth struct {
	// Mechanisms are the SASL mechanisms offered to clients (RFC 5034), in
	// the order CAPA lists them: some of Mechanisms below.
	Mechanisms []string `yaml:"mechanisms"`
}

// Mechanisms popproxy can serve: PLAIN and LOGIN it decodes, OAUTHBEARER
// (RFC 7628) and XOAUTH2 it relays to the server, which checks the token.
var Mechanisms = []string{"PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"}

// Audit configures the audit trail.
type Audit struct {
	// Output is "stdout", "syslog" or a file path.
	Output string `yaml:"output"`
	// Chain makes each record carry the hash of the previous one.
	Chain bool `yaml:"chain"`
	// ResolveUIDs asks the server for a message's UIDL and size (UIDL n,
	// LIST n) before relaying a RETR, TOP or DELE the client did not list
	// first.
	ResolveUIDs bool `yaml:"resolve_uids"`
	// Checkpoint is how often long sessions are summarised and, with Chain,
	// the chain head is written to the operational log; 0 means never.
	Checkpoint time.Duration `yaml:"checkpoint"`
	// OnFailure is "close" (refuse sessions while the audit trail cannot
	// be written) or "continue".
	OnFailure string `yaml:"on_failure"`
}

// minIdle is RFC 1939 §3's floor for the autologout timer after login.
const minIdle = 10 * time.Minute

// Default returns the values used for keys the file leaves out.
func Default() Config {
	return Config{
		Upstream: Upstream{TLS: TLSNone, Login: "user"},
		Timeouts: Timeouts{
			Login:            60 * time.Second,
			Idle:             minIdle,
			UpstreamDial:     10 * time.Second,
			UpstreamResponse: 60 * time.Second,
			ShutdownGrace:    30 * time.Second,
		},
		Limits: Limits{
			MaxBadCommands: 10,
			MaxSessions:    10000,
			IPv6Prefix:     64,
			PerIP:          PerIP{MaxSessions: 50, ConnectionRate: 10, ConnectionBurst: 50},
			FailedLogins: FailedLogins{
				PerIP:   Penalty{Max: 30, Window: 15 * time.Minute, Delay: 0, MaxDelay: 15 * time.Second, Block: 15 * time.Minute},
				PerUser: Penalty{Max: 10, Window: 15 * time.Minute, Delay: time.Second, MaxDelay: 15 * time.Second, Block: 15 * time.Minute},
			},
			PerUser:      PerUser{MaxSessions: 4},
			PerSession:   PerSession{CommandRate: 1000, CommandBurst: 5000},
			UsernameCase: "fold",
		},
		Auth:  Auth{Mechanisms: []string{"PLAIN", "LOGIN"}},
		Audit: Audit{Output: "stdout", Checkpoint: 5 * time.Minute, OnFailure: "close"},
	}
}

// Load reads, defaults and validates the file at path. Relative file names
// in it are taken relative to the file's folder.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(data)
	if errors.Is(err, errEmpty) {
		return nil, fmt.Errorf("%s is empty", path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cfg.resolvePaths(filepath.Dir(path))
	return cfg, nil
}

// resolvePaths makes the file names in c relative to dir absolute.
func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for i := range c.TLS.Certificates {
		abs(&c.TLS.Certificates[i].CertFile)
		abs(&c.TLS.Certificates[i].KeyFile)
	}
	if a := c.TLS.ACME; a != nil {
		abs(&a.Storage)
		abs(&a.TrustedRootsFile)
	}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		abs(&u.CAFile)
		if u.ClientCert != nil {
			abs(&u.ClientCert.CertFile)
			abs(&u.ClientCert.KeyFile)
		}
	}
	abs(&c.Routes.MapFile)
	if sh := c.Limits.Shared; sh != nil {
		abs(&sh.PasswordFile)
		abs(&sh.CAFile)
	}
	if c.Audit.Output != "stdout" && c.Audit.Output != "syslog" {
		abs(&c.Audit.Output)
	}
}

// Parse is Load without the file. It reports every problem at once, each
// with its field and line: unknown keys (so that a misspelt option is not
// silently ignored), values of the wrong type, and what Validate finds.
func Parse(data []byte) (*Config, error) {
	cfg := Default()
	lines, found, err := decode(data, &cfg)
	if err != nil {
		return nil, err
	}
	cfg.complete()
	if all := locate(cfg.problems(), lines, found); len(all) > 0 {
		return nil, all
	}
	return &cfg, nil
}

// Complete fills the defaults that depend on other fields and validates.
// A Config built in code calls it; Parse does the same.
func (c *Config) Complete() error {
	c.complete()
	return c.Validate()
}

func (c *Config) complete() {
	c.normalizeUpstreams()
	for i, m := range c.Auth.Mechanisms {
		c.Auth.Mechanisms[i] = strings.ToUpper(m) // SASL names ignore case (RFC 4422 §3.1)
	}
	if sh := c.Limits.Shared; sh != nil {
		sh.complete()
	}
	if c.TLS.SessionTickets == nil {
		on := true
		c.TLS.SessionTickets = &on
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.TLS == "" {
			l.TLS = TLSNone
		}
		if l.RequireTLS == nil {
			required := l.TLS == TLSStartTLS
			l.RequireTLS = &required
		}
		if l.APOP == "" {
			l.APOP = APOPOff
		}
	}
}

// Validate reports every problem it finds, one per line, each with its field.
func (c *Config) Validate() error {
	if ps := c.problems(); len(ps) > 0 {
		return ps
	}
	return nil
}

func (c *Config) problems() problems {
	var ps problems
	bad := func(field, format string, args ...any) {
		ps = append(ps, problem{field: field, msg: fmt.Sprintf(format, args...)})
	}
	if len(c.Listeners) == 0 {
		bad("listeners", "at least one listener is required")
	}
	names := map[string]bool{}
	for i, l := range c.Listeners {
		field := fmt.Sprintf("listeners[%d]", i)
		switch {
		case l.Name == "":
			bad(field+".name", "is required")
		case names[l.Name]:
			bad(field+".name", "%q is used by another listener", l.Name)
		}
		names[l.Name] = true
		checkAddress(bad, field+".address", l.Address)
		checkTLSMode(bad, field+".tls", l.TLS)
		if l.RequireTLS != nil && *l.RequireTLS && l.TLS == TLSNone {
			bad(field+".require_tls", "is true but the listener has no TLS")
		}
		switch {
		case l.APOP != APOPOff && l.APOP != APOPPassthrough:
			bad(field+".apop", "%q is not one of off, passthrough", l.APOP)
		case l.APOP == APOPPassthrough && c.Routes.Default == "":
			// The greeting, with the server's timestamp, goes out before
			// the user is known: only the default route can serve APOP.
			bad(field+".apop", "passthrough needs a default route: set routes.default, or use the single upstream form")
		}
		for j, n := range l.ProxyProtocol {
			if _, err := ratelimit.ParseNetworks([]string{n}); err != nil {
				bad(fmt.Sprintf("%s.proxy_protocol[%d]", field, j), "%q is not an address or CIDR prefix", n)
			}
		}
	}
	c.validateTLS(bad)
	if c.Admin.Address != "" {
		checkAddress(bad, "admin.address", c.Admin.Address)
	}
	c.validateUpstreams(bad)
	positive := map[string]time.Duration{
		"timeouts.login":             c.Timeouts.Login,
		"timeouts.upstream_dial":     c.Timeouts.UpstreamDial,
		"timeouts.upstream_response": c.Timeouts.UpstreamResponse,
	}
	for _, field := range []string{"timeouts.login", "timeouts.upstream_dial", "timeouts.upstream_response"} {
		if positive[field] <= 0 {
			bad(field, "must be positive, not %s", positive[field])
		}
	}
	if c.Timeouts.Idle < minIdle {
		bad("timeouts.idle", "%s is below RFC 1939's minimum of 10m after login", c.Timeouts.Idle)
	}
	if c.Timeouts.ShutdownGrace < 0 {
		bad("timeouts.shutdown_grace", "must not be negative")
	}
	c.validateLimits(bad)
	c.validateAuth(bad)
	// The proxy answers these or speaks them to upstreams itself. XCLIENT
	// and XPOPPROXY would let a logged-in client tell the server a forged
	// address or proxy chain.
	reserved := proxy.ReservedVerbs()
	verbs := map[string]bool{}
	for i, e := range c.Commands.Allow {
		field := fmt.Sprintf("commands.allow[%d]", i)
		v := strings.ToUpper(e.Verb)
		switch {
		case !pop3.IsKeyword(v):
			bad(field+".verb", "%q is not a command keyword (letters and digits, 1 to 16)", e.Verb)
		case slices.Contains(reserved, v):
			bad(field+".verb", "%s is handled by the proxy itself", v)
		case verbs[v]:
			bad(field+".verb", "%s is listed twice", v)
		}
		verbs[v] = true
		if e.MaxArgs < 0 || e.MaxArgs > 8 {
			bad(field+".max_args", "must be between 0 and 8, not %d", e.MaxArgs)
		}
	}
	if c.Audit.Output == "" {
		bad("audit.output", `is required: "stdout", "syslog" or a file path`)
	}
	if c.Audit.OnFailure != "close" && c.Audit.OnFailure != "continue" {
		bad("audit.on_failure", "%q is not one of close, continue", c.Audit.OnFailure)
	}
	if c.Audit.Checkpoint < 0 {
		bad("audit.checkpoint", "must not be negative")
	}
	return ps
}

func (c *Config) validateAuth(bad func(string, string, ...any)) {
	if len(c.Auth.Mechanisms) == 0 {
		bad("auth.mechanisms", "lists none: name at least one of %s", strings.Join(Mechanisms, ", "))
	}
	seen := map[string]bool{}
	for i, m := range c.Auth.Mechanisms {
		field := fmt.Sprintf("auth.mechanisms[%d]", i)
		switch {
		case !slices.Contains(Mechanisms, m):
			bad(field, "%q is not one of %s", m, strings.Join(Mechanisms, ", "))
		case seen[m]:
			bad(field, "%s is listed twice", m)
		case pop3.IsOAuth(m) && !c.listensWithTLS():
			// A bearer token is as good as a password to whoever reads it.
			bad(field, "%s is offered only over TLS, and no listener has TLS", m)
		}
		seen[m] = true
	}
}

// listensWithTLS reports whether a listener has TLS, from the start or after STLS.
func (c *Config) listensWithTLS() bool {
	return slices.ContainsFunc(c.Listeners, func(l Listener) bool { return l.TLS != TLSNone })
}

func (c *Config) validateLimits(bad func(string, string, ...any)) {
	l := c.Limits
	if l.MaxBadCommands < 1 {
		bad("limits.max_bad_commands", "must be at least 1, not %d", l.MaxBadCommands)
	}
	if l.IPv6Prefix < 1 || l.IPv6Prefix > 128 {
		bad("limits.ipv6_prefix", "must be between 1 and 128, not %d", l.IPv6Prefix)
	}
	for i, n := range l.TrustedNetworks {
		if _, err := ratelimit.ParseNetworks([]string{n}); err != nil {
			bad(fmt.Sprintf("limits.trusted_networks[%d]", i), "%q is not an address or CIDR prefix", n)
		}
	}
	type field struct {
		name  string
		value float64
	}
	nonNegative := []field{
		{"limits.max_sessions", float64(l.MaxSessions)},
		{"limits.per_ip.max_sessions", float64(l.PerIP.MaxSessions)},
		{"limits.per_ip.connection_rate", l.PerIP.ConnectionRate},
		{"limits.per_ip.connection_burst", float64(l.PerIP.ConnectionBurst)},
		{"limits.per_user.max_sessions", float64(l.PerUser.MaxSessions)},
		{"limits.per_user.login_delay", float64(l.PerUser.LoginDelay)},
		{"limits.per_user.download_rate", float64(l.PerUser.DownloadRate)},
		{"limits.per_session.command_rate", l.PerSession.CommandRate},
		{"limits.per_session.command_burst", float64(l.PerSession.CommandBurst)},
		{"limits.per_session.download_rate", float64(l.PerSession.DownloadRate)},
		{"limits.per_session.max_retrievals", float64(l.PerSession.MaxRetrievals)},
	}
	for name, p := range map[string]Penalty{"limits.failed_logins.per_ip": l.FailedLogins.PerIP, "limits.failed_logins.per_user": l.FailedLogins.PerUser} {
		nonNegative = append(nonNegative, field{name + ".max", float64(p.Max)}, field{name + ".window", float64(p.Window)},
			field{name + ".delay", float64(p.Delay)}, field{name + ".max_delay", float64(p.MaxDelay)}, field{name + ".block", float64(p.Block)})
	}
	for _, f := range nonNegative {
		if f.value < 0 {
			bad(f.name, "must not be negative (0 switches it off)")
		}
	}
	if l.PerUser.LoginDelay%time.Second != 0 {
		bad("limits.per_user.login_delay", "must be whole seconds (RFC 2449 LOGIN-DELAY), not %s", l.PerUser.LoginDelay)
	}
	if l.UsernameCase != "fold" && l.UsernameCase != "keep" {
		bad("limits.username_case", "%q is not one of fold, keep", l.UsernameCase)
	}
	if l.Shared != nil {
		l.Shared.validate(bad)
	}
}

// complete fills in the defaults of the shared store.
func (sh *Shared) complete() {
	if sh.TLS == "" {
		sh.TLS = TLSNone
	}
	if sh.Prefix == "" {
		sh.Prefix = "popproxy:"
	}
	if sh.Timeout == 0 {
		sh.Timeout = 50 * time.Millisecond
	}
	if sh.SessionLease == 0 {
		sh.SessionLease = 30 * time.Second
	}
	if sh.OnUnavailable == "" {
		sh.OnUnavailable = "local"
	}
}

func (sh *Shared) validate(bad func(string, string, ...any)) {
	if sh.Address == "" {
		bad("limits.shared.address", "is required (host:port of Redis or Valkey)")
	} else {
		checkAddress(bad, "limits.shared.address", sh.Address)
	}
	if sh.TLS != TLSNone && sh.TLS != TLSImplicit {
		bad("limits.shared.tls", "%q is not one of none, implicit", sh.TLS)
	}
	if sh.TLS == TLSNone && sh.CAFile != "" {
		bad("limits.shared.ca_file", "is set but limits.shared.tls is none")
	}
	if sh.Timeout <= 0 {
		bad("limits.shared.timeout", "must be positive, not %s", sh.Timeout)
	}
	if sh.SessionLease < 3*time.Second {
		bad("limits.shared.session_lease", "must be at least 3s, not %s", sh.SessionLease)
	}
	if sh.OnUnavailable != "local" && sh.OnUnavailable != "closed" {
		bad("limits.shared.on_unavailable", "%q is not one of local, closed", sh.OnUnavailable)
	}
}

// normalizeUpstreams turns the single-upstream form into one upstream named
// "default" that every user is routed to, and fills each upstream's defaults.
func (c *Config) normalizeUpstreams() {
	if len(c.Upstreams) == 0 && c.Routes.Default == "" {
		u := c.Upstream
		u.Name = "default"
		c.Upstreams = []Upstream{u}
		c.Routes.Default = "default"
		c.singleUpstream = true
	}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if u.Address != "" {
			u.Addresses = append([]string{u.Address}, u.Addresses...)
			u.Address = ""
		}
		if u.TLS == "" {
			u.TLS = TLSNone
		}
		if u.Login == "" {
			u.Login = "user"
		}
		if u.SendClient == "" {
			u.SendClient = "none"
		}
	}
}

func (c *Config) validateUpstreams(bad func(string, string, ...any)) {
	names := map[string]bool{}
	for i, u := range c.Upstreams {
		field := fmt.Sprintf("upstreams[%d]", i)
		if c.singleUpstream {
			field = "upstream"
		} else if u.Name == "" || names[u.Name] {
			bad(field+".name", "%q is empty or used twice", u.Name)
		}
		names[u.Name] = true
		if len(u.Addresses) == 0 {
			bad(field+".address", "is required (host:port)")
		}
		for _, a := range u.Addresses {
			checkAddress(bad, field+".address", a)
		}
		checkTLSMode(bad, field+".tls", u.TLS)
		if u.TLS != TLSNone && u.ServerName == "" && !u.InsecureSkipVerify {
			checkHosts(bad, field, u.Addresses)
		}
		checkVersion(bad, field+".min_version", u.MinVersion, "1.0", "1.1", "1.2", "1.3")
		if u.TLS == TLSNone && c.UsesTLS() && !u.AllowPlaintextUpstream {
			bad(field+".tls", "is none while clients log in over TLS: their credentials would travel on in clear; "+
				"set "+field+".tls, or "+field+".allow_plaintext_upstream: true if the network to the server is trusted")
		}
		if u.TLS == TLSNone && (u.CAFile != "" || u.ClientCert != nil || u.InsecureSkipVerify) {
			bad(field+".tls", "is none, but upstream TLS options are set")
		}
		if u.Login != "user" && u.Login != "plain" {
			bad(field+".login", "%q is not one of user, plain", u.Login)
		}
		if u.Capabilities != nil {
			for j, c := range *u.Capabilities {
				if !slices.Contains(UpstreamCapabilities, strings.ToUpper(c)) {
					bad(fmt.Sprintf("%s.capabilities[%d]", field, j), "%q is not one popproxy takes from the server: %s (the others it provides itself)",
						c, strings.Join(UpstreamCapabilities, ", "))
				}
			}
		}
		if !slices.Contains(sendClientModes, u.SendClient) {
			bad(field+".send_client", "%q is not one of %s", u.SendClient, strings.Join(sendClientModes, ", "))
		}
	}
	if c.singleUpstream {
		return
	}
	if c.Upstream.Address != "" || len(c.Upstream.Addresses) > 0 {
		bad("upstream", "is set together with upstreams: use one or the other")
	}
	refs := map[string]string{"routes.default": c.Routes.Default}
	for user, name := range c.Routes.Users {
		refs[fmt.Sprintf("routes.users[%q]", user)] = name
	}
	for domain, name := range c.Routes.Domains {
		refs[fmt.Sprintf("routes.domains[%q]", domain)] = name
	}
	for field, name := range refs {
		if name != "" && !names[name] {
			bad(field, "upstream %q is not defined in upstreams", name)
		}
	}
}

// UsesTLS reports whether any listener offers TLS.
func (c *Config) UsesTLS() bool {
	for _, l := range c.Listeners {
		if l.TLS != TLSNone {
			return true
		}
	}
	return false
}

func (c *Config) validateTLS(bad func(string, string, ...any)) {
	t := c.TLS
	if c.UsesTLS() && len(t.Certificates) == 0 && len(t.SelfSigned) == 0 && t.ACME == nil {
		bad("tls", "a listener uses TLS but there is no certificate: set tls.certificates, tls.acme or tls.self_signed")
	}
	for i, cert := range t.Certificates {
		field := fmt.Sprintf("tls.certificates[%d]", i)
		if cert.CertFile == "" {
			bad(field+".cert_file", "is required")
		}
		if cert.KeyFile == "" {
			bad(field+".key_file", "is required")
		}
	}
	checkVersion(bad, "tls.min_version", t.MinVersion, "1.2", "1.3")
	if a := t.ACME; a != nil {
		if len(a.Domains) == 0 && len(a.OnDemand) == 0 {
			bad("tls.acme.domains", "is empty and so is tls.acme.on_demand: nothing to obtain")
		}
		if a.Email == "" {
			bad("tls.acme.email", "is required (the CA's account contact)")
		}
		if a.Storage == "" {
			bad("tls.acme.storage", "is required (a folder for keys and certificates)")
		}
		if a.HTTPPort == 0 && !a.TLSALPN {
			bad("tls.acme", "no challenge enabled: set http_port (HTTP-01) or tls_alpn: true")
		}
		for field, port := range map[string]int{"tls.acme.http_port": a.HTTPPort, "tls.acme.tls_alpn_port": a.TLSALPNPort} {
			if port < 0 || port > 65535 {
				bad(field, "%d is not a port", port)
			}
		}
	}
}

func checkTLSMode(bad func(string, string, ...any), field, mode string) {
	switch mode {
	case TLSNone, TLSStartTLS, TLSImplicit:
	default:
		bad(field, "%q is not one of none, starttls, implicit", mode)
	}
}

func checkVersion(bad func(string, string, ...any), field, v string, allowed ...string) {
	if v != "" && !slices.Contains(allowed, v) {
		bad(field, "%q is not one of %s", v, strings.Join(allowed, ", "))
	}
}

// checkHosts makes sure each address names a host that the server's
// certificate can be checked against, as it is without server_name.
func checkHosts(bad func(string, string, ...any), field string, addrs []string) {
	for _, a := range addrs {
		if host, _, err := net.SplitHostPort(a); err == nil && host == "" {
			bad(field+".address", "%q has no host to check the server's certificate against; set %s.server_name", a, field)
		}
	}
}

func checkAddress(bad func(string, string, ...any), field, addr string) {
	if addr == "" {
		bad(field, "is required (host:port)")
		return
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		bad(field, "%q is not host:port", addr)
	}
}
