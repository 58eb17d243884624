package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/testproc"
	"github.com/popproxy/popproxy/proxy"
)

func quiet() Options { return Options{Logger: slog.New(slog.DiscardHandler)} }

func policy(l *Log, rule string) { l.Policy("s", proxy.PolicyEvent{Rule: proxy.Rule(rule)}) }

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func TestOpenFileModeAndAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	for _, rule := range []string{"first", "second"} {
		l, err := OpenFile(path, quiet())
		if err != nil {
			t.Fatal(err)
		}
		policy(l, rule)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", info.Mode().Perm())
	}
	lines := readLines(t, path)
	if len(lines) != 2 || !strings.Contains(lines[0], `"rule":"first"`) || !strings.Contains(lines[1], `"rule":"second"`) {
		t.Errorf("file was not appended to:\n%s", strings.Join(lines, "\n"))
	}
}

// TestReopenAfterRename does what logrotate does: rename the file, then
// signal for Reopen. The chain continues in the new file, and the two files
// verify as one when concatenated in order.
func TestReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path, rotated := filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "audit.jsonl.1")
	var ops bytes.Buffer
	l, err := OpenFile(path, Options{Chain: true, Logger: slog.New(slog.NewTextHandler(&ops, nil))})
	if err != nil {
		t.Fatal(err)
	}
	policy(l, "a")
	policy(l, "b")
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	policy(l, "c") // still to the renamed file, as before logrotate's signal
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	policy(l, "d")
	policy(l, "e")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	old, cur := readLines(t, rotated), readLines(t, path)
	if len(old) != 3 || len(cur) != 2 {
		t.Fatalf("%d records in the old file, %d in the new one; want 3 and 2", len(old), len(cur))
	}
	if !strings.Contains(cur[0], `"rule":"d","seq":4,"prev":"`) || !strings.HasSuffix(cur[0], `","chain":"continued"}`) {
		t.Errorf("first record of the new file: %s", cur[0])
	}
	if _, err := Verify(strings.NewReader(cur[0] + "\n" + cur[1] + "\n")); err != nil {
		t.Errorf("Verify new file alone: %v", err)
	}
	all := strings.Join(append(old, cur...), "\n") + "\n"
	if n, err := Verify(strings.NewReader(all)); err != nil || n != 5 {
		t.Errorf("Verify concatenation = %d, %v; want 5 records", n, err)
	}
	// Out of order, the continuation is not accepted.
	wrong := strings.Join(append(cur, old...), "\n") + "\n"
	if _, err := Verify(strings.NewReader(wrong)); err == nil || !strings.Contains(err.Error(), "line 3: a new chain starts here") {
		t.Errorf("Verify of files in the wrong order: %v", err)
	}
	// The operational log holds the chain's head, to check the end of the file against.
	sum := sha256.Sum256([]byte(cur[1]))
	if !strings.Contains(ops.String(), `msg="audit log closed" sink=`+path+" seq=5 last_hash="+hex.EncodeToString(sum[:])) {
		t.Errorf("operational log lacks the chain head:\n%s", &ops)
	}
}

// TestRestartContinuesChain opens the same file twice, as a restarted
// popproxy does: the second run continues the first run's chain.
func TestRestartContinuesChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	opts := quiet()
	opts.Chain = true
	for _, rule := range []string{"a", "b", "c"} {
		l, err := OpenFile(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		policy(l, rule)
		l.Close()
	}
	lines := readLines(t, path)
	if !strings.HasSuffix(lines[0], `"chain":"start"}`) || !strings.HasSuffix(lines[2], `"chain":"continued"}`) {
		t.Errorf("chain markers:\n%s", strings.Join(lines, "\n"))
	}
	f, _ := os.Open(path)
	defer f.Close()
	if n, err := Verify(f); err != nil || n != 3 {
		t.Errorf("Verify = %d, %v; want 3 records", n, err)
	}
}

// TestPartialLine checks that a fragment left by an interrupted write stays
// on a line of its own, so that later records are whole.
func TestPartialLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(path, []byte(`{"time":"2026-11-26T13:11:41.123456Z","event":"pol`), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := OpenFile(path, quiet())
	if err != nil {
		t.Fatal(err)
	}
	policy(l, "a")
	l.Close()
	lines := readLines(t, path)
	if len(lines) != 2 || !json.Valid([]byte(lines[1])) {
		t.Errorf("record appended to a fragment:\n%s", strings.Join(lines, "\n"))
	}
}

func TestReopenFailureKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	l, err := OpenFile(path, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	os.Rename(path, path+".1")
	if err := os.Mkdir(path, 0o700); err != nil { // the path cannot be opened as a file
		t.Fatal(err)
	}
	if err := l.Reopen(); err == nil {
		t.Fatal("Reopen succeeded")
	}
	policy(l, "a")
	if l.Err() != nil || len(readLines(t, path+".1")) != 1 {
		t.Errorf("record not written to the old file: Err %v", l.Err())
	}
}

