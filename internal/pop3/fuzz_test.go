package pop3

import (
	"bufio"
	"bytes"
	"io"
	"regexp"
	"strings"
	"testing"
)

// FuzzParseCommand checks that any accepted line re-serialises to a canonical
// command that parses back to itself and that holds no control characters, and
// that only SP separates arguments: every other byte of the tail is in one.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"STAT", "retr 1", "TOP 1 10", "PASS a b", "USER a\x00b", "", " x", "LIST  2 ", "LIST 1\u3000"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		cmd, err := ParseCommand(line)
		if err != nil {
			return
		}
		if got, want := strings.Join(cmd.Args, ""), strings.ReplaceAll(cmd.Tail, " ", ""); got != want {
			t.Fatalf("arguments %q of %q lose bytes of the tail", cmd.Args, line)
		}
		wire := cmd.AppendWire(nil)
		body := bytes.TrimSuffix(wire, []byte("\r\n"))
		if bytes.ContainsAny(body, "\r\n\x00") {
			t.Fatalf("canonical form %q holds a line break or NUL", wire)
		}
		again, err := ParseCommand(body)
		if err != nil || again.Verb != cmd.Verb || strings.Join(again.Args, " ") != strings.Join(cmd.Args, " ") {
			t.Fatalf("round trip of %q: %+v, %v", line, again, err)
		}
	})
}

// FuzzCopyBody checks CopyBody against the obvious definition: the body ends
// right after the first "\r\n.\r\n" of "\r\n"+input, whatever the read sizes,
// and the watcher sees every line before that end, and nothing after it, until
// it says stop (after chunk/32 lines; 0 never stops).
func FuzzCopyBody(f *testing.F) {
	f.Add([]byte(".\r\n"), uint8(1))
	f.Add([]byte("a\r\n..\r\n.\r\n+OK"), uint8(3))
	f.Add([]byte("\r\r\n.\r\r\n.\r\n"), uint8(2))
	f.Add([]byte("no terminator\r\n."), uint8(5))
	f.Add([]byte("a\r\nb\r\nc\r\n.\r\n"), uint8(64+3))
	f.Fuzz(func(t *testing.T, input []byte, chunk uint8) {
		want := -1
		if i := bytes.Index(append([]byte("\r\n"), input...), []byte(terminator)); i >= 0 {
			want = i + len(terminator) - 2
		}
		src := bufio.NewReaderSize(&chunkReader{data: input, size: int(chunk%32) + 1}, 16)
		var dst bytes.Buffer
		var size MessageSize
		var watched [][]byte
		stop := int(chunk / 32)
		n, err := CopyBody(io.MultiWriter(&dst, &size), src, func(line []byte) bool {
			watched = append(watched, bytes.Clone(line))
			return len(watched) != stop
		})
		body := input
		if want < 0 {
			if err != ErrTruncated || !bytes.Equal(dst.Bytes(), input) {
				t.Fatalf("unterminated input: err %v, wrote %q", err, dst.Bytes())
			}
		} else {
			if err != nil || n != int64(want) || !bytes.Equal(dst.Bytes(), input[:want]) {
				t.Fatalf("wrote %q (n=%d, err %v), want %q", dst.Bytes(), n, err, input[:want])
			}
			body = input[:want-len(".\r\n")]
			if got, want := size.Size(), unstuffedSize(body); got != want {
				t.Fatalf("MessageSize %d, want %d", got, want)
			}
		}
		lines := bodyLines(body)
		if stop > 0 && stop < len(lines) {
			lines = lines[:stop]
		}
		if len(lines) != len(watched) {
			t.Fatalf("watched %d lines %q, want %d %q", len(watched), watched, len(lines), lines)
		}
		for i := range lines {
			if !bytes.Equal(lines[i], watched[i]) {
				t.Fatalf("line %d watched as %q, want %q", i, watched[i], lines[i])
			}
		}
	})
}

// unstuffedSize is the size of body without the dot at the start of each
// line that begins with one.
func unstuffedSize(body []byte) int64 {
	n := int64(len(body))
	for _, l := range bytes.SplitAfter(body, []byte("\n")) {
		if len(l) > 0 && l[0] == '.' {
			n--
		}
	}
	return n
}

// bodyLines returns the complete lines of body as a watcher should see them:
// without CRLF or LF, unstuffed, cut to MaxWatchedLine.
func bodyLines(body []byte) [][]byte {
	var lines [][]byte
	for _, l := range bytes.SplitAfter(body, []byte("\n")) {
		if !bytes.HasSuffix(l, []byte("\n")) {
			continue // empty, or a last line without its LF
		}
		l = bytes.TrimSuffix(bytes.TrimSuffix(l, []byte("\n")), []byte("\r"))
		l = bytes.TrimPrefix(l, []byte("."))
		lines = append(lines, l[:min(len(l), MaxWatchedLine)])
	}
	return lines
}

