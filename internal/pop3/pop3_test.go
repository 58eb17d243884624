package pop3

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		line string
		verb string
		args []string
		tail string
		err  error
	}{
		{line: "STAT", verb: "STAT"},
		{line: "retr 1", verb: "RETR", args: []string{"1"}, tail: "1"},
		{line: "Top  2   10  ", verb: "TOP", args: []string{"2", "10"}, tail: " 2   10  "},
		{line: "PASS my secret  pw", verb: "PASS", args: []string{"my", "secret", "pw"}, tail: "my secret  pw"},
		{line: "", err: ErrEmpty},
		{line: "   ", err: ErrEmpty},
		{line: " STAT", err: ErrBadKeyword},
		{line: "ST-AT", err: ErrBadKeyword},
		{line: "GET / HTTP/1.1", verb: "GET", args: []string{"/", "HTTP/1.1"}, tail: "/ HTTP/1.1"},
		{line: "USER a\x00b", err: ErrBadChar},
		{line: "USER a\tb", err: ErrBadChar},
		{line: "USER a\rb", err: ErrBadChar},
		{line: "USER \x7f", err: ErrBadChar},
		{line: "ABCDEFGHIJKLMNOPQ", err: ErrBadKeyword},
		{line: "USER j\u00f6rg", verb: "USER", args: []string{"j\u00f6rg"}, tail: "j\u00f6rg"},
		// Only SP separates: other white space stays in the argument.
		{line: "LIST 1\u3000", verb: "LIST", args: []string{"1\u3000"}, tail: "1\u3000"},
		{line: "USER a\u00a0b", verb: "USER", args: []string{"a\u00a0b"}, tail: "a\u00a0b"},
		{line: "DELE \u20281", verb: "DELE", args: []string{"\u20281"}, tail: "\u20281"},
		{line: "USER a\u0085", verb: "USER", args: []string{"a\u0085"}, tail: "a\u0085"},
		{line: "RETR\u3000 1", err: ErrBadKeyword},
		{line: "RETR\t1", err: ErrBadChar},
	}
	for _, tt := range tests {
		cmd, err := ParseCommand([]byte(tt.line))
		if err != tt.err {
			t.Errorf("ParseCommand(%q) error = %v, want %v", tt.line, err, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		if cmd.Verb != tt.verb || strings.Join(cmd.Args, "|") != strings.Join(tt.args, "|") || cmd.Tail != tt.tail {
			t.Errorf("ParseCommand(%q) = %+v, want verb %q args %q tail %q", tt.line, cmd, tt.verb, tt.args, tt.tail)
		}
	}
}

func TestAppendWireIsCanonical(t *testing.T) {
	cmd, err := ParseCommand([]byte("top   1  0 "))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(cmd.AppendWire(nil)); got != "TOP 1 0\r\n" {
		t.Errorf("AppendWire = %q, want %q", got, "TOP 1 0\r\n")
	}
}

func TestParseNumber(t *testing.T) {
	good := map[string]int{"0": 0, "1": 1, "007": 7, "2147483647": 2147483647}
	for s, want := range good {
		if n, err := ParseNumber(s); err != nil || n != want {
			t.Errorf("ParseNumber(%q) = %d, %v; want %d", s, n, err, want)
		}
	}
	for _, s := range []string{"", "-1", "+1", "1a", "2147483648", "99999999999", " 1", "0x10"} {
		if _, err := ParseNumber(s); err != ErrBadNumber {
			t.Errorf("ParseNumber(%q) error = %v, want ErrBadNumber", s, err)
		}
	}
}

func TestReadLine(t *testing.T) {
	in := "STAT\r\nLIST\n" + strings.Repeat("x", 300) + "\r\nNOOP\r\n" + strings.Repeat("y", 1<<20)
	r := bufio.NewReaderSize(strings.NewReader(in), 64)
	for _, want := range []string{"STAT", "LIST"} {
		line, err := ReadLine(r, MaxCommandLine)
		if err != nil || string(line) != want {
			t.Fatalf("ReadLine = %q, %v; want %q", line, err, want)
		}
	}
	if _, err := ReadLine(r, MaxCommandLine); err != ErrLineTooLong {
		t.Fatalf("over-long line: error = %v, want ErrLineTooLong", err)
	}
	// The rest of the long line was discarded: the next command is intact.
	if line, err := ReadLine(r, MaxCommandLine); err != nil || string(line) != "NOOP" {
		t.Fatalf("after long line: %q, %v", line, err)
	}
	// 1 MiB without LF: refused after reading a bounded amount.
	if _, err := ReadLine(r, MaxCommandLine); err != ErrLineTooLong {
		t.Fatalf("1 MiB line: error = %v, want ErrLineTooLong", err)
	}
	if left := r.Buffered(); left > 64 {
		t.Fatalf("buffered %d bytes", left)
	}
}

func TestReadLineLongerThanBuffer(t *testing.T) {
	long := strings.Repeat("z", 5000)
	r := bufio.NewReaderSize(strings.NewReader(long+"\r\n"), 16)
	line, err := ReadLine(r, 8192)
	if err != nil || string(line) != long {
		t.Fatalf("ReadLine = %d bytes, %v", len(line), err)
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		line string
		want Status
		err  error
	}{
		{line: "+OK", want: Status{OK: true}},
		{line: "+OK Logged in.", want: Status{OK: true, Text: "Logged in."}},
		{line: "-ERR [AUTH] Authentication failed.", want: Status{Code: "AUTH", Text: "Authentication failed."}},
		{line: "-ERR [SYS/TEMP]", want: Status{Code: "SYS/TEMP"}},
		{line: "+OK [XCLIENT] ready", want: Status{OK: true, Code: "XCLIENT", Text: "ready"}},
		{line: "-ERR [IN-USE]x", want: Status{Code: "IN-USE", Text: "x"}},
		// An invalid code is dropped, whatever it holds.
		{line: "-ERR [not a code] x", want: Status{Text: "x"}},
		{line: "-ERR [SYS/TEMP\x1b[2J] x", want: Status{Text: "x"}},
		{line: "-ERR [sys/temp] x", want: Status{Text: "x"}},
		{line: "-ERR [SYS/] x", want: Status{Text: "x"}},
		{line: "-ERR [/AUTH] x", want: Status{Text: "x"}},
		{line: "-ERR [] x", want: Status{Text: "x"}},
		{line: "-ERR [" + strings.Repeat("A", MaxCode+1) + "] x", want: Status{Text: "x"}},
		{line: "-ERR [" + strings.Repeat("A", MaxCode) + "] x", want: Status{Code: strings.Repeat("A", MaxCode), Text: "x"}},
		{line: "-ERR [bad] [x\x00] [AUTH] no", want: Status{Code: "AUTH", Text: "no"}},
		{line: "-ERR [AUTH] [bad] x", want: Status{Code: "AUTH", Text: "[bad] x"}},
		{line: "-ERR [no closing bracket", want: Status{Text: "[no closing bracket"}},
		{line: "+OKAY", err: ErrBadStatus},
		{line: "+ok", err: ErrBadStatus},
		{line: "* OK", err: ErrBadStatus},
	}
	for _, tt := range tests {
		st, err := ParseStatus([]byte(tt.line))
		if err != tt.err || st != tt.want {
			t.Errorf("ParseStatus(%q) = %+v, %v; want %+v, %v", tt.line, st, err, tt.want, tt.err)
		}
	}
}

func TestStatusLine(t *testing.T) {
	tests := map[string]string{
		"+OK":                              "+OK",
		"+OK 2 320":                        "+OK 2 320",
		"-ERR [IN-USE]  locked":            "-ERR [IN-USE]  locked",
		"-ERR [AUTH]":                      "-ERR [AUTH]",
		"-ERR [SYS/TEMP\r\n+OK] x\x1b[31m": "-ERR x?[31m",
		"-ERR [sys\x00] [LOGIN-DELAY] y":   "-ERR [LOGIN-DELAY] y",
		"-ERR [\xff":                       "-ERR [?",
	}
	for in, want := range tests {
		st, err := ParseStatus([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Line(); got != want {
			t.Errorf("Line of %q = %q, want %q", in, got, want)
		}
	}
}

func TestSanitize(t *testing.T) {
	if got := Sanitize("bad\x1b[31m\r\nuser\x00"); got != "bad?[31m??user?" {
		t.Errorf("Sanitize = %q", got)
	}
}

// relay runs CopyBody over body followed by after, delivered in pieces of the
// given sizes, and returns what was written and what stayed unread.
func relay(t *testing.T, input string, r io.Reader) (string, string, error) {
	t.Helper()
	src := bufio.NewReaderSize(r, 16)
	var dst bytes.Buffer
	n, err := CopyBody(&dst, src, nil)
	if n != int64(dst.Len()) {
		t.Fatalf("CopyBody reported %d octets, wrote %d", n, dst.Len())
	}
	rest, _ := io.ReadAll(src)
	return dst.String(), string(rest), err
}

func TestCopyBody(t *testing.T) {
	tests := []struct{ name, body string }{
		{"empty", ".\r\n"},
		{"simple", "line 1\r\nline 2\r\n.\r\n"},
		{"stuffed", "..\r\n..leading dot\r\n.\r\n"},
		{"dots", "a\r\n..\r\n...\r\n.\r\n"},
		{"bare LF dot is body", "a\n.\nb\r\n.\r\n"},
		{"CR runs", "\r\r\r\n\r\r\n.\r\r\n.\r\n"},
		{"8-bit", "gr\xfc\xdfe \xe2\x82\xac\r\n.\r\n"},
		{"no final CRLF before dot is body", "a.\r\n.\r\n"},
	}
	for _, tt := range tests {
		for _, r := range []io.Reader{
			strings.NewReader(tt.body + "+OK next"),
			iotest.OneByteReader(strings.NewReader(tt.body + "+OK next")),
			iotest.HalfReader(strings.NewReader(tt.body + "+OK next")),
		} {
			got, rest, err := relay(t, tt.body, r)
			if err != nil || got != tt.body || rest != "+OK next" {
				t.Errorf("%s: got %q rest %q err %v", tt.name, got, rest, err)
			}
		}
	}
}

func TestCopyBodyTruncated(t *testing.T) {
	for _, body := range []string{"", "line\r\n", "line\r\n.", "line\r\n.\r", "x\r\n..\r\n"} {
		got, _, err := relay(t, body, iotest.OneByteReader(strings.NewReader(body)))
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("%q: error = %v, want ErrTruncated", body, err)
		}
		if got != body {
			t.Errorf("%q: wrote %q", body, got)
		}
	}
}

// failWriter fails after n bytes, as a vanished client does.
type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		k := w.n
		w.n = 0
		return k, io.ErrClosedPipe
	}
	w.n -= len(p)
	return len(p), nil
}

