package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/testdovecot"
	"github.com/popproxy/popproxy/internal/testproc"
	"github.com/popproxy/popproxy/internal/testredis"
)

// TestFleetBehindHAProxy is the scale-out topology of
// TestScaleOutBehindHAProxy with the limits shared: HAProxy (roundrobin,
// send-proxy-v2) in front of two popproxy processes that keep their limits
// in one private Redis, in front of one Dovecot. Through HAProxy, failed
// logins spread over both instances block the user on both, and failures
// from one client address (the one in the PROXY header, not HAProxy's) with
// different users block that address on both; a session through one
// instance makes the other answer [IN-USE] until it quits.
func TestFleetBehindHAProxy(t *testing.T) {
	haproxy := lookHAProxy(t)
	bin := buildBinary(t)
	users := map[string]string{"alice": "apass", "bob": "bpass", "carol": "cpass", "dave": "dpass", "erin": "epass"}
	d := testdovecot.New(t, testdovecot.Config{Users: users})
	const password = "fleet-secret"
	redis := testredis.New(t, password)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "redis.password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var addr, admin [2]string
	for i := range addr {
		addr[i], admin[i] = freeAddr(t), freeAddr(t)
		cfg := testproc.WriteConfig(t, fmt.Sprintf(`
listeners: [{name: pop3, address: %q, proxy_protocol: ["127.0.0.1/32"]}]
upstream: {address: %q}
admin: {address: %q}
audit: {output: %q}
limits:
  failed_logins:
    per_user: {max: 3, window: 1m, delay: 0s, block: 1m}
    per_ip: {max: 4, window: 1m, delay: 0s, block: 1m}
  per_user: {max_sessions: 1}
  shared: {address: %q, password_file: %q, timeout: 200ms, session_lease: %s}
`, addr[i], d.Addr(), admin[i], filepath.Join(dir, fmt.Sprintf("audit%d.jsonl", i+1)), redis.Addr(), pwFile, fleetLease))
		startBehindBalancer(t, bin, cfg, admin[i])
	}
	const probeIP = "127.0.4.250"
	front := startHAProxy(t, haproxy, probeIP, addr[0], addr[1])

	// login opens a session through HAProxy from ip and returns the reply
	// to PASS.
	login := func(ip, user, pass string) (*pop3test.Conn, string) {
		t.Helper()
		c, err := pop3test.DialConn(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}, front, 20*time.Second)
		if err != nil {
			t.Fatalf("%s from %s: %v", user, ip, err)
		}
		if _, err := c.Cmd("USER " + user); err != nil {
			t.Fatal(err)
		}
		reply, _ := c.Cmd("PASS " + pass)
		return c, strings.TrimSpace(reply)
	}
	expect := func(ip, user, pass, want string) {
		t.Helper()
		c, reply := login(ip, user, pass)
		defer c.Close()
		if !strings.HasPrefix(reply, want) {
			t.Errorf("%s from %s: %q, want %s...", user, ip, reply, want)
		}
		c.Cmd("QUIT")
	}
	// refusals returns how many logins each instance refused for limit.
	refusals := func(limit string) [2]int {
		t.Helper()
		var n [2]int
		for i := range n {
			n[i] = scrapeCounter(t, admin[i], fmt.Sprintf(`popproxy_limit_refusals_total{limit=%q}`, limit))
		}
		return n
	}

	// Three failures for alice, each from its own address, spread by
	// roundrobin over both instances; then both refuse her right password.
	for i, pass := range []string{"wrong1", "wrong2", "wrong3"} {
		expect(fmt.Sprintf("127.0.4.%d", i+1), "alice", pass, "-ERR [AUTH]")
	}
	for i := range 4 {
		expect(fmt.Sprintf("127.0.4.%d", 10+i), "alice", "apass", "-ERR [AUTH] too many failed logins")
	}
	if n := refusals("failed_logins_user"); n[0] == 0 || n[1] == 0 {
		t.Errorf("blocked logins refused per instance %v: want both instances to refuse alice", n)
	}

	// Four failures from one address, each for another user, over both
	// instances: the address is blocked on both, for any user.
	const attacker = "127.0.4.66"
	for _, user := range []string{"bob", "carol", "dave", "erin"} {
		expect(attacker, user, "wrong", "-ERR [AUTH]")
	}
	for range 4 {
		expect(attacker, "bob", "bpass", "-ERR")
	}
	if n := refusals("failed_logins_ip"); n[0] == 0 || n[1] == 0 {
		t.Errorf("logins from the blocked address refused per instance %v: want both", n)
	}
	expect("127.0.4.67", "bob", "bpass", "+OK") // another address is not blocked

	// A session through one instance: the next connections, on the other
	// and then on the same, answer [IN-USE]; after its QUIT bob logs in.
	before := refusals("user_sessions")
	held, reply := login("127.0.4.20", "bob", "bpass")
	if !strings.HasPrefix(reply, "+OK") {
		t.Fatalf("bob's first session: %q", reply)
	}
	expect("127.0.4.21", "bob", "bpass", "-ERR [IN-USE]")
	expect("127.0.4.22", "bob", "bpass", "-ERR [IN-USE]")
	if n := refusals("user_sessions"); n[0] == before[0] || n[1] == before[1] {
		t.Errorf("[IN-USE] refusals per instance %v (before %v): want both instances to refuse bob's second session", n, before)
	}
	if _, err := held.Cmd("QUIT"); err != nil {
		t.Fatal(err)
	}
	held.Close()
	waitFor(t, fleetLease, "bob's slot freed after QUIT", func() bool {
		c, reply := login("127.0.4.23", "bob", "bpass")
		defer c.Close()
		c.Cmd("QUIT")
		return strings.HasPrefix(reply, "+OK")
	})
}
