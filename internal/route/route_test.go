package route

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
)

var testUpstreams = []Upstream{
	{Name: "a", Addresses: []string{"10.0.0.1:110", "10.0.0.2:110"}},
	{Name: "b", Addresses: []string{"[2001:db8::1]:110"}},
	{Name: "c", Addresses: []string{"pop.example.net:1110"}},
}

func testConfig() Config {
	return Config{
		Upstreams: testUpstreams,
		Users:     map[string]string{"alice@example.com": "b", "bob": "c"},
		Domains:   map[string]string{"example.com": "a", "Example.ORG": "b"},
		Default:   "c",
	}
}

func mustNew(t *testing.T, cfg Config) *Router {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}

func TestRoute(t *testing.T) {
	r := mustNew(t, testConfig())
	tests := []struct {
		user, upstream string
	}{
		{"alice@example.com", "b"},     // exact user beats its domain
		{"carol@example.com", "a"},     // domain
		{"carol@EXAMPLE.Com", "a"},     // domain, ASCII case-insensitive
		{"dave@example.org", "b"},      // configured as Example.ORG
		{"x@y@example.com", "a"},       // the last '@' counts
		{"bob", "c"},                   // exact user without a domain
		{"Alice@example.com", "a"},     // users are exact: falls to the domain
		{"erin@elsewhere.test", "c"},   // default
		{"frank", "c"},                 // default, no '@'
		{"grüße@example.com", "a"},     // UTF-8 local part
		{"x@\u212Aexample.com", "c"},   // Kelvin sign is not 'k'
		{"zoë@exam\u200Dple.com", "c"}, // ZWJ is allowed, but matches nothing
	}
	for _, tt := range tests {
		got, err := r.Route(tt.user)
		if err != nil {
			t.Errorf("Route(%q): %v", tt.user, err)
			continue
		}
		if got.Upstream != tt.upstream || got.Login != tt.user {
			t.Errorf("Route(%q) = %+v, want upstream %s, login unchanged", tt.user, got, tt.upstream)
		}
	}

	got, _ := r.Route("carol@example.com")
	if want := []string{"10.0.0.1:110", "10.0.0.2:110"}; !slices.Equal(got.Addresses, want) {
		t.Errorf("Addresses = %q, want %q", got.Addresses, want)
	}
	got.Addresses[0] = "changed"
	if again, _ := r.Route("carol@example.com"); again.Addresses[0] != "10.0.0.1:110" {
		t.Error("changing a Target's Addresses changed the Router")
	}
}

func TestRouteNoDefault(t *testing.T) {
	cfg := testConfig()
	cfg.Default = ""
	r := mustNew(t, cfg)
	for _, user := range []string{"erin@elsewhere.test", "frank", "example.com"} {
		if _, err := r.Route(user); !errors.Is(err, ErrNoRoute) {
			t.Errorf("Route(%q) error = %v, want ErrNoRoute", user, err)
		}
	}
	if _, err := r.Route("carol@example.com"); err != nil {
		t.Errorf("a domain user: %v", err)
	}
}

// TestRouteDefault: the default upstream, for a listener that must pick one
// before any user name is known; none when the table has no default.
func TestRouteDefault(t *testing.T) {
	cfg := testConfig()
	r := mustNew(t, cfg)
	got, err := r.Default()
	if err != nil || got.Upstream != "c" || !slices.Equal(got.Addresses, testUpstreams[2].Addresses) || got.Login != "" {
		t.Errorf("Default() = %+v, %v; want upstream c", got, err)
	}
	cfg.Default = ""
	if err := r.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Default(); !errors.Is(err, ErrNoRoute) {
		t.Errorf("Default() without a default: %v, want ErrNoRoute", err)
	}
}

// TestUpstreams: every upstream of the table in effect, routed to or not,
// and after Update the new table's.
func TestUpstreams(t *testing.T) {
	same := func(a, b Upstream) bool { return a.Name == b.Name && slices.Equal(a.Addresses, b.Addresses) }
	r := mustNew(t, Config{Upstreams: []Upstream{testUpstreams[2], testUpstreams[0], testUpstreams[1]}})
	if got := r.Upstreams(); !slices.EqualFunc(got, testUpstreams, same) {
		t.Errorf("Upstreams() = %v, want %v", got, testUpstreams)
	}
	next := []Upstream{{Name: "a", Addresses: []string{"10.0.0.9:110"}}}
	if err := r.Update(Config{Upstreams: next}); err != nil {
		t.Fatal(err)
	}
	if got := r.Upstreams(); !slices.EqualFunc(got, next, same) {
		t.Errorf("Upstreams() after Update = %v, want %v", got, next)
	}
}

