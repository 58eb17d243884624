package maildrop

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
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

// client is a test-side POP3 connection with transcript helpers.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// dial connects and checks the greeting.
func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	cl := &client{t: t, c: c, r: bufio.NewReader(c)}
	cl.expect("+OK maildrop ready")
	return cl
}

// login dials and logs in as user with USER/PASS.
func login(t *testing.T, addr, user string) *client {
	t.Helper()
	c := dial(t, addr)
	c.cmd("USER "+user, "+OK*")
	c.cmd("PASS "+testUsers[user], "+OK "+user+"'s maildrop has * messages (* octets)")
	return c
}

func (c *client) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatal(err)
	}
}

// line reads one response line without its CRLF.
func (c *client) line() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("line %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// expect reads a line and checks it against pattern, where * matches any
// run of characters.
func (c *client) expect(pattern string) string {
	c.t.Helper()
	l := c.line()
	if !match(pattern, l) {
		c.t.Fatalf("got %q, want %q", l, pattern)
	}
	return l
}

// cmd sends one command and checks the first line of the response.
func (c *client) cmd(command, pattern string) string {
	c.t.Helper()
	c.write(command + "\r\n")
	return c.expect(pattern)
}

// body reads a multi-line body up to the terminating ".", returning the
// bytes exactly as sent (still dot-stuffed, CRLF line ends).
func (c *client) body() []byte {
	c.t.Helper()
	var b bytes.Buffer
	for {
		l := c.line()
		if l == "." {
			return b.Bytes()
		}
		b.WriteString(l + "\r\n")
	}
}

// closed checks that the server has closed the connection.
func (c *client) closed() {
	c.t.Helper()
	if l, err := c.r.ReadString('\n'); err != io.EOF {
		c.t.Fatalf("got %q, %v; want EOF", l, err)
	}
}

// match reports whether s matches pattern, in which * stands for any run of
// characters (path.Match would read "[IN-USE]" as a character class).
func match(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(s, p)
		}
		j := strings.Index(s, p)
		if j < 0 {
			return false
		}
		s = s[j+len(p):]
	}
	return s == ""
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
	c.cmd("USER demo", "+OK*")
	c.cmd("PASS demo", fmt.Sprintf("+OK demo's maildrop has 4 messages (%d octets)", total))
	c.cmd("STAT", fmt.Sprintf("+OK 4 %d", total))
	c.cmd("LIST", fmt.Sprintf("+OK 4 messages (%d octets)", total))
	var want strings.Builder
	for i, m := range msgs {
		fmt.Fprintf(&want, "%d %d\r\n", i+1, len(m.Data))
	}
	if got := string(c.body()); got != want.String() {
		t.Errorf("LIST body = %q, want %q", got, want.String())
	}
	c.cmd("RETR 1", fmt.Sprintf("+OK %d octets", len(msgs[0].Data)))
	if got := unstuff(c.body()); !bytes.Equal(got, msgs[0].Data) {
		t.Errorf("RETR 1 = %q, want %q", got, msgs[0].Data)
	}
	c.cmd("DELE 1", "+OK message 1 deleted")
	c.cmd("RETR 3", fmt.Sprintf("+OK %d octets", len(msgs[2].Data)))
	if got := unstuff(c.body()); !bytes.Equal(got, msgs[2].Data) {
		t.Errorf("RETR 3 differs from the sample")
	}
	c.cmd("DELE 3", "+OK message 3 deleted")
	c.cmd("DELE 3", "-ERR message 3 already deleted")
	c.cmd("STAT", fmt.Sprintf("+OK 2 %d", len(msgs[1].Data)+len(msgs[3].Data)))
	c.cmd("QUIT", "+OK maildrop signing off (2 messages left)")
	c.closed()
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
	c.cmd("RETR 2", "+OK*")
	wire := c.body()
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
		c.cmd(fmt.Sprintf("TOP %d 0", i+1), "+OK*")
		if got, want := string(unstuff(c.body())), string(head)+"\r\n\r\n"; got != want {
			t.Errorf("TOP %d 0 = %q, want %q", i+1, got, want)
		}
	}
	m := Sample()[0].Data
	c.cmd("TOP 1 2", "+OK*")
	got := string(c.body())
	head, body, _ := strings.Cut(string(m), "\r\n\r\n")
	lines := strings.SplitAfter(body, "\r\n")
	if want := head + "\r\n\r\n" + lines[0] + lines[1]; got != want {
		t.Errorf("TOP 1 2 = %q, want %q", got, want)
	}
	c.cmd("TOP 1 100000", "+OK*")
	if got := c.body(); !bytes.Equal(got, m) {
		t.Errorf("TOP with more lines than the body is not the whole message")
	}
	c.cmd("TOP 1", "-ERR*")
	c.cmd("TOP 1 -1", "-ERR*")
	c.cmd("TOP 9 0", "-ERR no such message")
}

