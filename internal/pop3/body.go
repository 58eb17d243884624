package pop3

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// ErrTruncated reports a multi-line body that ended before its terminator.
var ErrTruncated = errors.New("pop3: multi-line response truncated")

// terminator ends a multi-line response (RFC 1939 §3): a line holding only ".".
// The body starts right after the status line's CRLF, so the scan starts as if
// "\r\n" had just been seen, which also catches an empty body.
const terminator = "\r\n.\r\n"

// bodyScanner finds the terminator in a stream that arrives in pieces. matched is
// how many leading bytes of the terminator the stream currently ends with.
type bodyScanner struct {
	matched int
}

func newBodyScanner() bodyScanner { return bodyScanner{matched: 2} }

// step advances the match by one byte. On a mismatch the only possible restart
// is '\r', the terminator's first byte, which recurs only at position 3.
func (s *bodyScanner) step(c byte) {
	switch {
	case c == terminator[s.matched]:
		s.matched++
	case c == '\r':
		s.matched = 1
	default:
		s.matched = 0
	}
}

// scan returns the length of the prefix of p up to and including the
// terminator, or -1 if p does not complete it.
func (s *bodyScanner) scan(p []byte) int {
	i := 0
	// Finish, or rule out, a match begun in an earlier piece.
	for ; s.matched > 0 && i < len(p); i++ {
		s.step(p[i])
		if s.matched == len(terminator) {
			return i + 1
		}
	}
	if i == len(p) {
		return -1
	}
	if j := bytes.Index(p[i:], []byte(terminator)); j >= 0 {
		s.matched = len(terminator)
		return i + j + len(terminator)
	}
	// No match in p: the new state depends only on p's last bytes, shorter than
	// the terminator, which cannot hold a whole match.
	tail := p[i:]
	if len(tail) > len(terminator)-1 {
		tail = tail[len(tail)-(len(terminator)-1):]
	}
	for _, c := range tail {
		s.step(c)
	}
	return -1
}

// CopyBody copies a multi-line response body from src to dst byte for byte, dot
// stuffing and all, up to and including the terminating ".\r\n", and reports the
// octets written. Memory is src's buffer whatever the body's size: each piece is
// written as soon as it is read. Bytes after the terminator stay in src. If src
// ends first the error is ErrTruncated (or the read error), and what was written
// lacks the terminator, so the caller must close the client connection rather
// than let a truncated message look complete.
//
// If watch is not nil it sees each line of the body as it passes, up to the
// terminator (not shown) and not beyond, without its CRLF (or bare LF) and with
// dot-stuffing removed, until it returns false; lines longer than
// MaxWatchedLine are cut to that length.
func CopyBody(dst io.Writer, src *bufio.Reader, watch func(line []byte) bool) (int64, error) {
	sc := newBodyScanner()
	var lines *lineSplitter
	if watch != nil {
		lines = &lineSplitter{watch: watch}
	}
	var n int64
	for {
		if _, err := src.Peek(1); err != nil {
			if err == io.EOF {
				err = ErrTruncated
			}
			return n, err
		}
		piece, _ := src.Peek(src.Buffered())
		end := sc.scan(piece)
		if end >= 0 {
			piece = piece[:end]
		}
		if lines != nil && !lines.feed(watched(piece, end)) {
			lines = nil
		}
		w, err := dst.Write(piece)
		n += int64(w)
		src.Discard(w)
		if err != nil {
			return n, err
		}
		if end >= 0 {
			return n, nil
		}
	}
}

// watched is the part of piece the watcher may see. The scanner alone decides
// where the body ends: the splitter shows a line only when its LF arrives, so
// holding back the terminator's final LF keeps the "." line from ever being
// shown, and nothing after it is fed. A second parser looking for the end
// itself would disagree with the scanner after a bare LF ("\n.\r\n" is body).
func watched(piece []byte, end int) []byte {
	if end < 0 {
		return piece
	}
	return piece[:end-1]
}

// MaxWatchedLine bounds the lines CopyBody shows its watcher (RFC 5322 §2.1.1
// allows 998 characters).
const MaxWatchedLine = 1000

// lineSplitter reassembles lines across pieces for a watcher.
type lineSplitter struct {
	watch func([]byte) bool
	// partial is the current line so far. It keeps two octets more than a
	// watched line, for a stuffed dot and a CR, so that cutting happens last.
	partial []byte
}

// feed passes every complete line in p to the watcher and reports whether it
// wants more.
func (ls *lineSplitter) feed(p []byte) bool {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			ls.keep(p)
			return true
		}
		ls.keep(p[:i])
		p = p[i+1:]
		line := bytes.TrimSuffix(ls.partial, []byte("\r"))
		ls.partial = ls.partial[:0]
		if len(line) > 0 && line[0] == '.' {
			line = line[1:] // RFC 1939 §3: remove the stuffed dot
		}
		if !ls.watch(line[:min(len(line), MaxWatchedLine)]) {
			return false
		}
	}
	return true
}

func (ls *lineSplitter) keep(b []byte) {
	if room := MaxWatchedLine + 2 - len(ls.partial); len(b) > room {
		b = b[:room]
	}
	ls.partial = append(ls.partial, b...)
}

// MessageSize measures a message as its RETR body passes: write the body to
// it as CopyBody relays it (through an io.MultiWriter), and Size gives the
// octets between the status line and the terminating line with the
// dot-stuffing removed (RFC 1939 §3). For a server that stores messages with
// CRLF line endings that is the size LIST gives; a server that adds a CRLF
// to a message not ending in one sends 2 octets more than it lists. The zero
// MessageSize is ready to use.
type MessageSize struct {
	octets  int64 // written so far
	dots    int64 // dots at the start of a line, the terminator's included
	midLine bool  // the last octet written was not LF
}

// Write counts p; it never fails.
func (m *MessageSize) Write(p []byte) (int, error) {
	m.octets += int64(len(p))
	for rest := p; len(rest) > 0; {
		if !m.midLine && rest[0] == '.' {
			m.dots++
		}
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			m.midLine = true
			break
		}
		m.midLine = false
		rest = rest[i+1:]
	}
	return len(p), nil
}

// Size returns the size of the message written, once the whole body up to
// and including the terminator has been: the octets less the stuffed dots
// and the terminator's ".\r\n".
func (m *MessageSize) Size() int64 { return m.octets - m.dots - 2 }
