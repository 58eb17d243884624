package maildrop

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// verb describes one POP3 command: where it is valid and what it takes.
type verb struct {
	in      state // states in which the command is valid
	minArgs int
	maxArgs int
	rest    bool // the one argument is the rest of the line, spaces included
	handle  func(s *session, args []string) reply
}

const anyState = stateAuthorization | stateTransaction

// verbs is the state machine: RFC 1939 §7 (AUTHORIZATION), §5
// (TRANSACTION), §6 (UPDATE, entered by QUIT), RFC 2449 §5 (CAPA) and
// RFC 5034 §4 (AUTH).
var verbs = map[string]verb{
	"USER": {in: stateAuthorization, minArgs: 1, maxArgs: 1, handle: (*session).cmdUser},
	"PASS": {in: stateAuthorization, minArgs: 1, maxArgs: 1, rest: true, handle: (*session).cmdPass}, // RFC 1939 §7: the password may contain spaces
	"AUTH": {in: stateAuthorization, maxArgs: 2, handle: (*session).cmdAuth},
	"CAPA": {in: anyState, handle: (*session).cmdCapa},
	"QUIT": {in: anyState, handle: (*session).cmdQuit},
	"STAT": {in: stateTransaction, handle: (*session).cmdStat},
	"LIST": {in: stateTransaction, maxArgs: 1, handle: (*session).cmdList},
	"RETR": {in: stateTransaction, minArgs: 1, maxArgs: 1, handle: (*session).cmdRetr},
	"DELE": {in: stateTransaction, minArgs: 1, maxArgs: 1, handle: (*session).cmdDele},
	"NOOP": {in: stateTransaction, handle: (*session).cmdNoop},
	"RSET": {in: stateTransaction, handle: (*session).cmdRset},
	"TOP":  {in: stateTransaction, minArgs: 2, maxArgs: 2, handle: (*session).cmdTop},
	"UIDL": {in: stateTransaction, maxArgs: 1, handle: (*session).cmdUidl},
}

// capabilities is the CAPA response body (RFC 2449 §6).
var capabilities = []byte("TOP\r\n" +
	"USER\r\n" +
	"UIDL\r\n" +
	"RESP-CODES\r\n" +
	"PIPELINING\r\n" +
	"SASL PLAIN\r\n" +
	"IMPLEMENTATION maildrop\r\n")

// dispatch parses one command line and runs its handler.
func (s *session) dispatch(line string) reply {
	if strings.IndexByte(line, 0) >= 0 {
		return badReply("NUL in command")
	}
	// RFC 1939 §3: keywords are case-insensitive, separated from the
	// arguments by a single space.
	keyword, rest, _ := strings.Cut(line, " ")
	v, ok := verbs[strings.ToUpper(keyword)]
	if !ok {
		return badReply("unknown command")
	}
	if v.in&s.state == 0 {
		return badReply("command not valid in this state")
	}
	var args []string
	if v.rest {
		if rest != "" {
			args = []string{rest}
		}
	} else {
		args = strings.Fields(rest)
	}
	if len(args) < v.minArgs || len(args) > v.maxArgs {
		return badReply("wrong number of arguments")
	}
	return v.handle(s, args)
}

// cmdUser implements USER name (RFC 1939 §7). Whether the name exists is
// only revealed, together with the password check, by PASS.
func (s *session) cmdUser(args []string) reply {
	s.user = args[0]
	return okReply("send PASS")
}

// cmdPass implements PASS string (RFC 1939 §7).
func (s *session) cmdPass(args []string) reply {
	if s.user == "" {
		return badReply("send USER first")
	}
	user := s.user
	s.user = "" // after a failed PASS the client starts again with USER
	return s.login(user, args[0])
}