// sessionStat logs in afresh and returns the STAT reply.
func sessionStat(t *testing.T, addr string) string {
	t.Helper()
	c := login(t, addr, "demo")
	stat := c.cmd("STAT", "+OK*")
	c.cmd("QUIT", "+OK*")
	return stat
}

// TestQuitCommits: RFC 1939 §6, QUIT in TRANSACTION removes marked messages.
func TestQuitCommits(t *testing.T) {
	_, addr := startServer(t)
	msgs := Sample()
	c := login(t, addr, "demo")
	c.cmd("UIDL 2", "+OK 2 *")
	c.cmd("UIDL", "+OK*")
	uidls := strings.Fields(string(c.body()))
	c.cmd("DELE 1", "+OK*")
	c.cmd("QUIT", "+OK maildrop signing off (3 messages left)")
	c.closed()

	want := fmt.Sprintf("+OK 3 %d", sizes(msgs)-len(msgs[0].Data))
	if got := sessionStat(t, addr); got != want {
		t.Errorf("next session STAT = %q, want %q", got, want)
	}
	// The other user's mailbox is untouched.
	a := login(t, addr, "alice")
	a.cmd("STAT", fmt.Sprintf("+OK 4 %d", sizes(msgs)))

	// Unique-ids survive, messages are renumbered.
	c = login(t, addr, "demo")
	c.cmd("UIDL", "+OK*")
	got := strings.Fields(string(c.body()))
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
	c.cmd("DELE 1", "+OK*")
	c.cmd("DELE 2", "+OK*")
	c.c.Close()
	// The lock is released once the server notices; retry briefly.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dial(t, addr)
		c.cmd("USER demo", "+OK*")
		l := c.cmd("PASS demo", "*")
		if strings.HasPrefix(l, "+OK") {
			if got := c.cmd("STAT", "+OK*"); got != before {
				t.Errorf("STAT after dropped session = %q, want %q", got, before)
			}
			return
		}
		if !match("-ERR [IN-USE]*", l) || time.Now().After(deadline) {
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
	c.cmd("DELE 1", "+OK*")
	c.closed() // after the idle timeout
	if got := sessionStat(t, addr); got != before {
		t.Errorf("STAT after timeout = %q, want %q", got, before)
	}
}

// TestRsetRestores: RFC 1939 §5, RSET unmarks deleted messages.
func TestRsetRestores(t *testing.T) {
	_, addr := startServer(t)
	total := sizes(Sample())
	c := login(t, addr, "demo")
	c.cmd("DELE 2", "+OK*")
	c.cmd("LIST 2", "-ERR message 2 already deleted")
	c.cmd("RETR 2", "-ERR message 2 already deleted")
	c.cmd("LIST", "+OK 3 messages*")
	var want strings.Builder
	for i, m := range Sample() {
		if i != 1 {
			fmt.Fprintf(&want, "%d %d\r\n", i+1, len(m.Data))
		}
	}
	if got := string(c.body()); got != want.String() {
		t.Errorf("LIST = %q, want %q", got, want.String())
	}
	c.cmd("RSET", fmt.Sprintf("+OK maildrop has 4 messages (%d octets)", total))
	c.cmd("LIST 2", "+OK 2 *")
	c.cmd("QUIT", "+OK maildrop signing off (4 messages left)")
	if got, want := sessionStat(t, addr), fmt.Sprintf("+OK 4 %d", total); got != want {
		t.Errorf("STAT = %q, want %q", got, want)
	}
}

// TestInUse: RFC 1939 §4 exclusive lock, RFC 2449 §8.1.2 [IN-USE].
func TestInUse(t *testing.T) {
	_, addr := startServer(t)
	first := login(t, addr, "demo")
	second := dial(t, addr)
	second.cmd("USER demo", "+OK*")
	second.cmd("PASS demo", "-ERR [IN-USE] mailbox locked")
	auth := base64.StdEncoding.EncodeToString([]byte("\x00demo\x00demo"))
	second.cmd("AUTH PLAIN "+auth, "-ERR [IN-USE] mailbox locked")
	// Other mailboxes are free.
	login(t, addr, "alice")
	// Once the first session quits, the mailbox is free again.
	first.cmd("QUIT", "+OK*")
	first.closed()
	second.cmd("USER demo", "+OK*")
	second.cmd("PASS demo", "+OK*")
}

// TestAuthentication covers USER/PASS failures and AUTH PLAIN (RFC 5034,
// RFC 4616).
func TestAuthentication(t *testing.T) {
	_, addr := startServer(t)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

	c := dial(t, addr)
	c.cmd("PASS demo", "-ERR*")
	c.cmd("USER demo", "+OK*")
	c.cmd("PASS wrong", "-ERR [AUTH] invalid credentials")
	c.cmd("PASS demo", "-ERR*") // USER again after a failed PASS
	c.cmd("USER nobody", "+OK*")
	c.cmd("PASS demo", "-ERR [AUTH] invalid credentials")
	c.cmd("USER alice", "+OK*")
	c.cmd("PASS wonder land", "+OK alice's maildrop has 4 messages*")
	c.cmd("QUIT", "+OK*")
	c.closed()

	// Each session closes after maxErrors protocol errors, so use a new one.
	c = dial(t, addr)
	c.cmd("AUTH", "+OK*")
	if got := string(c.body()); got != "PLAIN\r\n" {
		t.Errorf("AUTH mechanisms = %q", got)
	}
	c.cmd("AUTH CRAM-MD5", "-ERR*")
	c.cmd("AUTH PLAIN !!!", "-ERR*")
	c.cmd("AUTH PLAIN "+b64("\x00demo\x00wrong"), "-ERR [AUTH] invalid credentials")
	c.cmd("AUTH PLAIN "+b64("alice\x00demo\x00demo"), "-ERR [AUTH]*")
	c.cmd("AUTH PLAIN =", "-ERR*")
	c.cmd("AUTH PLAIN", "+ ")
	c.cmd("*", "-ERR*") // cancelled
	c.cmd("AUTH PLAIN", "+ ")
	c.cmd(b64("demo\x00demo\x00demo"), "+OK demo's maildrop has 4 messages*")
	c.cmd("STAT", "+OK 4 *")
	c.cmd("QUIT", "+OK*")

	// Initial response, lower-case keyword, a space in the password.
	c = dial(t, addr)
	c.cmd("auth plain "+b64("\x00alice\x00wonder land"), "+OK alice's maildrop*")
}

// TestPipelining: RFC 2449 §6.6, commands sent together are answered in
// order.
func TestPipelining(t *testing.T) {
	_, addr := startServer(t)
	msgs := Sample()
	c := dial(t, addr)
	c.write("CAPA\r\nUSER demo\r\nPASS demo\r\nSTAT\r\nNOOP\r\nLIST 1\r\nRETR 2\r\nBOGUS\r\nNOOP\r\n")
	c.expect("+OK*")
	if got := string(c.body()); !strings.Contains(got, "PIPELINING\r\n") {
		t.Errorf("CAPA lacks PIPELINING: %q", got)
	}
	c.expect("+OK*")
	c.expect("+OK demo's maildrop*")
	c.expect(fmt.Sprintf("+OK 4 %d", sizes(msgs)))
	c.expect("+OK")
	c.expect(fmt.Sprintf("+OK 1 %d", len(msgs[0].Data)))
	c.expect("+OK*")
	if got := unstuff(c.body()); !bytes.Equal(got, msgs[1].Data) {
		t.Error("pipelined RETR 2 differs from the sample")
	}
	c.expect("-ERR*")
	c.expect("+OK")

	// The brief's exact batch.
	c.write("STAT\r\nNOOP\r\nLIST 1\r\n")
	c.expect("+OK 4 *")
	c.expect("+OK")
	c.expect("+OK 1 *")
}

// TestStateRules checks one rule of the state machine per line.
func TestStateRules(t *testing.T) {
	_, addr := startServer(t)
	for _, cmd := range []string{"STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 0", "UIDL 1", "HELO", ""} {
		c := dial(t, addr)
		c.cmd(cmd, "-ERR*") // TRANSACTION only, or unknown
		c.cmd("QUIT", "+OK maildrop signing off")
		c.closed()
	}
	c := dial(t, addr)
	c.cmd("CAPA", "+OK*")
	capa := string(c.body())
	for _, want := range []string{"TOP", "USER", "UIDL", "RESP-CODES", "PIPELINING", "SASL PLAIN", "IMPLEMENTATION maildrop"} {
		if !strings.Contains(capa, want+"\r\n") {
			t.Errorf("CAPA lacks %q", want)
		}
	}
	c.cmd("USER demo", "+OK*")
	c.cmd("PASS demo", "+OK*")

	for _, cmd := range []string{"USER demo", "PASS demo", "AUTH PLAIN"} {
		c.cmd(cmd, "-ERR*") // AUTHORIZATION only
	}
	c.cmd("CAPA", "+OK*")
	c.body()
	c.cmd("noop", "+OK") // keywords are case-insensitive
	c.cmd("LIST 0", "-ERR no such message")
	c.cmd("LIST 5", "-ERR no such message")
	c.cmd("RETR 99999999999", "-ERR*")
	c.cmd("DELE x", "-ERR*")
	c.cmd("LIST 1 2", "-ERR*")
	c.cmd("RETR", "-ERR*")
	c.cmd("UIDL 1", "+OK 1 *")

	// RFC 2449 §4: 255 octets including CRLF are fine, one more is not.
	c.cmd("NOOP"+strings.Repeat(" ", 255-len("NOOP\r\n")), "+OK")
	c.cmd("NOOP"+strings.Repeat(" ", 256-len("NOOP\r\n")), "-ERR line too long")
	c.cmd("NOOP", "+OK") // the session goes on
	c.cmd("QUIT", "+OK*")
	c.closed()
}

// TestTooManyErrors: a client that keeps sending garbage is disconnected.
func TestTooManyErrors(t *testing.T) {
	_, addr := startServer(t)
	c := dial(t, addr)
	for range maxErrors - 1 {
		c.cmd("BOGUS", "-ERR unknown command")
	}
	c.cmd("BOGUS", "-ERR too many errors*")
	c.closed()

	// A line that never ends is cut off. (Send no more than the server
	// reads, so that closing does not reset the connection.)
	c = dial(t, addr)
	c.write(strings.Repeat("x", maxDiscard+4096))
	c.expect("-ERR line too long")
	c.closed()
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
	busy.cmd("DELE 1", "+OK*")
	mid := dial(t, addr)
	mid.cmd("AUTH PLAIN", "+ ") // waiting for the continuation line

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
	for _, c := range []*client{idle, busy, mid} {
		c.closed()
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
	c := &client{t: t, c: conn, r: bufio.NewReader(conn)}
	c.expect("+OK maildrop ready")
	c.write("USER demo\r\nPASS demo\r\nSTAT\r\nNOOP\r\nLIST 1\r\n")
	c.expect("+OK*")
	c.expect("+OK demo's maildrop*")
	c.expect("+OK 4 *")
	c.expect("+OK")
	c.expect("+OK 1 *")
	if n := wc.writes.Load(); n != 2 {
		t.Errorf("%d writes, want 2 (greeting, then all five replies)", n)
	}
}
