package main

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/testdovecot"
	"github.com/popproxy/popproxy/internal/testproc"
)

// TestLimitsThroughAdmin runs popproxy without a shared store: failed logins
// block alice, and `popproxy limits` shows and clears that instance's own
// limits through its admin listener, named with -admin (before the
// subcommand) or found in -config's admin.address.
func TestLimitsThroughAdmin(t *testing.T) {
	bin := buildBinary(t)
	d := testdovecot.New(t, testdovecot.Config{Users: map[string]string{"alice": "apass", "bob": "bpass"}})
	addr, admin := freeAddr(t), freeAddr(t)
	cfg := testproc.WriteConfig(t, fmt.Sprintf(`
listeners: [{name: pop3, address: %q}]
upstream: {address: %q}
admin: {address: %q}
audit: {output: %q}
limits:
  failed_logins:
    per_user: {max: 3, window: 1m, delay: 0s, block: 1m}
  per_user: {login_delay: 60s}
`, addr, d.Addr(), admin, filepath.Join(t.TempDir(), "audit.jsonl")))
	startBinary(t, bin, cfg, addr)

	login := func(user, pass, want string) {
		t.Helper()
		c, err := pop3test.DialConn(&net.Dialer{}, addr, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Cmd("USER " + user)
		if reply, _ := c.Cmd("PASS " + pass); !strings.HasPrefix(reply, want) {
			t.Errorf("%s: %q, want %s...", user, strings.TrimSpace(reply), want)
		}
		c.Cmd("QUIT")
	}
	limits := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"limits"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("popproxy limits %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	expect := func(out, pattern string) {
		t.Helper()
		if !regexp.MustCompile(pattern).MatchString(out) {
			t.Errorf("popproxy limits printed\n%s\nwant a line matching %s", out, pattern)
		}
	}

	for _, pass := range []string{"wrong1", "wrong2", "wrong3"} {
		login("alice", pass, "-ERR [AUTH]")
	}
	login("alice", "apass", "-ERR [AUTH] too many failed logins")
	login("bob", "bpass", "+OK")
	login("bob", "bpass", "-ERR [LOGIN-DELAY]")

	expect(limits("-admin", admin, "show", "alice"), `(?m)^user:default/alice failures=3 blocked=(59s|1m0s) sessions=0 login_delay=0s$`)
	expect(limits("show", "-config", cfg, "127.0.0.1"), `(?m)^ip:127\.0\.0\.1/32 failures=3 blocked=0s sessions=0 login_delay=0s$`)
	expect(limits("show", "-config", cfg, "bob"), `(?m)^user:default/bob failures=0 blocked=0s sessions=0 login_delay=(59s|1m0s)$`)

	expect(limits("-admin", admin, "clear", "alice"), `(?m)^cleared user:default/alice$`)
	expect(limits("clear", "-config", cfg, "bob"), `(?m)^cleared user:default/bob$`)
	login("alice", "apass", "+OK")
	login("bob", "bpass", "+OK")
	expect(limits("-admin", admin, "show", "alice"), `(?m)^user:default/alice failures=0 blocked=0s sessions=0 login_delay=(59s|1m0s)$`)

	// Without a name, or from no instance, it fails and says why.
	if out, err := exec.Command(bin, "limits", "-admin", admin, "show").CombinedOutput(); err == nil || !strings.Contains(string(out), "needs -config FILE or -admin") {
		t.Errorf("limits -admin show without a name: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "limits", "-admin", freeAddr(t), "show", "alice").CombinedOutput(); err == nil || !strings.Contains(string(out), "admin listener") {
		t.Errorf("limits against no listener: %v\n%s", err, out)
	}
}