// TestConcurrent writes from many sessions at once: every record is a whole
// line and the chain stays intact.
func TestConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	opts := quiet()
	opts.Chain = true
	l, err := OpenFile(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			id := strconv.Itoa(i)
			l.SessionOpen(proxy.SessionInfo{ID: id, Listener: "pop3", Client: netip.MustParseAddrPort("192.0.2.1:1")})
			for range 50 {
				l.Command(id, proxy.CommandEvent{Verb: "NOOP", OK: true, Size: -1})
			}
			l.SessionClose(id, proxy.CloseEvent{Reason: "quit"})
		})
		if i == 10 {
			l.Reopen()
		}
	}
	wg.Wait()
	l.Close()
	f, _ := os.Open(path)
	defer f.Close()
	if n, err := Verify(f); err != nil || n != 20*52 {
		t.Errorf("Verify = %d, %v; want %d records", n, err, 20*52)
	}
}

// TestRestartAfterDamage opens a chained file whose end was damaged while
// popproxy was stopped: a new segment starts, with a chain.start record
// naming what was found and the last whole record, which Verify checks.
func TestRestartAfterDamage(t *testing.T) {
	tests := []struct {
		name     string
		damage   func(path string)
		found    string
		lastSeq  float64 // 0: no chained record found
		badLines []string
	}{
		{"write cut short", func(path string) { appendFile(path, `{"time":"2026-11-26T13:11:41.123456Z","event":"pol`) },
			"an incomplete last record (50 octets without a newline)", 3, []string{"line 4: not a JSON record"}},
		{"truncated mid-record", func(path string) {
			info, _ := os.Stat(path)
			os.Truncate(path, info.Size()-20)
		}, "an incomplete last record (", 2, []string{"line 3: not a JSON record"}},
		{"a line that is not JSON", func(path string) { appendFile(path, "garbage\n") },
			"a last line that is not JSON", 3, []string{"line 4: not a JSON record"}},
		{"records without chain", func(path string) { appendFile(path, `{"event":"policy","rule":"x"}`+"\n") },
			"a last record without seq or prev (written without audit.chain)", 3, []string{"line 4: not a chained record: no seq or prev"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			var ops bytes.Buffer
			opts := Options{Chain: true, Logger: slog.New(slog.NewTextHandler(&ops, nil))}
			l, _ := OpenFile(path, opts)
			for _, rule := range []string{"a", "b", "c"} {
				policy(l, rule)
			}
			l.Close()
			tt.damage(path)
			l, err := OpenFile(path, opts)
			if err != nil {
				t.Fatal(err)
			}
			policy(l, "d")
			l.Close()

			lines := readLines(t, path)
			var start, next map[string]any
			json.Unmarshal([]byte(lines[len(lines)-2]), &start)
			json.Unmarshal([]byte(lines[len(lines)-1]), &next)
			if start["event"] != EventChainStart || !strings.HasPrefix(fmt.Sprint(start["found"]), tt.found) ||
				start["seq"] != 1.0 || start["prev"] != "" || start["chain"] != "start" || next["seq"] != 2.0 || next["rule"] != "d" {
				t.Fatalf("after restart:\n%s\n%s", lines[len(lines)-2], lines[len(lines)-1])
			}
			if tt.lastSeq > 0 {
				sum := sha256.Sum256([]byte(lines[int(tt.lastSeq)-1]))
				if start["last_seq"] != tt.lastSeq || start["last_hash"] != hex.EncodeToString(sum[:]) {
					t.Errorf("chain.start names seq %v, hash %v; want %v, the hash of line %v", start["last_seq"], start["last_hash"], tt.lastSeq, tt.lastSeq)
				}
			}
			if !strings.Contains(ops.String(), "audit file ends damaged: a new chain segment starts") {
				t.Errorf("operational log:\n%s", &ops)
			}

			var v Verifier
			res, _ := v.File("f", strings.NewReader(strings.Join(lines, "\n")+"\n"))
			var bad, notes []string
			for _, f := range res.Findings {
				if f.Bad {
					bad = append(bad, f.String())
				} else {
					notes = append(notes, f.String())
				}
			}
			wantNote := fmt.Sprintf("line %d: a new chain segment starts: at restart popproxy found %s", len(lines)-1, start["found"])
			if !slices.Equal(bad, tt.badLines) || len(notes) != 1 || !strings.HasPrefix(notes[0], wantNote) {
				t.Errorf("findings: bad %q, notes %q", bad, notes)
			}
		})
	}
}

