package proxy_test

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/proxy"
)

// TestAuditMessageFacts checks that RETR and TOP events carry the message's
// size, its UIDL from the client's own listing and its Message-ID header.
func TestAuditMessageFacts(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), nil)
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Cmd("UIDL", "+OK*")
	listing := c.Body()
	c.Cmd("LIST", "+OK*")
	c.Body()
	c.Cmd("RETR 1", "+OK*")
	c.Body()
	c.Cmd("TOP 2 0", "+OK*")
	c.Body()
	c.Cmd("QUIT", "+OK*")
	rec.waitClose(t)

	uid1 := strings.Fields(strings.Split(listing, "\r\n")[0])[1]
	retr := rec.commands("RETR")
	if len(retr) != 1 || retr[0].MessageID != "<1@test>" || retr[0].UIDL != uid1 || retr[0].Size != int64(len(sampleMessages[0].Data)) {
		t.Errorf("RETR event %+v (want uidl %s, size %d)", retr, uid1, len(sampleMessages[0].Data))
	}
	top := rec.commands("TOP")
	if len(top) != 1 || top[0].MessageID != "" || top[0].UIDL == "" || top[0].Size != int64(len(sampleMessages[1].Data)) {
		t.Errorf("TOP event %+v", top)
	}
}

// TestResolveUIDs checks that with ResolveUIDs the proxy asks UIDL n and
// LIST n itself before a RETR or TOP of a message the client never listed,
// and only what it does not know yet.
func TestResolveUIDs(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.ResolveUIDs = true })
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Cmd("TOP 3 0", "+OK*")
	c.Body()
	c.Cmd("RETR 3", "+OK*") // known now: no second UIDL or LIST
	if got := c.Body(); got != string(sampleMessages[2].Data) {
		t.Fatalf("RETR 3 = %q", got)
	}
	c.Cmd("UIDL", "+OK*")
	c.Body()
	c.Cmd("RETR 2", "+OK*") // its UIDL listed, its size not
	c.Body()
	c.Cmd("QUIT", "+OK*")
	rec.waitClose(t)
	if got := up.received(); !strings.Contains(got, "UIDL 3\r\nLIST 3\r\nTOP 3 0\r\nRETR 3\r\nUIDL\r\nLIST 2\r\nRETR 2\r\n") {
		t.Errorf("upstream received %q", got)
	}
	events := append(rec.commands("TOP"), rec.commands("RETR")...)
	for i, size := range []int{len(sampleMessages[2].Data), len(sampleMessages[2].Data), len(sampleMessages[1].Data)} {
		if len(events) != 3 || events[i].UIDL == "" || events[i].Size != int64(size) {
			t.Fatalf("TOP and RETR events %+v, want each with its UIDL and size", events)
		}
	}
}

// TestAuditSizeOfCutRetr: a RETR answered without a size and cut short has
// no size in its record, not the octets that happened to pass.
func TestAuditSizeOfCutRetr(t *testing.T) {
	up := pop3test.FakeUpstream(t, func(c *pop3test.UpstreamConn) {
		c.Login()
		if c.Line() == "RETR 1" {
			c.Send("+OK\r\nSubject: cut\r\n\r\nhalf a mess")
		}
	})
	addr, _, rec := startProxy(t, up, nil)
	c := pop3test.Dial(t, addr)
	c.Login("u", "p")
	c.Cmd("RETR 1", "+OK")
	rec.waitClose(t)
	if retr := rec.commands("RETR"); len(retr) != 1 || !retr[0].Incomplete || retr[0].Size != -1 {
		t.Errorf("RETR events %+v, want one incomplete without size", retr)
	}
}

// TestAuditDeleNamesMessage checks that DELE events name the message by its
// UIDL from the client's own listing and by the Message-ID the session saw in
// an earlier RETR, and that the close record names the committed messages.
func TestAuditDeleNamesMessage(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), nil)
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	uid1 := strings.Fields(c.Cmd("UIDL 1", "+OK*"))[2]
	c.Cmd("RETR 1", "+OK*")
	c.Body()
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("DELE 3", "+OK*") // never listed nor retrieved: no uidl, no Message-ID
	c.Cmd("QUIT", "+OK*")
	ev := rec.waitClose(t)

	dele := rec.commands("DELE")
	if len(dele) != 2 {
		t.Fatalf("DELE events %+v", dele)
	}
	if d := dele[0]; d.UIDL != uid1 || d.MessageID != "<1@test>" || d.Size != int64(len(sampleMessages[0].Data)) {
		t.Errorf("DELE 1 event %+v, want uidl %s, Message-ID <1@test>", d, uid1)
	}
	if d := dele[1]; d.UIDL != "" || d.MessageID != "" {
		t.Errorf("DELE 3 event %+v names a message the session did not know", d)
	}
	if !ev.Committed || !slices.Equal(ev.Marked, []int{1, 3}) || !maps.Equal(ev.UIDLs, map[int]string{1: uid1}) {
		t.Errorf("close event %+v", ev)
	}
}

