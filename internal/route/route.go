package route

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode"
	"unicode/utf8"
)

// Errors returned by Route. Both are wrapped with a reason that never
// contains the user name itself, so they are safe to log.
var (
	// ErrNoRoute means the user name is well formed but matches no entry and
	// there is no default upstream.
	ErrNoRoute = errors.New("route: no upstream for this user")
	// ErrBadUser means the user name cannot be a routing key: it is empty,
	// longer than MaxUserLen octets, not valid UTF-8, or contains a control,
	// format or white-space character.
	ErrBadUser = errors.New("route: bad user name")
)

// MaxUserLen is the longest user name Route accepts, in octets, and the
// longest login it returns after rewriting.
const MaxUserLen = 255

// Upstream is one backend: one or more addresses of the same mail store,
// tried in order with failover.
type Upstream struct {
	// Name identifies the upstream in Users, Domains, Default and map files.
	// It is required, unique, and contains no white space or control
	// characters.
	Name string
	// Addresses are "host:port" with a numeric port, tried in order.
	// At least one is required.
	Addresses []string
}

// Config is a routing table. The zero Config routes nobody.
type Config struct {
	Upstreams []Upstream
	// Users maps an exact user name (case-sensitive, as the client sent it)
	// to an upstream name.
	Users map[string]string
	// Domains maps a domain ("example.com", without '@') to an upstream
	// name. It is matched against the part of the user name after the last
	// '@', ignoring ASCII case; non-ASCII letters must match exactly, so that
	// Unicode case folding ("\u212A" is a Kelvin sign that lowers to "k")
	// cannot make one domain match another.
	Domains map[string]string
	// Default is the upstream for users that match neither Users nor
	// Domains. If empty, such users get ErrNoRoute.
	Default string
	// StripDomain sends "user" upstream when the client logged in as
	// "user@domain" (everything from the last '@' is removed).
	StripDomain bool
	// AddDomain, if not empty, sends "user@AddDomain" upstream when the
	// login (after StripDomain) contains no '@'. With both set, the domain
	// is replaced.
	AddDomain string
}

// Target is where one user goes.
type Target struct {
	// Upstream is the name of the chosen upstream.
	Upstream string
	// Addresses are the upstream's addresses, in order of preference. The
	// slice is the caller's own copy.
	Addresses []string
	// Login is the user name to send upstream, after rewriting.
	Login string
}

// Router routes user names to upstreams. It is safe for concurrent use;
// Update replaces the table atomically, so a session sees either the old
// table or the new one, never a mixture.
type Router struct {
	t atomic.Pointer[table]
}

// table is one validated Config, never modified after compile.
type table struct {
	upstreams   map[string][]string
	users       map[string]string
	domains     map[string]string // keys ASCII-lowercased
	def         string
	stripDomain bool
	addDomain   string
	reachable   []string // upstream names some route leads to, sorted
}

// New validates cfg and returns a Router for it. The error lists every
// problem found, each naming the field or entry.
func New(cfg Config) (*Router, error) {
	t, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	r := &Router{}
	r.t.Store(t)
	return r, nil
}

// Update validates cfg and, if it is valid, makes it the routing table for
// every later Route call. On error the old table stays in use. Sessions
// already routed keep their Target.
func (r *Router) Update(cfg Config) error {
	t, err := compile(cfg)
	if err != nil {
		return err
	}
	r.t.Store(t)
	return nil
}

// Route returns the upstream for user and the login to send there. user is
// checked first (see ErrBadUser); then it is looked up in Users, its domain
// in Domains, and finally Default is used. A user name containing '@' must
// have something on both sides of the last one.
func (r *Router) Route(user string) (Target, error) {
	if err := checkUser(user); err != nil {
		return Target{}, err
	}
	local, domain, hasAt := splitUser(user)
	if hasAt && (local == "" || domain == "") {
		return Target{}, fmt.Errorf("%w: empty part before or after '@'", ErrBadUser)
	}
	t := r.t.Load()
	name, ok := t.users[user]
	if !ok && hasAt {
		name, ok = t.domains[LowerASCII(domain)]
	}
	if !ok {
		if t.def == "" {
			return Target{}, ErrNoRoute
		}
		name = t.def
	}
	login := user
	if t.stripDomain && hasAt {
		login = local
	}
	if t.addDomain != "" && !strings.Contains(login, "@") {
		login += "@" + t.addDomain
	}
	if len(login) > MaxUserLen {
		return Target{}, fmt.Errorf("%w: longer than %d octets after adding the domain", ErrBadUser, MaxUserLen)
	}
	return Target{
		Upstream:  name,
		Addresses: slices.Clone(t.upstreams[name]),
		Login:     login,
	}, nil
}

// Default returns the upstream that users matching no entry go to, with an
// empty Login, or ErrNoRoute if there is none. An APOP passthrough listener
// needs it before any user name is known.
func (r *Router) Default() (Target, error) {
	t := r.t.Load()
	if t.def == "" {
		return Target{}, ErrNoRoute
	}
	return Target{Upstream: t.def, Addresses: slices.Clone(t.upstreams[t.def])}, nil
}

// Reachable returns the upstreams that some route leads to (an entry of
// Users or Domains, or Default), by name, with their addresses: the servers a
// user unknown yet may end up on. The slices are the caller's own.
func (r *Router) Reachable() []Upstream {
	t := r.t.Load()
	out := make([]Upstream, 0, len(t.reachable))
	for _, name := range t.reachable {
		out = append(out, Upstream{Name: name, Addresses: slices.Clone(t.upstreams[name])})
	}
	return out
}

