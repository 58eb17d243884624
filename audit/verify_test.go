package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/popproxy/popproxy/proxy"
)

// chainedLines returns the lines of a chained log of six records.
func chainedLines(t *testing.T) []string {
	t.Helper()
	var buf bytes.Buffer
	l := New(&buf, Options{Chain: true})
	for _, user := range []string{"alice", "bob", "carol", "dave", "erin", "frank"} {
		l.Auth("s", proxy.AuthEvent{User: user, Mechanism: "USER", OK: true})
	}
	return strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
}

func join(lines []string) string { return strings.Join(lines, "\n") + "\n" }

func TestVerifyIntact(t *testing.T) {
	n, err := Verify(strings.NewReader(join(chainedLines(t))))
	if err != nil || n != 6 {
		t.Errorf("Verify = %d, %v; want 6 records", n, err)
	}
	if n, err := Verify(strings.NewReader("")); err != nil || n != 0 {
		t.Errorf("Verify of an empty file = %d, %v", n, err)
	}
}

func TestVerifyDetects(t *testing.T) {
	tests := []struct {
		name   string
		change func([]string) []string
		line   int
		reason string
	}{
		{"edited user", func(l []string) []string {
			l[2] = strings.Replace(l[2], "carol", "caro1", 1)
			return l
		}, 3, "record edited"},
		{"edited last but one", func(l []string) []string {
			l[4] = strings.Replace(l[4], `"ok":true`, `"ok":false`, 1)
			return l
		}, 5, "record edited"},
		{"removed", func(l []string) []string {
			return append(l[:2], l[3:]...)
		}, 3, "seq 4 after seq 2: 1 record(s) missing"},
		{"first removed", func(l []string) []string {
			return l[1:]
		}, 1, "earlier records missing"},
		{"swapped", func(l []string) []string {
			l[2], l[3] = l[3], l[2]
			return l
		}, 3, "seq 4 after seq 2"},
		{"repeated", func(l []string) []string {
			return append(l[:4], l[3:]...)
		}, 5, "seq 4 after seq 4: record out of order or repeated"},
		{"not JSON", func(l []string) []string {
			l[1] = l[1][:40]
			return l
		}, 2, "not a JSON record"},
		{"unchained", func(l []string) []string {
			l[1] = `{"event":"auth","user":"mallory"}`
			return l
		}, 2, "not a chained record"},
		{"renumbered", func(l []string) []string {
			// Drop record 3 and renumber the rest: the hashes still link them.
			l = append(l[:2], l[3:]...)
			for i := 2; i < len(l); i++ {
				l[i] = strings.Replace(l[i], `"seq":`+string(rune('0'+i+2)), `"seq":`+string(rune('0'+i+1)), 1)
			}
			return l
		}, 2, "records after it removed: its hash is not the prev of line 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify(strings.NewReader(join(tt.change(chainedLines(t)))))
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Line != tt.line || !strings.Contains(ve.Reason, tt.reason) {
				t.Errorf("got %v; want line %d: %s", err, tt.line, tt.reason)
			}
		})
	}
}

func TestVerifyTruncated(t *testing.T) {
	text := strings.TrimSuffix(join(chainedLines(t)), "\n")
	_, err := Verify(strings.NewReader(text))
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Line != 6 || !strings.Contains(ve.Reason, "no newline") {
		t.Errorf("got %v; want line 6: no newline", err)
	}
}

// findings verifies files in order with a fresh Verifier and returns every
// finding as "FILE: finding", and the results.
func findings(t *testing.T, max int, files ...[]string) ([]string, []FileResult) {
	t.Helper()
	v := Verifier{MaxBad: max}
	var out []string
	var results []FileResult
	for i, lines := range files {
		name := fmt.Sprintf("f%d", i+1)
		res, err := v.File(name, strings.NewReader(join(lines)))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range res.Findings {
			out = append(out, name+": "+f.String())
		}
		results = append(results, res)
	}
	return out, results
}

