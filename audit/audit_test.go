package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/popproxy/popproxy/proxy"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// fixClock makes every record's time 2026-11-26T13:11:41.123456Z, given in
// another zone to show that records are in UTC.
func fixClock(t *testing.T) {
	t.Helper()
	old := zerolog.TimestampFunc
	zerolog.TimestampFunc = func() time.Time {
		return time.Date(2026, 11, 26, 14, 11, 41, 123456789, time.FixedZone("CET", 3600))
	}
	t.Cleanup(func() { zerolog.TimestampFunc = old })
}

const sid = "5f2b9c0e1a7d4c38"

// sampleSession records one session with every kind of event.
func sampleSession(l *Log) {
	l.SessionOpen(proxy.SessionInfo{
		ID:       sid,
		Listener: "pop3s",
		Client:   netip.MustParseAddrPort("192.0.2.10:51234"),
		Local:    netip.MustParseAddrPort("198.51.100.1:995"),
	})
	l.TLS(sid, proxy.TLSEvent{Mode: "implicit", Version: "TLS 1.3", CipherSuite: "TLS_AES_128_GCM_SHA256",
		ServerName: "mail.example.com", ALPN: "pop3"})
	l.Auth(sid, proxy.AuthEvent{User: "alice", Mechanism: "USER", Upstream: "10.0.0.5:110",
		Code: "AUTH", Reason: "invalid credentials"})
	l.Auth(sid, proxy.AuthEvent{User: "admin", Authzid: "alice", Mechanism: "PLAIN", Upstream: "10.0.0.5:110",
		Code: "AUTH", Reason: "invalid credentials"})
	// A legacy server's bare -ERR (popa3d, mailbox unreadable): no code.
	l.Auth(sid, proxy.AuthEvent{User: "alice", Mechanism: "USER", Upstream: "10.0.0.5:110"})
	// A refused bearer token: the server's code, never the token.
	l.Auth(sid, proxy.AuthEvent{User: "alice@example.com", Mechanism: "OAUTHBEARER", Upstream: "10.0.0.5:110", Route: "default",
		Code: "AUTH", Reason: "Authentication failed."})
	l.Auth(sid, proxy.AuthEvent{User: "alice", Mechanism: "PLAIN", OK: true, Upstream: "10.0.0.5:110"})
	l.Command(sid, proxy.CommandEvent{Verb: "STAT", OK: true, Octets: 14, Duration: 1500 * time.Microsecond, Size: -1})
	l.Command(sid, proxy.CommandEvent{Verb: "RETR", Args: []string{"1"}, OK: true, Octets: 2716,
		Duration: 12345678 * time.Nanosecond, Size: 2703, UIDL: "00000001575f2ea1",
		MessageID: "<20261126.1234@example.com>"})
	l.Command(sid, proxy.CommandEvent{Verb: "TOP", Args: []string{"2", "0"}, OK: true, Octets: 812,
		Duration: 3 * time.Millisecond, Size: -1})
	l.Command(sid, proxy.CommandEvent{Verb: "DELE", Args: []string{"1"}, OK: true, Octets: 22,
		Duration: 2 * time.Millisecond, Size: 2703, UIDL: "00000001575f2ea1", MessageID: "<20261126.1234@example.com>"})
	l.Policy(sid, proxy.PolicyEvent{Rule: "wrong_state", Verb: "PASS", Detail: "already logged in"})
	l.Policy(sid, proxy.PolicyEvent{Rule: "limit.retr_per_session", Verb: "RETR", Detail: "too many messages",
		Key: "alice", Value: 500})
	l.Checkpoint(sid, proxy.Counters{Duration: 600 * time.Second, BytesIn: 120, BytesOut: 3600, Retr: 1, Top: 1,
		Dele: 1, Marked: []int{1}})
	l.Command(sid, proxy.CommandEvent{Verb: "RETR", Args: []string{"3"}, OK: true, Octets: 4096,
		Duration: 30 * time.Second, Size: 1048576, Incomplete: true})
	l.SessionClose(sid, proxy.CloseEvent{
		Counters: proxy.Counters{Duration: 630250 * time.Millisecond, BytesIn: 134, BytesOut: 7708, Retr: 2,
			Top: 1, Dele: 1, Marked: []int{1}},
		UIDLs:  map[int]string{1: "00000001575f2ea1"},
		Reason: "upstream_failed", User: "alice", LoggedIn: true, Incomplete: true,
	})
	// Connections refused before they became sessions, summarised.
	l.Policy("", proxy.PolicyEvent{Rule: "limit.ip_connection_rate", Key: "203.0.113.7/32", Listener: "pop3s", Count: 1946})
	// A session whose QUIT reached the server but whose answer did not.
	const sid2 = "9a0c4e6b2d8f1357"
	l.SessionOpen(proxy.SessionInfo{ID: sid2, Listener: "pop3s", Client: netip.MustParseAddrPort("192.0.2.11:40112")})
	l.SessionClose(sid2, proxy.CloseEvent{
		Counters: proxy.Counters{Duration: 2 * time.Second, BytesIn: 30, BytesOut: 90, Dele: 1, Marked: []int{2}},
		Reason:   "upstream_failed", User: "bob", LoggedIn: true,
		CommitUnknown: "QUIT sent, but the server's answer was lost",
	})
	// A session whose deletions were committed: messages named by number and
	// by unique id, one of them unknown to the session.
	const sid3 = "3e8d5a7c9b1f2460"
	l.SessionOpen(proxy.SessionInfo{ID: sid3, Listener: "pop3s", Client: netip.MustParseAddrPort("[2001:db8::5]:50220"),
		Local: netip.MustParseAddrPort("[2001:db8::1]:995")})
	l.SessionClose(sid3, proxy.CloseEvent{
		Counters: proxy.Counters{Duration: 4 * time.Second, BytesIn: 60, BytesOut: 9120, Retr: 3, Dele: 6, Marked: []int{3, 1, 2, 6, 5, 9}},
		UIDLs:    map[int]string{1: "00000001575f2ea1", 3: "00000003575f2ea1"},
		Reason:   "quit", User: "carol", LoggedIn: true, Committed: true,
	})
	// A session that never logged in names the last user it tried.
	const sid4 = "7b2e4f6a8c0d1e35"
	l.SessionOpen(proxy.SessionInfo{ID: sid4, Listener: "pop3", Client: netip.MustParseAddrPort("203.0.113.9:61000")})
	l.SessionClose(sid4, proxy.CloseEvent{
		Counters: proxy.Counters{Duration: 9 * time.Second, BytesIn: 90, BytesOut: 210},
		Reason:   "too_many_errors", User: "root",
	})
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	gotLines, wantLines := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := range max(len(gotLines), len(wantLines)) {
		var g, w string
		if i < len(gotLines) {
			g = gotLines[i]
		}
		if i < len(wantLines) {
			w = wantLines[i]
		}
		if g != w {
			t.Errorf("%s line %d:\n got: %s\nwant: %s", name, i+1, g, w)
		}
	}
}

