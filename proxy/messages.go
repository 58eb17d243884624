package proxy

import (
	"strings"

	"github.com/popproxy/popproxy/internal/pop3"
)

const (
	// maxKnownMessages bounds what a session remembers about a mailbox, so a
	// client listing a huge mailbox cannot grow it without limit.
	maxKnownMessages = 20000
	// maxKnownIDOctets bounds the Message-IDs a session keeps for the DELE
	// records of messages it retrieved: a header value may be 998 octets, and
	// anyone can send mail.
	maxKnownIDOctets = 256 << 10
)

// msgInfo is what the session has learnt of one message, for the audit.
type msgInfo struct {
	size      int64 // -1 if unknown
	uidl      string
	messageID string // from its header, if the session saw it pass
}

// messages maps message numbers to what the session has seen of them: sizes
// from LIST and RETR replies, unique ids from UIDL replies, Message-IDs from
// RETR and TOP bodies. Its zero value is empty and ready to use.
type messages struct {
	known    map[int]msgInfo
	idOctets int // of the Message-IDs in known
}

func (m *messages) get(n int) msgInfo {
	if info, ok := m.known[n]; ok {
		return info
	}
	return msgInfo{size: -1}
}

func (m *messages) set(n int, update func(*msgInfo)) {
	if m.known == nil {
		m.known = map[int]msgInfo{}
	}
	info, ok := m.known[n]
	if !ok {
		if len(m.known) >= maxKnownMessages {
			return
		}
		info.size = -1
	}
	update(&info)
	m.known[n] = info
}

// learnListing reads one "n size" (LIST) or "n uid" (UIDL) line, from a
// listing or from a single-line reply's text (RFC 1939 §5, §7).
func (m *messages) learnListing(verb, line string) {
	num, value, ok := strings.Cut(line, " ")
	if !ok {
		return
	}
	value, _, _ = strings.Cut(value, " ")
	n, err := pop3.ParseNumber(num)
	if err != nil || n == 0 || value == "" {
		return
	}
	switch verb {
	case "LIST":
		if size, err := pop3.ParseNumber(value); err == nil {
			m.set(n, func(i *msgInfo) { i.size = int64(size) })
		}
	case "UIDL":
		// RFC 1939 §7: 1 to 70 characters in the range 0x21 to 0x7E.
		if len(value) <= 70 && pop3.Sanitize(value) == value {
			m.set(n, func(i *msgInfo) { i.uidl = value })
		}
	}
}

// learnFromStatus reads what a +OK line says: "n size" to LIST n, "n uid" to
// UIDL n, and, commonly, "size octets" to RETR n.
func (m *messages) learnFromStatus(cmd pop3.Command, text string) {
	switch {
	case len(cmd.Args) == 1 && (cmd.Verb == "LIST" || cmd.Verb == "UIDL"):
		m.learnListing(cmd.Verb, text)
	case cmd.Verb == "RETR":
		size, rest, _ := strings.Cut(text, " ")
		if octets, err := pop3.ParseNumber(size); err == nil && strings.HasPrefix(rest, "octets") {
			n, _ := pop3.ParseNumber(cmd.Args[0])
			m.set(n, func(i *msgInfo) { i.size = int64(octets) })
		}
	}
}

// learnMessageID keeps message n's Message-ID, seen as it passed, so that a
// later DELE of the message can name it too; beyond maxKnownIDOctets the
// session forgets new ones.
func (m *messages) learnMessageID(n int, id string) {
	old := m.get(n).messageID
	if id == old || m.idOctets-len(old)+len(id) > maxKnownIDOctets {
		return
	}
	m.set(n, func(i *msgInfo) {
		m.idOctets += len(id) - len(i.messageID)
		i.messageID = id
	})
}

// uidls maps the messages nums to their unique ids, where known; nil if none
// is.
func (m *messages) uidls(nums []int) map[int]string {
	var ids map[int]string
	for _, n := range nums {
		if uidl := m.get(n).uidl; uidl != "" {
			if ids == nil {
				ids = make(map[int]string)
			}
			ids[n] = uidl
		}
	}
	return ids
}
