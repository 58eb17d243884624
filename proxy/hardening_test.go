package proxy_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/proxy"
)

// openPanicky panics when a session opens, standing in for a bug in an
// Auditor outside the command loop.
type openPanicky struct{ *recorder }

func (openPanicky) SessionOpen(proxy.SessionInfo) { panic("boom in SessionOpen") }

// closePanicky panics when a session closes.
type closePanicky struct{ *recorder }

func (closePanicky) SessionClose(string, proxy.CloseEvent) { panic("boom in SessionClose") }

// TestPanicOutsideCommandsIsContained: a panic in session.open, in the close
// record or in a certificate callback during the implicit-TLS handshake ends
// that session only; the process (this test binary) survives and counts it.
func TestPanicOutsideCommandsIsContained(t *testing.T) {
	up := startMaildrop(t)
	for _, tc := range []struct {
		name    string
		auditor func(*recorder) proxy.Auditor
	}{
		{"SessionOpen", func(r *recorder) proxy.Auditor { return openPanicky{r} }},
		{"SessionClose", func(r *recorder) proxy.Auditor { return closePanicky{r} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			addr, srv, _ := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.Auditor = tc.auditor(rec) })
			for range 2 {
				c := dialRaw(t, addr)
				if tc.name == "SessionClose" {
					io.WriteString(c, "QUIT\r\n")
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatal("the connection was not closed")
				}
			}
			// The close record comes after the connection is closed.
			waitFor(t, func() bool { return srv.Panics() == 2 })
		})
	}
	t.Run("GetCertificate", func(t *testing.T) {
		cfg := serverTLS(t)
		cfg.Certificates = nil
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { panic("boom in GetCertificate") }
		addr, srv, _ := startListener(t, up.Addr().String(), proxy.Listener{Name: "tls", TLSMode: proxy.TLSImplicit, TLSConfig: cfg}, nil)
		for range 2 {
			conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
			if err == nil {
				conn.Close()
				t.Fatal("handshake succeeded")
			}
		}
		if n := srv.Panics(); n != 2 {
			t.Fatalf("Panics() = %d, want 2", n)
		}
	})
}

// counting is an Auditor that counts every record.
type counting struct {
	*recorder
	mu      sync.Mutex
	records int
}

func (c *counting) count() {
	c.mu.Lock()
	c.records++
	c.mu.Unlock()
}

func (c *counting) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.records
}

func (c *counting) SessionOpen(proxy.SessionInfo) { c.count() }
func (c *counting) Policy(id string, e proxy.PolicyEvent) {
	c.count()
	c.recorder.Policy(id, e)
}
func (c *counting) SessionClose(id string, e proxy.CloseEvent) {
	c.count()
	c.recorder.SessionClose(id, e)
}

func (r *recorder) closeCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.closes)
}

// refusedCount sums the Count of the refusal records of rule.
func (r *recorder) refusedCount(rule proxy.Rule) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.policy {
		if p.Rule == rule {
			n += p.Count
		}
	}
	return n
}

// TestConnectionFloodCostsBoundedRecords: 2,000 connections from one address
// against the default-like per-address rate cost at most 3 records per
// accepted session plus 100, and the summaries still count every refusal.
func TestConnectionFloodCostsBoundedRecords(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 connections")
	}
	up := acceptingUpstream(t, "")
	aud := &counting{recorder: newRecorder()}
	addr, srv, _ := startProxy(t, up, func(o *proxy.Options) {
		o.Auditor = aud
		o.Limits = proxy.Limits{PerIPRate: 10, PerIPBurst: 50, PerIPSessions: 50}
		o.RefusalInterval = 200 * time.Millisecond
	})
	const flood = 2000
	for range flood {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	refused := func() int {
		return aud.refusedCount("limit.ip_connection_rate") + aud.refusedCount("limit.ip_sessions")
	}
	waitFor(t, func() bool { return refused()+aud.closeCount() == flood })
	srv.Close()
	accepted := aud.closeCount()
	if accepted > flood/2 {
		t.Fatalf("%d of %d connections accepted", accepted, flood)
	}
	if got, limit := aud.total(), 3*accepted+100; got > limit {
		t.Fatalf("%d records for %d accepted and %d refused connections; want <= %d", got, accepted, refused(), limit)
	}
	t.Logf("%d connections: %d accepted, %d refused, %d records", flood, accepted, refused(), aud.total())
}

// TestFailedHandshakesAreSummarised: a burst of failed TLS handshakes is one
// record now and one summary, whose detail says what to do about it.
func TestFailedHandshakesAreSummarised(t *testing.T) {
	up := startMaildrop(t)
	rec := newRecorder()
	addr, srv, _ := startListener(t, up.Addr().String(), proxy.Listener{Name: "tls", TLSMode: proxy.TLSImplicit, TLSConfig: serverTLS(t)},
		func(o *proxy.Options) { o.Auditor = rec })
	const n = 20
	for range n {
		// A client that does not trust our certificate.
		if conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "127.0.0.1"}); err == nil {
			conn.Close()
			t.Fatal("handshake with an untrusted certificate succeeded")
		}
	}
	waitFor(t, func() bool { return srv.Sessions() == 0 })
	srv.Close()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	total := 0
	for _, p := range rec.policy {
		if p.Rule != "tls_handshake" || !strings.HasPrefix(p.Detail, "client rejected our certificate") || p.Key != "127.0.0.1/32" {
			t.Errorf("policy %+v", p)
		}
		total += p.Count
	}
	if len(rec.policy) > 2 || total != n || len(rec.closes) != 0 {
		t.Fatalf("%d policy records counting %d handshakes, %d closes; want <= 2 counting %d, 0", len(rec.policy), total, len(rec.closes), n)
	}
}