func TestEventsGolden(t *testing.T) {
	fixClock(t)
	var buf bytes.Buffer
	l := New(&buf, Options{})
	sampleSession(l)
	golden(t, "events.golden", buf.Bytes())
	if l.Err() != nil || l.Failures() != 0 {
		t.Errorf("Err %v, Failures %d", l.Err(), l.Failures())
	}
}

func TestChainedGolden(t *testing.T) {
	fixClock(t)
	var buf bytes.Buffer
	l := New(&buf, Options{Chain: true})
	sampleSession(l)
	golden(t, "chained.golden", buf.Bytes())
	if n, err := Verify(bytes.NewReader(buf.Bytes())); err != nil || n != 23 {
		t.Errorf("Verify = %d, %v; want 23 records", n, err)
	}
}

// TestGlobalsIgnored checks that zerolog's global formats, which main sets
// for the operational log, do not change audit records.
func TestGlobalsIgnored(t *testing.T) {
	fixClock(t)
	var want bytes.Buffer
	sampleSession(New(&want, Options{}))

	defer func(f string, u time.Duration, i bool) {
		zerolog.TimeFieldFormat, zerolog.DurationFieldUnit, zerolog.DurationFieldInteger = f, u, i
	}(zerolog.TimeFieldFormat, zerolog.DurationFieldUnit, zerolog.DurationFieldInteger)
	zerolog.TimeFieldFormat = zerolog.TimeFormatUnix
	zerolog.DurationFieldUnit = time.Second
	zerolog.DurationFieldInteger = true
	var got bytes.Buffer
	sampleSession(New(&got, Options{}))
	if got.String() != want.String() {
		t.Errorf("records depend on zerolog's globals:\n%s\nwant:\n%s", &got, &want)
	}
}

