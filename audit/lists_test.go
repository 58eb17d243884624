package audit

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/proxy"
)

func TestMarkedRanges(t *testing.T) {
	tests := []struct {
		nums []int
		want string
	}{
		{nil, ""},
		{[]int{5}, "5"},
		{[]int{3, 1, 2, 6, 5, 9}, "1-3,5-6,9"},
		{[]int{2, 2, 1, 4}, "1-2,4"},
		{[]int{10, 11, 12, 13, 20, 30, 31}, "10-13,20,30-31"},
	}
	for _, tt := range tests {
		got, omitted := markedRanges(tt.nums)
		if got != tt.want || omitted != 0 {
			t.Errorf("markedRanges(%v) = %q, %d; want %q", tt.nums, got, omitted, tt.want)
		}
		if n, want := countRanges(got), len(slices.Compact(slices.Sorted(slices.Values(tt.nums)))); n != want {
			t.Errorf("countRanges(%q) = %d, want %d", got, n, want)
		}
	}
	for _, bad := range []string{"0", "3-1", "1,,2", "a", "1-", "-1"} {
		if n := countRanges(bad); n != -1 {
			t.Errorf("countRanges(%q) = %d, want -1", bad, n)
		}
	}
}

// TestRecordsBounded gives a session the longest lists a client can make it
// write, and checks that its records stay within MaxRecord, say what they
// left out, and still add up in the report.
func TestRecordsBounded(t *testing.T) {
	var marked []int
	uidls := map[int]string{}
	for n := 1; n <= 200000; n += 2 { // no two consecutive: no ranges to save room
		marked = append(marked, n)
		uidls[n] = strings.Repeat(`"\`, 35) // 70 characters, each escaped
	}
	user := strings.Repeat(`\"`, 127)
	var buf bytes.Buffer
	l := New(&buf, Options{Chain: true})
	l.SessionOpen(proxy.SessionInfo{ID: "s", Listener: "pop3", Client: netip.MustParseAddrPort("192.0.2.1:1")})
	l.Checkpoint("s", proxy.Counters{Dele: len(marked), Marked: marked})
	l.SessionClose("s", proxy.CloseEvent{Counters: proxy.Counters{Duration: time.Hour, Dele: len(marked), Marked: marked},
		UIDLs: uidls, Reason: "quit", User: user, LoggedIn: true, Committed: true})
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	for i, line := range lines[1:] {
		if len(line)+1 > MaxRecord {
			t.Errorf("record %d: %d octets", i+2, len(line)+1)
		}
		var rec struct {
			Marked        string            `json:"marked"`
			MarkedOmitted int               `json:"marked_omitted"`
			UIDLs         map[string]string `json:"uidls"`
			UIDLsOmitted  int               `json:"uidls_omitted"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if n := countRanges(rec.Marked); n <= 0 || n+rec.MarkedOmitted != len(marked) {
			t.Errorf("record %d: marked lists %d, omits %d, of %d", i+2, n, rec.MarkedOmitted, len(marked))
		}
		if i == 1 && (len(rec.UIDLs) == 0 || len(rec.UIDLs)+rec.UIDLsOmitted != len(uidls)) {
			t.Errorf("close: uidls lists %d, omits %d, of %d", len(rec.UIDLs), rec.UIDLsOmitted, len(uidls))
		}
	}
	var report strings.Builder
	if err := Report(&buf, &report); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(report.String(), " 100000 ") {
		t.Errorf("report does not count every deleted message:\n%s", &report)
	}
}

// TestTooLarge checks that a record longer than MaxRecord, which only
// configured names could make, is replaced by a short one in the chain.
func TestTooLarge(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, Options{Chain: true})
	l.SessionOpen(proxy.SessionInfo{ID: "s", Listener: strings.Repeat("x", MaxRecord)})
	l.Policy("s", proxy.PolicyEvent{Rule: "syntax"})
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	start, _ := rec["start"].(string)
	if rec["event"] != EventTooLarge || rec["size"] == nil || !strings.Contains(start, `"event":"session.open","session":"s"`) ||
		len(lines[0]) > 1024 {
		t.Errorf("stand-in record %.300s", lines[0])
	}
	if _, err := Verify(&buf); err != nil {
		t.Errorf("Verify: %v", err)
	}
}