// TestReachable: only upstreams that a user, a domain or the default leads
// to are reachable, each once, with its addresses.
func TestReachable(t *testing.T) {
	cfg := testConfig()
	cfg.Users = map[string]string{"alice@example.com": "b"}
	cfg.Default = ""
	got := mustNew(t, cfg).Reachable()
	want := []Upstream{testUpstreams[0], testUpstreams[1]}
	if !slices.EqualFunc(got, want, func(a, b Upstream) bool {
		return a.Name == b.Name && slices.Equal(a.Addresses, b.Addresses)
	}) {
		t.Errorf("Reachable() = %v, want %v", got, want)
	}
	if got := mustNew(t, Config{Upstreams: testUpstreams}).Reachable(); len(got) != 0 {
		t.Errorf("Reachable() without routes = %v", got)
	}
}

func TestRouteRewrite(t *testing.T) {
	tests := []struct {
		strip     bool
		add       string
		user, out string
	}{
		{false, "", "alice@example.com", "alice@example.com"},
		{true, "", "alice@example.com", "alice"},
		{true, "", "x@y@example.com", "x@y"},
		{true, "", "bob", "bob"},
		{false, "mail.test", "bob", "bob@mail.test"},
		{false, "mail.test", "alice@example.com", "alice@example.com"},
		{true, "mail.test", "alice@example.com", "alice@mail.test"},
		{true, "mail.test", "bob", "bob@mail.test"},
	}
	for _, tt := range tests {
		cfg := testConfig()
		cfg.StripDomain, cfg.AddDomain = tt.strip, tt.add
		got, err := mustNew(t, cfg).Route(tt.user)
		if err != nil || got.Login != tt.out {
			t.Errorf("strip=%v add=%q: Route(%q) = %q, %v; want %q", tt.strip, tt.add, tt.user, got.Login, err, tt.out)
		}
	}

	// Adding a domain must not produce an over-long login.
	cfg := testConfig()
	cfg.AddDomain = "mail.test"
	if _, err := mustNew(t, cfg).Route(strings.Repeat("u", 250)); !errors.Is(err, ErrBadUser) {
		t.Errorf("login of 260 octets after AddDomain: error = %v, want ErrBadUser", err)
	}
}