func TestUnknownSession(t *testing.T) {
	fixClock(t)
	var buf bytes.Buffer
	l := New(&buf, Options{})
	l.SessionOpen(proxy.SessionInfo{ID: "a", Listener: "pop3", Client: netip.MustParseAddrPort("[2001:db8::1]:1100")})
	l.SessionClose("a", proxy.CloseEvent{Reason: "client_quit"})
	l.Policy("a", proxy.PolicyEvent{Rule: "late"}) // after close: listener and client are forgotten
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if !strings.Contains(lines[1], `"listener":"pop3","client":"[2001:db8::1]:1100"`) {
		t.Errorf("close record lacks listener and client: %s", lines[1])
	}
	want := `{"time":"2026-11-26T13:11:41.123456Z","event":"policy","session":"a","rule":"late"}`
	if lines[2] != want {
		t.Errorf("got  %s\nwant %s", lines[2], want)
	}
	if len(l.sessions) != 0 {
		t.Errorf("%d sessions remembered after their close", len(l.sessions))
	}
}

// TestEscaping checks that hostile strings from clients and upstream servers
// cannot break a record or forge one: every record stays one line of valid
// JSON, and each field reads back as given (invalid UTF-8 bytes as U+FFFD).
func TestEscaping(t *testing.T) {
	hostile := []string{
		"eve\r\n{\"event\":\"auth\",\"user\":\"root\",\"ok\":true}",
		"\x1b[31mred\x1b[0m\x1b]0;title\x07",
		`quote " backslash \ ","ok":true,"x":"`,
		"nul\x00byte",
		"bad\xff\xfeutf8\xc3",
		"}\n{",
		"tab\tand\u2028line separator\x7f",
	}
	// zerolog writes each invalid UTF-8 byte as U+FFFD, as DecodeRuneInString reads it.
	replaced := func(s string) string {
		var b strings.Builder
		for len(s) > 0 {
			r, size := utf8.DecodeRuneInString(s)
			b.WriteRune(r)
			s = s[size:]
		}
		return b.String()
	}
	for _, chain := range []bool{false, true} {
		var buf bytes.Buffer
		l := New(&buf, Options{Chain: chain})
		for i, s := range hostile {
			id := string(rune('a' + i))
			l.SessionOpen(proxy.SessionInfo{ID: id, Listener: s})
			l.Auth(id, proxy.AuthEvent{User: s, Mechanism: "USER", Reason: s, Code: s, Upstream: s})
			l.Command(id, proxy.CommandEvent{Verb: "RETR", Args: []string{s, s}, UIDL: s, MessageID: s})
			l.Policy(id, proxy.PolicyEvent{Rule: proxy.Rule(s), Verb: s, Detail: s, Key: s})
			l.SessionClose(id, proxy.CloseEvent{User: s, Reason: proxy.CloseReason(s)})
		}
		out := buf.Bytes()
		for i, c := range out {
			if c < 0x20 && c != '\n' || c == 0x7f {
				t.Fatalf("raw control byte %#x at offset %d", c, i)
			}
		}
		lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		if len(lines) != 5*len(hostile) {
			t.Fatalf("chain %v: %d lines for %d events", chain, len(lines), 5*len(hostile))
		}
		for i, line := range lines {
			s := replaced(hostile[i/5])
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("line %d is not JSON: %v\n%s", i+1, err, line)
			}
			if rec["listener"] != s {
				t.Errorf("line %d: listener %q, want %q", i+1, rec["listener"], s)
			}
			var fields []string
			switch rec["event"] {
			case EventAuth:
				fields = []string{"user", "reason", "code", "upstream"}
				if rec["ok"] != false {
					t.Errorf("line %d: forged ok: %v", i+1, rec["ok"])
				}
			case EventCommand:
				fields = []string{"uidl", "message_id"}
				if args, _ := rec["args"].([]any); len(args) != 2 || args[0] != s || args[1] != s {
					t.Errorf("line %d: args %q", i+1, rec["args"])
				}
			case EventPolicy:
				fields = []string{"rule", "verb", "detail", "key"}
			case EventSessionClose:
				fields = []string{"user", "reason"}
			}
			for _, f := range fields {
				if rec[f] != s {
					t.Errorf("line %d: %s = %q, want %q", i+1, f, rec[f], s)
				}
			}
		}
		if chain {
			if _, err := Verify(bytes.NewReader(out)); err != nil {
				t.Errorf("Verify: %v", err)
			}
		}
	}
}

// flaky is a writer that fails while down is set.
type flaky struct {
	bytes.Buffer
	down bool
}

