package audit

import (
	"bytes"
	"errors"
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
