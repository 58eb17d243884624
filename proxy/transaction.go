package proxy

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/popproxy/popproxy/internal/pop3"
)

// relayExtension relays a command the configuration allows (Options.Extensions).
func (s *session) relayExtension(cmd pop3.Command, ext *Extension) error {
	if len(cmd.Args) > ext.MaxArgs {
		return s.refuse(refused(RuleSyntax, cmd.Verb, "too many arguments"))
	}
	for _, a := range cmd.Args {
		if len(a) > pop3.MaxArgLen {
			return s.refuse(refused(RuleSyntax, cmd.Verb, "argument too long"))
		}
	}
	return s.relay(pop3.Command{Verb: cmd.Verb, Args: cmd.Args}, ext.Multiline)
}

func (srv *Server) extension(verb string) *Extension {
	for i := range srv.opts.Extensions {
		if srv.opts.Extensions[i].Verb == verb {
			return &srv.opts.Extensions[i]
		}
	}
	return nil
}

// relay sends cmd upstream and streams the reply to the client: the status
// line, then, for a +OK to a multi-line command, the body unchanged up to and
// including its terminator.
func (s *session) relay(cmd pop3.Command, multi bool) error {
	start := time.Now()
	ev := CommandEvent{Verb: cmd.Verb, Args: cmd.Args, Size: -1}
	msg := 0
	if namesMessage(cmd.Verb) {
		msg, _ = pop3.ParseNumber(cmd.Args[0])
		if s.srv.opts.ResolveUIDs {
			if err := s.resolve(msg); err != nil {
				return err
			}
		}
	}
	_, st, err := s.roundTrip(cmd)
	if err != nil {
		return err
	}
	w := s.writer()
	status := st.Line()
	w.WriteString(status)
	_, err = w.WriteString("\r\n")
	ev.Octets = int64(len(status) + 2)
	if st.OK {
		s.msgs.learnFromStatus(cmd, st.Text)
	}
	// A RETR answered without a size (popa3d: a bare +OK) is measured as it
	// passes.
	var measured *pop3.MessageSize
	if err == nil && st.OK && multi {
		var n int64
		var dst io.Writer = w
		if msg > 0 {
			dst = s.shaped(w)
		}
		if cmd.Verb == "RETR" && s.msgs.get(msg).size < 0 {
			measured = new(pop3.MessageSize)
			dst = io.MultiWriter(dst, measured)
		}
		n, err = pop3.CopyBody(dst, s.up.br, s.watcher(cmd, msg, &ev))
		ev.Octets += n
		if err != nil {
			// No terminator reaches the client: a cut message must not look whole.
			s.stats.incomplete, ev.Incomplete = true, true
		}
	}
	if msg > 0 {
		if ev.MessageID != "" {
			s.msgs.learnMessageID(msg, ev.MessageID)
		}
		info := s.msgs.get(msg)
		ev.Size, ev.UIDL = info.size, info.uidl
		if ev.Size < 0 && measured != nil && err == nil {
			ev.Size = measured.Size()
		}
		if ev.MessageID == "" {
			ev.MessageID = info.messageID // seen earlier in the session
		}
	}
	ev.OK, ev.Duration = st.OK, time.Since(start)
	if err == nil {
		// The client has its answer before the audit record's write(2), which
		// is then off the round trip. Failing closed is unchanged: the next
		// command is refused if this record could not be written.
		if ferr := s.answer(); ferr != nil {
			s.account(cmd, ev)
			return ferr
		}
	}
	s.account(cmd, ev)
	if err != nil {
		if errors.Is(err, errStopped) || s.client.isStopped() {
			return &endError{reason: CloseShutdown, err: err}
		}
		if s.client.failed {
			return &endError{reason: CloseClientGone, err: err}
		}
		s.srv.log.Warn("upstream failed during a multi-line response", "session", s.id, "verb", cmd.Verb, "err", err)
		return &endError{reason: CloseUpstream, err: err}
	}
	if err := s.up.release(); err != nil {
		return &endError{reason: CloseUpstream, farewell: "-ERR [SYS/TEMP] mail server protocol error", err: err}
	}
	return nil
}

