package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/testdovecot"
	"github.com/popproxy/popproxy/internal/testproc"
	"github.com/popproxy/popproxy/internal/testredis"
)

// fleet is two popproxy processes sharing their limits in one private Redis,
// in front of one Dovecot.
type fleet struct {
	bin      string
	redis    *testredis.Instance
	addr     [2]string
	admin    [2]string
	config   [2]string
	cmd      [2]*exec.Cmd
	password string
}

const fleetLease = 3 * time.Second

// startFleet starts the fleet with limits (YAML lines under limits:, indented
// two spaces) and limits.shared's on_unavailable.
func startFleet(t *testing.T, users map[string]string, limits, onUnavailable string) *fleet {
	t.Helper()
	f := &fleet{bin: buildBinary(t), password: "fleet-secret"}
	f.redis = testredis.New(t, f.password)
	d := testdovecot.New(t, testdovecot.Config{Users: users})
	pwFile := filepath.Join(t.TempDir(), "redis.password")
	if err := os.WriteFile(pwFile, []byte(f.password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range f.cmd {
		f.addr[i], f.admin[i] = freeAddr(t), freeAddr(t)
		f.config[i] = testproc.WriteConfig(t, fmt.Sprintf(`
listeners: [{name: pop3, address: %q}]
upstream: {address: %q}
admin: {address: %q}
audit: {output: %q}
limits:
%s
  shared:
    address: %q
    password_file: %q
    timeout: 200ms
    session_lease: %s
    on_unavailable: %s
`, f.addr[i], d.Addr(), f.admin[i], filepath.Join(t.TempDir(), "audit.jsonl"), limits, f.redis.Addr(), pwFile, fleetLease, onUnavailable))
		f.cmd[i] = startBinary(t, f.bin, f.config[i], f.addr[i])
	}
	return f
}

// login opens a session on instance i and logs in; it returns the session
// and the reply to PASS.
func (f *fleet) login(t *testing.T, i int, user, pass string) (*pop3test.Conn, string) {
	t.Helper()
	c, err := pop3test.DialConn(&net.Dialer{}, f.addr[i], 20*time.Second)
	if err != nil {
		t.Fatalf("instance %d: %v", i, err)
	}
	if _, err := c.Cmd("USER " + user); err != nil {
		t.Fatal(err)
	}
	reply, _ := c.Cmd("PASS " + pass)
	return c, strings.TrimSpace(reply)
}

// expectLogin logs in on instance i and checks that the reply starts with want,
// then quits.
func (f *fleet) expectLogin(t *testing.T, i int, user, pass, want string) {
	t.Helper()
	c, reply := f.login(t, i, user, pass)
	defer c.Close()
	if !strings.HasPrefix(reply, want) {
		t.Errorf("%s on instance %d: %q, want %s...", user, i, reply, want)
	}
	c.Cmd("QUIT")
}

func (f *fleet) limits(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(f.bin, append([]string{"limits", args[0], "-config", f.config[0]}, args[1:]...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("popproxy limits %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestFleetSharesLimits checks, with two instances: failures on one block
// the user on the other, and `popproxy limits clear` frees it on both; a
// session on one makes the other answer [IN-USE] until it quits; with Redis
// stopped, logins go on under each instance's own limits without waiting,
// and the shared limits return with Redis; the sessions of an instance
// killed with SIGKILL are freed within the lease.
func TestFleetSharesLimits(t *testing.T) {
	users := map[string]string{"alice": "apass", "bob": "bpass", "carol": "cpass", "dave": "dpass", "erin": "epass"}
	f := startFleet(t, users, `
  failed_logins:
    per_user: {max: 3, window: 1m, delay: 0s, block: 1m}
  per_user: {max_sessions: 1}`, "local")

	// Failures on A block alice on B, right password and all.
	for _, pass := range []string{"wrong1", "wrong2", "wrong3"} {
		f.expectLogin(t, 0, "alice", pass, "-ERR")
	}
	f.expectLogin(t, 1, "alice", "apass", "-ERR [AUTH] too many failed logins")
	if out := f.limits(t, "show", "alice"); !strings.Contains(out, "user:default/alice failures=3 blocked=") {
		t.Errorf("limits show alice:\n%s", out)
	}
	// limits clear frees her on both.
	if out := f.limits(t, "clear", "alice"); !strings.Contains(out, "cleared user:default/alice") {
		t.Errorf("limits clear alice:\n%s", out)
	}
	f.expectLogin(t, 1, "alice", "apass", "+OK")
	f.expectLogin(t, 0, "alice", "apass", "+OK")

	// A session on A: B answers [IN-USE]; A's QUIT frees the slot at once.
	a, reply := f.login(t, 0, "bob", "bpass")
	if !strings.HasPrefix(reply, "+OK") {
		t.Fatalf("bob on A: %q", reply)
	}
	f.expectLogin(t, 1, "bob", "bpass", "-ERR [IN-USE]")
	if _, err := a.Cmd("QUIT"); err != nil {
		t.Fatal(err)
	}
	a.Close()
	waitFor(t, 2*time.Second, "bob's slot freed after QUIT", func() bool {
		c, reply := f.login(t, 1, "bob", "bpass")
		defer c.Close()
		c.Cmd("QUIT")
		return strings.HasPrefix(reply, "+OK")
	})

	// Redis stopped: logins go on at once, under each instance's own limits.
	f.redis.Stop()
	start := time.Now()
	f.expectLogin(t, 1, "dave", "dpass", "+OK")
	if d := time.Since(start); d > time.Second {
		t.Errorf("a login with Redis stopped took %v", d)
	}
	for _, pass := range []string{"wrong1", "wrong2", "wrong3"} {
		f.expectLogin(t, 1, "dave", pass, "-ERR")
	}
	f.expectLogin(t, 1, "dave", "dpass", "-ERR [AUTH] too many failed logins") // B's own count
	f.expectLogin(t, 0, "dave", "dpass", "+OK")                                // not A's
	if n := scrapeCounter(t, f.admin[1], "popproxy_shared_limits_unavailable"); n != 1 {
		t.Errorf("popproxy_shared_limits_unavailable on B with Redis stopped: %d, want 1", n)
	}
	waitLog(t, f.cmd[1], "shared limits: store unavailable")
	// Redis back: the shared limits return.
	if err := f.redis.Restart(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the store is skipped for a second after a failure
	waitFor(t, 5*time.Second, "the store answering again", func() bool {
		f.expectLogin(t, 0, "erin", "epass", "+OK")
		f.expectLogin(t, 1, "erin", "epass", "+OK")
		return scrapeCounter(t, f.admin[0], "popproxy_shared_limits_unavailable") == 0 &&
			scrapeCounter(t, f.admin[1], "popproxy_shared_limits_unavailable") == 0
	})
	for _, pass := range []string{"wrong1", "wrong2", "wrong3"} {
		f.expectLogin(t, 1, "erin", pass, "-ERR")
	}
	f.expectLogin(t, 0, "erin", "epass", "-ERR [AUTH] too many failed logins")

	// A killed with SIGKILL while carol is logged in: B refuses her until
	// the lease frees the slot.
	a, reply = f.login(t, 0, "carol", "cpass")
	if !strings.HasPrefix(reply, "+OK") {
		t.Fatalf("carol on A: %q", reply)
	}
	defer a.Close()
	f.cmd[0].Process.Signal(syscall.SIGKILL)
	f.cmd[0].Wait()
	killed := time.Now()
	f.expectLogin(t, 1, "carol", "cpass", "-ERR [IN-USE]")
	waitFor(t, fleetLease+2*time.Second, "carol's slot freed by the lease", func() bool {
		c, reply := f.login(t, 1, "carol", "cpass")
		defer c.Close()
		c.Cmd("QUIT")
		return strings.HasPrefix(reply, "+OK")
	})
	t.Logf("a killed instance's session freed %v after the kill (lease %v)", time.Since(killed).Round(10*time.Millisecond), fleetLease)
}

// TestFleetLoginDelay checks that LOGIN-DELAY holds across instances, and
// that with on_unavailable: closed a stopped Redis refuses logins with
// [SYS/TEMP] at once.
func TestFleetLoginDelay(t *testing.T) {
	f := startFleet(t, map[string]string{"alice": "apass"}, `
  per_user: {login_delay: 60s}`, "closed")
	f.expectLogin(t, 0, "alice", "apass", "+OK")
	f.expectLogin(t, 1, "alice", "apass", "-ERR [LOGIN-DELAY]")
	f.limits(t, "clear", "alice")
	f.expectLogin(t, 1, "alice", "apass", "+OK")

	f.redis.Stop()
	start := time.Now()
	f.expectLogin(t, 0, "alice", "apass", "-ERR [SYS/TEMP]")
	if d := time.Since(start); d > time.Second {
		t.Errorf("a refusal with Redis stopped took %v", d)
	}
}

// waitFor polls cond until it holds, failing t after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, limit)
		}
	}
}
