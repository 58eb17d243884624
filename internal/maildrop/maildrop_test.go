package maildrop

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
)

var testUsers = map[string]string{
	"demo":  "demo",
	"alice": "wonder land", // RFC 1939 §7: PASS may carry spaces
}

// startServer serves the sample mailbox on loopback until the test ends.
func startServer(t *testing.T) (*Server, string) {
	t.Helper()
	srv := New(testUsers, Sample())
	addr := serve(t, srv)
	return srv, addr
}

// serve runs srv.Serve on a loopback listener; cleanup closes srv and
// checks that Serve returned nil.
func serve(t *testing.T, srv *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return l.Addr().String()
}

// dial connects and checks the greeting.
func dial(t *testing.T, addr string) *pop3test.Client {
	t.Helper()
	c := pop3test.Dial(t, addr)
	if c.Greeting != "+OK maildrop ready" {
		t.Fatalf("greeting %q, want %q", c.Greeting, "+OK maildrop ready")
	}
	return c
}

// login dials and logs in as user with USER/PASS.
func login(t *testing.T, addr, user string) *pop3test.Client {
	t.Helper()
	c := dial(t, addr)
	c.Cmd("USER "+user, "+OK*")
	c.Cmd("PASS "+testUsers[user], "+OK "+user+"'s maildrop has * messages (* octets)")
	return c
}

// unstuff reverses RFC 1939 §3 byte-stuffing.
func unstuff(b []byte) []byte {
	var out bytes.Buffer
	for _, l := range bytes.SplitAfter(b, []byte("\r\n")) {
		out.Write(bytes.TrimPrefix(l, []byte(".")))
	}
	return out.Bytes()
}

func sizes(msgs []Message) (total int) {
	for _, m := range msgs {
		total += len(m.Data)
	}
	return total
}

// TestRFC1939Session follows the example session of RFC 1939 §10, with
// USER/PASS in place of APOP.
func TestRFC1939Session(t *testing.T) {
	_, addr := startServer(t)
	msgs := Sample()
	total := sizes(msgs)

	c := dial(t, addr)
	c.Cmd("USER demo", "+OK*")
	c.Cmd("PASS demo", fmt.Sprintf("+OK demo's maildrop has 4 messages (%d octets)", total))
	c.Cmd("STAT", fmt.Sprintf("+OK 4 %d", total))
	c.Cmd("LIST", fmt.Sprintf("+OK 4 messages (%d octets)", total))
	var want strings.Builder
	for i, m := range msgs {
		fmt.Fprintf(&want, "%d %d\r\n", i+1, len(m.Data))
	}
	if got := c.Body(); got != want.String() {
		t.Errorf("LIST body = %q, want %q", got, want.String())
	}
	c.Cmd("RETR 1", fmt.Sprintf("+OK %d octets", len(msgs[0].Data)))
	if got := unstuff([]byte(c.Body())); !bytes.Equal(got, msgs[0].Data) {
		t.Errorf("RETR 1 = %q, want %q", got, msgs[0].Data)
	}
	c.Cmd("DELE 1", "+OK message 1 deleted")
	c.Cmd("RETR 3", fmt.Sprintf("+OK %d octets", len(msgs[2].Data)))
	if got := unstuff([]byte(c.Body())); !bytes.Equal(got, msgs[2].Data) {
		t.Errorf("RETR 3 differs from the sample")
	}
	c.Cmd("DELE 3", "+OK message 3 deleted")
	c.Cmd("DELE 3", "-ERR message 3 already deleted")
	c.Cmd("STAT", fmt.Sprintf("+OK 2 %d", len(msgs[1].Data)+len(msgs[3].Data)))
	c.Cmd("QUIT", "+OK maildrop signing off (2 messages left)")
	c.Closed()
}

// TestDotStuffing checks that lines starting with "." go out with an extra
// "." (RFC 1939 §3), and that the sample really has such lines.
func TestDotStuffing(t *testing.T) {
	_, addr := startServer(t)
	msg := Sample()[1].Data
	if !bytes.Contains(msg, []byte("\r\n.\r\n")) || !bytes.Contains(msg, []byte("\r\n.bashrc\r\n")) {
		t.Fatal("sample 2 lacks a lone-dot line and a dot-led line")
	}
	c := login(t, addr, "demo")
	c.Cmd("RETR 2", "+OK*")
	wire := []byte(c.Body())
	for _, want := range []string{"\r\n..\r\n", "\r\n..bashrc\r\n", "\r\n..vimrc\r\n"} {
		if !bytes.Contains(wire, []byte(want)) {
			t.Errorf("wire bytes lack %q", want)
		}
	}
	if bytes.Contains(wire, []byte("\r\n.\r\n")) {
		t.Error("an unstuffed lone dot went out inside the body")
	}
	if got := unstuff(wire); !bytes.Equal(got, msg) {
		t.Errorf("unstuffed body differs from the message")
	}
}