func TestRouteBadUser(t *testing.T) {
	r := mustNew(t, testConfig()) // has a default: nothing is refused for want of a route
	bad := map[string]string{
		"empty":          "",
		"CR":             "alice\r@example.com",
		"LF":             "alice\n",
		"CRLF command":   "alice\r\nDELE 1",
		"NUL":            "alice\x00@example.com",
		"ESC":            "\x1b[31malice",
		"DEL":            "alice\x7f",
		"C1 (NEL)":       "alice\u0085",
		"tab":            "alice\tx",
		"space":          "alice smith",
		"NBSP":           "alice\u00a0smith",
		"line separator": "alice\u2028",
		"bidi override":  "alice\u202e@example.com",
		"soft hyphen":    "ali\u00adce",
		"BOM":            "\ufeffalice",
		"256 octets":     strings.Repeat("a", 256),
		"invalid UTF-8":  "alice\xff@example.com",
		"truncated rune": "alice\xc3",
		"surrogate":      "alice\xed\xa0\x80",
		"overlong '/'":   "alice\xc0\xaf",
		"empty local":    "@example.com",
		"empty domain":   "alice@",
		"only @":         "@",
	}
	for name, user := range bad {
		got, err := r.Route(user)
		if !errors.Is(err, ErrBadUser) {
			t.Errorf("%s: Route(%q) = %+v, %v; want ErrBadUser", name, user, got, err)
			continue
		}
		if len(user) > 2 && strings.Contains(err.Error(), user) {
			t.Errorf("%s: error %q quotes the user name", name, err)
		}
	}

	good := []string{"a", strings.Repeat("a", 255), "a\uFFFDb", "ü@example.com", "user+tag@example.com", "a@b@c"}
	for _, user := range good {
		if _, err := r.Route(user); err != nil {
			t.Errorf("Route(%q): %v", user, err)
		}
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want []string // each must appear in the error
	}{
		{"unknown user upstream", func(c *Config) { c.Users["zed"] = "nope" },
			[]string{`users["zed"]: upstream "nope" is not defined`}},
		{"unknown domain upstream", func(c *Config) { c.Domains["z.test"] = "nope" },
			[]string{`domains["z.test"]: upstream "nope" is not defined`}},
		{"unknown default", func(c *Config) { c.Default = "nope" },
			[]string{`default: upstream "nope" is not defined`}},
		{"duplicate name", func(c *Config) { c.Upstreams = append(c.Upstreams, Upstream{Name: "a", Addresses: []string{"h:1"}}) },
			[]string{`upstreams[3].name: "a" is used by another upstream`}},
		{"empty name", func(c *Config) { c.Upstreams = append(c.Upstreams, Upstream{Addresses: []string{"h:1"}}) },
			[]string{`upstreams[3].name: is required`}},
		{"name with space", func(c *Config) { c.Upstreams = append(c.Upstreams, Upstream{Name: "x y", Addresses: []string{"h:1"}}) },
			[]string{`upstreams[3].name: "x y": white space`}},
		{"no addresses", func(c *Config) { c.Upstreams = append(c.Upstreams, Upstream{Name: "x"}) },
			[]string{`upstreams[3].addresses: at least one`}},
		{"bad addresses", func(c *Config) {
			c.Upstreams = append(c.Upstreams, Upstream{Name: "x", Addresses: []string{"h", ":110", "h:0", "h:pop3", "h:70000", "::1:110"}})
		}, []string{
			`upstreams[3].addresses[0]: "h" is not host:port`,
			`upstreams[3].addresses[1]: ":110" is not host:port`,
			`upstreams[3].addresses[2]: "h:0" has no port`,
			`upstreams[3].addresses[3]: "h:pop3" has no port`,
			`upstreams[3].addresses[4]: "h:70000" has no port`,
			`upstreams[3].addresses[5]: "::1:110" is not host:port`,
		}},
		{"bad user key", func(c *Config) { c.Users["a b"] = "a" },
			[]string{`users["a b"]: bad user name: white space`}},
		{"user key that cannot match", func(c *Config) { c.Users["@x.test"] = "a" },
			[]string{`users["@x.test"]: empty part`}},
		{"domain with @", func(c *Config) { c.Domains["@x.test"] = "a" },
			[]string{`domains["@x.test"]: bad domain: contains '@'`}},
		{"domain case clash", func(c *Config) { c.Domains["EXAMPLE.com"] = "b" },
			[]string{`differs from another domain only in case`}},
		{"bad add_domain", func(c *Config) { c.AddDomain = "a\nb" },
			[]string{`add_domain: bad domain: control character`}},
	}
	for _, tt := range tests {
		cfg := testConfig()
		cfg.Users = maps.Clone(cfg.Users)
		cfg.Domains = maps.Clone(cfg.Domains)
		cfg.Upstreams = slices.Clone(cfg.Upstreams)
		tt.edit(&cfg)
		_, err := New(cfg)
		if err == nil {
			t.Errorf("%s: New succeeded", tt.name)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error\n%v\ndoes not contain %q", tt.name, err, w)
			}
		}
	}

	// Every problem is reported, not just the first.
	_, err := New(Config{Upstreams: []Upstream{{Name: "a"}}, Default: "b", Users: map[string]string{"u": "c"}})
	if n := strings.Count(err.Error(), "\n") + 1; n != 3 {
		t.Errorf("want 3 problems, got %d:\n%v", n, err)
	}

	// The zero Config is valid and routes nobody.
	r := mustNew(t, Config{})
	if _, err := r.Route("alice"); !errors.Is(err, ErrNoRoute) {
		t.Errorf("zero Config: %v", err)
	}
}

func TestUpdate(t *testing.T) {
	r := mustNew(t, testConfig())

	bad := testConfig()
	bad.Default = "nope"
	if err := r.Update(bad); err == nil {
		t.Fatal("Update with an unknown default succeeded")
	}
	if got, err := r.Route("frank"); err != nil || got.Upstream != "c" {
		t.Errorf("after a failed Update: Route = %+v, %v; want the old table (c)", got, err)
	}

	good := testConfig()
	good.Default = "a"
	good.StripDomain = true
	if err := r.Update(good); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if got, err := r.Route("frank@elsewhere.test"); err != nil || got.Upstream != "a" || got.Login != "frank" {
		t.Errorf("after Update: Route = %+v, %v; want a, frank", got, err)
	}
}

// TestConcurrentUpdate is for -race: Route sees the old or the new table.
func TestConcurrentUpdate(t *testing.T) {
	r := mustNew(t, testConfig())
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				got, err := r.Route(fmt.Sprintf("u%d-%d@elsewhere.test", i, j))
				if err != nil || (got.Upstream != "c" && got.Upstream != "a") {
					t.Errorf("Route = %+v, %v", got, err)
					return
				}
			}
		})
	}
	for j := range 200 {
		cfg := testConfig()
		if j%2 == 0 {
			cfg.Default = "a"
		}
		if err := r.Update(cfg); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}