// watcher picks what the audit learns from a multi-line body as it passes:
// a message's Message-ID from its header, sizes and unique ids from listings.
func (s *session) watcher(cmd pop3.Command, msg int, ev *CommandEvent) func([]byte) bool {
	switch {
	case msg > 0:
		return pop3.MessageIDWatcher(&ev.MessageID)
	case cmd.Verb == "LIST" || cmd.Verb == "UIDL":
		return func(line []byte) bool {
			s.msgs.learnListing(cmd.Verb, string(line))
			return true
		}
	}
	return nil
}

// resolve asks the server what the audit does not know yet of message n
// before it is retrieved or deleted: its unique id (UIDL n) and its size
// (LIST n), so that the record names and measures the message even if the
// client never listed, and a TOP, a DELE or a cut RETR has the size too.
func (s *session) resolve(n int) error {
	info := s.msgs.get(n)
	var ask []string
	if info.uidl == "" {
		ask = append(ask, "UIDL")
	}
	if info.size < 0 {
		ask = append(ask, "LIST")
	}
	for _, verb := range ask {
		_, st, err := s.roundTrip(pop3.Command{Verb: verb, Args: []string{strconv.Itoa(n)}})
		if err != nil {
			return err
		}
		if err := s.up.release(); err != nil {
			return s.upstreamFailed(err)
		}
		if st.OK {
			s.msgs.learnListing(verb, st.Text)
		}
	}
	return nil
}

// roundTrip sends cmd and reads the status line. A failure here has sent the
// client nothing yet, so it is told why.
func (s *session) roundTrip(cmd pop3.Command) ([]byte, pop3.Status, error) {
	s.wire = cmd.AppendWire(s.wire[:0])
	if _, err := s.up.conn.Write(s.wire); err != nil {
		return nil, pop3.Status{}, s.upstreamFailed(err)
	}
	status, st, err := s.up.readStatus()
	if err != nil {
		return nil, st, s.upstreamFailed(err)
	}
	return status, st, nil
}

func (s *session) upstreamFailed(err error) error {
	if s.client.isStopped() {
		return &endError{reason: CloseShutdown, farewell: "-ERR [SYS/TEMP] server shutting down", err: err}
	}
	s.srv.log.Warn("upstream failed", "session", s.id, "err", err)
	return &endError{reason: CloseUpstream, farewell: "-ERR [SYS/TEMP] mail server connection lost", err: err}
}

// account updates the session's counters and writes the command's audit event.
func (s *session) account(cmd pop3.Command, ev CommandEvent) {
	if ev.OK {
		switch cmd.Verb {
		case "RETR":
			s.stats.retr++
		case "TOP":
			s.stats.top++
		case "DELE":
			n, _ := pop3.ParseNumber(cmd.Args[0])
			s.stats.marked = append(s.stats.marked, n)
			s.stats.dele++
		case "RSET":
			s.stats.marked = nil
		}
	}
	s.srv.opts.Auditor.Command(s.id, ev)
}

// cmdCapaAfterLogin lists what CAPA before login listed (RFC 2449 §6: those
// may not differ between states), and the server's EXPIRE and LOGIN-DELAY,
// which may differ after login: they are the user's.
func (s *session) cmdCapaAfterLogin(pop3.Command) error {
	_, lines, err := s.probe(pop3.Command{Verb: "CAPA"}, true)
	if err != nil {
		return err
	}
	caps := sharedCaps(s.sessionCaps(), true, s.mechanisms())
	for _, line := range lines {
		c, ok := filterCapability(line)
		tag, _, _ := strings.Cut(c, " ")
		if ok && (tag == "EXPIRE" || tag == "LOGIN-DELAY") {
			caps = append(caps, c)
		}
	}
	return s.writeCapa(caps)
}

// cmdQuit relays QUIT: the upstream enters UPDATE and commits deletions
// (RFC 1939 §6), and its answer says whether that worked.
func (s *session) cmdQuit(pop3.Command) error {
	start := time.Now()
	status, st, err := s.roundTrip(pop3.Command{Verb: "QUIT"})
	if err != nil {
		if len(s.stats.marked) > 0 {
			// The server may have entered UPDATE and deleted them, or not.
			s.stats.commitUnknown = "QUIT sent, but the server's answer was lost"
		}
		return err
	}
	s.stats.committed = st.OK && len(s.stats.marked) > 0
	s.account(pop3.Command{Verb: "QUIT"}, CommandEvent{Verb: "QUIT", OK: st.OK, Octets: int64(len(status) + 2), Duration: time.Since(start), Size: -1})
	return &endError{reason: CloseQuit, farewell: st.Line()}
}