// FuzzReadLine checks the length bound and that no line ever holds an LF.
func FuzzReadLine(f *testing.F) {
	f.Add([]byte("STAT\r\nNOOP\n"), uint8(255))
	f.Add([]byte(strings.Repeat("x", 300)+"\r\nQUIT\r\n"), uint8(200))
	f.Fuzz(func(t *testing.T, input []byte, max uint8) {
		limit := int(max) + 2
		r := bufio.NewReaderSize(bytes.NewReader(input), 16)
		for {
			line, err := ReadLine(r, limit)
			if err == ErrLineTooLong {
				continue
			}
			if err != nil {
				return
			}
			if len(line)+1 > limit || bytes.IndexByte(line, '\n') >= 0 {
				t.Fatalf("line %q breaks limit %d", line, limit)
			}
		}
	})
}

// codeSyntax is what a relayed response code may look like.
var codeSyntax = regexp.MustCompile(`^[A-Z0-9-]+(/[A-Z0-9-]+)*$`)

// FuzzParseStatus checks that a relayed status line is printable ASCII, that
// whatever a client would read as its response code is a valid one, and that
// the line parses back to the same status.
func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{"+OK", "-ERR [AUTH] no", "-ERR [SYS/TEMP] x", "+OK [XCLIENT]x", "-ERR [bad] [AUTH] y", "-ERR [x", "-ERR  [A] z"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		st, err := ParseStatus(input)
		if err != nil {
			return
		}
		if st.Code != "" && (len(st.Code) > MaxCode || !codeSyntax.MatchString(st.Code)) {
			t.Fatalf("ParseStatus(%q) kept code %q", input, st.Code)
		}
		line := st.Line()
		for i := 0; i < len(line); i++ {
			if line[i] < ' ' || line[i] > '~' {
				t.Fatalf("Line of %q = %q holds %#x", input, line, line[i])
			}
		}
		if len(line) > len(input)+1 {
			t.Fatalf("Line of %q = %q grew", input, line)
		}
		_, rest, _ := strings.Cut(line, " ")
		if code, _, ok := strings.Cut(strings.TrimPrefix(rest, "["), "]"); ok && strings.HasPrefix(rest, "[") {
			if code != st.Code || len(code) > MaxCode || !codeSyntax.MatchString(code) {
				t.Fatalf("Line of %q = %q shows code %q", input, line, code)
			}
		}
		again, err := ParseStatus([]byte(line))
		if want := (Status{OK: st.OK, Code: st.Code, Text: Sanitize(st.Text)}); err != nil || again != want {
			t.Fatalf("Line of %q = %q parses as %+v, %v; want %+v", input, line, again, err, want)
		}
	})
}

// FuzzCheckCredentials checks that accepted credentials mean the same on every
// login path: USER and PASS lines carry them whole, as one line each, and so
// does a PLAIN message.
func FuzzCheckCredentials(f *testing.F) {
	f.Add("", "alice", "secret")
	f.Add("admin", "j\u00f6rg@example.org", "pass word")
	f.Add("", "al\u3000ice", "p\u00a0w")
	f.Add("", "a", "p\r\nQUIT")
	f.Fuzz(func(t *testing.T, authzid, user, pass string) {
		if CheckCredentials(authzid, user, pass) != nil {
			return
		}
		if len("USER "+user+"\r\n") <= MaxCommandLine {
			cmd, err := ParseCommand([]byte("USER " + user))
			if err != nil || len(cmd.Args) != 1 || cmd.Args[0] != user {
				t.Fatalf("user %q reads as %q, %v", user, cmd.Args, err)
			}
		}
		if len("PASS "+pass+"\r\n") <= MaxCommandLine {
			cmd, err := ParseCommand([]byte("PASS " + pass))
			if err != nil || cmd.Tail != pass {
				t.Fatalf("password %q reads as %q, %v", pass, cmd.Tail, err)
			}
		}
		z, u, p, err := ParsePlain([]byte(authzid + "\x00" + user + "\x00" + pass))
		if err != nil || z != authzid || u != user || p != pass {
			t.Fatalf("PLAIN of %q %q %q reads as %q %q %q, %v", authzid, user, pass, z, u, p, err)
		}
	})
}

// chunkReader returns at most size bytes per Read.
type chunkReader struct {
	data []byte
	size int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.size, len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}
