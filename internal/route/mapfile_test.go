package route

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodMap = "\ufeff# users.map\r\n" +
	"alice@example.com  a\n" +
	"\n" +
	"   # indented comment\n" +
	"@Example.ORG\tb   # trailing comment\n" +
	"bob c\r\n" +
	"* c\n"

func TestParseMap(t *testing.T) {
	users, domains, def, err := parseMap(strings.NewReader(goodMap), "map line ", testUpstreams)
	if err != nil {
		t.Fatalf("parseMap: %v", err)
	}
	if want := map[string]string{"alice@example.com": "a", "bob": "c"}; !maps.Equal(users, want) {
		t.Errorf("users = %v, want %v", users, want)
	}
	if want := map[string]string{"example.org": "b"}; !maps.Equal(domains, want) {
		t.Errorf("domains = %v, want %v", domains, want)
	}
	if def != "c" {
		t.Errorf("default = %q, want c", def)
	}

	// The result is a valid Config.
	r := mustNew(t, Config{Upstreams: testUpstreams, Users: users, Domains: domains, Default: def})
	if got, _ := r.Route("x@EXAMPLE.org"); got.Upstream != "b" {
		t.Errorf("x@EXAMPLE.org -> %q, want b", got.Upstream)
	}

	// Without upstreams, names are not checked; New does that.
	_, _, _, err = parseMap(strings.NewReader("u nope\n"), "map line ", nil)
	if err != nil {
		t.Errorf("parseMap without upstreams: %v", err)
	}

	// An empty map is fine.
	users, domains, def, err = parseMap(strings.NewReader("# nothing\n\n"), "map line ", nil)
	if err != nil || len(users) != 0 || len(domains) != 0 || def != "" {
		t.Errorf("empty map = %v, %v, %q, %v", users, domains, def, err)
	}
}

func TestParseMapErrors(t *testing.T) {
	tests := []struct {
		name, text string
		want       []string
	}{
		{"unknown upstream", "alice a\nbob nope\n",
			[]string{`map line 2: upstream "nope" is not defined`}},
		{"duplicate user", "alice a\n# x\nalice b\n",
			[]string{`map line 3: "alice" is already mapped on line 1`}},
		{"duplicate domain, other case", "@example.com a\n@EXAMPLE.COM b\n",
			[]string{`map line 2: "@example.com" is already mapped on line 1`}},
		{"duplicate default", "* a\n* b\n",
			[]string{`map line 2: "*" is already mapped on line 1`}},
		{"one field", "alice\n",
			[]string{`map line 1: want "key upstream", got 1 fields`}},
		{"three fields", "alice a b\n",
			[]string{`map line 1: want "key upstream", got 3 fields`}},
		{"empty domain", "@ a\n",
			[]string{`map line 1: bad domain: empty`}},
		{"domain with @", "@a@b a\n",
			[]string{`map line 1: bad domain: contains '@'`}},
		{"user ending in @", "alice@ a\n",
			[]string{`map line 1: user name ends in '@'`}},
		{"control character", "ali\x1bce a\n",
			[]string{`map line 1: bad user name: control character at octet 3`}},
		{"invalid UTF-8", "ali\xffce a\n",
			[]string{`map line 1: bad user name: invalid UTF-8`}},
		{"long user", strings.Repeat("u", 256) + " a\n",
			[]string{`map line 1: bad user name: longer than 255`}},
		{"every problem", "x\nalice nope\nalice a\nalice a\n",
			[]string{"map line 1:", "map line 2:", "map line 4:"}},
		{"long line", "alice a\n" + strings.Repeat("x", 70000) + " a\n",
			[]string{"map line 2: bufio.Scanner: token too long"}},
	}
	for _, tt := range tests {
		_, _, _, err := parseMap(strings.NewReader(tt.text), "map line ", testUpstreams)
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error\n%v\ndoes not contain %q", tt.name, err, w)
			}
		}
	}

	// At most maxMapErrors problems are listed.
	_, _, _, err := parseMap(strings.NewReader(strings.Repeat("x\n", 100)), "map line ", nil)
	if n := strings.Count(err.Error(), "\n") + 1; n != maxMapErrors {
		t.Errorf("100 bad lines gave %d errors, want %d", n, maxMapErrors)
	}
}

func TestLoadMap(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.map")
	if err := os.WriteFile(path, []byte("alice a\n\nbob zzz\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := LoadMap(path, testUpstreams...)
	if want := path + `:3: upstream "zzz" is not defined`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("LoadMap error = %v, want it to contain %q", err, want)
	}

	if err := os.WriteFile(path, []byte(goodMap), 0o644); err != nil {
		t.Fatal(err)
	}
	if users, _, _, err := LoadMap(path, testUpstreams...); err != nil || users["bob"] != "c" {
		t.Errorf("LoadMap = %v, %v", users, err)
	}

	if _, _, _, err := LoadMap(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("LoadMap of a missing file: %v", err)
	}
}