// TestTop checks TOP msg n (RFC 1939 §7).
func TestTop(t *testing.T) {
	_, addr := startServer(t)
	c := login(t, addr, "demo")
	for i, m := range Sample() {
		head, _, _ := bytes.Cut(m.Data, []byte("\r\n\r\n"))
		c.Cmd(fmt.Sprintf("TOP %d 0", i+1), "+OK*")
		if got, want := string(unstuff([]byte(c.Body()))), string(head)+"\r\n\r\n"; got != want {
			t.Errorf("TOP %d 0 = %q, want %q", i+1, got, want)
		}
	}
	m := Sample()[0].Data
	c.Cmd("TOP 1 2", "+OK*")
	got := c.Body()
	head, body, _ := strings.Cut(string(m), "\r\n\r\n")
	lines := strings.SplitAfter(body, "\r\n")
	if want := head + "\r\n\r\n" + lines[0] + lines[1]; got != want {
		t.Errorf("TOP 1 2 = %q, want %q", got, want)
	}
	c.Cmd("TOP 1 100000", "+OK*")
	if got := []byte(c.Body()); !bytes.Equal(got, m) {
		t.Errorf("TOP with more lines than the body is not the whole message")
	}
	c.Cmd("TOP 1", "-ERR*")
	c.Cmd("TOP 1 -1", "-ERR*")
	c.Cmd("TOP 9 0", "-ERR no such message")
}

// sessionStat logs in afresh and returns the STAT reply.
func sessionStat(t *testing.T, addr string) string {
	t.Helper()
	c := login(t, addr, "demo")
	stat := c.Cmd("STAT", "+OK*")
	c.Cmd("QUIT", "+OK*")
	return stat
}

// TestQuitCommits: RFC 1939 §6, QUIT in TRANSACTION removes marked messages.
func TestQuitCommits(t *testing.T) {
	_, addr := startServer(t)
	msgs := Sample()
	c := login(t, addr, "demo")
	c.Cmd("UIDL 2", "+OK 2 *")
	c.Cmd("UIDL", "+OK*")
	uidls := strings.Fields(c.Body())
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("QUIT", "+OK maildrop signing off (3 messages left)")
	c.Closed()

	want := fmt.Sprintf("+OK 3 %d", sizes(msgs)-len(msgs[0].Data))
	if got := sessionStat(t, addr); got != want {
		t.Errorf("next session STAT = %q, want %q", got, want)
	}
	// The other user's mailbox is untouched.
	a := login(t, addr, "alice")
	a.Cmd("STAT", fmt.Sprintf("+OK 4 %d", sizes(msgs)))

	// Unique-ids survive, messages are renumbered.
	c = login(t, addr, "demo")
	c.Cmd("UIDL", "+OK*")
	got := strings.Fields(c.Body())
	want2 := []string{"1", uidls[3], "2", uidls[5], "3", uidls[7]}
	if strings.Join(got, " ") != strings.Join(want2, " ") {
		t.Errorf("UIDL after delete = %v, want %v", got, want2)
	}
}

