package maildrop

import (
	"bufio"
	"bytes"
	"errors"
	"log"
	"net"
	"runtime/debug"
	"time"
)

// Line limits.
const (
	// RFC 2449 §4: command lines up to 255 octets, CRLF included.
	maxCommandLine = 255
	// RFC 5034 leaves the length of SASL continuation lines open; allow more,
	// as Dovecot does.
	maxSASLLine = 8192
	// An over-long line is read to its end so that the -ERR arrives intact,
	// but only this far; past it the session is closed.
	maxDiscard = 64 << 10
	// After this many protocol errors (unknown commands, bad syntax, failed
	// logins) the session is closed.
	maxErrors = 10
)

var (
	errLineTooLong = errors.New("line too long")
	errNoLineEnd   = errors.New("line too long, no end in sight")
)

// state is a POP3 session state (RFC 1939 §3), as a bit so that a verb can
// be valid in several.
type state uint8

const (
	stateAuthorization state = 1 << iota
	stateTransaction
)

// session is one client connection. Only its own goroutine touches it.
type session struct {
	srv   *Server
	conn  net.Conn
	r     *bufio.Reader
	w     *bufio.Writer
	state state

	user    string // AUTHORIZATION: name from USER awaiting PASS; TRANSACTION: the logged-in user
	strikes int    // protocol errors so far

	// TRANSACTION only.
	box     *mailbox   // locked by this session
	msgs    []*message // the mailbox as it was at login; numbered from 1
	deleted []bool     // marked by DELE, cleared by RSET
}

// reply is a handler's answer; only the session loop writes it.
type reply struct {
	ok     bool
	text   string // after "+OK " or "-ERR "
	multi  bool   // a multi-line response: body follows, dot-stuffed
	body   []byte // CRLF lines, not yet dot-stuffed
	strike bool   // a protocol error that counts towards maxErrors
	close  bool   // end the session after writing
}

func okReply(text string) reply  { return reply{ok: true, text: text} }
func errReply(text string) reply { return reply{text: text} }

// badReply is an -ERR for a client mistake, counted towards maxErrors.
func badReply(text string) reply { return reply{text: text, strike: true} }

func multiReply(text string, body []byte) reply {
	return reply{ok: true, text: text, multi: true, body: body}
}

// serveConn runs one session on c; it is the goroutine started by Serve.
func (srv *Server) serveConn(c net.Conn) {
	s := &session{
		srv:   srv,
		conn:  c,
		r:     bufio.NewReader(c),
		w:     bufio.NewWriter(c),
		state: stateAuthorization,
	}
	defer srv.wg.Done()
	defer s.end()
	defer logPanic(c)
	s.serve()
}

// logPanic keeps a bug in one session from taking down the program.
func logPanic(c net.Conn) {
	if r := recover(); r != nil {
		log.Printf("maildrop: panic in session %s: %v\n%s", c.RemoteAddr(), r, debug.Stack())
	}
}

// end releases the mailbox without committing anything (RFC 1939 §6: only
// QUIT enters UPDATE) and closes the connection.
func (s *session) end() {
	if s.box != nil {
		s.srv.mu.Lock()
		s.box.locked = false
		s.srv.mu.Unlock()
		s.box = nil
	}
	s.conn.Close()
	s.srv.forgetConn(s.conn)
}

// serve is the command loop: read one command, answer it, repeat.
func (s *session) serve() {
	if s.send(okReply("maildrop ready")) != nil {
		return
	}
	for {
		var rep reply
		line, err := s.readLine(maxCommandLine)
		switch {
		case err == nil:
			rep = s.dispatch(line)
		case errors.Is(err, errLineTooLong):
			rep = badReply("line too long")
		case errors.Is(err, errNoLineEnd):
			rep = badReply("line too long")
			rep.close = true
		default:
			// EOF, timeout or Close: the session ends without UPDATE.
			return
		}
		if rep.strike {
			s.strikes++
			if s.strikes >= maxErrors {
				rep = errReply("too many errors, closing")
				rep.close = true
			}
		}
		if s.send(rep) != nil || rep.close {
			return
		}
	}
}

// timeout is the idle limit for the current state.
func (s *session) timeout() time.Duration {
	if s.state == stateTransaction {
		return s.srv.idleTimeout
	}
	return s.srv.authTimeout
}

// readLine reads one line of at most limit octets including its line end,
// and returns it without CRLF (a bare LF is accepted too). A longer line is
// consumed and reported as errLineTooLong, or errNoLineEnd past maxDiscard.
func (s *session) readLine(limit int) (string, error) {
	s.conn.SetReadDeadline(time.Now().Add(s.timeout()))
	var line []byte
	n := 0
	for {
		chunk, err := s.r.ReadSlice('\n')
		n += len(chunk)
		if n <= limit {
			line = append(line, chunk...)
		}
		if err == bufio.ErrBufferFull {
			if n > maxDiscard {
				return "", errNoLineEnd
			}
			continue
		}
		if err != nil {
			return "", err
		}
		break
	}
	if n > limit {
		return "", errLineTooLong
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return string(line), nil
}

// send writes rep. RFC 2449 §6.6 (PIPELINING): replies go out in order, and
// the writer is flushed only when no further complete command is waiting,
// so a batch of commands is answered in one write.
func (s *session) send(rep reply) error {
	s.conn.SetWriteDeadline(time.Now().Add(s.timeout()))
	status := "-ERR"
	if rep.ok {
		status = "+OK"
	}
	if rep.text != "" {
		status += " " + rep.text
	}
	s.w.WriteString(status + "\r\n")
	if rep.multi {
		writeDotStuffed(s.w, rep.body)
		s.w.WriteString(".\r\n")
	}
	if rep.close || !s.commandWaiting() {
		return s.w.Flush()
	}
	return nil
}

// commandWaiting reports whether a complete line is already buffered.
func (s *session) commandWaiting() bool {
	buf, _ := s.r.Peek(s.r.Buffered()) // never blocks
	return bytes.IndexByte(buf, '\n') >= 0
}

// writeDotStuffed writes the lines of body, ending with CRLF. RFC 1939 §3:
// a line of a multi-line response that begins with the termination octet
// "." is byte-stuffed with another ".".
func writeDotStuffed(w *bufio.Writer, body []byte) {
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line = body[:i+1]
		}
		body = body[len(line):]
		if line[0] == '.' {
			w.WriteByte('.')
		}
		w.Write(line)
		if line[len(line)-1] != '\n' {
			w.WriteString("\r\n")
		}
	}
}
