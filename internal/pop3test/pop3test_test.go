package pop3test

import (
	"net"
	"testing"
	"time"
)

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, line string
		want          bool
	}{
		{"+OK", "+OK", true},
		{"+OK", "+OK ready", false},
		{"+OK*", "+OK", true},
		{"+OK *", "+OK ready", true},
		{"+OK *", "+OK", false},
		{"-ERR [SYS/TEMP] *", "-ERR [SYS/TEMP] shutting down", true}, // path.Match: no
		{"-ERR [IN-USE]*", "-ERR I", false},                          // not a character class
		{"*octets)", "+OK 2 messages (320 octets)", true},
		{"+OK * has * messages (* octets)", "+OK a has 4 messages (9 octets)", true},
		{"+OK * has * messages (* octets)", "+OK a has 4 messages", false},
		{"a*b*c", "abbc", true},
		{"a*b*c", "acb", false},
		{`a.b\c`, `a.b\c`, true},
		{"a.b", "axb", false},
	} {
		if got := Match(tc.pattern, tc.line); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.line, got, tc.want)
		}
	}
}

// serveSample is a script: a login and a two-line RETR, then QUIT.
func serveSample(c *UpstreamConn) {
	c.Login()
	for {
		switch c.Line() {
		case "RETR 1":
			c.Send("+OK 12 octets\r\nline\r\n..dot\r\n.\r\n")
		case "UIDL":
			c.Send("+OK\r\n1 a\r\n.\r\n")
		case "QUIT":
			c.Send("+OK bye\r\n")
			return
		case "":
			return
		default:
			c.Send("-ERR unknown\r\n")
		}
	}
}

func TestClientTranscript(t *testing.T) {
	addr := FakeUpstream(t, serveSample)
	c := Dial(t, addr)
	if c.Greeting != "+OK fake ready" {
		t.Errorf("Greeting = %q", c.Greeting)
	}
	c.Login("alice", "secret pass")
	c.Cmd("RETR 1", "+OK * octets")
	if got, want := c.Body(), "line\r\n..dot\r\n"; got != want {
		t.Errorf("Body = %q, want %q", got, want)
	}
	c.Cmd("NOOP", "-ERR *")
	c.Cmd("QUIT", "+OK bye")
	c.Closed()
}

func TestConn(t *testing.T) {
	addr := FakeUpstream(t, serveSample)
	c, err := DialConn(&net.Dialer{}, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", "secret"); err != nil {
		t.Fatal(err)
	}
	m, err := c.FetchAll()
	if err != nil {
		t.Fatal(err)
	}
	if string(m.UIDL) != "1 a\r\n.\r\n" || len(m.Bodies) != 1 || string(m.Bodies[0]) != "line\r\n..dot\r\n.\r\n" {
		t.Errorf("FetchAll = %q", m)
	}
	if _, err := c.Cmd("NOOP secret"); err == nil || err.Error() != `NOOP: "-ERR unknown"` {
		t.Errorf("NOOP: %v, want the -ERR without the argument", err)
	}
	if _, err := c.Cmd("QUIT"); err != nil {
		t.Fatal(err)
	}
}