func TestCopyBodyWriteError(t *testing.T) {
	src := bufio.NewReaderSize(strings.NewReader(strings.Repeat("a", 100)+"\r\n.\r\n"), 16)
	n, err := CopyBody(&failWriter{n: 20}, src, nil)
	if err != io.ErrClosedPipe || n != 20 {
		t.Fatalf("CopyBody = %d, %v", n, err)
	}
}

func TestMessageSize(t *testing.T) {
	tests := []struct {
		body string // as relayed, terminator included
		size int64
	}{
		{".\r\n", 0},
		{"\r\n.\r\n", 2},
		{"Subject: x\r\n\r\nhello\r\n.\r\n", 21},
		{"..\r\n...dots\r\nend.\r\n.\r\n", 17}, // ".\r\n..dots\r\nend.\r\n"
		{"a\nb\r\n.\r\n", 5},
	}
	for _, tc := range tests {
		// Every split into two writes gives the same size.
		for cut := range len(tc.body) + 1 {
			var m MessageSize
			m.Write([]byte(tc.body[:cut]))
			m.Write([]byte(tc.body[cut:]))
			if got := m.Size(); got != tc.size {
				t.Errorf("%q written as %q + %q: Size %d, want %d", tc.body, tc.body[:cut], tc.body[cut:], got, tc.size)
				break
			}
		}
	}
}

