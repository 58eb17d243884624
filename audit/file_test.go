package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/popproxy/popproxy/proxy"
)

func quiet() Options { return Options{Logger: slog.New(slog.DiscardHandler)} }

func policy(l *Log, rule string) { l.Policy("s", proxy.PolicyEvent{Rule: rule}) }

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
