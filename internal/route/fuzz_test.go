package route

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzRoute checks that whatever the user name, Route either refuses it or
// returns one of the configured upstreams, and that every name it accepts is
// a clean routing key.
func FuzzRoute(f *testing.F) {
	for _, s := range []string{"alice@example.com", "carol@EXAMPLE.com", "bob", "a@b@example.org",
		"alice\r\nDELE 1", "\x1b[31m", "ali ce", "\xff", "@", strings.Repeat("a", 255)} {
		f.Add(s, false, "")
		f.Add(s, true, "mail.test")
	}
	f.Fuzz(func(t *testing.T, user string, strip bool, add string) {
		cfg := testConfig()
		cfg.StripDomain = strip
		if checkDomain(add) == nil {
			cfg.AddDomain = add
		}
		r, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Route(user)
		if err != nil {
			return
		}
		if !utf8.ValidString(user) || len(user) == 0 || len(user) > MaxUserLen {
			t.Fatalf("accepted %q", user)
		}
		for _, c := range user {
			if unicode.IsControl(c) || unicode.IsSpace(c) {
				t.Fatalf("accepted %q with %U", user, c)
			}
		}
		if _, ok := r.t.Load().upstreams[got.Upstream]; !ok {
			t.Fatalf("Route(%q) chose unconfigured upstream %q", user, got.Upstream)
		}
		if got.Login == "" || len(got.Login) > MaxUserLen || badToken(got.Login) != "" {
			t.Fatalf("Route(%q) returned login %q", user, got.Login)
		}
		if !strip && cfg.AddDomain == "" && got.Login != user {
			t.Fatalf("login rewritten without rewriting configured: %q -> %q", user, got.Login)
		}
	})
}

// FuzzParseMap checks that parseMap never panics, and that whatever it
// accepts is a valid Config whose every user and domain routes as mapped.
func FuzzParseMap(f *testing.F) {
	f.Add(goodMap)
	f.Add("alice a\nalice b\n")
	f.Add("@ a\n* b # c\n")
	f.Add("x y z\n\x00 a\n")
	f.Fuzz(func(t *testing.T, text string) {
		users, domains, def, err := parseMap(strings.NewReader(text), "map line ", testUpstreams)
		if err != nil {
			if strings.Contains(err.Error(), "\r") {
				t.Fatalf("error contains a raw CR: %q", err)
			}
			return
		}
		r, err := New(Config{Upstreams: testUpstreams, Users: users, Domains: domains, Default: def})
		if err != nil {
			t.Fatalf("parseMap accepted what New refuses: %v", err)
		}
		for u, name := range users {
			if got, err := r.Route(u); err != nil || got.Upstream != name {
				t.Fatalf("user %q: Route = %+v, %v; want %s", u, got, err, name)
			}
		}
		for d, name := range domains {
			u := "x@" + strings.Map(upperASCII, d)
			if got, err := r.Route(u); err == nil && got.Upstream != name {
				if _, exact := users[u]; !exact {
					t.Fatalf("domain %q: Route = %+v; want %s", d, got, name)
				}
			}
		}
	})
}

func upperASCII(c rune) rune {
	if 'a' <= c && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}