func TestFilterCapability(t *testing.T) {
	relayable := func(tag string) bool {
		switch tag {
		case "TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE", "LOGIN-DELAY":
			return true
		}
		return false
	}
	keep := map[string]string{"TOP": "TOP", "uidl": "UIDL", "EXPIRE  30 USER": "EXPIRE 30 USER", "LOGIN-DELAY 900": "LOGIN-DELAY 900", "PIPELINING": "PIPELINING"}
	for in, want := range keep {
		if got, ok := FilterCapability(in, relayable); !ok || got != want {
			t.Errorf("FilterCapability(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"STLS", "SASL PLAIN LOGIN", "IMPLEMENTATION Dovecot", "XFOO", "", "TOP \x1b[31m", "UTF8", ".", "TOP\x00"} {
		if got, ok := FilterCapability(in, relayable); ok {
			t.Errorf("FilterCapability(%q) kept as %q", in, got)
		}
	}
}

func TestSASL(t *testing.T) {
	msg, err := DecodeSASL(EncodeSASL([]byte("\x00alice\x00pass word")))
	if err != nil {
		t.Fatal(err)
	}
	z, c, p, err := ParsePlain(msg)
	if err != nil || z != "" || c != "alice" || p != "pass word" {
		t.Fatalf("ParsePlain = %q %q %q %v", z, c, p, err)
	}
	if b, err := DecodeSASL("="); err != nil || len(b) != 0 {
		t.Fatalf(`DecodeSASL("=") = %q, %v`, b, err)
	}
	for _, bad := range []string{"!!!", "YQ"} {
		if _, err := DecodeSASL(bad); err != ErrBadSASL {
			t.Errorf("DecodeSASL(%q) error = %v", bad, err)
		}
	}
	for _, bad := range []string{"alice\x00pw", "\x00\x00pw", "\x00alice\x00", "a\x00b\x00c\x00d"} {
		if _, _, _, err := ParsePlain([]byte(bad)); err != ErrBadSASL {
			t.Errorf("ParsePlain(%q) error = %v", bad, err)
		}
	}
}

func TestCopyBodyWatch(t *testing.T) {
	long := strings.Repeat("x", 1500)
	tests := []struct {
		name, body string
		want       []string
	}{
		{"lines", "a\r\n..b\r\n" + long + "\r\n\r\nlast\r\n.\r\n", []string{"a", ".b", long[:MaxWatchedLine], "", "last"}},
		{"empty", ".\r\n", nil},
		// Found by FuzzCopyBody: after a bare LF, ".\r\n" is a body line, not
		// the end, so the lines after it must still be watched.
		{"dot after bare LF", "\n.\r\n.\r\n", []string{"", ""}},
		{"UIDL line after bare LF", "1 a\n.\r\n2 hidden\r\n.\r\n", []string{"1 a", "", "2 hidden"}},
		{"stuffed long line", "." + long[:MaxWatchedLine] + "\r\n.\r\n", []string{long[:MaxWatchedLine]}},
		{"long line ending in CR", long[:MaxWatchedLine-1] + "\r\r\n.\r\n", []string{long[:MaxWatchedLine-1] + "\r"}},
		{"not past the end", "a\r\n.\r\nafter\r\n", []string{"a"}},
	}
	for _, tt := range tests {
		for _, r := range []io.Reader{
			strings.NewReader(tt.body),
			iotest.OneByteReader(strings.NewReader(tt.body)),
			iotest.HalfReader(strings.NewReader(tt.body)),
		} {
			var lines []string
			src := bufio.NewReaderSize(r, 16)
			if _, err := CopyBody(io.Discard, src, func(l []byte) bool { lines = append(lines, string(l)); return true }); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if !slices.Equal(lines, tt.want) {
				t.Errorf("%s: watched %.40q, want %.40q", tt.name, lines, tt.want)
			}
		}
	}
}

func TestMessageIDWatcher(t *testing.T) {
	tests := []struct{ message, want string }{
		{"Subject: x\r\nMessage-ID: <a@b>\r\n\r\nMessage-ID: <body@x>\r\n", "<a@b>"},
		{"message-id:\r\n <folded@x>\r\nTo: y\r\n\r\n", "<folded@x>"},
		{"Subject: none\r\n\r\nMessage-ID: <in-body@x>\r\n", ""},
		{"Message-ID: <a@b\x1b[31m>\r\n\r\n", "<a@b?[31m>"},
		{"X-Message-ID: <not@this>\r\nMessage-Id: <this@one>\r\n\r\n", "<this@one>"},
		{"no header at all\r\nMessage-ID: <not@header>\r\n", ""},
	}
	for _, tt := range tests {
		var id string
		src := bufio.NewReaderSize(strings.NewReader(tt.message+".\r\n"), 16)
		if _, err := CopyBody(io.Discard, src, MessageIDWatcher(&id)); err != nil {
			t.Fatal(err)
		}
		if id != tt.want {
			t.Errorf("Message-ID of %q = %q, want %q", tt.message, id, tt.want)
		}
	}
}