// TestVerifyReportsEveryBadLine checks that verification goes on past a bad
// line and names each one, once.
func TestVerifyReportsEveryBadLine(t *testing.T) {
	l := chainedLines(t)
	l[1] = strings.Replace(l[1], "bob", "b0b", 1) // edited
	l[3] = l[3][:30]                              // damaged
	l = append(l[:4], l[5:]...)                   // record 6 follows the damage: its link is not checked
	l = append(l, l[2])                           // a record repeated at the end
	got, res := findings(t, 0, l)
	want := []string{
		"f1: line 2: record edited, or records after it removed: its hash is not the prev of line 3",
		"f1: line 4: not a JSON record",
		"f1: line 6: seq 3 after seq 6: record out of order or repeated",
	}
	if !slices.Equal(got, want) {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if res[0].Bad != 3 || res[0].Records != 5 || res[0].Seq != 6 {
		t.Errorf("result %+v", res[0])
	}
}

func TestVerifyMaxFindings(t *testing.T) {
	var l []string
	for range 300 {
		l = append(l, "garbage")
	}
	got, res := findings(t, 10, l)
	if len(got) != 10 || res[0].Bad != 300 || res[0].OmittedFindings != 290 {
		t.Errorf("%d findings, %+v", len(got), res[0])
	}
}

func TestVerifyLongLine(t *testing.T) {
	l := chainedLines(t)
	l[2] = strings.Repeat("x", maxLine+10)
	got, _ := findings(t, 0, l)
	if len(got) != 1 || !strings.Contains(got[0], "line 3: longer than 1048576 octets") {
		t.Errorf("findings %q", got)
	}
}

// rotated writes a chained log of records a to g across three files, as
// logrotate and Reopen leave it, and returns the files' lines, oldest first.
func rotated(t *testing.T) [][]string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	opts := quiet()
	opts.Chain = true
	l, err := OpenFile(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	var files [][]string
	for i, rule := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		policy(l, rule)
		if i == 2 || i == 4 {
			rotatedPath := filepath.Join(dir, fmt.Sprint("audit.jsonl.", i))
			os.Rename(path, rotatedPath)
			l.Reopen()
			files = append(files, readLines(t, rotatedPath))
		}
	}
	l.Close()
	return append(files, readLines(t, path))
}

// TestVerifierFiles checks rotated files given in order, in part, with one
// missing, or out of order.
func TestVerifierFiles(t *testing.T) {
	files := rotated(t)
	got, res := findings(t, 0, files...)
	last := files[2][len(files[2])-1]
	sum := sha256.Sum256([]byte(last))
	if len(got) != 0 || res[2].Seq != 7 || res[2].Hash != hex.EncodeToString(sum[:]) || res[1].FirstSeq != 4 {
		t.Errorf("rotated files in order: %q, %+v", got, res)
	}
	if got, _ := findings(t, 0, files[1], files[2]); !slices.Equal(got, []string{"f1: continues from seq 4, link not checked"}) {
		t.Errorf("the rotated files without the first: %q", got)
	}
	if got, _ := findings(t, 0, files[0], files[2]); !slices.Equal(got, []string{"f2: line 1: seq 6 after seq 3 (end of f1): 2 record(s) missing or out of order"}) {
		t.Errorf("a file left out: %q", got)
	}
	if got, _ := findings(t, 0, files[1], files[0]); !slices.Equal(got, []string{
		"f1: continues from seq 4, link not checked", "f2: line 1: a new chain starts: the end of f1 is not checked",
	}) {
		t.Errorf("files out of order: %q", got)
	}
	edited := slices.Clone(files[0])
	edited[2] = strings.Replace(edited[2], `"rule":"c"`, `"rule":"C"`, 1)
	if got, _ := findings(t, 0, edited, files[1]); !slices.Equal(got, []string{"f2: line 1: continues a chain whose last record is not line 3 of f1"}) {
		t.Errorf("last record of a rotated file edited: %q", got)
	}
}
