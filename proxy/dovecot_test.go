package proxy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popproxy/popproxy/audit"
	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/testdovecot"
	"github.com/popproxy/popproxy/proxy"
)

// corpus holds the messages that must pass through the proxy byte for byte.
var corpus = [][]byte{
	[]byte("From: a@example.test\r\nSubject: plain\r\nMessage-ID: <plain@test>\r\n\r\nHello.\r\n"),
	[]byte("Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\n...three\r\nend.\r\n.\r\n"),
	[]byte("Subject: 8-bit\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe, \xe2\x82\xac \xff\xfe\x80\r\n"),
	{},
	[]byte("Subject: no final newline\r\n\r\nlast line"),
	[]byte("Subject: long line\r\n\r\n" + strings.Repeat("L", 10000) + "\r\n"),
	[]byte("Subject: odd endings\n\nbare LF\nCR\ronly\r\n\r\n.\n"),
	bigMessage(3 << 20),
}

// bigMessage is a message of about size octets with base64-like lines.
func bigMessage(size int) []byte {
	rng := rand.New(rand.NewSource(int64(size)))
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var b bytes.Buffer
	b.WriteString("Subject: big\r\nMessage-ID: <big@test>\r\n\r\n")
	line := make([]byte, 76)
	for b.Len() < size {
		for i := range line {
			line[i] = alphabet[rng.Intn(len(alphabet))]
		}
		b.Write(line)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

var (
	dovecotOnce sync.Once
	dovecot     *testdovecot.Instance
	dovecotErr  error
)

// dovecotUsers share one private Dovecot; each test uses its own mailbox.
var dovecotUsers = map[string]string{
	"bytes": "pw-bytes", "curl": "pw-curl", "poplib": "pw-poplib", "commit": "pw-commit",
	"drop": "pw-drop", "plain": "pw plain", "pipeline": "pw-pipeline", "audit": "pw-audit", "capa": "pw-capa",
}

// sharedDovecot starts the package's Dovecot on first use, filled with corpus
// for every user; TestMain stops it.
func sharedDovecot(t *testing.T) *testdovecot.Instance {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs dovecot")
	}
	dovecotOnce.Do(func() {
		dovecot, dovecotErr = testdovecot.Start(testdovecot.Config{Users: dovecotUsers})
		if dovecotErr != nil {
			return
		}
		for user := range dovecotUsers {
			for _, m := range corpus {
				if _, dovecotErr = dovecot.AddMessage(user, m); dovecotErr != nil {
					return
				}
			}
		}
	})
	if dovecotErr != nil {
		t.Fatalf("dovecot: %v (install it with `apt-get install -y dovecot-pop3d`)", dovecotErr)
	}
	return dovecot
}

func TestMain(m *testing.M) {
	code := m.Run()
	if dovecot != nil {
		dovecot.Close()
	}
	os.Exit(code)
}

// fetchAll logs in and returns the raw responses (status line and body) to
// LIST, UIDL, every RETR and TOP n 0 and TOP n 3.
func fetchAll(t *testing.T, addr, user string) []string {
	t.Helper()
	return fetchAllAs(t, addr, user, dovecotUsers[user])
}

func fetchAllAs(t *testing.T, addr, user, pass string) []string {
	t.Helper()
	c := pop3test.Dial(t, addr)
	c.Login(user, pass)
	var out []string
	multi := func(cmd string) string {
		status := c.Cmd(cmd, "+OK*")
		return status + "\r\n" + c.Body()
	}
	out = append(out, multi("LIST"), multi("UIDL"))
	for i := 1; i <= len(corpus); i++ {
		out = append(out, multi(fmt.Sprintf("RETR %d", i)), multi(fmt.Sprintf("TOP %d 0", i)), multi(fmt.Sprintf("TOP %d 3", i)))
		out = append(out, c.Cmd(fmt.Sprintf("LIST %d", i), "+OK*"), c.Cmd(fmt.Sprintf("UIDL %d", i), "+OK*"))
	}
	out = append(out, c.Cmd("STAT", "+OK*"), c.Cmd(fmt.Sprintf("RETR %d", len(corpus)+1), "-ERR*"))
	c.Cmd("QUIT", "+OK*")
	return out
}

// TestDovecotByteIdentical fetches every corpus message directly and through
// the proxy and compares the raw responses.
func TestDovecotByteIdentical(t *testing.T) {
	d := sharedDovecot(t)
	addr, _, rec := startProxy(t, d.Addr(), nil)
	direct := fetchAll(t, d.Addr(), "bytes")
	proxied := fetchAll(t, addr, "bytes")
	if len(direct) != len(proxied) {
		t.Fatalf("%d responses direct, %d proxied", len(direct), len(proxied))
	}
	for i := range direct {
		if direct[i] != proxied[i] {
			t.Errorf("response %d differs:\ndirect  %.200q\nproxied %.200q", i, direct[i], proxied[i])
		}
	}
	// Dot-stuffing reached the client as the server sent it.
	if !strings.Contains(strings.Join(proxied, ""), "\r\n..\r\n...\r\n..leading\r\n") {
		t.Error("dot-stuffed lines not relayed unchanged")
	}
	if ev := rec.waitClose(t); ev.Retr != len(corpus) || ev.Top != 2*len(corpus) || ev.Reason != "quit" {
		t.Errorf("close event %+v", ev)
	}
}

func TestDovecotPipelined(t *testing.T) {
	d := sharedDovecot(t)
	addr, _, _ := startProxy(t, d.Addr(), nil)
	c := pop3test.Dial(t, addr)
	c.Send("USER pipeline\r\nPASS pw-pipeline\r\nSTAT\r\nRETR 1\r\nNOOP\r\nRETR 2\r\nQUIT\r\n")
	c.Expect("+OK*")
	c.Expect("+OK*")
	c.Expect(fmt.Sprintf("+OK %d *", len(corpus)))
	c.Expect("+OK*")
	if got := c.Body(); got != string(corpus[0]) {
		t.Fatalf("RETR 1 = %q", got)
	}
	c.Expect("+OK*")
	c.Expect("+OK*")
	if got := c.Body(); got != "Subject: dots\r\n\r\n..\r\n...\r\n..leading\r\n....three\r\nend.\r\n..\r\n" {
		t.Fatalf("RETR 2 = %q", got)
	}
	c.Expect("+OK*")
	c.Closed()
}

func TestDovecotAuthPlainUpstream(t *testing.T) {
	d := sharedDovecot(t)
	addr, _, _ := startProxy(t, d.Addr(), func(o *proxy.Options) { withUpstream(o, func(u *proxy.Upstream) { u.LoginPlain = true }) })
	c := pop3test.Dial(t, addr)
	c.Cmd("USER plain", "+OK*")
	c.Cmd("PASS wrong", "-ERR [AUTH]*")
	c.Cmd("USER plain", "+OK*")
	c.Cmd("PASS pw plain", "+OK*") // a password with a space
	c.Cmd("STAT", fmt.Sprintf("+OK %d *", len(corpus)))
}

// TestDovecotDeleteCommitsOnlyOnQuit checks RFC 1939 §6 through the proxy:
// DELE + QUIT removes the message upstream, DELE + a dropped connection
// leaves it there.
func TestDovecotDeleteCommitsOnlyOnQuit(t *testing.T) {
	d := sharedDovecot(t)
	addr, _, rec := startProxy(t, d.Addr(), nil)
	before, err := d.Messages("drop")
	if err != nil {
		t.Fatal(err)
	}
	c := pop3test.Dial(t, addr)
	c.Login("drop", dovecotUsers["drop"])
	c.Cmd("DELE 1", "+OK*")
	c.Conn.Close()
	if ev := rec.waitClose(t); ev.Committed {
		t.Fatalf("dropped session reported committed: %+v", ev)
	}
	after, _ := d.Messages("drop")
	if !slices.Equal(before, after) {
		t.Fatalf("dropped session deleted mail: %v -> %v", before, after)
	}

	before, _ = d.Messages("commit")
	c = pop3test.Dial(t, addr)
	c.Login("commit", dovecotUsers["commit"])
	uidl := strings.Fields(c.Cmd("UIDL 2", "+OK*"))[2]
	c.Cmd("DELE 2", "+OK*")
	c.Cmd("QUIT", "+OK*")
	c.Closed()
	if ev := rec.waitClose(t); !ev.Committed || !slices.Equal(ev.Marked, []int{2}) {
		t.Fatalf("close event %+v", ev)
	}
	after, _ = d.Messages("commit")
	if want := slices.DeleteFunc(slices.Clone(before), func(s string) bool { return s == uidl }); !slices.Equal(after, want) {
		t.Fatalf("after DELE 2 + QUIT: %v, want %v", after, want)
	}
}

// closeSignal passes events on to an Auditor and says when a session closed.
type closeSignal struct {
	proxy.Auditor
	closed chan struct{}
}

func (c closeSignal) SessionClose(id string, e proxy.CloseEvent) {
	c.Auditor.SessionClose(id, e)
	c.closed <- struct{}{}
}

// TestDovecotAuditNamesDeletions checks, in the audit log's own records,
// that DELE names its message by Dovecot's UIDL (asked with resolve_uids)
// and by the Message-ID seen in an earlier RETR, that the close record names
// what QUIT deleted, and that a failed login's close names the user tried.
func TestDovecotAuditNamesDeletions(t *testing.T) {
	d := sharedDovecot(t)
	before, err := d.Messages("audit")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := closeSignal{audit.New(&buf, audit.Options{Chain: true}), make(chan struct{}, 2)}
	addr, _, _ := startProxy(t, d.Addr(), func(o *proxy.Options) {
		o.ResolveUIDs = true
		o.Auditor = log
	})
	c := pop3test.Dial(t, addr)
	c.Login("audit", dovecotUsers["audit"])
	c.Cmd("RETR 1", "+OK*")
	c.Body()
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("DELE 2", "+OK*")
	c.Cmd("QUIT", "+OK*")
	<-log.closed
	c = pop3test.Dial(t, addr)
	c.Cmd("USER audit", "+OK*")
	c.Cmd("PASS wrong", "-ERR*")
	c.Cmd("QUIT", "+OK*")
	<-log.closed

	var dele, closes []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		switch {
		case rec["event"] == "command" && rec["verb"] == "DELE":
			dele = append(dele, rec)
		case rec["event"] == "session.close":
			closes = append(closes, rec)
		}
	}
	if len(dele) != 2 || len(closes) != 2 {
		t.Fatalf("%d DELE and %d close records:\n%s", len(dele), len(closes), &buf)
	}
	if dele[0]["uidl"] != before[0] || dele[0]["message_id"] != "<plain@test>" {
		t.Errorf("DELE 1 record %v, want uidl %s and message_id <plain@test>", dele[0], before[0])
	}
	if _, ok := dele[1]["message_id"]; dele[1]["uidl"] != before[1] || ok {
		t.Errorf("DELE 2 record %v, want uidl %s and no message_id", dele[1], before[1])
	}
	uidls := map[string]any{"1": before[0], "2": before[1]}
	if cl := closes[0]; cl["committed"] != true || fmt.Sprint(cl["uidls"]) != fmt.Sprint(uidls) {
		t.Errorf("close record %v, want committed and uidls %v", cl, uidls)
	}
	if cl := closes[1]; cl["user"] != "audit" || cl["logged_in"] != false {
		t.Errorf("close record after a failed login %v", cl)
	}
	after, _ := d.Messages("audit")
	if !slices.Equal(after, before[2:]) {
		t.Errorf("after DELE 1, DELE 2 and QUIT: %v, want %v", after, before[2:])
	}
}