func (w *flaky) Write(p []byte) (int, error) {
	if w.down {
		return 0, errors.New("disk full")
	}
	return w.Buffer.Write(p)
}

func TestWriteFailure(t *testing.T) {
	var ops bytes.Buffer
	w := &flaky{}
	l := New(w, Options{Chain: true, Logger: slog.New(slog.NewTextHandler(&ops, nil))})
	policy := func() { l.Policy("s", proxy.PolicyEvent{Rule: "syntax"}) }

	policy()
	w.down = true
	for range 3 {
		policy()
	}
	if l.Err() == nil || l.Failures() != 3 {
		t.Fatalf("after 3 failed writes: Err %v, Failures %d", l.Err(), l.Failures())
	}
	w.down = false
	policy()
	if l.Err() != nil || l.Failures() != 3 {
		t.Fatalf("after a good write: Err %v, Failures %d", l.Err(), l.Failures())
	}
	w.down = true
	policy()
	w.down = false
	policy()

	logged := ops.String()
	if n := strings.Count(logged, "level=ERROR msg=\"audit sink failing: disk full\""); n != 2 {
		t.Errorf("%d failure messages for 2 streaks:\n%s", n, logged)
	}
	if n := strings.Count(logged, "level=INFO msg=\"audit sink recovered\""); n != 2 {
		t.Errorf("%d recovery messages for 2 streaks:\n%s", n, logged)
	}
	if !strings.Contains(logged, "lost_records=3") {
		t.Errorf("recovery does not count the lost records:\n%s", logged)
	}
	// The lost records leave gaps in the chain, which Verify reports.
	_, err := Verify(bytes.NewReader(w.Bytes()))
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Line != 2 || !strings.Contains(ve.Reason, "seq 5 after seq 1: 3 record(s) missing") {
		t.Errorf("Verify after lost records: %v", err)
	}
}

func TestWriteToClosedFile(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var ops bytes.Buffer
	l := New(f, Options{Logger: slog.New(slog.NewTextHandler(&ops, nil))})
	f.Close()
	l.Policy("s", proxy.PolicyEvent{Rule: "syntax"})
	l.Policy("s", proxy.PolicyEvent{Rule: "syntax"})
	if !errors.Is(l.Err(), os.ErrClosed) || l.Failures() != 2 {
		t.Errorf("Err %v, Failures %d", l.Err(), l.Failures())
	}
	if n := strings.Count(ops.String(), "audit sink failing"); n != 1 {
		t.Errorf("%d failure messages:\n%s", n, &ops)
	}
}

func TestGlobalLevelDisabled(t *testing.T) {
	defer zerolog.SetGlobalLevel(zerolog.GlobalLevel())
	zerolog.SetGlobalLevel(zerolog.Disabled)
	var buf bytes.Buffer
	l := New(&buf, Options{Logger: slog.New(slog.DiscardHandler)})
	l.Policy("s", proxy.PolicyEvent{Rule: "syntax"})
	if l.Err() == nil || l.Failures() != 1 {
		t.Errorf("dropped record not reported: Err %v, Failures %d", l.Err(), l.Failures())
	}
}

func TestCloseWriter(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, Options{Logger: slog.New(slog.DiscardHandler)})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.Policy("s", proxy.PolicyEvent{Rule: "syntax"})
	if !errors.Is(l.Err(), ErrClosed) || buf.Len() != 0 {
		t.Errorf("after Close: Err %v, wrote %q", l.Err(), &buf)
	}
	if err := l.Reopen(); err != nil {
		t.Errorf("Reopen of a writer: %v", err)
	}
}

// TestDocExamples checks that docs/audit.md shows every golden record, the
// first two chained ones and a chain.start, so that the schema page cannot
// go stale.
func TestDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/audit.md")
	if err != nil {
		t.Fatal(err)
	}
	events, _ := os.ReadFile("testdata/events.golden")
	chained, _ := os.ReadFile("testdata/chained.golden")
	restart, _ := os.ReadFile("testdata/restart.golden")
	want := append(strings.Split(strings.TrimSpace(string(events)), "\n"), strings.Split(string(chained), "\n")[:2]...)
	want = append(want, strings.Split(string(restart), "\n")[2])
	for _, line := range want {
		if !bytes.Contains(doc, []byte("```json\n"+line+"\n```")) {
			t.Errorf("docs/audit.md lacks the example\n%s\n(regenerate it from testdata/*.golden)", line)
		}
	}
}