// TestResolveUIDsBeforeDele checks that with ResolveUIDs the proxy asks
// UIDL n before relaying DELE n of a message the client never listed.
func TestResolveUIDsBeforeDele(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.ResolveUIDs = true })
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Cmd("DELE 2", "+OK*")
	c.Cmd("RSET", "+OK*")
	c.Cmd("DELE 2", "+OK*") // known now: no second UIDL or LIST
	c.Conn.Close()          // no QUIT: nothing committed
	ev := rec.waitClose(t)
	if got := up.received(); !strings.Contains(got, "UIDL 2\r\nLIST 2\r\nDELE 2\r\nRSET\r\nDELE 2\r\n") {
		t.Errorf("upstream received %q", got)
	}
	dele := rec.commands("DELE")
	if len(dele) != 2 || dele[0].UIDL == "" || dele[1].UIDL != dele[0].UIDL {
		t.Errorf("DELE events %+v", dele)
	}
	if ev.Committed || !maps.Equal(ev.UIDLs, map[int]string{2: dele[0].UIDL}) {
		t.Errorf("close event %+v", ev)
	}
}

// TestCloseNamesLastUserTried checks that a session that never logged in
// names, in its close record, the last user whose login it tried.
func TestCloseNamesLastUserTried(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), nil)
	c := pop3test.Dial(t, addr)
	c.Cmd("USER alice", "+OK*")
	c.Cmd("PASS wrong", "-ERR*")
	c.Cmd("USER bob", "+OK*")
	c.Cmd("PASS wrong", "-ERR*")
	c.Cmd("USER carol", "+OK*") // no PASS: never tried
	c.Cmd("QUIT", "+OK*")
	if ev := rec.waitClose(t); ev.User != "bob" || ev.LoggedIn {
		t.Errorf("close event %+v, want user bob, not logged in", ev)
	}
}

func TestCheckpoint(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.CheckpointInterval = time.Nanosecond })
	c := pop3test.Dial(t, addr)
	c.Login("alice", "secret")
	c.Cmd("RETR 1", "+OK*")
	c.Body()
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("NOOP", "+OK*")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if n := len(rec.checkpoints); n < 2 {
		t.Fatalf("%d checkpoints", n)
	}
	last := rec.checkpoints[len(rec.checkpoints)-1]
	if last.Retr != 1 || last.Dele != 1 || len(last.Marked) != 1 || last.BytesOut == 0 {
		t.Errorf("last checkpoint %+v", last)
	}
}

// TestAuditFailClosed checks the default policy when the audit trail cannot
// be written: new sessions are refused, running ones end at their next
// command without QUIT upstream; AuditFailOpen keeps serving.
func TestAuditFailClosed(t *testing.T) {
	up := startMaildrop(t)
	addr, _, rec := startProxy(t, up.Addr().String(), nil)
	running := pop3test.Dial(t, addr)
	running.Login("alice", "secret")
	running.Cmd("DELE 1", "+OK*")

	rec.setErr(errors.New("disk full"))
	conn := dialRaw(t, addr)
	if line := readLine(t, conn); line != "-ERR [SYS/TEMP] service temporarily unavailable" {
		t.Fatalf("new session got %q", line)
	}
	running.Send("NOOP\r\n")
	running.Expect("-ERR [SYS/TEMP] service temporarily unavailable")
	running.Closed()
	if strings.Contains(up.received(), "QUIT") || strings.Contains(up.received(), "NOOP") {
		t.Errorf("upstream received %q", up.received())
	}

	rec.setErr(nil) // the sink recovered
	loginWhenUnlocked(pop3test.Dial(t, addr), "alice", "secret")

	open, _, openRec := startProxy(t, up.Addr().String(), func(o *proxy.Options) { o.AuditFailOpen = true })
	openRec.setErr(errors.New("disk full"))
	c := pop3test.Dial(t, open)
	c.Login("bob", "hunter2")
	c.Cmd("STAT", "+OK*")
}