// TestDovecotCurl fetches through the proxy with curl and compares with curl
// talking to Dovecot directly.
func TestDovecotCurl(t *testing.T) {
	d := sharedDovecot(t)
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl not found: install it with `apt-get install -y curl`")
	}
	addr, _, _ := startProxy(t, d.Addr(), nil)
	get := func(hostport, path string) []byte {
		out, err := exec.Command(curl, "-sS", "--max-time", "20", fmt.Sprintf("pop3://curl:pw-curl@%s/%s", hostport, path)).Output()
		if err != nil {
			t.Fatalf("curl %s/%s: %v", hostport, path, err)
		}
		return out
	}
	if direct, proxied := get(d.Addr(), ""), get(addr, ""); !bytes.Equal(direct, proxied) || len(direct) == 0 {
		t.Fatalf("listing differs: direct %q, proxied %q", direct, proxied)
	}
	for i := 1; i <= len(corpus); i++ {
		direct, proxied := get(d.Addr(), fmt.Sprint(i)), get(addr, fmt.Sprint(i))
		if !bytes.Equal(direct, proxied) {
			t.Errorf("message %d differs: %d bytes direct, %d proxied", i, len(direct), len(proxied))
		}
	}
	if got := get(addr, "1"); !bytes.Equal(got, corpus[0]) {
		t.Errorf("curl through the proxy got %q, want %q", got, corpus[0])
	}
}

