package audit

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/proxy"
)

func TestReport(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, Options{})
	open := func(id, client string) {
		l.SessionOpen(proxy.SessionInfo{ID: id, Listener: "pop3", Client: netip.MustParseAddrPort(client)})
	}
	login := func(id, user string, ok bool) {
		l.Auth(id, proxy.AuthEvent{User: user, Mechanism: "USER", OK: ok, Code: "AUTH", Reason: "invalid credentials"})
	}
	cmd := func(id, verb string, args ...string) {
		l.Command(id, proxy.CommandEvent{Verb: verb, Args: args, OK: true, Octets: 100, Duration: time.Millisecond, Size: -1})
	}

	// alice retrieves and deletes two messages, committed by QUIT.
	open("s1", "192.0.2.10:40001")
	login("s1", "alice", true)
	cmd("s1", "RETR", "1")
	cmd("s1", "RETR", "2")
	cmd("s1", "TOP", "3", "0")
	cmd("s1", "DELE", "1")
	cmd("s1", "DELE", "2")
	l.SessionClose("s1", proxy.CloseEvent{Reason: "quit", User: "alice", LoggedIn: true, Committed: true,
		Counters: proxy.Counters{BytesOut: 5000, Retr: 2, Top: 1, Dele: 2, Marked: []int{1, 2}}})
	// bob fails once, then marks a message and times out: not committed.
	open("s2", "198.51.100.7:50000")
	login("s2", "bob", false)
	login("s2", "bob", true)
	cmd("s2", "RETR", "3")
	cmd("s2", "DELE", "3")
	l.SessionClose("s2", proxy.CloseEvent{Reason: "timeout", User: "bob", LoggedIn: true,
		Counters: proxy.Counters{BytesOut: 1200, Retr: 1, Dele: 1, Marked: []int{3}}})
	// bob marks another; the server takes QUIT and dies without answering.
	open("s6", "198.51.100.7:50001")
	login("s6", "bob", true)
	cmd("s6", "DELE", "4")
	l.SessionClose("s6", proxy.CloseEvent{Reason: "upstream_failed", User: "bob", LoggedIn: true,
		CommitUnknown: "QUIT sent, but the server's answer was lost", Counters: proxy.Counters{Dele: 1, Marked: []int{4}}})
	// bob fails from elsewhere and gives up.
	open("s3", "[2001:db8::5]:1234")
	login("s3", "bob", false)
	l.SessionClose("s3", proxy.CloseEvent{Reason: "quit", User: "bob"})
	// Someone tries a hostile user name.
	open("s4", "203.0.113.9:999")
	login("s4", "\x1b[31mroot", false)
	l.SessionClose("s4", proxy.CloseEvent{Reason: "quit", User: "\x1b[31mroot"})
	// alice again, from four more addresses, one session still open.
	for i, c := range []string{"192.0.2.11:1", "192.0.2.12:1", "192.0.2.13:1"} {
		id := "t" + string(rune('0'+i))
		open(id, c)
		login(id, "alice", true)
		l.SessionClose(id, proxy.CloseEvent{Reason: "quit", User: "alice", LoggedIn: true, Committed: true,
			Counters: proxy.Counters{BytesOut: 100}})
	}
	open("s5", "192.0.2.14:1")
	login("s5", "alice", true)
	buf.WriteString("{\"time\":\"2026-11-26T13:11:41.1")

	var out strings.Builder
	if err := Report(&buf, &out); err != nil {
		t.Fatal(err)
	}
	want := `USER            SESSIONS  FAILED LOGINS  RETR  TOP  DELETED  NOT COMMITTED  BYTES OUT  CLIENTS
"\x1b[31mroot"  0         1              0     0    0        0              0          203.0.113.9
alice           4         0              2     1    2        0              5300       192.0.2.10,192.0.2.11,192.0.2.12 +1 more
bob             2         2              1     0    0        1              1200       198.51.100.7,2001:db8::5

note: 1 marked message(s) in neither DELETED nor NOT COMMITTED: QUIT reached the server but its answer was lost (committed: null)
note: 1 logged-in session(s) without a session.close record are not counted
note: 1 line(s) skipped: not JSON
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}