// cmdAuth implements AUTH (RFC 5034 §4) with the PLAIN mechanism
// (RFC 4616). Without arguments it lists the mechanisms, as most servers do.
func (s *session) cmdAuth(args []string) reply {
	if len(args) == 0 {
		return multiReply("SASL mechanisms follow", []byte("PLAIN\r\n"))
	}
	if !strings.EqualFold(args[0], "PLAIN") {
		return badReply("unsupported authentication mechanism")
	}
	var resp string
	if len(args) == 2 {
		resp = args[1]
		if resp == "=" { // RFC 5034 §4: "=" is an empty initial response
			resp = ""
		}
	} else {
		// RFC 5034 §4: an empty server challenge is "+ " on its own line.
		s.w.WriteString("+ \r\n")
		if s.w.Flush() != nil {
			return reply{close: true}
		}
		line, err := s.readLine(maxSASLLine)
		if err != nil {
			return reply{text: "authentication aborted", close: true}
		}
		if line == "*" { // RFC 5034 §4: the client cancels with "*"
			return badReply("authentication cancelled")
		}
		resp = line
	}
	msg, err := base64.StdEncoding.DecodeString(resp)
	if err != nil {
		return badReply("invalid base64")
	}
	// RFC 4616 §2: message = [authzid] NUL authcid NUL passwd
	parts := bytes.Split(msg, []byte{0})
	if len(parts) != 3 {
		return badReply("[AUTH] invalid credentials")
	}
	authzid, authcid, passwd := string(parts[0]), string(parts[1]), string(parts[2])
	if authzid != "" && authzid != authcid {
		return badReply("[AUTH] not authorized to act as " + authzid)
	}
	return s.login(authcid, passwd)
}

// login checks the credentials and locks the mailbox, entering TRANSACTION.
// RFC 1939 §4: the server acquires an exclusive-access lock on the maildrop;
// RFC 2449 §8.1.2: a held lock is answered with [IN-USE]; RFC 3206 §4: bad
// credentials with [AUTH].
func (s *session) login(user, pass string) reply {
	srv := s.srv
	srv.mu.Lock()
	defer srv.mu.Unlock()
	want, ok := srv.users[user]
	if !ok || subtle.ConstantTimeCompare([]byte(want), []byte(pass)) != 1 {
		return badReply("[AUTH] invalid credentials")
	}
	box := srv.boxes[user]
	if box.locked {
		return errReply("[IN-USE] mailbox locked")
	}
	box.locked = true
	s.box = box
	s.msgs = append([]*message(nil), box.msgs...)
	s.deleted = make([]bool, len(s.msgs))
	s.user = user
	s.state = stateTransaction
	n, size := s.stat()
	return okReply(fmt.Sprintf("%s's maildrop has %d messages (%d octets)", user, n, size))
}

// cmdCapa implements CAPA (RFC 2449 §5); the list is the same in both
// states.
func (s *session) cmdCapa([]string) reply {
	return multiReply("Capability list follows", capabilities)
}

// cmdQuit implements QUIT. RFC 1939 §6: in TRANSACTION it enters UPDATE and
// removes the messages marked as deleted; in AUTHORIZATION (§4) it just
// ends the session.
func (s *session) cmdQuit([]string) reply {
	rep := okReply("maildrop signing off")
	rep.close = true
	if s.state != stateTransaction {
		return rep
	}
	var kept []*message
	for i, m := range s.msgs {
		if !s.deleted[i] {
			kept = append(kept, m)
		}
	}
	s.srv.mu.Lock()
	s.box.msgs = kept
	s.box.locked = false
	s.srv.mu.Unlock()
	s.box = nil
	if len(kept) == 0 {
		rep.text += " (maildrop empty)"
	} else {
		rep.text += fmt.Sprintf(" (%d messages left)", len(kept))
	}
	return rep
}

// stat counts the messages not marked as deleted and their octets.
func (s *session) stat() (n, size int) {
	for i, m := range s.msgs {
		if !s.deleted[i] {
			n++
			size += len(m.data)
		}
	}
	return n, size
}

// cmdStat implements STAT (RFC 1939 §5): deleted messages are not counted.
func (s *session) cmdStat([]string) reply {
	n, size := s.stat()
	return okReply(fmt.Sprintf("%d %d", n, size))
}