// Upstreams returns every upstream of the current table, sorted by name,
// with its addresses, whether or not a route leads to it. The slices are the
// caller's own.
func (r *Router) Upstreams() []Upstream {
	t := r.t.Load()
	out := make([]Upstream, 0, len(t.upstreams))
	for _, name := range slices.Sorted(maps.Keys(t.upstreams)) {
		out = append(out, Upstream{Name: name, Addresses: slices.Clone(t.upstreams[name])})
	}
	return out
}

// checkUser reports whether s can be a user name: 1..MaxUserLen octets of
// valid UTF-8 with no control characters (C0, DEL, C1), no white space (which
// would also end the argument of USER) and no format characters other than
// the zero-width (non-)joiners some scripts need, so no bidi overrides, soft
// hyphens or other invisible characters that make two names look alike in a
// log. The error says why, without quoting s.
func checkUser(s string) error {
	if why := badToken(s); why != "" {
		return fmt.Errorf("%w: %s", ErrBadUser, why)
	}
	return nil
}

// badToken says what is wrong with s as a user name, domain or upstream
// name, or returns "" if nothing is.
func badToken(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > MaxUserLen:
		return fmt.Sprintf("longer than %d octets", MaxUserLen)
	}
	for i, c := range s {
		switch {
		case c == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			return fmt.Sprintf("invalid UTF-8 at octet %d", i)
		case unicode.IsControl(c):
			return fmt.Sprintf("control character at octet %d", i)
		case unicode.IsSpace(c):
			return fmt.Sprintf("white space at octet %d", i)
		case unicode.Is(unicode.Cf, c) && c != '\u200C' && c != '\u200D':
			return fmt.Sprintf("invisible format character at octet %d", i)
		}
	}
	return ""
}

// splitUser splits s at its last '@'.
func splitUser(s string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

// LowerASCII lowers A-Z only and leaves every other byte as it is, so that
// Unicode case folding cannot make two names one; see Config.Domains.
func LowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// compile validates cfg and builds its table, reporting every problem.
func compile(cfg Config) (*table, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("route: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	t := &table{
		upstreams:   make(map[string][]string, len(cfg.Upstreams)),
		users:       make(map[string]string, len(cfg.Users)),
		domains:     make(map[string]string, len(cfg.Domains)),
		def:         cfg.Default,
		stripDomain: cfg.StripDomain,
		addDomain:   cfg.AddDomain,
	}
	for i, u := range cfg.Upstreams {
		field := fmt.Sprintf("upstreams[%d]", i)
		if err := checkName(u.Name); err != nil {
			bad(field+".name", "%v", err)
		} else if _, dup := t.upstreams[u.Name]; dup {
			bad(field+".name", "%q is used by another upstream", u.Name)
		}
		if len(u.Addresses) == 0 {
			bad(field+".addresses", "at least one host:port is required")
		}
		for j, a := range u.Addresses {
			if err := checkAddress(a); err != nil {
				bad(fmt.Sprintf("%s.addresses[%d]", field, j), "%q %v", a, err)
			}
		}
		if _, dup := t.upstreams[u.Name]; !dup {
			t.upstreams[u.Name] = slices.Clone(u.Addresses)
		}
	}
	known := func(field, name string) {
		if _, ok := t.upstreams[name]; !ok {
			bad(field, "upstream %q is not defined", name)
		}
	}
	for _, user := range sortedKeys(cfg.Users) {
		field := fmt.Sprintf("users[%q]", user)
		if why := badToken(user); why != "" {
			bad(field, "bad user name: %s", why)
		} else if local, domain, hasAt := splitUser(user); hasAt && (local == "" || domain == "") {
			bad(field, "empty part before or after '@' (no user name can match)")
		}
		known(field, cfg.Users[user])
		t.users[user] = cfg.Users[user]
	}
	for _, domain := range sortedKeys(cfg.Domains) {
		field := fmt.Sprintf("domains[%q]", domain)
		if err := checkDomain(domain); err != nil {
			bad(field, "%v", err)
		}
		key := LowerASCII(domain)
		if _, dup := t.domains[key]; dup {
			bad(field, "differs from another domain only in case")
		}
		known(field, cfg.Domains[domain])
		t.domains[key] = cfg.Domains[domain]
	}
	if cfg.Default != "" {
		known("default", cfg.Default)
	}
	if cfg.AddDomain != "" {
		if err := checkDomain(cfg.AddDomain); err != nil {
			bad("add_domain", "%v", err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	t.reachable = reachable(t)
	return t, nil
}

// reachable lists, sorted and once each, the upstreams that t's users,
// domains and default lead to.
func reachable(t *table) []string {
	var names []string
	for _, name := range t.users {
		names = append(names, name)
	}
	for _, name := range t.domains {
		names = append(names, name)
	}
	if t.def != "" {
		names = append(names, t.def)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// checkName checks an upstream name: one map-file token.
func checkName(name string) error {
	if name == "" {
		return errors.New("is required")
	}
	if why := badToken(name); why != "" {
		return fmt.Errorf("%q: %s", name, why)
	}
	return nil
}

// checkDomain checks a domain key or AddDomain: a user name without '@'.
func checkDomain(d string) error {
	if why := badToken(d); why != "" {
		return fmt.Errorf("bad domain: %s", why)
	}
	if strings.Contains(d, "@") {
		return errors.New("bad domain: contains '@'")
	}
	return nil
}

// checkAddress checks "host:port" with a non-empty host and a numeric port.
func checkAddress(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" {
		return errors.New("is not host:port")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return errors.New("has no port number 1..65535")
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
