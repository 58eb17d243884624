package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"
)

// maxClients is how many client addresses a report row lists.
const maxClients = 3

// userStats is one row of a report.
type userStats struct {
	sessions, failed     int
	retr, top            int
	deleted, uncommitted int
	bytesOut             int64
	clients              map[netip.Addr]bool
}

// Report reads an audit log and writes a table with one row per user, sorted
// by user:
//
//	USER           the user name, quoted if it has unprintable characters
//	SESSIONS       logged-in sessions that ended in this log
//	FAILED LOGINS  refused login attempts
//	RETR, TOP      messages retrieved whole, and with TOP
//	DELETED        messages deleted: marked by DELE, committed by QUIT
//	NOT COMMITTED  messages marked by DELE whose session ended without commit
//	BYTES OUT      octets sent to the client
//	CLIENTS        distinct client IP addresses, logged in or refused
//
// Session totals come from session.close records, so a session counts in the
// log where it ended; logged-in sessions without one, messages whose deletion
// is unknown, and lines that are not JSON, are counted in notes below the
// table.
func Report(r io.Reader, w io.Writer) error {
	t := tally{users: make(map[string]*userStats), open: make(map[string]bool)}
	skipped := 0
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 && !t.add(line) {
			skipped++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tSESSIONS\tFAILED LOGINS\tRETR\tTOP\tDELETED\tNOT COMMITTED\tBYTES OUT\tCLIENTS")
	names := make([]string, 0, len(t.users))
	for name := range t.users {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		u := t.users[name]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", printable(name), u.sessions, u.failed,
			u.retr, u.top, u.deleted, u.uncommitted, u.bytesOut, u.clientList())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(t.open) > 0 || t.unknown > 0 || skipped > 0 {
		fmt.Fprintln(w)
	}
	if t.unknown > 0 {
		fmt.Fprintf(w, "note: %d marked message(s) in neither DELETED nor NOT COMMITTED: QUIT reached the server but its answer was lost (committed: null)\n", t.unknown)
	}
	if len(t.open) > 0 {
		fmt.Fprintf(w, "note: %d logged-in session(s) without a session.close record are not counted\n", len(t.open))
	}
	if skipped > 0 {
		fmt.Fprintf(w, "note: %d line(s) skipped: not JSON\n", skipped)
	}
	return nil
}

// tally adds up records for Report.
type tally struct {
	users   map[string]*userStats
	open    map[string]bool // logged-in sessions without a close record yet
	unknown int             // marked messages whose commit is unknown
}

// add counts one record, and reports whether it was JSON.
func (t *tally) add(line []byte) bool {
	var rec struct {
		Event     string          `json:"event"`
		Session   string          `json:"session"`
		Client    string          `json:"client"`
		User      string          `json:"user"`
		OK        bool            `json:"ok"`
		LoggedIn  bool            `json:"logged_in"`
		Retr      int             `json:"retr"`
		Top       int             `json:"top"`
		Marked    json.RawMessage `json:"marked"`
		Omitted   int             `json:"marked_omitted"`
		Committed *bool           `json:"committed"` // null: unknown
		BytesOut  int64           `json:"bytes_out"`
	}
	if json.Unmarshal(line, &rec) != nil {
		return false
	}
	switch {
	case rec.Event == EventAuth && rec.OK:
		t.open[rec.Session] = true
	case rec.Event == EventAuth:
		u := t.user(rec.User)
		u.failed++
		u.addClient(rec.Client)
	case rec.Event == EventSessionClose:
		delete(t.open, rec.Session)
		if !rec.LoggedIn {
			break
		}
		u := t.user(rec.User)
		u.sessions++
		u.retr += rec.Retr
		u.top += rec.Top
		u.bytesOut += rec.BytesOut
		marked := markedCount(rec.Marked) + rec.Omitted
		switch {
		case rec.Committed == nil:
			t.unknown += marked
		case *rec.Committed:
			u.deleted += marked
		default:
			u.uncommitted += marked
		}
		u.addClient(rec.Client)
	}
	return true
}

// markedCount is how many messages a record's "marked" names: ranges, as
// popproxy writes them, or an array of numbers, as its first versions did.
func markedCount(marked json.RawMessage) int {
	var ranges string
	if json.Unmarshal(marked, &ranges) == nil {
		return max(countRanges(ranges), 0)
	}
	var nums []int
	json.Unmarshal(marked, &nums)
	return len(nums)
}

func (t *tally) user(name string) *userStats {
	u := t.users[name]
	if u == nil {
		u = &userStats{clients: make(map[netip.Addr]bool)}
		t.users[name] = u
	}
	return u
}

func (u *userStats) addClient(client string) {
	if ap, err := netip.ParseAddrPort(client); err == nil {
		u.clients[ap.Addr()] = true
	}
}

// clientList is the user's client IPs, sorted, the first maxClients of them.
func (u *userStats) clientList() string {
	addrs := make([]netip.Addr, 0, len(u.clients))
	for a := range u.clients {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	var b strings.Builder
	for i, a := range addrs {
		if i == maxClients {
			fmt.Fprintf(&b, " +%d more", len(addrs)-maxClients)
			break
		}
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(a.String())
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

// printable is s, or s quoted if it could confuse a terminal or the table:
// control characters (escape sequences, tabs, newlines), invalid UTF-8,
// spaces, quotes, or nothing at all.
func printable(s string) string {
	if s == "" || !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool {
		return !unicode.IsGraphic(r) || unicode.IsSpace(r) || r == '"'
	}) >= 0 {
		return strconv.Quote(s)
	}
	return s
}