// poplibScript lists, fetches and hashes every message with Python's poplib.
const poplibScript = `
import hashlib, json, poplib, sys
poplib._MAXLINE = 1 << 20  # the corpus has a 10,000-octet line
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=20)
p.user(sys.argv[3]); p.pass_(sys.argv[4])
out = {"stat": list(p.stat()), "uidl": [u.decode() for u in p.uidl()[1]], "msgs": []}
for i in range(1, out["stat"][0] + 1):
    resp, lines, octets = p.retr(i)
    out["msgs"].append([hashlib.sha256(b"\r\n".join(lines)).hexdigest(), octets])
out["top"] = [l.decode("latin-1") for l in p.top(1, 0)[1]]
out["capa"] = sorted(p.capa())
p.quit()
print(json.dumps(out))
`

func TestDovecotPoplib(t *testing.T) {
	d := sharedDovecot(t)
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 not found: install it with `apt-get install -y python3`")
	}
	addr, _, _ := startProxy(t, d.Addr(), nil)
	run := func(hostport string) map[string]any {
		host, port, _ := strings.Cut(hostport, ":")
		out, err := exec.Command(python, "-c", poplibScript, host, port, "poplib", "pw-poplib").Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("poplib against %s: %v\n%s", hostport, err, stderr)
		}
		var v map[string]any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("poplib output %q: %v", out, err)
		}
		return v
	}
	direct, proxied := run(d.Addr()), run(addr)
	for _, key := range []string{"stat", "uidl", "msgs", "top"} {
		if fmt.Sprint(direct[key]) != fmt.Sprint(proxied[key]) {
			t.Errorf("%s differs:\ndirect  %v\nproxied %v", key, direct[key], proxied[key])
		}
	}
	// CAPA after login lists what it listed before: Dovecot's TOP and UIDL,
	// and the proxy's own SASL, never Dovecot's STLS.
	if capa := fmt.Sprint(proxied["capa"]); !strings.Contains(capa, "SASL") || strings.Contains(capa, "STLS") || !strings.Contains(capa, "UIDL") {
		t.Errorf("proxied CAPA %s", capa)
	}
}