// TestLoginDeadlineCoversTheWholeState: a client that keeps sending CAPA,
// each line well within any per-line timeout, is still dropped when the
// AUTHORIZATION state has lasted the login timeout.
func TestLoginDeadlineCoversTheWholeState(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.LoginTimeout = 600 * time.Millisecond })
	c := pop3test.Dial(t, addr)
	start := time.Now()
	for time.Since(start) < 3*time.Second {
		c.Send("CAPA\r\n")
		line := c.Line()
		if strings.HasPrefix(line, "-ERR") {
			if line != "-ERR [SYS/TEMP] login not completed in time" {
				t.Fatalf("got %q", line)
			}
			break
		}
		c.Body()
		time.Sleep(100 * time.Millisecond)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("a busy client stayed %v before login", d)
	}
	if ev := rec.waitClose(t); ev.Reason != "login_timeout" {
		t.Fatalf("close reason %q", ev.Reason)
	}
}

// TestPipelinedAnswerIsNotHeldForAPartialLine: after "NOOP\r\nNO" the +OK to
// the first NOOP goes out at once, not when the second line completes.
func TestPipelinedAnswerIsNotHeldForAPartialLine(t *testing.T) {
	up := startMaildrop(t)
	addr, _, _ := startProxy(t, up.Addr().String(), nil)
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Send("NOOP\r\nNO")
	c.Conn.SetReadDeadline(time.Now().Add(time.Second))
	line, err := c.R.ReadString('\n')
	if err != nil {
		t.Fatalf("the first answer was held back: %v (%q)", err, line)
	}
	c.Send("OP\r\n")
	c.Expect("+OK*")
}

// TestSTLSForgetsProxyChain: an XPOPPROXY chain sent in plaintext before STLS
// must not drive a decision after it (here: refusing an upstream as a loop).
func TestSTLSForgetsProxyChain(t *testing.T) {
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Send("+OK popproxy ready 0123456789abcdef\r\n")
		for {
			switch line := c.Line(); {
			case line == "":
				return
			case strings.HasPrefix(line, "XPOPPROXY "), strings.HasPrefix(line, "USER "):
				c.Send("+OK\r\n")
			case strings.HasPrefix(line, "PASS "):
				c.Send("+OK logged in\r\n")
			default:
				c.Send("-ERR\r\n")
			}
		}
	})
	addr, _, _ := startListener(t, up, proxy.Listener{Name: "tls", TLSMode: proxy.TLSStartTLS, TLSConfig: serverTLS(t)}, nil)
	c := pop3test.Dial(t, addr)
	c.Cmd("XPOPPROXY 0123456789abcdef", "+OK*")
	stls(c, clientTLS(t))
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS secret", "+OK logged in")
}

// TestLostQuitReplyLeavesCommitUnknown: when the server takes QUIT and dies
// without answering, nobody knows whether the marked messages were deleted,
// and the audit must say so rather than "not committed".
func TestLostQuitReplyLeavesCommitUnknown(t *testing.T) {
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Login()
		for {
			switch line := c.Line(); line {
			case "", "QUIT":
				return // QUIT: gone without a word
			default:
				c.Send("+OK\r\n")
			}
		}
	})
	addr, _, rec := startProxy(t, up, nil)
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("QUIT", "-ERR [SYS/TEMP]*")
	ev := rec.waitClose(t)
	if ev.Committed || ev.CommitUnknown == "" || len(ev.Marked) != 1 {
		t.Fatalf("close event %+v", ev)
	}
}

// TestTruncatedBodyOverTLSHasNoCloseNotify: when the upstream dies mid-RETR,
// a TLS client must see the connection cut, never a close_notify it could
// take for a clean end of a complete message. (crypto/tls itself treats a cut
// at a record boundary like close_notify, so the test looks at the records:
// with TLS 1.2 an alert's record type is visible on the wire.)
func TestTruncatedBodyOverTLSHasNoCloseNotify(t *testing.T) {
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Login()
		c.Line()
		c.Send("+OK 100000 octets\r\nSubject: cut\r\n\r\n" + strings.Repeat("x", 5000))
	})
	addr, _, _ := startListener(t, up, proxy.Listener{Name: "tls", TLSMode: proxy.TLSImplicit, TLSConfig: serverTLS(t)}, nil)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	wire := &recordingConn{Conn: raw}
	cfg := clientTLS(t)
	cfg.MaxVersion = tls.VersionTLS12
	conn := tls.Client(wire, cfg)
	defer conn.Close()
	c := pop3test.NewClient(t, conn)
	c.Expect("+OK *")
	c.Login("alice", "secret")
	c.Send("RETR 1\r\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(c.R)
	if strings.HasSuffix(string(got), "\r\n.\r\n") || !strings.Contains(string(got), "xxx") {
		t.Fatalf("client got %d octets ending %q", len(got), got[max(0, len(got)-10):])
	}
	if alerts := wire.alertRecords(); alerts != 0 {
		t.Fatalf("the server sent %d alert record(s) (close_notify) after a truncated body", alerts)
	}
}

// recordingConn keeps what it reads.
type recordingConn struct {
	net.Conn
	mu   sync.Mutex
	read []byte
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.read = append(c.read, p[:n]...)
	c.mu.Unlock()
	return n, err
}

// alertRecords counts the TLS records of type alert (21) in what was read.
func (c *recordingConn) alertRecords() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for b := c.read; len(b) >= 5; {
		if b[0] == 21 {
			n++
		}
		b = b[min(len(b), 5+(int(b[3])<<8|int(b[4]))):]
	}
	return n
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