// TestChainStartChecked checks that Verify compares the last record a
// chain.start names with the last whole one before it: records removed
// before the damaged end are found.
func TestChainStartChecked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	opts := quiet()
	opts.Chain = true
	l, _ := OpenFile(path, opts)
	policy(l, "a")
	policy(l, "b")
	l.Close()
	appendFile(path, "garbage\n")
	l, _ = OpenFile(path, opts)
	policy(l, "c")
	l.Close()
	lines := readLines(t, path)
	lines = append(lines[:1], lines[2:]...) // record 2 removed
	_, err := Verify(strings.NewReader(strings.Join(lines, "\n") + "\n"))
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Line != 2 {
		t.Fatalf("Verify: %v", err)
	}
	var v Verifier
	res, _ := v.File("f", strings.NewReader(strings.Join(lines, "\n")+"\n"))
	if res.Bad != 2 || !strings.Contains(res.Findings[1].Text, "after seq 2, but the last whole record before it is seq 1") {
		t.Errorf("findings %v", res.Findings)
	}
}

// TestRestartAfterTruncationAtARecord shows what the chain cannot see: a
// file cut after a whole record continues as if nothing was removed. Only
// the head in the operational log tells.
func TestRestartAfterTruncationAtARecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	var ops bytes.Buffer
	opts := Options{Chain: true, Logger: slog.New(slog.NewTextHandler(&ops, nil))}
	l, _ := OpenFile(path, opts)
	policy(l, "a")
	policy(l, "b")
	l.Close()
	lines := readLines(t, path)
	sum := sha256.Sum256([]byte(lines[1]))
	head := `msg="audit log closed" sink=` + path + " seq=2 last_hash=" + hex.EncodeToString(sum[:])
	os.WriteFile(path, []byte(lines[0]+"\n"), 0o600)
	l, _ = OpenFile(path, opts)
	policy(l, "c")
	l.Close()
	f, _ := os.Open(path)
	defer f.Close()
	if n, err := Verify(f); err != nil || n != 2 {
		t.Errorf("Verify = %d, %v", n, err)
	}
	// The head logged before the truncation is not in the file any more:
	// its seq 2 has another hash.
	lines = readLines(t, path)
	sum = sha256.Sum256([]byte(lines[1]))
	now := hex.EncodeToString(sum[:])
	if logged := ops.String(); !strings.Contains(logged, head) || !strings.Contains(logged, "seq=2 last_hash="+now) || strings.HasSuffix(head, now) {
		t.Errorf("operational log:\n%s", logged)
	}
}

func appendFile(path, text string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		panic(err)
	}
	f.WriteString(text)
	f.Close()
}

// TestRestartGolden shows what a restart after a damaged end writes, for
// docs/audit.md: the fragment on a line of its own, then a new segment.
func TestRestartGolden(t *testing.T) {
	fixClock(t)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	opts := quiet()
	opts.Chain = true
	l, _ := OpenFile(path, opts)
	l.SessionOpen(proxy.SessionInfo{ID: sid, Listener: "pop3s", Client: netip.MustParseAddrPort("192.0.2.10:51234")})
	l.Close()
	appendFile(path, `{"time":"2026-11-26T13:11:41.123456Z","event":"command","session":"5f2b9c0e1a7d4c38","listener":"po`)
	l, _ = OpenFile(path, opts)
	l.SessionOpen(proxy.SessionInfo{ID: "9a0c4e6b2d8f1357", Listener: "pop3s", Client: netip.MustParseAddrPort("192.0.2.11:40112")})
	l.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "restart.golden", data)
}

// TestHeadInterval checks that the chain's head goes to the operational log
// every HeadInterval while it moves, and not while it stands still.
func TestHeadInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	var ops testproc.SyncBuffer
	l, err := OpenFile(path, Options{Chain: true, HeadInterval: 5 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&ops, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	policy(l, "a")
	policy(l, "b")
	lines := readLines(t, path)
	sum := sha256.Sum256([]byte(lines[1]))
	want := `msg="audit chain head" sink=` + path + " seq=2 last_hash=" + hex.EncodeToString(sum[:])
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(ops.String(), want); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no chain head in the operational log:\n%s", ops.String())
		}
	}
	time.Sleep(50 * time.Millisecond) // ten intervals without a record
	if n := strings.Count(ops.String(), "audit chain head"); n != 1 {
		t.Errorf("%d heads written for one move of the chain:\n%s", n, ops.String())
	}
}

// TestCloseUnused checks that a log closed without a record, as after a
// failed start, writes nothing to the operational log: the real error is
// the only thing an admin should read.
func TestCloseUnused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	var ops bytes.Buffer
	opts := Options{Chain: true, HeadInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(&ops, nil))}
	for range 2 {
		l, err := OpenFile(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
	}
	l := New(&bytes.Buffer{}, opts)
	l.Close()
	if ops.Len() != 0 {
		t.Errorf("operational log:\n%s", &ops)
	}
}