// TestDovecotKilledMidRetr kills the real server during a large RETR: the
// client must see the connection close without a terminator.
func TestDovecotKilledMidRetr(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs dovecot")
	}
	d := testdovecot.New(t, testdovecot.Config{Users: map[string]string{"victim": "pw"}})
	msg := bigMessage(20 << 20)
	if _, err := d.AddMessage("victim", msg); err != nil {
		t.Fatal(err)
	}
	addr, _, rec := startProxy(t, d.Addr(), nil)
	c := pop3test.Dial(t, addr)
	c.Login("victim", "pw")
	c.Cmd("RETR 1", "+OK*")
	head := make([]byte, 64<<10)
	if _, err := c.R.Read(head); err != nil {
		t.Fatal(err)
	}
	if err := d.Kill(); err != nil {
		t.Fatal(err)
	}
	c.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got bytes.Buffer
	if _, err := got.ReadFrom(c.R); err != nil {
		t.Fatalf("reading after kill: %v", err)
	}
	if bytes.HasSuffix(got.Bytes(), []byte("\r\n.\r\n")) || got.Len()+len(head) >= len(msg) {
		t.Fatalf("client got %d more bytes ending %q: looks complete", got.Len(), got.Bytes()[max(0, got.Len()-8):])
	}
	if ev := rec.waitClose(t); ev.Reason != "upstream_failed" || !ev.Incomplete {
		t.Fatalf("close event %+v", ev)
	}
}