// pick resolves a message-number argument to an index into s.msgs. RFC 1939
// §5: numbers start at 1, and a message marked as deleted may not be
// referred to.
func (s *session) pick(arg string) (int, reply, bool) {
	n, ok := parseNumber(arg)
	if !ok {
		return 0, badReply("invalid message number"), false
	}
	if n < 1 || n > len(s.msgs) {
		return 0, errReply("no such message"), false
	}
	if s.deleted[n-1] {
		return 0, errReply(fmt.Sprintf("message %d already deleted", n)), false
	}
	return n - 1, reply{}, true
}

// parseNumber parses a non-negative decimal argument: digits only, no sign.
func parseNumber(arg string) (int, bool) {
	if arg == "" || len(arg) > 9 {
		return 0, false
	}
	for _, c := range []byte(arg) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(arg)
	return n, err == nil
}

// cmdList implements LIST [msg] (RFC 1939 §5).
func (s *session) cmdList(args []string) reply {
	if len(args) == 1 {
		i, rep, ok := s.pick(args[0])
		if !ok {
			return rep
		}
		return okReply(fmt.Sprintf("%d %d", i+1, len(s.msgs[i].data)))
	}
	var body bytes.Buffer
	for i, m := range s.msgs {
		if !s.deleted[i] {
			fmt.Fprintf(&body, "%d %d\r\n", i+1, len(m.data))
		}
	}
	n, size := s.stat()
	return multiReply(fmt.Sprintf("%d messages (%d octets)", n, size), body.Bytes())
}

// cmdRetr implements RETR msg (RFC 1939 §5).
func (s *session) cmdRetr(args []string) reply {
	i, rep, ok := s.pick(args[0])
	if !ok {
		return rep
	}
	data := s.msgs[i].data
	return multiReply(fmt.Sprintf("%d octets", len(data)), data)
}

// cmdDele implements DELE msg (RFC 1939 §5): the message is only marked;
// QUIT removes it.
func (s *session) cmdDele(args []string) reply {
	i, rep, ok := s.pick(args[0])
	if !ok {
		return rep
	}
	s.deleted[i] = true
	return okReply(fmt.Sprintf("message %d deleted", i+1))
}

// cmdNoop implements NOOP (RFC 1939 §5).
func (s *session) cmdNoop([]string) reply {
	return okReply("")
}

// cmdRset implements RSET (RFC 1939 §5): all deletion marks are removed.
func (s *session) cmdRset([]string) reply {
	clear(s.deleted)
	n, size := s.stat()
	return okReply(fmt.Sprintf("maildrop has %d messages (%d octets)", n, size))
}

// cmdTop implements TOP msg n (RFC 1939 §7): the headers, the blank line
// after them, and the first n lines of the body (all of it if shorter).
func (s *session) cmdTop(args []string) reply {
	i, rep, ok := s.pick(args[0])
	if !ok {
		return rep
	}
	lines, ok := parseNumber(args[1])
	if !ok {
		return badReply("invalid line count")
	}
	data := s.msgs[i].data
	end := headerEnd(data)
	for ; lines > 0 && end < len(data); lines-- {
		nl := bytes.IndexByte(data[end:], '\n')
		if nl < 0 {
			end = len(data)
			break
		}
		end += nl + 1
	}
	return multiReply("top of message follows", data[:end])
}

// headerEnd returns the offset just past the blank line that ends the
// header section (RFC 5322 §2.1), or len(data) if there is no body.
func headerEnd(data []byte) int {
	if bytes.HasPrefix(data, []byte("\r\n")) {
		return 2
	}
	if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	return len(data)
}

// cmdUidl implements UIDL [msg] (RFC 1939 §7).
func (s *session) cmdUidl(args []string) reply {
	if len(args) == 1 {
		i, rep, ok := s.pick(args[0])
		if !ok {
			return rep
		}
		return okReply(fmt.Sprintf("%d %s", i+1, s.msgs[i].uid))
	}
	var body bytes.Buffer
	for i, m := range s.msgs {
		if !s.deleted[i] {
			fmt.Fprintf(&body, "%d %s\r\n", i+1, m.uid)
		}
	}
	return multiReply("unique-id listing follows", body.Bytes())
}