// TestDropCommitsNothing: RFC 1939 §6, a session that ends without QUIT
// does not enter UPDATE.
func TestDropCommitsNothing(t *testing.T) {
	_, addr := startServer(t)
	before := sessionStat(t, addr)
	c := login(t, addr, "demo")
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("DELE 2", "+OK*")
	c.Conn.Close()
	// The lock is released once the server notices; retry briefly.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dial(t, addr)
		c.Cmd("USER demo", "+OK*")
		l := c.Cmd("PASS demo", "*")
		if strings.HasPrefix(l, "+OK") {
			if got := c.Cmd("STAT", "+OK*"); got != before {
				t.Errorf("STAT after dropped session = %q, want %q", got, before)
			}
			return
		}
		if !pop3test.Match("-ERR [IN-USE]*", l) || time.Now().After(deadline) {
			t.Fatalf("PASS = %q", l)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIdleTimeoutCommitsNothing: RFC 1939 §3, the autologout timer ends the
// session without entering UPDATE.
func TestIdleTimeoutCommitsNothing(t *testing.T) {
	srv := New(testUsers, Sample())
	srv.idleTimeout = 200 * time.Millisecond
	addr := serve(t, srv)
	before := sessionStat(t, addr)
	c := login(t, addr, "demo")
	c.Cmd("DELE 1", "+OK*")
	c.Closed() // after the idle timeout
	if got := sessionStat(t, addr); got != before {
		t.Errorf("STAT after timeout = %q, want %q", got, before)
	}
}

// TestRsetRestores: RFC 1939 §5, RSET unmarks deleted messages.
func TestRsetRestores(t *testing.T) {
	_, addr := startServer(t)
	total := sizes(Sample())
	c := login(t, addr, "demo")
	c.Cmd("DELE 2", "+OK*")
	c.Cmd("LIST 2", "-ERR message 2 already deleted")
	c.Cmd("RETR 2", "-ERR message 2 already deleted")
	c.Cmd("LIST", "+OK 3 messages*")
	var want strings.Builder
	for i, m := range Sample() {
		if i != 1 {
			fmt.Fprintf(&want, "%d %d\r\n", i+1, len(m.Data))
		}
	}
	if got := c.Body(); got != want.String() {
		t.Errorf("LIST = %q, want %q", got, want.String())
	}
	c.Cmd("RSET", fmt.Sprintf("+OK maildrop has 4 messages (%d octets)", total))
	c.Cmd("LIST 2", "+OK 2 *")
	c.Cmd("QUIT", "+OK maildrop signing off (4 messages left)")
	if got, want := sessionStat(t, addr), fmt.Sprintf("+OK 4 %d", total); got != want {
		t.Errorf("STAT = %q, want %q", got, want)
	}
}

// TestInUse: RFC 1939 §4 exclusive lock, RFC 2449 §8.1.2 [IN-USE].
func TestInUse(t *testing.T) {
	_, addr := startServer(t)
	first := login(t, addr, "demo")
	second := dial(t, addr)
	second.Cmd("USER demo", "+OK*")
	second.Cmd("PASS demo", "-ERR [IN-USE] mailbox locked")
	auth := base64.StdEncoding.EncodeToString([]byte("\x00demo\x00demo"))
	second.Cmd("AUTH PLAIN "+auth, "-ERR [IN-USE] mailbox locked")
	// Other mailboxes are free.
	login(t, addr, "alice")
	// Once the first session quits, the mailbox is free again.
	first.Cmd("QUIT", "+OK*")
	first.Closed()
	second.Cmd("USER demo", "+OK*")
	second.Cmd("PASS demo", "+OK*")
}

// TestAuthentication covers USER/PASS failures and AUTH PLAIN (RFC 5034,
// RFC 4616).
func TestAuthentication(t *testing.T) {
	_, addr := startServer(t)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

	c := dial(t, addr)
	c.Cmd("PASS demo", "-ERR*")
	c.Cmd("USER demo", "+OK*")
	c.Cmd("PASS wrong", "-ERR [AUTH] invalid credentials")
	c.Cmd("PASS demo", "-ERR*") // USER again after a failed PASS
	c.Cmd("USER nobody", "+OK*")
	c.Cmd("PASS demo", "-ERR [AUTH] invalid credentials")
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS wonder land", "+OK alice's maildrop has 4 messages*")
	c.Cmd("QUIT", "+OK*")
	c.Closed()

	// Each session closes after maxErrors protocol errors, so use a new one.
	c = dial(t, addr)
	c.Cmd("AUTH", "+OK*")
	if got := c.Body(); got != "PLAIN\r\n" {
		t.Errorf("AUTH mechanisms = %q", got)
	}
	c.Cmd("AUTH CRAM-MD5", "-ERR*")
	c.Cmd("AUTH PLAIN !!!", "-ERR*")
	c.Cmd("AUTH PLAIN "+b64("\x00demo\x00wrong"), "-ERR [AUTH] invalid credentials")
	c.Cmd("AUTH PLAIN "+b64("alice\x00demo\x00demo"), "-ERR [AUTH]*")
	c.Cmd("AUTH PLAIN =", "-ERR*")
	c.Cmd("AUTH PLAIN", "+ ")
	c.Cmd("*", "-ERR*") // cancelled
	c.Cmd("AUTH PLAIN", "+ ")
	c.Cmd(b64("demo\x00demo\x00demo"), "+OK demo's maildrop has 4 messages*")
	c.Cmd("STAT", "+OK 4 *")
	c.Cmd("QUIT", "+OK*")

	// Initial response, lower-case keyword, a space in the password.
	c = dial(t, addr)
	c.Cmd("auth plain "+b64("\x00alice\x00wonder land"), "+OK alice's maildrop*")
}

// TestPipelining: RFC 2449 §6.6, commands sent together are answered in
// order.
func TestPipelining(t *testing.T) {
	_, addr := startServer(t)
	msgs := Sample()
	c := dial(t, addr)
	c.Send("CAPA\r\nUSER demo\r\nPASS demo\r\nSTAT\r\nNOOP\r\nLIST 1\r\nRETR 2\r\nBOGUS\r\nNOOP\r\n")
	c.Expect("+OK*")
	if got := c.Body(); !strings.Contains(got, "PIPELINING\r\n") {
		t.Errorf("CAPA lacks PIPELINING: %q", got)
	}
	c.Expect("+OK*")
	c.Expect("+OK demo's maildrop*")
	c.Expect(fmt.Sprintf("+OK 4 %d", sizes(msgs)))
	c.Expect("+OK")
	c.Expect(fmt.Sprintf("+OK 1 %d", len(msgs[0].Data)))
	c.Expect("+OK*")
	if got := unstuff([]byte(c.Body())); !bytes.Equal(got, msgs[1].Data) {
		t.Error("pipelined RETR 2 differs from the sample")
	}
	c.Expect("-ERR*")
	c.Expect("+OK")

	// The brief's exact batch.
	c.Send("STAT\r\nNOOP\r\nLIST 1\r\n")
	c.Expect("+OK 4 *")
	c.Expect("+OK")
	c.Expect("+OK 1 *")
}

// TestStateRules checks one rule of the state machine per line.
func TestStateRules(t *testing.T) {
	_, addr := startServer(t)
	for _, cmd := range []string{"STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 0", "UIDL 1", "HELO", ""} {
		c := dial(t, addr)
		c.Cmd(cmd, "-ERR*") // TRANSACTION only, or unknown
		c.Cmd("QUIT", "+OK maildrop signing off")
		c.Closed()
	}
	c := dial(t, addr)
	c.Cmd("CAPA", "+OK*")
	capa := c.Body()
	for _, want := range []string{"TOP", "USER", "UIDL", "RESP-CODES", "PIPELINING", "SASL PLAIN", "IMPLEMENTATION maildrop"} {
		if !strings.Contains(capa, want+"\r\n") {
			t.Errorf("CAPA lacks %q", want)
		}
	}
	c.Cmd("USER demo", "+OK*")
	c.Cmd("PASS demo", "+OK*")

	for _, cmd := range []string{"USER demo", "PASS demo", "AUTH PLAIN"} {
		c.Cmd(cmd, "-ERR*") // AUTHORIZATION only
	}
	c.Cmd("CAPA", "+OK*")
	c.Body()
	c.Cmd("noop", "+OK") // keywords are case-insensitive
	c.Cmd("LIST 0", "-ERR no such message")
	c.Cmd("LIST 5", "-ERR no such message")
	c.Cmd("RETR 99999999999", "-ERR*")
	c.Cmd("DELE x", "-ERR*")
	c.Cmd("LIST 1 2", "-ERR*")
	c.Cmd("RETR", "-ERR*")
	c.Cmd("UIDL 1", "+OK 1 *")

	// RFC 2449 §4: 255 octets including CRLF are fine, one more is not.
	c.Cmd("NOOP"+strings.Repeat(" ", 255-len("NOOP\r\n")), "+OK")
	c.Cmd("NOOP"+strings.Repeat(" ", 256-len("NOOP\r\n")), "-ERR line too long")
	c.Cmd("NOOP", "+OK") // the session goes on
	c.Cmd("QUIT", "+OK*")
	c.Closed()
}

// TestTooManyErrors: a client that keeps sending garbage is disconnected.
func TestTooManyErrors(t *testing.T) {
	_, addr := startServer(t)
	c := dial(t, addr)
	for range maxErrors - 1 {
		c.Cmd("BOGUS", "-ERR unknown command")
	}
	c.Cmd("BOGUS", "-ERR too many errors*")
	c.Closed()

	// A line that never ends is cut off. (Send no more than the server
	// reads, so that closing does not reset the connection.)
	c = dial(t, addr)
	c.Send(strings.Repeat("x", maxDiscard+4096))
	c.Expect("-ERR line too long")
	c.Closed()
}

// TestClose: Close ends Serve and every session, and commits nothing.
func TestClose(t *testing.T) {
	srv := New(testUsers, Sample())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	addr := l.Addr().String()

	idle := dial(t, addr)
	busy := login(t, addr, "demo")
	busy.Cmd("DELE 1", "+OK*")
	mid := dial(t, addr)
	mid.Cmd("AUTH PLAIN", "+ ") // waiting for the continuation line

	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	// Close waits for the session goroutines, so by now they are gone.
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Serve did not return after Close")
	}
	for _, c := range []*pop3test.Client{idle, busy, mid} {
		c.Closed()
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("listener still accepting after Close")
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	// Serve on a closed server returns at once.
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(l2); err != nil {
		t.Errorf("Serve after Close = %v", err)
	}
	if _, err := l2.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve after Close left the listener open: %v", err)
	}
	// Nothing was committed: the mailbox still holds 4 messages.
	if n := len(srv.boxes["demo"].msgs); n != 4 {
		t.Errorf("mailbox holds %d messages, want 4", n)
	}
}

// TestServeClosedListener: Serve returns nil when its listener is closed
// by someone else.
func TestServeClosedListener(t *testing.T) {
	srv := New(testUsers, Sample())
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	time.Sleep(10 * time.Millisecond)
	l.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// TestSample checks the embedded messages against the brief.
func TestSample(t *testing.T) {
	msgs := Sample()
	if len(msgs) != 4 {
		t.Fatalf("Sample has %d messages, want 4", len(msgs))
	}
	for i, m := range msgs {
		if bytes.Contains(bytes.ReplaceAll(m.Data, []byte("\r\n"), nil), []byte("\n")) {
			t.Errorf("message %d has a bare LF", i+1)
		}
		head, _, ok := bytes.Cut(m.Data, []byte("\r\n\r\n"))
		if !ok {
			t.Errorf("message %d has no body", i+1)
		}
		for _, h := range []string{"From: ", "To: ", "Subject: ", "Date: ", "Message-ID: "} {
			if !bytes.Contains(head, []byte("\r\n"+h)) && !bytes.HasPrefix(head, []byte(h)) {
				t.Errorf("message %d lacks %s", i+1, h)
			}
		}
	}
	if !bytes.Contains(msgs[2].Data, []byte("charset=utf-8")) || !bytes.Contains(msgs[2].Data, []byte("Grüße")) {
		t.Error("message 3 is not 8-bit UTF-8")
	}
	if n := len(msgs[3].Data); n < 18000 || n > 24000 || !bytes.Contains(msgs[3].Data, []byte("Content-Transfer-Encoding: base64")) {
		t.Errorf("message 4: %d octets, want a ~20 KB base64 attachment", n)
	}
	msgs[0].Data[0] = 'X'
	if Sample()[0].Data[0] == 'X' {
		t.Error("Sample returns shared buffers")
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"":             "",
		"a\nb":         "a\r\nb\r\n",
		"a\r\nb\r\n":   "a\r\nb\r\n",
		"\n\n":         "\r\n\r\n",
		"a\r\n\nb\r\n": "a\r\n\r\nb\r\n",
		"x\ry":         "x\ry\r\n",
	} {
		if got := string(normalize([]byte(in))); got != want {
			t.Errorf("normalize(%q) = %q, want %q", in, got, want)
		}
	}
}

// writeCounter counts the writes made on a connection.
type writeCounter struct {
	net.Conn
	writes atomic.Int32
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes.Add(1)
	return w.Conn.Write(p)
}

// TestPipelinedRepliesShareOneWrite: the replies to a pipelined batch are
// flushed together, once no further command is buffered. net.Pipe hands the
// whole batch to one Read, which makes the count deterministic.
func TestPipelinedRepliesShareOneWrite(t *testing.T) {
	srv := New(testUsers, Sample())
	defer srv.Close()
	server, conn := net.Pipe()
	wc := &writeCounter{Conn: server}
	if !srv.trackConn(wc) {
		t.Fatal("trackConn failed")
	}
	go srv.serveConn(wc)

	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := pop3test.NewClient(t, conn)
	c.Expect("+OK maildrop ready")
	c.Send("USER demo\r\nPASS demo\r\nSTAT\r\nNOOP\r\nLIST 1\r\n")
	c.Expect("+OK*")
	c.Expect("+OK demo's maildrop*")
	c.Expect("+OK 4 *")
	c.Expect("+OK")
	c.Expect("+OK 1 *")
	if n := wc.writes.Load(); n != 2 {
		t.Errorf("%d writes, want 2 (greeting, then all five replies)", n)
	}
}
